"""``warrenctl profile ...``: calicoctl v0.x's profile commands, word for word.

argparse cannot express ``profile <PROFILE> tag add <TAG>`` (a free name
before the verb), so ``profile`` takes the rest of the command line and
this module parses it: ``profile add|remove|show`` when the first word is
one of those verbs (``profile add rule`` adds a profile named "rule"), and
``profile NAME tag|rule ...`` otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from ipam.workloads import Endpoint, WorkloadStore, effective_profiles
from profiles import Profile, ProfileError, ProfileStore
from profiles.grammar import format_rule, parse_rule
from profiles.model import DIRECTIONS, rules_from_document

from .cli import CliError
from .output import table

USAGE = """\
warrenctl profile show [--detailed]
       warrenctl profile add <PROFILE>
       warrenctl profile remove <PROFILE> [--no-check]
       warrenctl profile <PROFILE> tag show
       warrenctl profile <PROFILE> tag (add|remove) <TAG>
       warrenctl profile <PROFILE> rule add (inbound|outbound) [--at=<POSITION>] <RULE>
       warrenctl profile <PROFILE> rule remove (inbound|outbound) (--at=<POSITION> | <RULE>)
       warrenctl profile <PROFILE> rule show
       warrenctl profile <PROFILE> rule json
       warrenctl profile <PROFILE> rule update          (the JSON of 'rule json' on stdin)"""

DESCRIPTION = """\
<RULE> (calicoctl v0.x):
  (allow|deny) [(
    (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
              [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
    icmp   [(type <ICMPTYPE> [(code <ICMPCODE>)])] [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
                                                   [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
    icmpv6 [(type <ICMPTYPE> [(code <ICMPCODE>)])] [(from ...)] [(to ...)] |
    [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])] [(to [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
  )]
  Ports: 80,443,8000:8080. Positions count from 1, as 'rule show' numbers them.

A new profile has tag <PROFILE>, inbound 'allow from tag <PROFILE>' and outbound 'allow'.
An endpoint's profiles apply in order: the first that allows or denies decides; else drop.

Example:
  warrenctl profile add web
  warrenctl profile web rule add inbound allow tcp to ports 80,443
  warrenctl profile web rule add inbound --at=1 deny tcp from cidr 10.9.0.0/16"""

VERBS = ("add", "remove", "show")


def register(sub: argparse._SubParsersAction) -> None:
    profile = sub.add_parser("profile", help="manage profiles: tags and inbound/outbound rules",
                             usage=USAGE, description=DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    profile.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    profile.set_defaults(func=profile_command)


def _usage_error(message: str) -> CliError:
    return CliError(f"{message} (see 'warrenctl profile --help')")


def profile_command(args, ctx) -> int:
    words = [w for w in args.words if w != "--debug"]
    if not words:
        raise _usage_error("missing profile command: show, add, remove or <PROFILE> tag|rule")
    first, rest = words[0], words[1:]
    if _is_verb(first, rest):
        return _verb(first, rest, ctx)
    if not rest or rest[0] not in ("tag", "rule"):
        raise _usage_error(f"unknown profile command {' '.join(words)!r}")
    handler = _tag if rest[0] == "tag" else _rule
    return handler(first, rest[1:], ctx)


def _is_verb(first: str, rest: list[str]) -> bool:
    """``profile add|remove|show ...`` rather than ``profile NAME tag|rule ...``."""
    if first not in VERBS:
        return False
    if not rest or rest[0] not in ("tag", "rule"):
        return True
    # "profile add rule", "profile remove tag --no-check": a profile named tag or rule
    return first != "show" and all(w.startswith("--") for w in rest[1:])


# -- profile add | remove | show -------------------------------------------------------

def _verb(verb: str, rest: list[str], ctx) -> int:
    store = ProfileStore(ctx.store)
    if verb == "show":
        if rest not in ([], ["--detailed"]):
            raise _usage_error(f"profile show takes only --detailed, not {' '.join(rest)!r}")
        return _show(store, ctx, detailed=bool(rest))
    flags = [w for w in rest if w.startswith("--")]
    names = [w for w in rest if not w.startswith("--")]
    allowed = ["--no-check"] if verb == "remove" else []
    bad = [f for f in flags if f not in allowed]
    if bad or len(names) != 1:
        raise _usage_error(f"usage: warrenctl profile {verb} <PROFILE>"
                           + (" [--no-check]" if verb == "remove" else ""))
    name = names[0]
    if verb == "add":
        store.add(Profile.new(name))
        print(f"Created profile {name}")
        return 0
    store.get(name)
    if "--no-check" not in flags:
        users = members(ctx.store).get(name)
        if users:
            raise ProfileError(f"profile {name} is in use by {len(users)} endpoint(s); "
                               "use --no-check to remove it anyway")
    store.remove(name)
    print(f"Deleted profile {name}")
    return 0


def members(store) -> dict[str, list[Endpoint]]:
    """Profile name -> the endpoints using it (their own list, else their network's profile)."""
    workloads = WorkloadStore(store)
    networks = workloads.networks()
    out: dict[str, list[Endpoint]] = {}
    for endpoint in workloads.endpoints():
        for name in effective_profiles(endpoint, networks):
            out.setdefault(name, []).append(endpoint)
    return out


def _show(store: ProfileStore, ctx, detailed: bool) -> int:
    profiles = store.list()
    if not detailed:
        table(["Name"], [(p.name,) for p in profiles])
        return 0
    users = members(ctx.store)
    rows = []
    for p in profiles:
        tags = ",".join(p.tags) or "-"
        found = users.get(p.name, [])
        rows += [(p.name, tags, e.host, e.id[:12], ",".join(e.addresses) or "-") for e in found]
        if not found:
            rows.append((p.name, tags, "-", "-", "-"))
    table(["Name", "Tags", "Host", "Endpoint ID", "Addresses"], rows)
    return 0


# -- profile NAME tag ... ----------------------------------------------------------------

def _tag(name: str, words: list[str], ctx) -> int:
    store = ProfileStore(ctx.store)
    if words == ["show"]:
        for tag in store.get(name).tags:
            print(tag)
        return 0
    if len(words) != 2 or words[0] not in ("add", "remove"):
        raise _usage_error("usage: warrenctl profile <PROFILE> tag show | tag (add|remove) <TAG>")
    verb, tag = words
    if verb == "add":
        added = store.add_tag(name, tag)
        print(f"Tag {tag} added to profile {name}" if added else f"Profile {name} already has tag {tag}")
    else:
        store.remove_tag(name, tag)
        print(f"Tag {tag} removed from profile {name}")
    return 0


# -- profile NAME rule ... ---------------------------------------------------------------

def _rule(name: str, words: list[str], ctx) -> int:
    store = ProfileStore(ctx.store)
    simple: dict[str, Callable[[ProfileStore, str], int]] = {
        "show": _rule_show, "json": _rule_json, "update": _rule_update}
    if len(words) == 1 and words[0] in simple:
        return simple[words[0]](store, name)
    if not words or words[0] not in ("add", "remove"):
        raise _usage_error("usage: warrenctl profile <PROFILE> rule (add|remove|show|json|update) ...")
    verb, rest = words[0], words[1:]
    if not rest or rest[0] not in DIRECTIONS:
        raise _usage_error(f"rule {verb} needs a direction: inbound or outbound")
    direction, position, rule_words = rest[0], *_take_at(rest[1:])
    if verb == "add":
        rule = parse_rule(rule_words)
        at = store.add_rule(name, direction, rule, position)
        if at is None:
            print("Rule already present, skipping.")
        else:
            print(f"Added {direction} rule {at} to profile {name}: {format_rule(rule)}")
        return 0
    if (position is None) == (not rule_words):
        raise _usage_error("rule remove takes either --at=<POSITION> or a rule")
    at, removed = store.remove_rule(name, direction, position,
                                    parse_rule(rule_words) if rule_words else None)
    print(f"Removed {direction} rule {at} from profile {name}: {format_rule(removed)}")
    return 0


def _take_at(words: list[str]) -> tuple[int | None, list[str]]:
    """Pull ``--at=N`` / ``--at N`` out of ``words``: (N, the other words)."""
    position, rest, i = None, [], 0
    while i < len(words):
        word = words[i]
        if word == "--at" or word.startswith("--at="):
            if position is not None:
                raise _usage_error("--at is given twice")
            if word == "--at":
                if i + 1 >= len(words):
                    raise _usage_error("--at needs a position (1 is the first rule)")
                i += 1
                value = words[i]
            else:
                value = word[len("--at="):]
            if not value.isdigit():
                raise _usage_error(f"invalid position {value!r}: use a number, 1 is the first rule")
            position = int(value)
        elif word.startswith("--"):
            raise _usage_error(f"unknown option {word}")
        else:
            rest.append(word)
        i += 1
    return position, rest


def _rule_show(store: ProfileStore, name: str) -> int:
    profile = store.get(name)
    for direction in DIRECTIONS:
        print(f"{direction.capitalize()} rules:")
        for i, rule in enumerate(profile.rules(direction), start=1):
            print(f" {i:3d} {format_rule(rule)}")
    return 0


def _rule_json(store: ProfileStore, name: str) -> int:
    print(json.dumps(store.get(name).rules_dict(), indent=2))
    return 0


def _rule_update(store: ProfileStore, name: str) -> int:
    store.get(name)  # a missing profile is the first thing to report
    text = sys.stdin.read()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ProfileError(f"the rules on stdin are not valid JSON: {exc}") from None
    inbound, outbound = rules_from_document(document, name)
    store.set_rules(name, inbound, outbound)
    print(f"Successfully updated rules on profile {name}")
    return 0
