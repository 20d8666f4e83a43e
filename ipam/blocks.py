"""Blocks: the unit of host affinity, and the truth for every address in them.

A block is a ``/block_size`` slice of a pool. Each block is one etcd key
holding:

* ``affinity``    - the host that owns the block (routes it as one prefix), or None
* ``allocations`` - ordinal -> :class:`Allocation` (handle, host, attributes)
* ``unallocated`` - free ordinals in the order they will be handed out

Every address of a block is usable (routed /32s need no network or broadcast
address). New blocks hand out ordinals in ascending order; a released
ordinal goes to the *end* of ``unallocated``, so the least recently freed
address is reused first and a just-deleted container's address does not
reappear at once.

A stored block is checked at every read and write (``validate``): a strict
CIDR inside its pool, a key-safe affinity, and every ordinal of the block
exactly once, either allocated (to a key-safe handle and host, with string
attributes) or unallocated. ``check_key``: ``ipam/blocks/<its cidr>``.

Everything here is pure: block arithmetic and record updates, no I/O.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Iterator

from datastore import fields, keys

from .errors import AddressInUse, PoolExhausted
from .pools import Pool


@dataclass
class Allocation:
    handle: str
    host: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Block:
    cidr: str
    pool: str
    affinity: str | None
    allocations: dict[int, Allocation] = field(default_factory=dict)
    unallocated: list[int] = field(default_factory=list)

    # -- construction and serialisation ------------------------------------

    @classmethod
    def new(cls, cidr: str, pool: str, affinity: str | None) -> "Block":
        size = ipaddress.ip_network(cidr).num_addresses
        return cls(cidr=cidr, pool=pool, affinity=affinity,
                   unallocated=list(range(size)))

    def to_dict(self) -> dict:
        return {"cidr": self.cidr, "pool": self.pool, "affinity": self.affinity,
                "allocations": {str(o): {"handle": a.handle, "host": a.host, "attrs": a.attrs}
                                for o, a in self.allocations.items()},
                "unallocated": self.unallocated}

    @classmethod
    def from_dict(cls, d: dict) -> "Block":
        for name, kind in (("cidr", str), ("pool", str), ("allocations", dict), ("unallocated", list)):
            if name in ("cidr", "pool") and name not in d:
                raise ValueError(f"field {name!r} is missing")
            if name in d and not isinstance(d[name], kind):
                raise ValueError(f"field {name!r} should be {kind.__name__}")
        if not isinstance(d.get("affinity"), (str, type(None))):
            raise ValueError("field 'affinity' should be str or null")
        allocations = {}
        for o, a in d.get("allocations", {}).items():
            if not isinstance(a, dict) or "handle" not in a or "host" not in a:
                raise ValueError(f"allocation {o!r:.20} is not an object with a handle and a host")
            allocations[_ordinal(o)] = Allocation(a["handle"], a["host"], a.get("attrs") or {})
        return cls(cidr=d["cidr"], pool=d["pool"], affinity=d.get("affinity"),
                   allocations=allocations, unallocated=list(d.get("unallocated", [])))

    def validate(self) -> None:
        net = fields.cidr(self.cidr, "cidr")
        if net.with_prefixlen != self.cidr:
            raise ValueError(f"cidr {self.cidr!r} is not written as {net} (canonical)")
        pool = fields.cidr(self.pool, "pool")
        if pool.version != net.version or not net.subnet_of(pool):  # type: ignore[arg-type]
            raise ValueError(f"block {self.cidr} is not inside its pool {self.pool}")
        if net.max_prefixlen - net.prefixlen > 16:
            raise ValueError(f"block {self.cidr} is larger than 65536 addresses")
        if self.affinity is not None:
            fields.name(self.affinity, "affinity")
        size = net.num_addresses
        for ordinal, allocation in self.allocations.items():
            if not 0 <= ordinal < size:
                raise ValueError(f"allocation ordinal {ordinal} is outside block {self.cidr}")
            fields.name(allocation.handle, "handle")
            fields.name(allocation.host, "allocation host")
            if not isinstance(allocation.attrs, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in allocation.attrs.items()):
                raise ValueError(f"attributes of ordinal {ordinal} are not string pairs")
        free = self.unallocated
        if not all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o < size for o in free):
            bad = next(o for o in free if not (isinstance(o, int) and not isinstance(o, bool) and 0 <= o < size))
            raise ValueError(f"unallocated ordinal {bad!r:.20} is outside block {self.cidr}")
        free_set = set(free)
        if len(free_set) != len(free):
            raise ValueError("unallocated lists an ordinal twice")
        if not free_set.isdisjoint(self.allocations):
            raise ValueError(f"ordinal {min(free_set & set(self.allocations))} is both allocated and free")
        if len(free_set) + len(self.allocations) != size:
            raise ValueError(f"{size - len(free_set) - len(self.allocations)} ordinals of block {self.cidr} "
                             "are neither allocated nor free")

    def check_key(self, key: str) -> None:
        fields.key_is(key, keys.block(self.cidr), f"block {self.cidr}")

    def copy(self) -> "Block":
        # Allocation records are never changed in place (only added or removed),
        # so copying the containers is enough - and ~5x cheaper than deepcopy.
        return Block(self.cidr, self.pool, self.affinity, dict(self.allocations),
                     list(self.unallocated))

    # -- arithmetic ----------------------------------------------------------

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def size(self) -> int:
        return self.network.num_addresses

    @property
    def free(self) -> int:
        return len(self.unallocated)

    @property
    def used(self) -> int:
        return len(self.allocations)

    def address(self, ordinal: int) -> str:
        return str(self.network.network_address + ordinal)

    def ordinal(self, address: str) -> int:
        ip = ipaddress.ip_address(address)
        if ip not in self.network:
            raise ValueError(f"{address} is not in block {self.cidr}")
        return int(ip) - int(self.network.network_address)

    # -- updates (mutate self; callers work on a copy) -----------------------

    def allocate(self, handle: str, host: str, attrs: dict[str, str]) -> str:
        if not self.unallocated:
            raise PoolExhausted(f"block {self.cidr} is full")
        ordinal = self.unallocated.pop(0)
        self.allocations[ordinal] = Allocation(handle, host, dict(attrs))
        return self.address(ordinal)

    def allocate_address(self, address: str, handle: str, host: str,
                         attrs: dict[str, str]) -> None:
        ordinal = self.ordinal(address)
        held = self.allocations.get(ordinal)
        if held is not None:
            raise AddressInUse(f"{address} is already in use (handle {held.handle})")
        self.unallocated.remove(ordinal)
        self.allocations[ordinal] = Allocation(handle, host, dict(attrs))

    def release(self, address: str) -> Allocation | None:
        ordinal = self.ordinal(address)
        allocation = self.allocations.pop(ordinal, None)
        if allocation is not None:
            self.unallocated.append(ordinal)
        return allocation

    def holder(self, address: str) -> Allocation | None:
        return self.allocations.get(self.ordinal(address))

    def addresses_of(self, handle: str) -> list[str]:
        return [self.address(o) for o, a in sorted(self.allocations.items())
                if a.handle == handle]


def _ordinal(text: str) -> int:
    if not (text.isascii() and text.isdigit()):  # int() would also take " 1", "+1", "1_0"
        raise ValueError(f"allocation ordinal {text!r:.20} is not a number")
    return int(text)


def block_of(pool: Pool, address: str) -> str:
    """The CIDR of the block of ``pool`` that contains ``address``."""
    net = ipaddress.ip_network(f"{address}/{pool.block_size}", strict=False)
    return str(net)


def block_count(pool: Pool) -> int:
    return 1 << (pool.block_size - pool.network.prefixlen)


def nth_block(pool: Pool, index: int) -> str:
    net = pool.network
    step = 1 << (net.max_prefixlen - pool.block_size)
    return str(ipaddress.ip_network((int(net.network_address) + index * step, pool.block_size)))


def candidate_blocks(pool: Pool, host: str) -> Iterator[str]:
    """Every block of ``pool``, starting at a place seeded by ``host``.

    Processes on one host try the same blocks in the same order (so they
    converge on one new block), while different hosts start in different
    places (so they rarely race for the same one). Huge IPv6 pools are walked
    lazily, never listed.
    """
    count = block_count(pool)
    digest = hashlib.sha256(f"{host}|{pool.cidr}".encode()).digest()
    start = int.from_bytes(digest[:8], "big") % count
    for i in range(count):
        yield nth_block(pool, (start + i) % count)
