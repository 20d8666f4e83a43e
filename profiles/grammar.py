"""calicoctl v0.x rule grammar: argv words <-> :class:`~profiles.model.Rule`.

The grammar (``calicoctl profile <PROFILE> rule add|remove``)::

    (allow|deny) [(
      (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
                [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      icmp   [(type <ICMPTYPE> [(code <ICMPCODE>)])] [(from [(tag ..)] [(cidr ..)])] [(to ..)] |
      icmpv6 [(type <ICMPTYPE> [(code <ICMPCODE>)])] [(from ..)] [(to ..)] |
      [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])] [(to [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
    )]

Ports are a comma-separated list of ports and ranges (``80,443,8000:8080``;
``8000-8080`` is read as ``8000:8080``). As docopt did, ``from``/``to`` may
be empty and their parts are optional; Warren also accepts the parts of one
clause in any order, ``to`` before ``from``, and a bare CIDR in place of
``cidr CIDR`` (the form of calicoctl's own example, ``allow from
192.168.0.0/16``). :func:`format_rule` writes the canonical form, which
parses back to the same rule.
"""
from __future__ import annotations

from typing import Sequence

from .model import ACTIONS, ICMP_PROTOCOLS, PORT_PROTOCOLS, PROTOCOLS, Rule, RuleError

CLAUSES = ("from", "to")
PARTS = ("ports", "tag", "cidr")


def _looks_like_cidr(word: str) -> bool:
    return any(c in word for c in "./:") and word[:1].isalnum()


class _Words:
    """A cursor over the rule's words, with one-line errors that say where."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.i = 0

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def take(self) -> str:
        word = self.words[self.i]
        self.i += 1
        return word

    def value(self, keyword: str, meaning: str) -> str:
        if self.peek() is None:
            raise RuleError(f"'{keyword}' needs {meaning}")
        return self.take()


def parse_rule(words: Sequence[str]) -> Rule:
    """Parse e.g. ``["allow", "tcp", "from", "tag", "web", "to", "ports", "80,443"]``."""
    w = _Words(words)
    if w.peek() is None:
        raise RuleError("a rule needs an action: allow or deny")
    action = w.take()
    if action not in ACTIONS:
        raise RuleError(f"a rule starts with allow or deny, not {action!r}")
    fields: dict[str, object] = {}
    protocol = w.peek() if w.peek() in PROTOCOLS else None
    if protocol:
        w.take()
        if protocol in ICMP_PROTOCOLS and w.peek() == "type":
            w.take()
            fields["icmp_type"] = w.value("type", "an ICMP type (0-254)")
            if w.peek() == "code":
                w.take()
                fields["icmp_code"] = w.value("code", "an ICMP code (0-255)")
    seen: set[str] = set()
    while w.peek() is not None:
        clause = w.take()
        if clause not in CLAUSES:
            raise RuleError(_unexpected(clause, protocol, seen))
        if clause in seen:
            raise RuleError(f"'{clause}' appears twice in the rule")
        seen.add(clause)
        _clause(w, clause, protocol, fields)
    return Rule.make(action, protocol, **fields)


def _unexpected(word: str, protocol: str | None, seen: set[str]) -> str:
    if word in ("type", "code"):
        return f"'{word}' needs protocol icmp or icmpv6 right before it"
    if word in PROTOCOLS:
        return f"the protocol ({word}) must come right after allow/deny"
    if word in PARTS:
        return f"'{word}' must follow 'from' or 'to'"
    expected = [c for c in CLAUSES if c not in seen]
    if protocol is None and not seen:
        expected = ["tcp", "udp", "icmp", "icmpv6"] + expected
    return f"unexpected {word!r} in rule: expected {_one_of(expected)}"


def _one_of(words: list[str]) -> str:
    if not words:
        return "the end of the rule"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _clause(w: _Words, clause: str, protocol: str | None, fields: dict[str, object]) -> None:
    prefix = "src" if clause == "from" else "dst"
    parts: set[str] = set()
    while w.peek() is not None and w.peek() not in CLAUSES:
        word = w.take()
        if word in PARTS:
            part = word
            meaning = {"ports": "a port list such as 80,443,8000:8080",
                       "tag": "a tag name", "cidr": "a CIDR such as 10.0.0.0/8"}[part]
            value = w.value(part, meaning)
        elif word in PROTOCOLS or word in ("type", "code"):
            raise RuleError(_unexpected(word, protocol, {clause}))
        elif _looks_like_cidr(word):
            part, value = "cidr", word
        else:
            raise RuleError(f"unexpected {word!r} after '{clause}': expected ports, tag or cidr")
        if part in parts:
            raise RuleError(f"'{clause}' has two {part} parts")
        if part == "ports" and protocol not in PORT_PROTOCOLS:
            raise RuleError("ports need protocol tcp or udp"
                            + (f", not {protocol}" if protocol else " (e.g. allow tcp to ports 80)"))
        parts.add(part)
        key = {"ports": "ports", "tag": "tag", "cidr": "net"}[part]
        fields[f"{prefix}_{key}"] = value


def format_ports(ports: Sequence[int | str]) -> str:
    return ",".join(str(p) for p in ports)


def format_rule(rule: Rule) -> str:
    """The canonical grammar text of ``rule`` (what ``rule show`` prints)."""
    out = [rule.action]
    if rule.protocol:
        out.append(rule.protocol)
    if rule.icmp_type is not None:
        out += ["type", str(rule.icmp_type)]
        if rule.icmp_code is not None:
            out += ["code", str(rule.icmp_code)]
    for clause, prefix in (("from", "src"), ("to", "dst")):
        ports, tag, net = (getattr(rule, f"{prefix}_{k}") for k in ("ports", "tag", "net"))
        if ports or tag or net:
            out.append(clause)
            if ports:
                out += ["ports", format_ports(ports)]
            if tag:
                out += ["tag", tag]
            if net:
                out += ["cidr", net]
    return " ".join(out)
