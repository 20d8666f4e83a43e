"""``warrenctl endpoint ...``: calicoctl v0.x's endpoint commands.

    warrenctl endpoint show [--host=<HOST> | --host <HOST>] [--detailed]
    warrenctl endpoint <ENDPOINT_ID> profile (append|remove|set) <PROFILES>...
    warrenctl endpoint <ENDPOINT_ID> profile show
    warrenctl endpoint remove <ENDPOINT_ID> [--force]

An endpoint id may be abbreviated to a unique prefix (as ``show`` prints
12 characters).

``remove`` is for an operator cleaning up a record no container owns any
more (the plugin's janitor does it by itself, :mod:`plugin.janitor`): the
record, its gateway slot and its addresses go at once
(:func:`plugin.janitor.forget`, the code ``ipam check --repair`` uses); its
interface and published ports go at the owning host's next janitor round.
A joined endpoint is refused unless dockerd (asked on this host) says its
container is not running, or ``--force``: an endpoint of another host is
joined to a container this host cannot ask about. Until its own list is set, an endpoint uses its Docker
network's profile; ``append``/``remove`` start from that list. Profiles
named by ``append`` and ``set`` must exist.
"""
from __future__ import annotations

import argparse
from collections import Counter

from ipam import Allocator
from ipam.workloads import Endpoint, WorkloadStore, effective_profiles, profile_change
from plugin.janitor import forget, owner
from plugin.names import DockerError
from plugin.portplan import ports_column
from profiles import ProfileStore

from .cli import CliError
from .output import table

USAGE = """\
warrenctl endpoint show [--host=<HOST>] [--detailed]
       warrenctl endpoint <ENDPOINT_ID> profile (append|remove|set) <PROFILES>...
       warrenctl endpoint <ENDPOINT_ID> profile show
       warrenctl endpoint remove <ENDPOINT_ID> [--force]"""
PROFILE_VERBS = ("append", "remove", "set")


def register(sub: argparse._SubParsersAction) -> None:
    endpoint = sub.add_parser("endpoint", help="show and remove endpoints, set their profiles",
                              usage=USAGE)
    endpoint.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    endpoint.set_defaults(func=endpoint_command)


def _usage_error(message: str) -> CliError:
    return CliError(f"{message} (see 'warrenctl endpoint --help')")


def endpoint_command(args, ctx) -> int:
    words = [w for w in args.words if w != "--debug"]
    if not words:
        raise _usage_error("missing endpoint command: show, remove or <ENDPOINT_ID> profile ...")
    if words[0] == "show":
        return _show(words[1:], ctx)
    if words[0] == "remove":
        return _remove(words[1:], ctx)
    if len(words) < 3 or words[1] != "profile":
        raise _usage_error(f"unknown endpoint command {' '.join(words)!r}")
    workloads = WorkloadStore(ctx.store)
    return profile_words(workloads, ProfileStore(ctx.store), workloads.find(words[0]), words[2:],
                         f"endpoint {words[0]}")


def profile_words(workloads: WorkloadStore, profiles: ProfileStore, endpoint: Endpoint,
                  words: list[str], what: str) -> int:
    """``profile show`` / ``profile append|remove|set NAMES...`` of one endpoint (shared with
    ``container ... profile``)."""
    verb, names = words[0], words[1:]
    if verb == "show":
        if names:
            raise _usage_error("profile show takes no arguments")
        current = workloads.profiles_of(endpoint)
        table(["Name"], [(n,) for n in current])
        return 0
    if verb not in PROFILE_VERBS:
        raise _usage_error(f"unknown profile verb {verb!r}: use append, remove, set or show")
    if not names and verb != "set":
        raise _usage_error(f"profile {verb} needs at least one profile name")
    if verb != "remove":
        for name in names:
            profiles.get(name)  # ProfileNotFound: "profile X does not exist"
    result = workloads.update_profiles(endpoint, profile_change(verb, names))
    print(f"Profiles of {what}: {', '.join(result) or 'none (all traffic is dropped)'}")
    return 0


def _show(flags: list[str], ctx) -> int:
    host, detailed = None, False
    flags = list(flags)
    while flags:
        flag = flags.pop(0)
        if flag == "--detailed":
            detailed = True
        elif flag == "--host" and flags and not flags[0].startswith("--"):
            host = flags.pop(0)
        elif flag.startswith("--host=") and len(flag) > len("--host="):
            host = flag.split("=", 1)[1]
        else:
            raise _usage_error(f"endpoint show takes --host=<HOST> and --detailed, not {flag!r}")
    workloads = WorkloadStore(ctx.store)
    endpoints = workloads.endpoints(host)
    if not detailed:
        counts = Counter(e.host for e in endpoints)
        table(["Hostname", "Number of Endpoints"], sorted(counts.items()))
        return 0
    networks = workloads.networks()
    rows = []
    for e in endpoints:
        owner = (f"container {e.container[:12]}" if e.container else
                 f"network {(networks[e.network].name if e.network in networks else None) or e.network[:12]}")
        rows.append((e.host, owner, e.id[:12], e.iface, ",".join(e.addresses) or "-", e.mac,
                     ",".join(effective_profiles(e, networks)) or "-", ports_column(e) or "-"))
    table(["Hostname", "Owner", "Endpoint ID", "Interface", "Addresses", "MAC", "Profiles", "Ports"], rows)
    return 0


def _remove(words: list[str], ctx) -> int:
    force = "--force" in words
    ids = [w for w in words if w != "--force"]
    if len(ids) != 1 or ids[0].startswith("-"):
        raise _usage_error("endpoint remove takes one <ENDPOINT_ID> and optionally --force")
    endpoint = WorkloadStore(ctx.store).find(ids[0])
    short = endpoint.id[:12]
    if endpoint.sandbox and not force:
        if endpoint.host != ctx.host:
            raise CliError(f"endpoint {short} is joined to a container on host {endpoint.host}: "
                           "run this there (to ask its dockerd) or use --force")
        try:
            found = owner(endpoint)
        except DockerError as exc:
            raise CliError(f"endpoint {short} is joined and dockerd cannot say to what ({exc}); "
                           "use --force") from None
        if found is not None and found[1]:
            raise CliError(f"endpoint {short} is joined to running container {found[0][:12]}: "
                           "remove the container, or use --force")
    released = forget(ctx.store, endpoint, Allocator(ctx.store, endpoint.host))
    print(f"Removed endpoint {short} of host {endpoint.host}"
          + (f"; released {', '.join(released)}" if released else ""))
    return 0
