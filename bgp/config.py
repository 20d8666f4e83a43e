"""ExaBGP configuration and environment for one node (pure functions).

One ExaBGP 5.0.x speaker per host. By default every registered node peers
with every other (iBGP full mesh, AS 64512). The speaker only speaks BGP: its
API process (:mod:`bgp.api`) announces this host's blocks and programs the
routes it learns. Traps measured on this machine (shared/notes/exabgp.md) and
handled here:

* ExaBGP drops privileges by default and its API process inherits them: it
  runs as root so the API process can program routes;
* ``tcp.bind`` must be set or it never accepts inbound sessions;
* no commas in the ``run`` line (the tokenizer splits them);
* the hold time defaults to 180 s: Warren uses 30 s;
* ``manual-eor``: End-of-RIB is sent by the API process once it has
  re-announced everything, so a restart does not make peers sweep our routes;
* ExaBGP logs one INFO line per prefix an API command adds or removes (source
  ``processes``): ~1000 lines and a noticeable part of a 1000-route burst. That
  source is off; the API process logs what it announces and every refused
  command itself.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

DEFAULT_AS = 64512
DEFAULT_HOLD = 30
GRACEFUL_RESTART = 120


@dataclass(frozen=True)
class Peer:
    address: str
    as_number: int
    kind: str = "mesh"            # mesh | global | node
    password: str | None = None


@dataclass(frozen=True)
class SpeakerConfig:
    node: str
    router_id: str                # this node's underlay IPv4
    as_number: int = DEFAULT_AS
    peers: tuple[Peer, ...] = ()
    hold_time: int = DEFAULT_HOLD
    api_argv: tuple[str, ...] = field(default_factory=tuple)


_SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:=@+-]+$")


def validate(config: SpeakerConfig) -> None:
    """Refuse anything that would make ExaBGP crash-loop (its respawn limit is 5)."""
    ipaddress.IPv4Address(config.router_id)
    if not 1 <= config.as_number <= 4294967295:
        raise ValueError(f"invalid AS number {config.as_number}")
    if not 3 <= config.hold_time <= 65535:
        raise ValueError("the hold time must be 3-65535 seconds")
    for arg in config.api_argv:
        if not _SAFE_ARG.match(arg):
            raise ValueError(f"unsafe API process argument {arg!r} (no spaces, commas or quotes)")
    for peer in config.peers:
        ipaddress.ip_address(peer.address)
        if peer.password is not None and (len(peer.password) > 80 or '"' in peer.password
                                          or not peer.password.isprintable()):
            raise ValueError(f"BGP password for {peer.address} must be printable, without quotes, <= 80 chars")


def render(config: SpeakerConfig) -> str:
    validate(config)
    lines = [
        "process warren-api {",
        f"    run {' '.join(config.api_argv)};",
        "    encoder json;",
        "}",
        "",
    ]
    for peer in sorted(config.peers, key=lambda p: ipaddress.ip_address(p.address)):
        if peer.address == config.router_id:
            continue
        v6 = ipaddress.ip_address(peer.address).version == 6
        lines += [
            f"neighbor {peer.address} {{",
            f"    description \"{peer.kind}\";",
            f"    router-id {config.router_id};",
        ]
        if not v6:
            lines.append(f"    local-address {config.router_id};")
        lines += [
            f"    local-as {config.as_number};",
            f"    peer-as {peer.as_number};",
            f"    hold-time {config.hold_time};",
            "    manual-eor true;",
        ]
        if peer.password:
            lines.append(f"    md5-password \"{peer.password}\";")
        lines += [
            f"    capability {{ graceful-restart {GRACEFUL_RESTART}; }}",
            "    family { ipv4 unicast; ipv6 unicast; }",
            "    api {",
            "        processes [ warren-api ];",
            "        receive { parsed; update; }",
            "        neighbor-changes;",
            "    }",
            "}",
            "",
        ]
    return "\n".join(lines)


def environment(config: SpeakerConfig, log_path: str, run_dir: str) -> dict[str, str]:
    """ExaBGP's settings, passed as environment variables."""
    return {
        "exabgp_tcp_bind": config.router_id,
        "exabgp_tcp_port": "179",
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_cli": "false",
        "exabgp_api_pipename": f"warren-{config.node}",
        "exabgp_log_destination": log_path,
        "exabgp_log_level": "INFO",
        "exabgp_log_processes": "false",
    }
