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
* every value written into the file has a strict grammar (``check_*``: AS
  1-4294967295, unicast peer addresses in canonical form, hold time 3-65535,
  API arguments without spaces, commas or quotes). Passwords are any 1-80
  printable ASCII characters and are written base64-encoded
  (``md5-base64 true``), because ExaBGP's tokeniser unescapes backslashes and
  toggles quoting at either quote mark: an apostrophe inside ``"..."`` made
  the whole file unreadable. :func:`render` refuses an invalid config; the
  speaker also runs ``exabgp validate`` on the result before using it;
* ExaBGP logs one INFO line per prefix an API command adds or removes (source
  ``processes``): ~1000 lines and a noticeable part of a 1000-route burst. That
  source is off; the API process logs what it announces and every refused
  command itself.
"""
from __future__ import annotations

import base64
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


# --- the grammar of every value that reaches ExaBGP's configuration ------------------

MAX_AS = 4294967295
MAX_PASSWORD = 80                 # TCP_MD5SIG_MAXKEYLEN, and ExaBGP's own limit
KINDS = ("mesh", "global", "node")
_SAFE_ARG = re.compile(r"[A-Za-z0-9_./:=@+-]+")
_PASSWORD = re.compile(r"[\x20-\x7e]{1,%d}" % MAX_PASSWORD)  # printable ASCII


def check_as(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_AS:
        raise ValueError(f"invalid AS number {value!r}: use 1-{MAX_AS}")
    return value


def check_hold_time(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 3 <= value <= 65535:
        raise ValueError(f"invalid hold time {value!r}: use 3-65535 seconds")
    return value


def check_password(value: object) -> str:
    """1-80 printable ASCII characters (the kernel's key is bytes; ExaBGP encodes it as
    ASCII). Any of them is safe in the config: it is written base64-encoded."""
    if not isinstance(value, str) or not _PASSWORD.fullmatch(value):
        raise ValueError(f"a BGP password must be 1-{MAX_PASSWORD} printable ASCII characters")
    return value


def check_router_id(value: object) -> str:
    ip = _address(value, "router id")
    if ip.version != 4 or _unusable(ip):
        raise ValueError(f"invalid router id {value!r}: use this node's unicast underlay IPv4 address")
    return str(ip)


def check_peer_address(value: object) -> str:
    """A unicast address a session can be made to, in its canonical form. Refused: the
    unspecified address, loopback, multicast, link-local (needs an interface), reserved,
    IPv4-mapped IPv6 and scoped (``%eth0``) forms."""
    ip = _address(value, "peer address")
    if _unusable(ip):
        raise ValueError(f"{ip} cannot be a BGP peer (unspecified, loopback, multicast, "
                         "link-local or reserved address)")
    return str(ip)


def check_arg(value: object) -> str:
    if not isinstance(value, str) or not _SAFE_ARG.fullmatch(value):
        raise ValueError(f"unsafe API process argument {value!r} (no spaces, commas or quotes)")
    return value


def _address(value: object, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"{value!r} is not an IP address ({what})")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address ({what})") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise ValueError(f"{value!r}: write the IPv4 address itself ({what})")
    return ip


def _unusable(ip) -> bool:
    return (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_reserved
            or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")))


def check_peer(peer: Peer) -> Peer:
    """``peer`` with its address in canonical form; ValueError if any value is invalid."""
    if peer.kind not in KINDS:
        raise ValueError(f"invalid peer kind {peer.kind!r}")
    address = check_peer_address(peer.address)
    check_as(peer.as_number)
    if peer.password is not None:
        check_password(peer.password)
    return Peer(address, peer.as_number, peer.kind, peer.password)


def validate(config: SpeakerConfig) -> None:
    """Refuse anything that would make ExaBGP crash-loop (its respawn limit is 5) or
    that it would read differently from what was meant."""
    check_arg(config.node)
    check_router_id(config.router_id)
    check_as(config.as_number)
    check_hold_time(config.hold_time)
    for arg in config.api_argv:
        check_arg(arg)
    seen = set()
    for peer in config.peers:
        address = check_peer(peer).address
        if address in seen:
            raise ValueError(f"peer {address} is listed twice")
        seen.add(address)


def render(config: SpeakerConfig) -> str:
    validate(config)
    lines = [
        "process warren-api {",
        f"    run {' '.join(config.api_argv)};",
        "    encoder json;",
        "}",
        "",
    ]
    peers = [check_peer(p) for p in config.peers]
    for peer in sorted(peers, key=lambda p: ipaddress.ip_address(p.address)):
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
            lines += [f"    md5-password \"{encode_password(peer.password)}\";",
                      "    md5-base64 true;"]
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


def encode_password(password: str) -> str:
    """The password as ExaBGP's ``md5-base64 true`` reads it: base64 (A-Z a-z 0-9 + / =),
    so no character of the password can reach ExaBGP's tokeniser (which unescapes
    backslashes and switches quoting at either quote mark, so an apostrophe inside
    double quotes breaks the whole file). The kernel gets the same bytes either way."""
    return base64.b64encode(check_password(password).encode("ascii")).decode("ascii")


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
