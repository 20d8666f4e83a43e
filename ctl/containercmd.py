"""``warrenctl container ...``: give ``--net=none`` containers a Warren interface (the seed's flow).

    warrenctl container add <CONTAINER> (<IP>|<POOL-CIDR>|ipv4|ipv6) [--interface=<IFACE>]
    warrenctl container remove <CONTAINER>
    warrenctl container <CONTAINER> ip (add|remove) <IP> [--interface=<IFACE>]
    warrenctl container <CONTAINER> profile (append|remove|set) <PROFILES>...
    warrenctl container <CONTAINER> profile show
    warrenctl container <CONTAINER> endpoint show

The work is :class:`plugin.containers.ContainerEndpoints` (the plugin's own
plumbing); this module only parses words. A container reference that is not a
Docker name or id (``../../../etc``) is refused before anything is asked of
dockerd or etcd (:func:`plugin.containers.check_reference`). It acts on this host's containers
(``--host`` is not needed: the container must run here).
"""
from __future__ import annotations

import argparse

from ipam.workloads import WorkloadStore
from plugin.containers import DEFAULT_INTERFACE, ContainerEndpoints, check_reference
from plugin.errors import PluginError
from plugin.dataplane import Dataplane
from profiles import ProfileStore

from .cli import CliError
from .endpointcmd import profile_words
from .output import table

USAGE = """\
warrenctl container add <CONTAINER> (<IP>|<POOL-CIDR>|ipv4|ipv6) [--interface=<IFACE>]
       warrenctl container remove <CONTAINER>
       warrenctl container <CONTAINER> ip (add|remove) <IP> [--interface=<IFACE>]
       warrenctl container <CONTAINER> profile (append|remove|set) <PROFILES>...
       warrenctl container <CONTAINER> profile show
       warrenctl container <CONTAINER> endpoint show"""


def register(sub: argparse._SubParsersAction) -> None:
    container = sub.add_parser("container", help="give --net=none containers a warren interface",
                               usage=USAGE)
    container.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    container.set_defaults(func=container_command)


def _usage_error(message: str) -> CliError:
    return CliError(f"{message} (see 'warrenctl container --help')")


def _interface(words: list[str]) -> tuple[list[str], str | None]:
    """Split off ``--interface=IFACE`` (or ``--interface IFACE``)."""
    rest, interface = [], None
    words = list(words)
    while words:
        word = words.pop(0)
        if word == "--interface":
            if not words or words[0].startswith("--"):
                raise _usage_error("--interface needs a name, such as eth1")
            interface = words.pop(0)
        elif word.startswith("--interface="):
            interface = word.split("=", 1)[1]
            if not interface:
                raise _usage_error("--interface needs a name, such as eth1")
        elif word.startswith("--"):
            raise _usage_error(f"unknown option {word}")
        else:
            rest.append(word)
    return rest, interface


def container_command(args, ctx) -> int:
    words = [w for w in args.words if w != "--debug"]
    if not words:
        raise _usage_error("missing container command: add, remove or <CONTAINER> ip|profile|endpoint")
    first, rest = words[0], words[1:]
    if first in ("add", "remove") and rest and rest[0] not in ("ip", "profile", "endpoint"):
        reference = rest[0] if not rest[0].startswith("--") else None
    else:
        reference = first
    if reference is not None:
        try:
            check_reference(reference)
        except PluginError as exc:
            raise CliError(str(exc)) from None
    endpoints = ContainerEndpoints(ctx.store, ctx.host, Dataplane())
    if first == "add" and rest and rest[0] not in ("ip", "profile", "endpoint"):
        rest, interface = _interface(rest)
        if len(rest) != 2:
            raise _usage_error("usage: warrenctl container add <CONTAINER> (<IP>|<POOL-CIDR>|ipv4|ipv6) "
                               "[--interface=<IFACE>]")
        made = endpoints.add(rest[0], rest[1], interface or DEFAULT_INTERFACE)
        print(f"IP {','.join(made.addresses)} added to {rest[0]} ({made.ifname})")
        return 0
    if first == "remove" and rest and rest[0] not in ("ip", "profile", "endpoint"):
        if len(rest) != 1:
            raise _usage_error("usage: warrenctl container remove <CONTAINER>")
        gone = endpoints.remove(rest[0])
        print(f"Removed warren interface {', '.join(e.ifname or '?' for e in gone)} from {rest[0]}")
        return 0
    if not rest:
        raise _usage_error(f"unknown container command {first!r}")
    sub, more = rest[0], rest[1:]
    if sub == "ip":
        more, interface = _interface(more)
        if len(more) != 2 or more[0] not in ("add", "remove"):
            raise _usage_error("usage: warrenctl container <CONTAINER> ip (add|remove) <IP>")
        if more[0] == "add":
            address = endpoints.add_address(first, more[1], interface)
            print(f"IP {address} added to {first}")
        else:
            endpoints.remove_address(first, more[1], interface)
            print(f"IP {more[1]} removed from {first}")
        return 0
    if sub == "profile" and more:
        _, endpoint = endpoints.endpoint(first)
        return profile_words(WorkloadStore(ctx.store), ProfileStore(ctx.store), endpoint, more,
                             f"container {first}")
    if sub == "endpoint" and more == ["show"]:
        container = endpoints.lookup(first)
        found = endpoints.endpoints(container.id)
        table(["Endpoint ID", "Interface", "Host interface", "Addresses", "MAC", "Profiles"],
              [(e.id[:12], e.ifname, e.iface, ",".join(e.addresses), e.mac,
                ",".join(e.profiles or []) or "-") for e in found])
        return 0
    raise _usage_error(f"unknown container command {' '.join(words)!r}")
