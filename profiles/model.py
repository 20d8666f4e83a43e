"""Profiles, tags and rules: the data model and its validation.

A :class:`Profile` has a name, a set of tags and two ordered rule lists,
``inbound_rules`` (traffic to its endpoints) and ``outbound_rules`` (traffic
from them). A :class:`Rule` is Calico's v0.x rule: an action (``allow`` or
``deny``) and optional matches - protocol (``tcp``, ``udp``, ``icmp``,
``icmpv6``), source and destination tag, CIDR and ports (ports only with tcp
or udp), ICMP type (0-254: iptables reads 255 as "any") and code (0-255;
only with icmp or icmpv6). A rule without matches matches everything.

Semantics (enforced by :mod:`profiles.generator`): within a profile the
first matching rule decides; an endpoint's profiles are evaluated in order
and the first profile that decides wins, so traffic is allowed iff some
profile allows it and no profile before it denies it. Traffic that no
profile decides is dropped.

The JSON form of one rule uses Calico's keys (``action, protocol, src_tag,
src_net, src_ports, dst_tag, dst_net, dst_ports, icmp_type, icmp_code``),
leaving out unset ones; ports are integers or ``"min:max"`` strings. A
profile's rules as a whole (``rule json`` / ``rule update``) are
``{"id": NAME, "inbound_rules": [...], "outbound_rules": [...]}``.

Unknown rule keys are refused, also in records read from etcd: ignoring an
unknown match would widen the rule, which is never safe for a firewall.
A profile record may carry ``"auto": true``: the policy agent made it for a
Docker network and removes it once nothing uses it (:mod:`profiles.agent`).
Every validation error is a :class:`RuleError` or :class:`ProfileError`
(both ValueError) with a one-line message.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from datastore import keys

ACTIONS = ("allow", "deny")
PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6")
PORT_PROTOCOLS = ("tcp", "udp")
ICMP_PROTOCOLS = ("icmp", "icmpv6")
DIRECTIONS = ("inbound", "outbound")
RULE_KEYS = ("action", "protocol", "src_tag", "src_net", "src_ports",
             "dst_tag", "dst_net", "dst_ports", "icmp_type", "icmp_code")

Port = int | str  # 80, or "8000:8080"


class ProfileError(ValueError):
    """A profile request or record is invalid (one line, fit for a user)."""


class RuleError(ProfileError):
    """A rule is invalid."""


def check_name(name: str, what: str = "profile name") -> str:
    """A profile or tag name must be one etcd key segment (see datastore.keys)."""
    try:
        return keys.segment(name, what)
    except ValueError as exc:
        raise ProfileError(str(exc)) from None


def parse_port(raw: Any) -> Port:
    """One port (``80``, ``"80"``) or range (``"8000:8080"``, ``"8000-8080"``), canonical."""
    if isinstance(raw, bool):
        raise RuleError(f"invalid port {raw!r}: use a number 0-65535 or a range MIN:MAX")
    if isinstance(raw, int):
        if not 0 <= raw <= 65535:
            raise RuleError(f"port {raw} is out of range: ports are 0-65535")
        return raw
    if not isinstance(raw, str):
        raise RuleError(f"invalid port {raw!r}: use a number 0-65535 or a range MIN:MAX")
    text = raw.strip()
    bounds = text.replace("-", ":").split(":")
    if not 1 <= len(bounds) <= 2 or not all(b.isdigit() and b.isascii() for b in bounds):
        raise RuleError(f"invalid port {raw!r}: use a number 0-65535 or a range MIN:MAX")
    low, high = int(bounds[0]), int(bounds[-1])
    for value in (low, high):
        if value > 65535:
            raise RuleError(f"port {value} is out of range: ports are 0-65535")
    if len(bounds) == 1:
        return low
    if low > high:
        raise RuleError(f"invalid port range {raw!r}: the minimum is above the maximum")
    return f"{low}:{high}"


def parse_ports(raw: Any, where: str) -> tuple[Port, ...] | None:
    """A port list: a JSON list, or the CLI's comma-separated text."""
    if raw is None:
        return None
    if isinstance(raw, str):
        items: list[Any] = raw.split(",")
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise RuleError(f"{where} must be a list of ports, not {raw!r}")
    if not items:
        raise RuleError(f"{where} is empty: give at least one port")
    return tuple(parse_port(p) for p in items)


def parse_net(raw: Any, where: str) -> str | None:
    """A CIDR (a plain address means /32 or /128), normalised to its network."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise RuleError(f"invalid {where} {raw!r}: use a CIDR such as 10.0.0.0/8")
    try:
        return str(ipaddress.ip_network(raw.strip(), strict=False))
    except ValueError:
        raise RuleError(f"invalid {where} {raw!r}: use a CIDR such as 10.0.0.0/8") from None


ICMP_TYPE_MAX = 254  # iptables reads type 255 as "any ICMP": a rule naming it would match everything
ICMP_CODE_MAX = 255


def parse_icmp(raw: Any, what: str) -> int | None:
    """An ICMP type (0-254) or code (0-255)."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw.isdigit() and raw.isascii():
        raw = int(raw)
    top = ICMP_TYPE_MAX if what == "type" else ICMP_CODE_MAX
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= top:
        raise RuleError(f"invalid ICMP {what} {raw!r}: use a number 0-{top}")
    return raw


def net_version(cidr: str | None) -> int | None:
    return ipaddress.ip_network(cidr).version if cidr else None


@dataclass(frozen=True)
class Rule:
    """One rule. Build it with :meth:`make` (or :meth:`from_dict`) to validate it."""
    action: str
    protocol: str | None = None
    src_tag: str | None = None
    src_net: str | None = None
    src_ports: tuple[Port, ...] | None = None
    dst_tag: str | None = None
    dst_net: str | None = None
    dst_ports: tuple[Port, ...] | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @classmethod
    def make(cls, action: str, protocol: str | None = None, *, src_tag: str | None = None,
             src_net: Any = None, src_ports: Any = None, dst_tag: str | None = None,
             dst_net: Any = None, dst_ports: Any = None, icmp_type: Any = None,
             icmp_code: Any = None) -> "Rule":
        """A validated, canonical rule; raises RuleError."""
        if action not in ACTIONS:
            raise RuleError(f"invalid action {action!r}: use allow or deny")
        if protocol is not None and protocol not in PROTOCOLS:
            raise RuleError(f"invalid protocol {protocol!r}: use tcp, udp, icmp or icmpv6")
        for tag, where in ((src_tag, "source tag"), (dst_tag, "destination tag")):
            if tag is not None:
                try:
                    keys.segment(tag, where)
                except ValueError as exc:
                    raise RuleError(str(exc)) from None
        rule = cls(action, protocol, src_tag, parse_net(src_net, "source CIDR"),
                   parse_ports(src_ports, "source ports"), dst_tag,
                   parse_net(dst_net, "destination CIDR"),
                   parse_ports(dst_ports, "destination ports"),
                   parse_icmp(icmp_type, "type"), parse_icmp(icmp_code, "code"))
        rule._check_combinations()
        return rule

    def _check_combinations(self) -> None:
        if (self.src_ports or self.dst_ports) and self.protocol not in PORT_PROTOCOLS:
            raise RuleError("ports need protocol tcp or udp"
                            + (f", not {self.protocol}" if self.protocol else ""))
        if self.icmp_type is not None and self.protocol not in ICMP_PROTOCOLS:
            raise RuleError("an ICMP type needs protocol icmp or icmpv6")
        if self.icmp_code is not None and self.icmp_type is None:
            raise RuleError("an ICMP code needs an ICMP type")
        versions = {v for v in (net_version(self.src_net), net_version(self.dst_net)) if v}
        if len(versions) > 1:
            raise RuleError(f"source CIDR {self.src_net} and destination CIDR "
                            f"{self.dst_net} are of different IP versions")
        wanted = {"icmp": 4, "icmpv6": 6}.get(self.protocol or "")
        if wanted and versions and versions != {wanted}:
            raise RuleError(f"protocol {self.protocol} cannot match IPv{versions.pop()} CIDRs")

    @property
    def version(self) -> int | None:
        """4 or 6 if the rule can only match one IP version, else None."""
        for version in (net_version(self.src_net), net_version(self.dst_net)):
            if version:
                return version
        return {"icmp": 4, "icmpv6": 6}.get(self.protocol or "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in RULE_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Rule":
        if not isinstance(data, dict):
            raise RuleError(f"a rule must be a JSON object, not {data!r}")
        unknown = sorted(set(data) - set(RULE_KEYS))
        if unknown:
            raise RuleError(f"unknown rule key {unknown[0]!r}: use {', '.join(RULE_KEYS)}")
        if "action" not in data:
            raise RuleError("a rule needs an action (allow or deny)")
        return cls.make(**data)


def parse_rules(data: Any, where: str) -> list[Rule]:
    if not isinstance(data, list):
        raise RuleError(f"{where} must be a list of rules")
    out = []
    for i, item in enumerate(data, start=1):
        try:
            out.append(Rule.from_dict(item))
        except RuleError as exc:
            raise RuleError(f"{where} {i}: {exc}") from None
    return out


@dataclass
class Profile:
    name: str
    tags: list[str] = field(default_factory=list)
    inbound_rules: list[Rule] = field(default_factory=list)
    outbound_rules: list[Rule] = field(default_factory=list)
    auto: bool = False  # made by the policy agent for a Docker network, removed once unused

    def __post_init__(self) -> None:
        check_name(self.name)
        for tag in self.tags:
            check_name(tag, "tag")
        self.tags = sorted(set(self.tags))

    @classmethod
    def new(cls, name: str) -> "Profile":
        """Calico's defaults: members reach each other and anything outside; nobody else gets in."""
        check_name(name)
        return cls(name, tags=[name], inbound_rules=[Rule.make("allow", src_tag=name)],
                   outbound_rules=[Rule.make("allow")])

    def rules(self, direction: str) -> list[Rule]:
        if direction not in DIRECTIONS:
            raise ProfileError(f"invalid direction {direction!r}: use inbound or outbound")
        return self.inbound_rules if direction == "inbound" else self.outbound_rules

    def with_rules(self, direction: str, rules: Iterable[Rule]) -> "Profile":
        self.rules(direction)  # validates the direction
        return replace(self, **{f"{direction}_rules": list(rules)})

    # -- JSON ------------------------------------------------------------------

    def rules_dict(self) -> dict[str, Any]:
        """The ``rule json`` document."""
        return {"id": self.name,
                "inbound_rules": [r.to_dict() for r in self.inbound_rules],
                "outbound_rules": [r.to_dict() for r in self.outbound_rules]}

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "tags": list(self.tags),
               "inbound_rules": [r.to_dict() for r in self.inbound_rules],
               "outbound_rules": [r.to_dict() for r in self.outbound_rules]}
        if self.auto:
            out["auto"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Profile":
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ProfileError("a profile record needs a name")
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ProfileError(f"the tags of profile {data['name']} must be a list of names")
        auto = data.get("auto", False)
        if not isinstance(auto, bool):
            raise ProfileError(f"the auto flag of profile {data['name']} must be true or false")
        return cls(data["name"], tags,
                   parse_rules(data.get("inbound_rules", []), "inbound rule"),
                   parse_rules(data.get("outbound_rules", []), "outbound rule"), auto)

    def validate(self) -> None:
        """What codec checks on every read and write (the rest is checked on construction)."""
        check_name(self.name)
        for tag in self.tags:
            check_name(tag, "tag")
        for rule in self.inbound_rules + self.outbound_rules:
            if not isinstance(rule, Rule):
                raise ProfileError(f"profile {self.name}: a rule must be a Rule, not {rule!r}")

    def check_key(self, key: str) -> None:
        """A profile record sits at ``profiles/<its name>``."""
        if keys.last_segment(key) != self.name:
            raise ProfileError(f"profile {self.name} is stored under another name's key")


def rules_from_document(data: Any, name: str) -> tuple[list[Rule], list[Rule]]:
    """Validate a ``rule update`` document for profile ``name``: (inbound, outbound)."""
    if not isinstance(data, dict):
        raise RuleError('the rules must be a JSON object: {"inbound_rules": [...], "outbound_rules": [...]}')
    unknown = sorted(set(data) - {"id", "inbound_rules", "outbound_rules"})
    if unknown:
        raise RuleError(f"unknown key {unknown[0]!r}: use id, inbound_rules and outbound_rules")
    if "id" in data and data["id"] != name:
        raise RuleError(f"the rules' id {data['id']!r} does not match profile {name}")
    for key in ("inbound_rules", "outbound_rules"):
        if key not in data:
            raise RuleError(f"the rules need {key!r} (a list, possibly empty)")
    return (parse_rules(data["inbound_rules"], "inbound rule"),
            parse_rules(data["outbound_rules"], "outbound rule"))
