"""Race-free address allocation with host-affine blocks (Calico's model).

``assign`` picks an address in this order:

1. a block this host owns (its *affine* blocks) that has a free address;
2. a new block: the first unclaimed block of the pool in a host-seeded order,
   claimed with create-if-absent - two hosts can never own one block;
3. unless strict affinity is configured, a free address in another host's
   block ("borrowing"; BGP then carries a /32 for it).

Every write is one etcd transaction that compares the block's and the pool's
mod_revision, writes the block and the handle index together, and on
failure reads both back in the same round trip. A caller that loses
``CONTENDED`` races in a row claims a block of its own instead, which spreads
one host's concurrent writers over several blocks. The allocator caches its
affine blocks and the pools with their revisions, so an allocation in an
owned block costs exactly one transaction; a conflict (another writer got
there first) refreshes the cache from the failure branch and retries, with
a little jitter after repeated losses, up to ``max_retries`` times.

Addresses are held by a *handle* (the caller's id, e.g. a Docker endpoint
id) and carry attributes (``host``, ``purpose``...). Release by address or by
handle is idempotent.
"""
from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from dataclasses import dataclass, field

from datastore import (Datastore, Delete, Get, ModRevisionIs, Put, codec, keys)

from .blocks import Block, block_of, candidate_blocks
from .config import IpamConfig, load_config
from .errors import (AddressNotInPool, Contention, InvalidRequest, IpamError,
                     PoolExhausted, PoolNotFound)
from .pools import Pool
from .poolstore import PoolEntry, PoolStore

log = logging.getLogger(__name__)

# After this many lost CAS races in one call, claim a new block instead of
# fighting over a shared one (spreads a host's concurrent writers over blocks).
CONTENDED = 3


@dataclass(frozen=True)
class Assignment:
    address: str
    pool: str
    block: str
    prefixlen: int  # of the pool, for callers that need the subnet


@dataclass
class _BlockEntry:
    block: Block
    revision: int


class _Conflict(Exception):
    """A compare-and-swap lost; caches were refreshed, try again."""


@dataclass
class Allocator:
    store: Datastore
    host: str
    max_retries: int = 100
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        keys.segment(self.host, "host name")
        self.pool_store = PoolStore(self.store)
        self._pools: dict[str, PoolEntry] | None = None
        self._affine: dict[str, _BlockEntry] | None = None
        self._config: IpamConfig | None = None
        self._lock = threading.RLock()  # the caches are shared by a process's threads

    # -- public API ---------------------------------------------------------

    def assign(self, handle: str, *, pool: str | None = None,
               address: str | None = None, version: int = 4,
               attrs: dict[str, str] | None = None) -> Assignment:
        """Give ``handle`` one address: a specific one, or any from ``pool``
        (or from any enabled pool of ``version``)."""
        keys.segment(handle, "handle")
        attrs = dict(attrs or {})
        if address is not None:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                raise InvalidRequest(f"{address!r} is not an IP address") from None
            return self._retrying(lambda n: self._assign_address(handle, address, attrs))
        if version not in (4, 6):
            raise InvalidRequest(f"IP version must be 4 or 6, not {version!r}")
        return self._retrying(lambda n: self._assign_auto(handle, pool, version, attrs, n))

    def release(self, address: str, handle: str | None = None) -> bool:
        """Free ``address`` (only if ``handle`` holds it, when given).
        Returns False if it was not allocated. Idempotent."""
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise InvalidRequest(f"{address!r} is not an IP address") from None
        return self._retrying(lambda n: self._release(address, handle))

    def release_handle(self, handle: str) -> list[str]:
        """Free every address ``handle`` holds; returns them. Idempotent."""
        released = []
        for kv in self.store.get_prefix(keys.handle_prefix(handle)):
            _, address = keys.split_handle_key(kv.key)
            if self.release(address, handle):
                released.append(address)
            else:  # an index entry with no allocation behind it
                self.store.delete_if_unchanged(kv.key, kv.mod_revision)
        return released

    def addresses(self, handle: str) -> list[str]:
        return [keys.split_handle_key(kv.key)[1]
                for kv in self.store.get_prefix(keys.handle_prefix(handle))]

    # -- retry loop ---------------------------------------------------------

    def _retrying(self, attempt):
        with self._lock:
            return self._retry_loop(attempt)

    def _retry_loop(self, attempt):
        for n in range(self.max_retries):
            try:
                return attempt(n)
            except _Conflict:
                # The failed transaction already returned the current block, so an
                # immediate retry has the best odds; sleeping would only let the state
                # go stale again (losers starved that way). Jitter only breaks lockstep
                # after a run of losses.
                if n >= 5:
                    time.sleep(self.rng.uniform(0, 0.001))
            except IpamError:
                raise
            except Exception:
                self._pools = self._affine = None  # unknown state: re-read next time
                raise
        raise Contention(
            f"could not update IPAM after {self.max_retries} attempts: too many "
            "concurrent allocations in the same block; try again")

    # -- caches -------------------------------------------------------------

    def _pool_entries(self, refresh: bool = False) -> dict[str, PoolEntry]:
        if self._pools is None or refresh:
            self._pools = self.pool_store.entries()
        return self._pools

    def _affine_blocks(self, refresh: bool = False) -> dict[str, _BlockEntry]:
        if self._affine is None or refresh:
            names = [keys.block(keys.cidr_of(kv.key)) for kv in
                     self.store.get_prefix(keys.affinity_prefix(self.host), keys_only=True)]
            affine = {}
            for kv in self.store.get_many(names).values():
                block = codec.loads(Block, kv.value)
                if block.affinity == self.host:
                    affine[block.cidr] = _BlockEntry(block, kv.mod_revision)
            self._affine = affine
        return self._affine

    def _strict(self) -> bool:
        if self._config is None:
            self._config = load_config(self.store)
        return self._config.strict_affinity

    def _candidates(self, pool: str | None, version: int) -> list[PoolEntry]:
        for refresh in (False, True):
            entries = self._pool_entries(refresh)
            if pool is not None:
                entry = entries.get(pool)
                if entry is None:
                    continue
                if entry.pool.disabled:
                    raise PoolExhausted(f"pool {pool} is disabled")
                return [entry]
            found = [e for e in entries.values() if e.pool.version == version and not e.pool.disabled]
            if found:
                return sorted(found, key=lambda e: e.pool.network)
        if pool is not None:
            raise PoolNotFound(f"pool {pool} does not exist")
        raise PoolNotFound(f"there is no enabled IPv{version} pool; add one with 'warrenctl pool add'")

    # -- assignment ---------------------------------------------------------

    def _assign_auto(self, handle: str, pool: str | None, version: int,
                     attrs: dict[str, str], attempt: int = 0) -> Assignment:
        pools = self._candidates(pool, version)
        wanted = {e.pool.cidr: e for e in pools}
        if attempt >= CONTENDED:  # several writers of this host fight over one block
            claimed = self._claim(pools, handle, attrs)
            if claimed is not None:
                return claimed
        for refresh in (False, True):
            affine = [e for e in self._affine_blocks(refresh).values()
                      if e.block.pool in wanted and e.block.free]
            if affine:
                entry = self.rng.choice(affine) if len(affine) > 1 else affine[0]
                new = entry.block.copy()
                address = new.allocate(handle, self.host, attrs)
                return self._commit(new, entry.revision, wanted[new.pool], handle, address)
        claimed = self._claim(pools, handle, attrs)
        if claimed is not None:
            return claimed
        if not self._strict():
            borrowable = []
            for kv in self.store.get_prefix(keys.BLOCKS):
                block = codec.loads(Block, kv.value)
                if block.pool in wanted and block.free:
                    borrowable.append(_BlockEntry(block, kv.mod_revision))
            if borrowable:
                entry = self.rng.choice(borrowable)
                new = entry.block.copy()
                address = new.allocate(handle, self.host, attrs)
                return self._commit(new, entry.revision, wanted[new.pool], handle, address)
        names = ", ".join(wanted)
        raise PoolExhausted(f"no free address left in pool {names}")

    def _claim(self, pools: list[PoolEntry], handle: str, attrs: dict[str, str]) -> Assignment | None:
        """Claim the next free block of the first pool that has one (None: no free block)."""
        existing = {keys.cidr_of(kv.key) for kv in
                    self.store.get_prefix(keys.BLOCKS, keys_only=True)}
        for entry in pools:
            for cidr in candidate_blocks(entry.pool, self.host):
                if cidr not in existing:
                    new = Block.new(cidr, entry.pool.cidr, self.host)
                    address = new.allocate(handle, self.host, attrs)
                    return self._commit(new, 0, entry, handle, address)
        return None

    def _assign_address(self, handle: str, address: str, attrs: dict[str, str]) -> Assignment:
        entry = self._pool_of(address)
        if entry is None:
            raise AddressNotInPool(f"{address} is not in any pool; add one with 'warrenctl pool add'")
        if entry.pool.disabled:
            raise PoolExhausted(f"pool {entry.pool.cidr} is disabled")
        cidr = block_of(entry.pool, address)
        kv = self.store.get(keys.block(cidr))
        if kv is None:
            new, revision = Block.new(cidr, entry.pool.cidr, self.host), 0
        else:
            new, revision = codec.loads(Block, kv.value), kv.mod_revision
            held = new.holder(address)
            if held is not None and held.handle == handle:
                return Assignment(address, entry.pool.cidr, cidr, entry.pool.network.prefixlen)
        new.allocate_address(address, handle, self.host, attrs)
        return self._commit(new, revision, entry, handle, address)

    def _pool_of(self, address: str) -> PoolEntry | None:
        for refresh in (False, True):
            for entry in self._pool_entries(refresh).values():
                if entry.pool.contains(address):
                    return entry
        return None

    def _commit(self, new: Block, revision: int, pool: PoolEntry, handle: str,
                address: str) -> Assignment:
        block_key, pool_key = keys.block(new.cidr), keys.pool(pool.pool.cidr)
        success = [Put(block_key, codec.dumps(new)),
                   Put(keys.handle(handle, address), codec.dumps(HandleRef(new.cidr)))]
        if revision == 0:  # claiming a new block for this host
            success.append(Put(keys.affinity(self.host, new.cidr), b"{}"))
        result = self.store.txn(
            [ModRevisionIs(block_key, revision), ModRevisionIs(pool_key, pool.revision)],
            success, [Get(block_key), Get(pool_key)])
        if result.succeeded:
            self._remember(new, result.revision)
            return Assignment(address, pool.pool.cidr, new.cidr, pool.pool.network.prefixlen)
        block_kv, pool_kv = result.results
        self._learn_block(new.cidr, block_kv)
        pools = self._pool_entries()
        if pool_kv is None:
            pools.pop(pool.pool.cidr, None)
        else:
            pools[pool.pool.cidr] = PoolEntry(codec.loads(Pool, pool_kv.value), pool_kv.mod_revision)
        raise _Conflict()

    def _remember(self, block: Block, revision: int) -> None:
        if self._affine is None:
            return
        if block.affinity == self.host:
            self._affine[block.cidr] = _BlockEntry(block, revision)
        else:
            self._affine.pop(block.cidr, None)

    def _learn_block(self, cidr: str, kv) -> None:
        if kv is None:
            if self._affine is not None:
                self._affine.pop(cidr, None)
        else:
            self._remember(codec.loads(Block, kv.value), kv.mod_revision)

    # -- release ------------------------------------------------------------

    def _release(self, address: str, handle: str | None) -> bool:
        entry = self._pool_of(address)
        if entry is None:
            return False
        cidr = block_of(entry.pool, address)
        kv = self.store.get(keys.block(cidr))
        if kv is None:
            return False
        block = codec.loads(Block, kv.value)
        held = block.holder(address)
        if held is None or (handle is not None and held.handle != handle):
            return False
        block.release(address)
        result = self.store.txn(
            [ModRevisionIs(kv.key, kv.mod_revision)],
            [Put(kv.key, codec.dumps(block)), Delete(keys.handle(held.handle, address))],
            [Get(kv.key)])
        if not result.succeeded:
            self._learn_block(cidr, result.results[0])
            raise _Conflict()
        self._remember(block, result.revision)
        return True


@dataclass
class HandleRef:
    """Value of a handle index key: which block holds the address."""
    block: str
