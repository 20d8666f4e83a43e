"""Field checks for records' ``validate()`` methods: one line of reason per failure.

A record's dataclass annotations give the JSON types (checked by
:mod:`datastore.codec`); these functions check what the types cannot say:
that a string is an IPv4 address, a strict CIDR, a key-safe name, a MAC, an
integer in range. Each raises ``ValueError("<what> <why>")`` and returns the
value, so a ``validate()`` reads as a list of checks. Pure, no I/O: any
package's records may use them (they sit at the bottom of the dependency
order with the codec).
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable

from . import keys

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def name(value: Any, what: str) -> str:
    """A string usable as one key segment (node, host, endpoint, profile names...)."""
    if not isinstance(value, str) or not keys._SEGMENT.match(value):
        raise ValueError(f"{what} {_show(value)} is not a valid name (1-253 letters, digits or . _ : @ -)")
    return value


def text(value: Any, what: str, max_len: int = 4096) -> str:
    """A non-empty string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ValueError(f"{what} {_show(value)} should be a non-empty string of at most {max_len} characters")
    return value


def address(value: Any, what: str, version: int | None = None) -> str:
    """A plain IP address (of ``version`` if given), e.g. ``10.0.0.1``."""
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        ip = None
    if ip is None or (version is not None and ip.version != version):
        family = f"IPv{version}" if version else "IP"
        raise ValueError(f"{what} {_show(value)} is not an {family} address")
    return value


def addresses(values: Iterable[Any], what: str, version: int | None = None) -> None:
    for value in values:
        address(value, what, version)


def cidr(value: Any, what: str, version: int | None = None) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network CIDR without host bits (``10.0.0.0/24``); returns the parsed network."""
    try:
        net = ipaddress.ip_network(value, strict=True) if isinstance(value, str) and "/" in value else None
    except ValueError:
        net = None
    if net is None or (version is not None and net.version != version):
        family = f"an IPv{version}" if version else "a"
        raise ValueError(f"{what} {_show(value)} is not {family} network CIDR (e.g. 10.20.10.0/24)")
    return net


def integer(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} {_show(value)} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{what} {_show(value)} is out of range {low}-{high}")
    return value


def mac(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise ValueError(f"{what} {_show(value)} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return value


def ifname(value: Any, what: str) -> str:
    """A Linux interface name: 1-15 characters, no whitespace, '/' or ':'."""
    if not isinstance(value, str) or not _IFNAME.match(value) or value in (".", ".."):
        raise ValueError(f"{what} {_show(value)} is not an interface name")
    return value


def one_of(value: Any, what: str, allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{what} {_show(value)} is not one of {', '.join(map(str, allowed))}")
    return value


def key_is(key: str | None, expected: str, what: str) -> None:
    """For ``check_key``: the record sits under the key its own fields name."""
    if key is not None and key != expected:
        raise ValueError(f"{what} belongs at {expected}, not here")
