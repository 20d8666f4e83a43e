"""Find (and repair) allocations nobody owns any more, and index drift.

* **leaked**: an allocation whose owner says it no longer exists. The caller
  passes the set of addresses its owners still hold (e.g. every Docker
  endpoint's addresses) and which ``purpose`` (or purposes) it speaks for; allocations
  younger than ``grace`` seconds are spared, because Docker asks for an
  address a moment before it creates the endpoint that holds it.
* **stale-index**: a handle key with no allocation behind it.
* **missing-index**: an allocation without its handle key.

``repair`` releases leaks (compare-and-swap, so a concurrent change wins) and
fixes the index.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from datastore import Datastore, Put, codec, keys

from .allocator import Allocator, HandleRef
from .blocks import Block


@dataclass(frozen=True)
class Finding:
    kind: str       # leaked | stale-index | missing-index
    address: str
    handle: str
    block: str


def check(store: Datastore, live: set[str], purpose: str | tuple[str, ...], grace: float = 60.0,
          now: float | None = None) -> list[Finding]:
    now = time.time() if now is None else now
    purposes = (purpose,) if isinstance(purpose, str) else tuple(purpose)
    findings = []
    held: dict[str, tuple[str, str]] = {}
    for block in codec.load_all(Block, store.get_prefix(keys.BLOCKS)):  # a bad one: skipped, counted
        for ordinal, allocation in block.allocations.items():
            address = block.address(ordinal)
            held[address] = (allocation.handle, block.cidr)
            if allocation.attrs.get("purpose") not in purposes or address in live:
                continue
            since = float(allocation.attrs.get("since", 0))
            if now - since >= grace:
                findings.append(Finding("leaked", address, allocation.handle, block.cidr))
    indexed = set()
    for kv in store.get_prefix(keys.HANDLES):
        handle, address = keys.split_handle_key(kv.key)
        indexed.add((handle, address))
        if held.get(address, (None,))[0] != handle:
            findings.append(Finding("stale-index", address, handle, ""))
    for address, (handle, block) in held.items():
        if (handle, address) not in indexed:
            findings.append(Finding("missing-index", address, handle, block))
    return sorted(findings, key=lambda f: (f.kind, f.address))


def repair(store: Datastore, host: str, findings: list[Finding]) -> int:
    allocator = Allocator(store, host)
    fixed = 0
    for f in findings:
        if f.kind == "leaked":
            fixed += allocator.release(f.address, f.handle)
        elif f.kind == "stale-index":
            fixed += store.delete(keys.handle(f.handle, f.address))
        elif f.kind == "missing-index":
            store.txn([], [Put(keys.handle(f.handle, f.address), codec.dumps(HandleRef(f.block)))])
            fixed += 1
    return fixed
