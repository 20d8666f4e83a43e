"""What to announce and what to install: pure functions of etcd and BGP state.

* **Local routes** come from IPAM: every block affine to this node (one route
  per block, aggregated) plus a /32 (/128) for each address this node
  borrowed from another node's block - longest prefix wins, so the borrowed
  address still reaches this node.
* **Learned routes** come from ExaBGP's JSON events, kept per peer; the FIB
  holds one route per prefix (the lowest peer address wins a tie).
* **Graceful restart**: when a peer's session drops without a NOTIFICATION
  (its speaker was killed or restarted) its routes are kept, marked stale,
  until it re-announces and sends End-of-RIB (then the rest are swept) or the
  stale timer runs out. A hold-timer expiry or a Cease (the peer stopped on
  purpose, or vanished) removes them at once.
* **Commands** to ExaBGP: one ``announce attributes ... nlri P1 P2 ...`` per
  chunk of :data:`CHUNK` prefixes of one family, not one ``announce route``
  per prefix. ExaBGP still keeps (and withdraws) every prefix on its own in
  its RIB; the batch only saves it parsing and acking one command per
  prefix, which is most of what it spends on a burst (0.6-0.7 s for 1000
  ``announce route`` here). A command may not mix families (ExaBGP takes the
  family from the last prefix), so v4 and v6 go in separate commands.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ipam import Block


def local_routes(blocks: list[Block], node: str) -> set[str]:
    routes = set()
    for block in blocks:
        if block.affinity == node:
            routes.add(block.cidr)
            continue
        for ordinal, allocation in block.allocations.items():
            if allocation.host == node:
                address = ipaddress.ip_address(block.address(ordinal))
                routes.add(f"{address}/{address.max_prefixlen}")
    return routes


def announce(prefix: str, ipv6_next_hop: str | None) -> str:
    """The ExaBGP command announcing ``prefix`` from this node."""
    if ipaddress.ip_network(prefix).version == 4:
        return f"announce route {prefix} next-hop self"
    if not ipv6_next_hop:
        raise ValueError(f"{prefix}: this node has no IPv6 underlay address to announce it with")
    return f"announce route {prefix} next-hop {ipv6_next_hop}"


def withdraw(prefix: str) -> str:
    return f"withdraw route {prefix}"


CHUNK = 50  # prefixes per command: ExaBGP works 50 steps (one per prefix) per reactor loop


def _by_family(prefixes) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {4: [], 6: []}
    for prefix in sorted(prefixes, key=lambda p: (ipaddress.ip_network(p).version, _prefix_key(p))):
        out[ipaddress.ip_network(prefix).version].append(prefix)
    return out


def _chunks(verb: str, prefixes: list[str], chunk: int) -> list[str]:
    return [f"{verb} nlri {' '.join(prefixes[i:i + chunk])}" for i in range(0, len(prefixes), chunk)]


def announce_commands(prefixes, ipv6_next_hop: str | None, peer: str | None = None,
                      chunk: int = CHUNK) -> tuple[list[str], list[str]]:
    """(commands announcing ``prefixes`` from this node - to ``peer`` only if given -,
    the IPv6 prefixes that cannot be announced for want of an IPv6 next hop)."""
    families = _by_family(prefixes)
    scope = f"neighbor {peer} " if peer else ""
    commands = _chunks(f"{scope}announce attributes next-hop self", families[4], chunk)
    if ipv6_next_hop:
        commands += _chunks(f"{scope}announce attributes next-hop {ipv6_next_hop}", families[6], chunk)
        return commands, []
    return commands, families[6]


def withdraw_commands(prefixes, chunk: int = CHUNK) -> list[str]:
    """Commands withdrawing ``prefixes`` (no next hop needed to withdraw)."""
    families = _by_family(prefixes)
    return _chunks("withdraw attributes", families[4], chunk) + \
        _chunks("withdraw attributes", families[6], chunk)


@dataclass
class Event:
    kind: str                     # up | down | update | eor | other
    peer: str = ""
    reason: str = ""
    announced: dict[str, str] = field(default_factory=dict)   # prefix -> next hop
    withdrawn: list[str] = field(default_factory=list)


def parse_event(data: dict) -> Event:
    neighbor = data.get("neighbor") or {}
    peer = (neighbor.get("address") or {}).get("peer", "")
    kind = data.get("type")
    if kind == "state":
        state = neighbor.get("state")
        if state in ("up", "down"):
            return Event(state, peer, reason=str(neighbor.get("reason", "")))
        return Event("other", peer)
    if kind != "update":
        return Event("other", peer)
    message = neighbor.get("message") or {}
    if "eor" in message:
        return Event("eor", peer)
    update = message.get("update") or {}
    event = Event("update", peer)
    for family in (update.get("announce") or {}).values():
        for next_hop, nlris in family.items():
            for item in nlris:
                event.announced[item["nlri"]] = next_hop
    for nlris in (update.get("withdraw") or {}).values():
        event.withdrawn += [item["nlri"] for item in nlris]
    return event


def parse_adj_rib_in(lines: list[str]) -> dict[str, dict[str, str]]:
    """``show adj-rib in`` text (5.0 and 4.2 forms) -> peer -> prefix -> next hop."""
    out: dict[str, dict[str, str]] = {}
    for line in lines:
        words = line.split()
        if words[:1] == ["neighbor"]:
            words = words[1:]
        if len(words) >= 6 and words[4] == "next-hop":
            out.setdefault(words[0], {})[words[3]] = words[5]
    return out


def keeps_routes(reason: str) -> bool:
    """Whether a session that went down with ``reason`` is a graceful restart."""
    reason = reason.lower()
    return not any(word in reason for word in ("notification", "hold", "cease"))


@dataclass
class Rib:
    """Routes learned per peer, with stale marks for graceful restart."""
    routes: dict[str, dict[str, str]] = field(default_factory=dict)   # peer -> prefix -> nh
    stale: dict[str, dict[str, float]] = field(default_factory=dict)  # peer -> prefix -> deadline

    def fib(self) -> dict[str, str]:
        """prefix -> next hop, the lowest peer address winning a tie."""
        out: dict[str, str] = {}
        for peer in sorted(self.routes, key=_address_key, reverse=True):
            out.update(self.routes[peer])
        return out

    def update(self, peer: str, announced: dict[str, str], withdrawn: list[str]) -> None:
        routes = self.routes.setdefault(peer, {})
        routes.update(announced)
        for prefix in withdrawn:
            routes.pop(prefix, None)
        stale = self.stale.get(peer, {})
        for prefix in list(announced) + withdrawn:
            stale.pop(prefix, None)

    def peer_down(self, peer: str, graceful: bool, deadline: float) -> None:
        if graceful:
            self.stale[peer] = {p: deadline for p in self.routes.get(peer, {})}
        else:
            self.routes.pop(peer, None)
            self.stale.pop(peer, None)

    def end_of_rib(self, peer: str) -> None:
        for prefix in self.stale.pop(peer, {}):
            self.routes.get(peer, {}).pop(prefix, None)

    def expire(self, now: float) -> int:
        """Drop the stale routes whose deadline passed; returns how many."""
        expired = 0
        for peer, prefixes in list(self.stale.items()):
            for prefix, deadline in list(prefixes.items()):
                if deadline <= now:
                    del prefixes[prefix]
                    self.routes.get(peer, {}).pop(prefix, None)
                    expired += 1
            if not prefixes:
                del self.stale[peer]
        return expired


def _prefix_key(text: str) -> tuple[int, int]:
    net = ipaddress.ip_network(text)
    return int(net.network_address), net.prefixlen


def _address_key(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return address.version, int(address)


def diff(current: dict[str, str], wanted: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(routes to add or change, prefixes to remove)."""
    changes = {p: nh for p, nh in wanted.items() if current.get(p) != nh}
    removed = [p for p in current if p not in wanted]
    return changes, removed
