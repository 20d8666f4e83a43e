"""Invariant checks over the whole IPAM keyspace, used by several tests."""
from __future__ import annotations

from datastore import Datastore, codec, keys
from ipam import Block


def check_consistency(store: Datastore) -> dict[str, str]:
    """Assert that blocks, affinity and handle indexes agree; return address -> handle."""
    blocks = [codec.loads(Block, kv.value) for kv in store.get_prefix(keys.BLOCKS)]
    held: dict[str, str] = {}
    for block in blocks:
        assert sorted(block.unallocated + list(block.allocations)) == list(range(block.size)), \
            f"block {block.cidr}: free and allocated ordinals must partition the block"
        assert len(set(block.unallocated)) == len(block.unallocated)
        for ordinal, allocation in block.allocations.items():
            address = block.address(ordinal)
            assert address not in held, f"{address} held twice"
            held[address] = allocation.handle
    index = {}
    for kv in store.get_prefix(keys.HANDLES):
        handle, address = keys.split_handle_key(kv.key)
        index[address] = handle
    assert index == held, "handle index must match block allocations exactly"
    affinities = {keys.split_affinity_key(kv.key) for kv in store.get_prefix(keys.AFFINITY)}
    owned = {(b.affinity, b.cidr) for b in blocks if b.affinity}
    assert affinities == owned, "affinity index must match block owners exactly"
    return held
