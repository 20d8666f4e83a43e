"""``pool remove --force``: the pool goes, the addresses containers hold stay allocated (as in Calico).

Calico's ``calicoctl pool remove`` only ever deleted the pool: the IPAM blocks
and their allocations stayed, so running containers kept their addresses and
nothing handed those addresses out again. Warren does the same:

1. the pool is disabled first (every allocation compares the pool's revision,
   so no allocation slips in while we work);
2. its empty blocks are deleted with their affinity keys;
3. blocks that hold addresses are **kept** (their ``pool`` field still names
   the removed pool): the addresses stay allocated to their handles, BGP keeps
   announcing the blocks, and the containers keep working. Each such block
   answers releases as usual (:meth:`ipam.Allocator.release` finds a block
   without a pool) and is deleted with its last address;
4. the pool key is deleted.

If the same pool (or any pool covering a kept block) is added again, the
allocator *adopts* the kept blocks instead of making new ones, so an address
a container still holds is never handed to a second container
(:mod:`ipam.allocator`). Without ``--force`` nothing changes: a pool that still
holds addresses is refused (:meth:`ipam.PoolStore.remove`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from datastore import Datastore, Delete, ModRevisionIs, codec, keys

from .blocks import Block
from .errors import PoolInUse, PoolNotFound
from .poolstore import MAX_RETRIES, PoolStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removed:
    cidr: str
    kept_addresses: int  # still allocated (their containers keep them)
    kept_blocks: int


def remove_keeping_held(store: Datastore, cidr: str) -> Removed:
    """Remove pool ``cidr``; blocks holding addresses stay (see the module docstring)."""
    pools = PoolStore(store)
    if store.get(keys.pool(cidr)) is None:
        raise PoolNotFound(f"pool {cidr} does not exist")
    entry = pools.set_disabled(cidr, True)
    for _ in range(MAX_RETRIES):
        blocks = pools.blocks(cidr)
        empty = [(b, rev) for b, rev in blocks if b.used == 0]
        if all(_delete_empty(store, b, rev) for b, rev in empty):
            break
    else:
        raise PoolInUse(f"blocks of pool {cidr} keep changing; try again")
    if not store.delete_if_unchanged(keys.pool(cidr), entry.revision):
        raise PoolInUse(f"pool {cidr} changed while it was being removed; try again")
    kept = []
    for block, revision in pools.blocks(cidr):  # emptied by a release meanwhile: not kept
        if block.used or not _delete_empty(store, block, revision):
            kept.append(block)
    held = sum(b.used for b in kept)
    log.info("removed pool %s; kept %d blocks holding %d addresses", cidr, len(kept), held)
    return Removed(cidr, held, len(kept))


def _delete_empty(store: Datastore, block: Block, revision: int) -> bool:
    ops = [Delete(keys.block(block.cidr))]
    if block.affinity:
        ops.append(Delete(keys.affinity(block.affinity, block.cidr)))
    return store.txn([ModRevisionIs(keys.block(block.cidr), revision)], ops).succeeded


def orphan_blocks(store: Datastore) -> list[Block]:
    """Blocks whose pool is gone (kept by a forced removal for the addresses they hold)."""
    live = {p.cidr for p in PoolStore(store).list()}
    return [b for b in codec.load_all(Block, store.get_prefix(keys.BLOCKS)) if b.pool not in live]

