"""Pools in etcd: list, add (race-free overlap check) and remove.

Adding pools is one transaction guarded by ``UnchangedSince(pools/, rev)``:
if any pool was added or changed after we read the list (and validated
against it), the write fails and we re-validate. Removing a pool first
disables it (every allocation transaction compares the pool's revision, so
no allocation can slip in afterwards), then deletes its blocks and finally
the pool itself. An interrupted removal leaves a disabled pool that the
same command finishes.

Invalid pool records (:mod:`datastore.codec`) are skipped by the listings
and read as absent by :meth:`PoolStore.get` (counted either way), so no
allocation uses one; ``pool add`` of the same CIDR writes a good record over
it, and ``pool remove`` deletes it (with the blocks that name that pool, when
none holds an address or with ``--force``). Invalid block records are
skipped too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from datastore import (Datastore, Delete, ModRevisionIs, Put, UnchangedSince,
                       codec, keys)

from .blocks import Block
from .errors import PoolInUse, PoolNotFound
from .pools import Pool, check_overlap

log = logging.getLogger(__name__)

MAX_RETRIES = 20


@dataclass(frozen=True)
class PoolEntry:
    pool: Pool
    revision: int  # mod_revision of the pool key


class PoolStore:
    def __init__(self, store: Datastore):
        self.store = store

    def entries(self) -> dict[str, PoolEntry]:
        return {e.pool.cidr: e for e in self._read()[0]}

    def list(self, version: int | None = None) -> list[Pool]:
        pools = [e.pool for e in self._read()[0]]
        pools = [p for p in pools if version is None or p.version == version]
        return sorted(pools, key=lambda p: (p.version, p.network))

    def get(self, cidr: str) -> Pool | None:
        """The pool, or None if there is none or its record is invalid (counted)."""
        return codec.load_one(Pool, self.store.get(keys.pool(cidr)))

    def _read(self) -> tuple[list[PoolEntry], int]:
        rng = self.store.get_prefix(keys.POOLS)
        return [PoolEntry(pool, kv.mod_revision) for kv, pool in codec.load_each(Pool, rng)], rng.revision

    def add(self, pools: list[Pool]) -> None:
        """Add all ``pools`` or none of them."""
        for _ in range(MAX_RETRIES):
            existing, revision = self._read()
            accepted: list[Pool] = []
            for pool in pools:
                check_overlap(pool, [e.pool for e in existing] + accepted)
                accepted.append(pool)
            ops = [Put(keys.pool(p.cidr), codec.dumps(p)) for p in pools]
            if self.store.txn([UnchangedSince(keys.POOLS, revision)], ops).succeeded:
                return
        raise PoolInUse("pools are changing too fast to add safely; try again")

    def set_disabled(self, cidr: str, disabled: bool) -> PoolEntry:
        for _ in range(MAX_RETRIES):
            kv = self.store.get(keys.pool(cidr))
            if kv is None:
                raise PoolNotFound(f"pool {cidr} does not exist")
            pool = replace(codec.loads(Pool, kv.value, kv.key), disabled=disabled)
            result = self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                                    [Put(kv.key, codec.dumps(pool))])
            if result.succeeded:
                return PoolEntry(pool, result.revision)
        raise PoolInUse(f"pool {cidr} is changing too fast; try again")

    def blocks(self, cidr: str) -> list[tuple[Block, int]]:
        return [(block, kv.mod_revision) for kv, block in codec.load_each(Block, self.store.get_prefix(keys.BLOCKS))
                if block.pool == cidr]

    def remove(self, cidr: str, force: bool = False) -> int:
        """Remove a pool; returns how many allocated addresses were released."""
        kv = self.store.get(keys.pool(cidr))
        if kv is None:
            raise PoolNotFound(f"pool {cidr} does not exist")
        try:
            was_disabled = codec.loads(Pool, kv.value, kv.key).disabled
        except codec.InvalidRecord:
            return self._remove_invalid(cidr, kv.mod_revision, force)
        if not force:
            self._refuse_if_used(cidr)
        entry = self.set_disabled(cidr, True)
        if not force:
            try:
                self._refuse_if_used(cidr)
            except PoolInUse:
                self.set_disabled(cidr, was_disabled)
                raise
        released = 0
        for _ in range(MAX_RETRIES):
            blocks = self.blocks(cidr)
            if not blocks:
                break
            for block, revision in blocks:
                if self._delete_block(block, revision):
                    released += block.used
        else:
            raise PoolInUse(f"blocks of pool {cidr} keep changing; try again")
        if not self.store.delete_if_unchanged(keys.pool(cidr), entry.revision):
            raise PoolInUse(f"pool {cidr} changed while it was being removed; try again")
        log.info("removed pool %s (%d addresses released)", cidr, released)
        return released

    def _remove_invalid(self, cidr: str, revision: int, force: bool) -> int:
        """An invalid pool record: no allocation can use it, so its blocks go and then the key."""
        if not force:
            self._refuse_if_used(cidr)
        released = 0
        for block, block_revision in self.blocks(cidr):
            if self._delete_block(block, block_revision):
                released += block.used
        if not self.store.delete_if_unchanged(keys.pool(cidr), revision):
            raise PoolInUse(f"pool {cidr} changed while it was being removed; try again")
        log.info("removed the invalid record of pool %s (%d addresses released)", cidr, released)
        return released

    def _refuse_if_used(self, cidr: str) -> None:
        used = sum(b.used for b, _ in self.blocks(cidr))
        if used:
            raise PoolInUse(
                f"pool {cidr} still has {used} allocated address{'es' if used > 1 else ''}; "
                "release them first or use --force")

    def _delete_block(self, block: Block, revision: int) -> bool:
        ops = [Delete(keys.block(block.cidr))]
        if block.affinity:
            ops.append(Delete(keys.affinity(block.affinity, block.cidr)))
        handle_ops = [Delete(keys.handle(a.handle, block.address(o)))
                      for o, a in block.allocations.items()]
        first, rest = (ops + handle_ops, []) if len(ops) + len(handle_ops) <= 128 else (ops, handle_ops)
        if not self.store.txn([ModRevisionIs(keys.block(block.cidr), revision)], first).succeeded:
            return False
        for i in range(0, len(rest), 128):  # huge blocks: the index entries after the block
            self.store.txn([], rest[i:i + 128])
        return True
