"""Kernel object names of the profiles layer: iptables chains and ipsets.

Every chain is ``WARREN-*`` (at most 28 characters, iptables' limit) and
every set ``warren-*`` (at most 31, ipset's limit). Names built from a
profile or tag are a fixed prefix, the first characters of the name (for
people reading ``iptables-save``) and 10 hex digits of its SHA-256 (for
uniqueness), so they are short and stable whatever the name's length:

    profile "web-frontend", inbound   -> WARREN-PI-web-fro-<10 hex>     (chain)
    tag "web-frontend", IPv4          -> warren-v4-web-fronte-<10 hex>  (set)

Every pool of a family is in ``warren-pools-v4`` / ``warren-pools-v6``
(``hash:net``; what ``--internal`` endpoints are confined to). The control
plane (etcd members, every node's underlay addresses, this host's own
addresses: off limits to workloads, see :mod:`profiles.controlplane`) is
``warren-control-v4`` / ``warren-control-v6`` (``hash:ip``); the ports the
nodes publish for workloads (``docker run -p``), which workloads may reach
there like anyone, are ``warren-published-v4`` / ``-v6`` (``hash:ip,port``).

A profile's outbound allow rules that name a destination CIDR are also
compiled into ``WARREN-PH-<profile>`` (the "opening" rules that let a
workload reach this host or the control plane, whatever their order).

Per-endpoint chains are named after the endpoint's host-side interface
(``wrn`` + 11 characters of the endpoint id, at most 15 characters by the
kernel's IFNAMSIZ), which is already short, stable and unique on a host:
``WARREN-FW-<iface>`` (from the workload) and ``WARREN-TW-<iface>`` (to it).
"""
from __future__ import annotations

import hashlib
import re

MAX_CHAIN = 28
MAX_SET = 31
HASH_LEN = 10

PROFILE_IN = "WARREN-PI-"    # a profile's inbound rules
PROFILE_OUT = "WARREN-PO-"   # a profile's outbound rules
FROM_ENDPOINT = "WARREN-FW-"  # traffic from one workload interface
TO_ENDPOINT = "WARREN-TW-"    # traffic to one workload interface
TAG_SET = {4: "warren-v4-", 6: "warren-v6-"}
TMP_SET = {4: "warren-v4-tmp", 6: "warren-v6-tmp"}  # swap partner while a set is refilled
POOLS_SET = {4: "warren-pools-v4", 6: "warren-pools-v6"}  # every pool (hash:net): --internal's bounds
CONTROL_SET = {4: "warren-control-v4", 6: "warren-control-v6"}  # the control plane (hash:ip)
PUBLISHED_SET = {4: "warren-published-v4", 6: "warren-published-v6"}  # nodes' published ports (hash:ip,port)
PROFILE_OPEN = "WARREN-PH-"  # a profile's opening rules (outbound allows naming a CIDR)

FROM_BRANCH = "WARREN-FD-"   # a branch of the from-workload dispatch tree
TO_BRANCH = "WARREN-TD-"     # ... of the to-workload one

# Prefixes of the chains that come and go with profiles and endpoints (stale ones are removed).
DYNAMIC_CHAIN_PREFIXES = (PROFILE_IN, PROFILE_OUT, PROFILE_OPEN, FROM_ENDPOINT, TO_ENDPOINT,
                          FROM_BRANCH, TO_BRANCH)
# Chains earlier versions made and nothing uses any more: deleted like stale dynamic chains.
RETIRED_CHAINS = frozenset({"WARREN-ALLOW-HOST"})

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:HASH_LEN]


def _hashed(prefix: str, name: str, limit: int) -> str:
    room = limit - len(prefix) - HASH_LEN - 1
    readable = _UNSAFE.sub("_", name)[:room]
    return f"{prefix}{readable}-{_digest(name)}"


def profile_chain(profile: str, direction: str) -> str:
    """The chain holding ``profile``'s ``inbound`` or ``outbound`` rules (or ``open``: its opening rules)."""
    prefix = {"inbound": PROFILE_IN, "outbound": PROFILE_OUT, "open": PROFILE_OPEN}[direction]
    return _hashed(prefix, profile, MAX_CHAIN)


def tag_set(tag: str, version: int) -> str:
    """The ipset of every address (on any host) of endpoints whose profiles carry ``tag``."""
    return _hashed(TAG_SET[version], tag, MAX_SET)


def check_iface(iface: str) -> str:
    if not isinstance(iface, str) or not _IFACE.match(iface):
        raise ValueError(f"invalid interface name {iface!r}: use 1-15 letters, digits or . _ -")
    return iface


def from_endpoint_chain(iface: str) -> str:
    return FROM_ENDPOINT + check_iface(iface)


def to_endpoint_chain(iface: str) -> str:
    return TO_ENDPOINT + check_iface(iface)


def dispatch_chain(outbound: bool, key: str) -> str:
    """The dispatch branch for interfaces whose name goes on with ``key`` after the prefix."""
    if not _IFACE.match(key):
        raise ValueError(f"invalid interface name character {key!r}")
    return (FROM_BRANCH if outbound else TO_BRANCH) + key


def is_dynamic_chain(chain: str) -> bool:
    return chain.startswith(DYNAMIC_CHAIN_PREFIXES) or chain in RETIRED_CHAINS


def is_tag_set(name: str, version: int) -> bool:
    return name.startswith(TAG_SET[version]) and name != TMP_SET[version]
