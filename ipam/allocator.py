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

**No address is held twice.** Three things could hand out an address that a
running container still uses, and each is closed here:

* *A record names a free address* (an endpoint record leaked while its address
  was released, e.g. by ``ipam release`` or an old ``pool remove --force``).
  Before an address leaves a block the allocator checks it against the
  addresses every valid endpoint record names (:class:`NamedAddresses`, a
  cache of the ``endpoints/`` prefix read at revision R). An address a record
  names is *re-imported* instead: allocated in the same transaction to the
  handle ``endpoint-<id>`` (``purpose=record``), so it stays held until the
  record goes (whoever removes a record releases its addresses by address),
  and the caller gets the next one. The cache is exact without a read per
  allocation: the plugin stores an endpoint record only while IPAM holds its
  address (:meth:`Allocator.proof`, guarded in the record's transaction), so a
  record can name a *free* address only if that address was released after
  the record was written, i.e. the block changed by a release. A block whose
  revision is at most R, or was last written by this allocator on top of such
  a revision, cannot hide one - except, for this allocator's own releases,
  the addresses it released (its *suspects*: the prefix is read again when one
  of them comes up for allocation; released addresses queue at the end of a
  block, so that is rare). Any other block revision (another writer, a new
  block) makes the allocator read the prefix first. So the owned-block hot
  path stays one transaction, also in a ``docker run``/``rm`` loop.
* *Blocks outlive their pool*: ``pool remove --force`` keeps the blocks that
  hold addresses (:mod:`ipam.poolremoval`). Such an *orphan* block still
  answers releases (found by scanning block keys when no pool covers the
  address; deleted with its affinity once empty), and when a pool covering it
  is added again the allocator *adopts* it (a block of the pool's block size
  inside the pool whose own pool is gone is used, and rewritten with the new
  pool's CIDR) - so its held addresses are never handed out again.
* *Blocks of another size*: a pool re-added with a different block size
  cannot tile over a kept block: new blocks overlapping an existing one are
  never claimed, and a specific address inside a kept block is allocated in
  that block.
"""
from __future__ import annotations

import bisect
import hashlib
import ipaddress
import logging
import random
import threading
import time
from dataclasses import dataclass, field

from datastore import (Datastore, Delete, Get, ModRevisionIs, Put, codec, keys)

from .blocks import Block, block_of, candidate_blocks
from .config import IpamConfig, load_config
from .errors import (AddressInUse, AddressNotInPool, Contention, InvalidRequest, IpamError,
                     PoolExhausted, PoolNotFound)
from .pools import Pool
from .poolstore import PoolEntry, PoolStore
from .workloads import Endpoint

log = logging.getLogger(__name__)

# After this many lost CAS races in one call, claim a new block instead of
# fighting over a shared one (spreads a host's concurrent writers over blocks).
CONTENDED = 3


RECORD_PURPOSE = "record"  # purpose of an address re-imported for an endpoint record that names it


@dataclass(frozen=True)
class Assignment:
    address: str
    pool: str
    block: str
    prefixlen: int  # of the pool, for callers that need the subnet
    revision: int = 0  # mod revision of the handle index key written with it (0: not known)


def record_handle(endpoint_id: str) -> str:
    """The handle that holds an address re-imported for endpoint record ``endpoint_id``."""
    try:
        return keys.segment(f"endpoint-{endpoint_id}", "handle")
    except ValueError:  # a record id no handle can carry: a stable digest of it
        return "endpoint-" + hashlib.sha256(endpoint_id.encode()).hexdigest()


class NamedAddresses:
    """The addresses valid endpoint records name (any host), read at one etcd revision.

    Re-read incrementally: a record whose mod revision did not change is not decoded again.
    Invalid records are skipped (as every reader skips them): they name nothing.
    """

    def __init__(self) -> None:
        self.revision = -1   # the store revision of the last read (-1: never read)
        self.owner: dict[str, tuple[str, str]] = {}  # address -> (host, endpoint id)
        self._seen: dict[str, tuple[int, list[str], str, str]] = {}  # key -> (mod rev, addrs, host, id)

    def refresh(self, store: Datastore) -> None:
        listing = store.get_prefix(keys.ENDPOINTS)
        seen: dict[str, tuple[int, list[str], str, str]] = {}
        fresh = []
        for kv in listing:
            old = self._seen.get(kv.key)
            if old is not None and old[0] == kv.mod_revision:
                seen[kv.key] = old
            else:
                fresh.append(kv)
        for kv, record in codec.load_each(Endpoint, fresh):
            seen[kv.key] = (kv.mod_revision, record.addresses, record.host, record.id)
        owner = {}
        for _, addresses, host, endpoint_id in seen.values():
            for address in addresses:
                try:
                    owner[str(ipaddress.ip_address(address))] = (host, endpoint_id)
                except ValueError:
                    continue
        self._seen, self.owner, self.revision = seen, owner, listing.revision


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
        self._named = NamedAddresses()
        # block -> (revision of our own write on a clean base, addresses we released since)
        self._own: dict[str, tuple[int, frozenset[str]]] = {}
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
                block = codec.load_one(Block, kv)  # invalid: skipped (and counted)
                if block is not None and block.affinity == self.host:
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

    # -- the record check -------------------------------------------------------

    def _suspects(self, cidr: str, revision: int) -> frozenset[str] | None:
        """The free addresses of block ``cidr`` at ``revision`` that the cached
        :class:`NamedAddresses` may be wrong about: none if the revision is not newer than the
        cache; the addresses this allocator released since, if the revision is its own write
        on a clean base; None (all of them) otherwise. See the module docstring."""
        if 0 < revision <= self._named.revision:
            return frozenset()
        own = self._own.get(cidr)
        return own[1] if own is not None and own[0] == revision else None

    def _check(self, cidr: str, revision: int) -> "_RecordCheck":
        return _RecordCheck(self, self._suspects(cidr, revision))

    def _take(self, new: Block, handle: str, attrs: dict[str, str],
              owner: "_RecordCheck") -> tuple[str | None, list[tuple[str, str]]]:
        """Allocate the next free address of ``new`` that no record names. Addresses records
        name met on the way are re-imported for those records. Returns the address (None if
        none is left in the block) and the re-imported (address, handle) pairs."""
        extras: list[tuple[str, str]] = []
        while new.unallocated:
            address = new.address(new.unallocated[0])
            named = owner.named(address)
            if named is None:
                new.allocate(handle, self.host, attrs)
                return address, extras
            holder = record_handle(named[1])
            new.allocate_address(address, holder, named[0],
                                 {"purpose": RECORD_PURPOSE, "endpoint": named[1][:64],
                                  "since": str(int(time.time()))})
            extras.append((address, holder))
            log.warning("%s is free in block %s but endpoint %s on host %s names it: "
                        "kept for that record, not handed out", address, new.cidr, named[1][:12], named[0])
        return None, extras

    def _pool_for(self, block: Block, wanted: dict[str, PoolEntry]) -> PoolEntry | None:
        """The wanted pool ``block`` serves: its own, or - for a block whose pool was removed
        (kept by ``pool remove --force`` for the addresses it holds) - a wanted pool of its
        block size that contains it (the block is adopted)."""
        entry = wanted.get(block.pool)
        if entry is not None:
            return entry
        if block.pool in self._pool_entries():
            return None  # another live pool's block
        net = block.network
        for entry in wanted.values():
            pool = entry.pool
            if (pool.version == net.version and net.prefixlen == pool.block_size
                    and net.subnet_of(pool.network)):
                return entry
        return None

    def _allocate_in(self, block: Block, revision: int, pool: PoolEntry, handle: str,
                     attrs: dict[str, str]) -> Assignment | None:
        check = self._check(block.cidr, revision)
        new = block.copy()
        new.pool = pool.pool.cidr  # adopts an orphan block
        address, extras = self._take(new, handle, attrs, check)
        if address is None:
            if extras:  # the block's last free addresses are named: keep them for their records
                self._commit(new, revision, pool, None, None, extras, check.suspects)
            return None
        return self._commit(new, revision, pool, handle, address, extras, check.suspects)

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
            affine = [(e, p) for e in self._affine_blocks(refresh).values() if e.block.free
                      for p in [self._pool_for(e.block, wanted)] if p is not None]
            if len(affine) > 1:
                self.rng.shuffle(affine)
            for entry, owner_pool in affine:
                got = self._allocate_in(entry.block, entry.revision, owner_pool, handle, attrs)
                if got is not None:
                    return got
        claimed = self._claim(pools, handle, attrs)
        if claimed is not None:
            return claimed
        if not self._strict():
            borrowable = []
            for kv, block in codec.load_each(Block, self.store.get_prefix(keys.BLOCKS)):
                owner_pool = self._pool_for(block, wanted) if block.free else None
                if owner_pool is not None:
                    borrowable.append((_BlockEntry(block, kv.mod_revision), owner_pool))
            self.rng.shuffle(borrowable)
            for entry, owner_pool in borrowable:
                got = self._allocate_in(entry.block, entry.revision, owner_pool, handle, attrs)
                if got is not None:
                    return got
        names = ", ".join(wanted)
        raise PoolExhausted(f"no free address left in pool {names}")

    def _claim(self, pools: list[PoolEntry], handle: str, attrs: dict[str, str]) -> Assignment | None:
        """Claim the next free block of the first pool that has one (None: no free block).

        A candidate that overlaps an existing block of another size (kept from a removed
        pool) is never claimed."""
        existing = {keys.cidr_of(kv.key) for kv in
                    self.store.get_prefix(keys.BLOCKS, keys_only=True)}
        for entry in pools:
            odd = _odd_blocks(existing, entry.pool)
            for cidr in candidate_blocks(entry.pool, self.host):
                if cidr in existing or (odd and _overlaps(cidr, odd)):
                    continue
                new = Block.new(cidr, entry.pool.cidr, self.host)
                check = self._check(cidr, 0)
                address, extras = self._take(new, handle, attrs, check)
                if address is not None:
                    return self._commit(new, 0, entry, handle, address, extras, check.suspects)
        return None

    def _assign_address(self, handle: str, address: str, attrs: dict[str, str]) -> Assignment:
        entry = self._pool_of(address)
        if entry is None:
            raise AddressNotInPool(f"{address} is not in any pool; add one with 'warrenctl pool add'")
        if entry.pool.disabled:
            raise PoolExhausted(f"pool {entry.pool.cidr} is disabled")
        cidr, kv = self._find_block(address, entry.pool, creating=True)
        if kv is None:
            new, revision = Block.new(cidr, entry.pool.cidr, self.host), 0
        else:
            new, revision = codec.loads(Block, kv.value, kv.key), kv.mod_revision
            held = new.holder(address)
            if held is not None and held.handle == handle:
                return Assignment(address, entry.pool.cidr, cidr, entry.pool.network.prefixlen)
            if new.pool != entry.pool.cidr and new.pool in self._pool_entries():
                raise AddressInUse(f"{address} lies in block {cidr} of pool {new.pool}")
            new.pool = entry.pool.cidr  # adopts an orphan block
        check = self._check(cidr, revision)
        if new.holder(address) is None:
            named = check.named(address)
            if named is not None:
                raise AddressInUse(f"{address} is in use: endpoint {named[1][:12]} on host {named[0]} "
                                   "still names it (remove that endpoint first)")
        new.allocate_address(address, handle, self.host, attrs)
        return self._commit(new, revision, entry, handle, address, (), check.suspects)

    def _pool_of(self, address: str) -> PoolEntry | None:
        for refresh in (False, True):
            for entry in self._pool_entries(refresh).values():
                if entry.pool.contains(address):
                    return entry
        return None

    def _find_block(self, address: str, pool: Pool | None, creating: bool = False):
        """(CIDR, KV) of the block holding ``address``: the pool's aligned block, else any
        existing block that contains it (kept from a removed pool, possibly of another size).
        KV is None if there is none; then the CIDR is the aligned block (None without a pool).
        With ``creating``, refuse an aligned block that would overlap an existing one."""
        aligned = block_of(pool, address) if pool is not None else None
        if aligned is not None:
            kv = self.store.get(keys.block(aligned))
            if kv is not None:
                return aligned, kv
        ip = ipaddress.ip_address(address)
        clash = None
        for kv in self.store.get_prefix(keys.BLOCKS, keys_only=True):
            cidr = keys.cidr_of(kv.key)
            try:
                net = ipaddress.ip_network(cidr)
            except ValueError:
                continue
            if net.version != ip.version:
                continue
            if ip in net:
                found = self.store.get(kv.key)
                if found is not None:
                    return cidr, found
            elif aligned is not None and net.overlaps(ipaddress.ip_network(aligned)):
                clash = cidr
        if creating and clash is not None:
            raise AddressInUse(f"{address} lies in block {aligned}, which overlaps block {clash} "
                               "kept from a removed pool for the addresses it still holds")
        return aligned, None

    def proof(self, address: str) -> tuple[str, int] | None:
        """(handle index key, its mod revision) of the allocation holding ``address``, None if
        IPAM does not hold it. A write guarded by ``ModRevisionIs(key, revision)`` happens
        only while the address is still held by that allocation (the plugin stores endpoint
        records this way)."""
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            return None
        with self._lock:
            entry = self._pool_of(address)
            _, kv = self._find_block(address, entry.pool if entry else None)
        if kv is None:
            return None
        held = codec.loads(Block, kv.value, kv.key).holder(address)
        if held is None:
            return None
        key = keys.handle(held.handle, address)
        index = self.store.get(key)
        return (key, index.mod_revision) if index is not None else None

    def _commit(self, new: Block, revision: int, pool: PoolEntry, handle: str | None,
                address: str | None, extras: list[tuple[str, str]] = (),
                suspects: frozenset[str] = frozenset()) -> Assignment | None:
        """Write ``new`` (with ``handle`` holding ``address``, unless None, and the re-imported
        ``extras``) if the block and the pool are as read; else refresh and raise _Conflict.
        ``suspects``: what the record check of the base left unchecked (:meth:`_suspects`)."""
        block_key, pool_key = keys.block(new.cidr), keys.pool(pool.pool.cidr)
        success = [Put(block_key, codec.dumps(new))]
        if handle is not None and address is not None:
            success.append(Put(keys.handle(handle, address), codec.dumps(HandleRef(new.cidr))))
        success += [Put(keys.handle(h, a), codec.dumps(HandleRef(new.cidr))) for a, h in extras]
        if revision == 0:  # claiming a new block for this host
            success.append(Put(keys.affinity(self.host, new.cidr), b"{}"))
        result = self.store.txn(
            [ModRevisionIs(block_key, revision), ModRevisionIs(pool_key, pool.revision)],
            success, [Get(block_key), Get(pool_key)])
        if result.succeeded:
            self._remember(new, result.revision)
            taken = {address, *(a for a, _ in extras)}
            self._own[new.cidr] = (result.revision, suspects - taken)  # allocations never add any
            if address is None:
                return None
            return Assignment(address, pool.pool.cidr, new.cidr, pool.pool.network.prefixlen,
                              result.revision)
        block_kv, pool_kv = result.results
        self._learn_block(new.cidr, block_kv)
        pools = self._pool_entries()
        current = codec.load_one(Pool, pool_kv)  # invalid: as absent
        if current is None:
            pools.pop(pool.pool.cidr, None)
        else:
            pools[pool.pool.cidr] = PoolEntry(current, pool_kv.mod_revision)
        raise _Conflict()

    def _remember(self, block: Block, revision: int) -> None:
        if self._affine is None:
            return
        if block.affinity == self.host:
            self._affine[block.cidr] = _BlockEntry(block, revision)
        else:
            self._affine.pop(block.cidr, None)

    def _learn_block(self, cidr: str, kv) -> None:
        block = codec.load_one(Block, kv)  # invalid: as absent (never allocated from)
        if block is None:
            if self._affine is not None:
                self._affine.pop(cidr, None)
        else:
            self._remember(block, kv.mod_revision)

    # -- release ------------------------------------------------------------

    def _release(self, address: str, handle: str | None) -> bool:
        entry = self._pool_of(address)
        cidr, kv = self._find_block(address, entry.pool if entry else None)
        if kv is None:
            return False
        block = codec.loads(Block, kv.value, kv.key)
        held = block.holder(address)
        if held is None or (handle is not None and held.handle != handle):
            return False
        base = self._suspects(cidr, kv.mod_revision)
        block.release(address)
        compare = [ModRevisionIs(kv.key, kv.mod_revision)]
        ops = [Delete(keys.handle(held.handle, address))]
        if block.used == 0 and self.store.get(keys.pool(block.pool)) is None:
            # the last address of a block kept from a removed pool: the block goes too
            compare.append(ModRevisionIs(keys.pool(block.pool), 0))
            ops += [Delete(kv.key)] + ([Delete(keys.affinity(block.affinity, cidr))] if block.affinity else [])
            gone = True
        else:
            ops.append(Put(kv.key, codec.dumps(block)))
            gone = False
        result = self.store.txn(compare, ops, [Get(kv.key)])
        if not result.succeeded:
            self._learn_block(cidr, result.results[0])
            raise _Conflict()
        if gone:
            self._learn_block(cidr, None)
            log.info("deleted block %s: its pool %s is gone and it holds no address any more",
                     cidr, block.pool)
        else:
            self._remember(block, result.revision)
            if base is not None:  # our own release: only this address may be named unseen
                self._own[cidr] = (result.revision, base | {address})
        return True


def _odd_blocks(existing: set[str], pool: Pool) -> tuple[list[int], list[int]] | None:
    """Sorted (starts, ends) of existing blocks of another size that overlap ``pool``."""
    size = str(pool.block_size)
    net = pool.network
    spans = []
    for cidr in existing:
        if cidr.rpartition("/")[2] == size:
            continue
        try:
            block = ipaddress.ip_network(cidr)
        except ValueError:
            continue
        if block.version == net.version and block.overlaps(net):
            spans.append((int(block.network_address), int(block.broadcast_address)))
    if not spans:
        return None
    spans.sort()
    return [s for s, _ in spans], [e for _, e in spans]


def _overlaps(cidr: str, odd: tuple[list[int], list[int]]) -> bool:
    net = ipaddress.ip_network(cidr)
    start, end = int(net.network_address), int(net.broadcast_address)
    starts, ends = odd
    i = bisect.bisect_right(starts, end) - 1
    # blocks never overlap each other, so the last one starting before our end decides
    return i >= 0 and ends[i] >= start


class _RecordCheck:
    """Which free addresses of one block endpoint records name, exact for the block's state:
    the cached :class:`NamedAddresses` is read again first if the block's revision is
    unknown (``suspects`` None), or when an address it may be wrong about is met."""

    def __init__(self, allocator: Allocator, suspects: frozenset[str] | None):
        self.allocator = allocator
        if suspects is None:
            allocator._named.refresh(allocator.store)
            suspects = frozenset()
        self.suspects = suspects

    def named(self, address: str) -> tuple[str, str] | None:
        """(host, endpoint id) of the record naming ``address``, None if none does."""
        if address in self.suspects:
            self.allocator._named.refresh(self.allocator.store)
            self.suspects = frozenset()
        return self.allocator._named.owner.get(address)


@dataclass
class HandleRef:
    """Value of a handle index key: which block holds the address."""
    block: str
