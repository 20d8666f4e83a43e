"""No address is held twice (issue 12 item 6), against a real etcd.

* ``pool remove --force`` keeps the blocks that hold addresses; re-adding the pool (same or
  another block size) never hands those addresses out again; a kept block answers releases
  and goes with its last address;
* a free address that an endpoint record still names is re-imported for that record, never
  handed out, and this costs the owned-block hot path nothing.
"""
from __future__ import annotations

import ipaddress

import pytest

from datastore import codec, keys
from ipam import AddressInUse, Allocator, Block, PoolStore, make_pool
from ipam.allocator import RECORD_PURPOSE, record_handle
from ipam.inventory import list_blocks
from ipam.poolremoval import orphan_blocks, remove_keeping_held
from ipam.workloads import Endpoint

from .helpers import check_consistency

POOL = "10.20.10.0/24"


@pytest.fixture
def pools(store):
    ps = PoolStore(store)
    ps.add([make_pool(POOL, block_size=28)])
    return ps


def holder(store, address):
    for block in codec.load_all(Block, store.get_prefix(keys.BLOCKS)):
        if ipaddress.ip_address(address) in block.network:
            return block.holder(address)
    return None


def record(store, endpoint_id, address, host="host9"):
    endpoint = Endpoint(id=endpoint_id, network="n" * 64, host=host, ipv4=[address])
    store.put(keys.endpoint(host, endpoint_id), codec.dumps(endpoint))


# -- pool remove --force ------------------------------------------------------------

def test_forced_removal_keeps_held_addresses_and_re_adding_never_hands_them_out(store, pools):
    a = Allocator(store, "host1")
    held = [a.assign(f"old{i}", pool=POOL).address for i in range(20)]  # two /28 blocks
    a.release(held.pop(), None)
    Allocator(store, "host1").assign("spare", pool=POOL)  # stale handles, of no container
    removed = remove_keeping_held(store, POOL)
    assert removed.kept_addresses == 20 and removed.kept_blocks == 2
    assert PoolStore(store).get(POOL) is None
    assert {b.pool for b in orphan_blocks(store)} == {POOL}
    for address in held:
        assert holder(store, address) is not None

    PoolStore(store).add([make_pool(POOL, block_size=28)])
    b = Allocator(store, "host1")  # a fresh process after the re-add
    new = [b.assign(f"new{i}", pool=POOL).address for i in range(60)]
    everything = held + new
    assert len(set(everything)) == len(everything)
    assert orphan_blocks(store) == []  # the kept blocks were adopted by the re-added pool
    assert PoolStore(store).blocks(POOL) and all(
        blk.pool == POOL for blk in codec.load_all(Block, store.get_prefix(keys.BLOCKS)))
    with pytest.raises(AddressInUse):
        b.assign("pinned", address=held[0])
    check_consistency(store)


def test_re_adding_with_another_block_size_never_overlaps_a_kept_block(store, pools):
    a = Allocator(store, "host1")
    held = [a.assign(f"old{i}", pool=POOL).address for i in range(3)]
    remove_keeping_held(store, POOL)
    PoolStore(store).add([make_pool(POOL, block_size=26)])
    b = Allocator(store, "host1")
    kept = ipaddress.ip_network(f"{held[0]}/28", strict=False)
    free_in_kept = str(next(ip for ip in kept if str(ip) not in held))
    got = b.assign("pinned", address=free_in_kept)  # a specific address in the kept block: there
    assert got.block == str(kept)
    with pytest.raises(AddressInUse):
        b.assign("again", address=held[1])
    new = [b.assign(f"new{i}", pool=POOL).address for i in range(200)]
    assert not set(new) & set(held + [free_in_kept]) and len(set(new)) == 200
    blocks = [blk.network for blk in codec.load_all(Block, store.get_prefix(keys.BLOCKS))]
    assert kept in blocks
    for i, one in enumerate(blocks):
        for other in blocks[i + 1:]:
            assert not one.overlaps(other), f"{one} overlaps {other}"
    check_consistency(store)


def test_a_kept_block_answers_releases_and_goes_with_its_last_address(store, pools):
    a = Allocator(store, "host1")
    one, two = a.assign("h1", pool=POOL).address, a.assign("h2", pool=POOL).address
    remove_keeping_held(store, POOL)
    other = Allocator(store, "host2")  # any process, by address (and handle)
    assert other.release(one) is True and other.release(one) is False
    assert len(list_blocks(store)) == 1
    assert a.release(two, "h2") is True  # also one that still has the removed pool cached
    assert store.get_prefix(keys.BLOCKS).kvs == [] and store.get_prefix(keys.AFFINITY).kvs == []
    assert store.get_prefix(keys.HANDLES).kvs == []


def test_forced_removal_of_an_unused_pool_leaves_nothing(store, pools):
    a = Allocator(store, "host1")
    a.release(a.assign("x", pool=POOL).address)
    removed = remove_keeping_held(store, POOL)
    assert (removed.kept_addresses, removed.kept_blocks) == (0, 0)
    assert store.get_prefix(keys.PREFIX).kvs == []


# -- endpoint records that name free addresses ----------------------------------------

def test_a_free_address_a_record_names_is_re_imported_not_handed_out(store, pools):
    a = Allocator(store, "host1")
    first = a.assign("ep1", pool=POOL).address
    nxt = str(ipaddress.ip_address(first) + 1)
    record(store, "e" * 64, nxt)  # a leftover record (its address was released long ago)
    b = Allocator(store, "host1")
    got = b.assign("ep2", pool=POOL).address
    assert got not in (first, nxt)
    kept = holder(store, nxt)
    assert kept.handle == record_handle("e" * 64) and kept.attrs["purpose"] == RECORD_PURPOSE
    assert kept.host == "host9"
    with pytest.raises(AddressInUse):
        b.assign("pinned", address=nxt)
    assert b.release(nxt) is True  # whoever removes the record releases its addresses by address
    check_consistency(store)


def test_a_record_naming_a_free_address_blocks_a_specific_request(store, pools):
    a = Allocator(store, "host1")
    a.assign("warm", pool=POOL)
    record(store, "f" * 64, "10.20.10.200", host="host2")
    with pytest.raises(AddressInUse, match="endpoint ffffffffffff on host host2"):
        Allocator(store, "host1").assign("pinned", address="10.20.10.200")
    assert holder(store, "10.20.10.200") is None


def test_a_release_behind_the_allocators_back_is_seen(store, pools):
    """The cache of named addresses is trusted only for blocks nobody else changed."""
    a = Allocator(store, "host1")
    x = a.assign("ep1", pool=POOL).address
    record(store, "1" * 64, x)                  # the container's record
    Allocator(store, "operator").release(x)     # `ipam release` while the record exists
    for i in range(20):                         # the rest of the /28 block and beyond
        assert a.assign(f"n{i}", pool=POOL).address != x
    assert holder(store, x).handle == record_handle("1" * 64)
    check_consistency(store)


def test_invalid_records_name_nothing(store, pools):
    a = Allocator(store, "host1")
    first = a.assign("ep1", pool=POOL).address
    nxt = str(ipaddress.ip_address(first) + 1)
    store.put(keys.endpoint("host9", "bad"), '{"id": "bad", "ipv4": ["%s"]}' % nxt)  # missing fields
    assert Allocator(store, "host1").assign("ep2", pool=POOL).address == nxt


def test_the_owned_block_hot_path_is_still_one_transaction_with_records_present(store, pools):
    a = Allocator(store, "host1")
    for i in range(5):
        record(store, f"{i}" * 64, f"10.20.11.{i}")  # records elsewhere
    address = a.assign("warm", pool=POOL).address
    record(store, "7" * 64, address)  # the warm container's own record, written after
    calls = []
    original_txn, original_get, original_prefix = store.txn, store.get, store.get_prefix
    store.txn = lambda *args, **kw: calls.append("txn") or original_txn(*args, **kw)
    store.get = lambda *args, **kw: calls.append("get") or original_get(*args, **kw)
    store.get_prefix = lambda *args, **kw: calls.append("range") or original_prefix(*args, **kw)
    try:
        for i in range(3):
            a.assign(f"ep{i}", pool=POOL)
    finally:
        del store.txn, store.get, store.get_prefix
    assert calls == ["txn", "txn", "txn"]


def test_proof_names_the_allocation_holding_an_address(store, pools):
    a = Allocator(store, "host1")
    got = a.assign("ep1", pool=POOL)
    key, revision = a.proof(got.address)
    assert key == keys.handle("ep1", got.address) and revision == got.revision
    assert a.proof("10.20.10.250") is None and a.proof("garbage") is None
    a.release(got.address)
    assert a.proof(got.address) is None


def test_own_releases_keep_the_hot_path_one_transaction_and_are_checked_when_reached(store, pools):
    """A run/rm loop: the allocator's own release marks only the released address suspect."""
    a = Allocator(store, "host1")
    x = a.assign("ep0", pool=POOL).address
    record(store, "2" * 64, x)  # its record outlives it (e.g. DeleteEndpoint lost with etcd)
    a.release(x)                # dockerd's ReleaseAddress, through this allocator
    calls = []
    original_txn, original_prefix = store.txn, store.get_prefix
    store.txn = lambda *args, **kw: calls.append("txn") or original_txn(*args, **kw)
    store.get_prefix = lambda *args, **kw: calls.append("range") or original_prefix(*args, **kw)
    try:
        for i in range(3):
            b = a.assign(f"churn{i}", pool=POOL).address
            a.release(b)
    finally:
        del store.txn, store.get_prefix
    assert calls == ["txn"] * 6  # no listing of the endpoint records
    got = [a.assign(f"n{i}", pool=POOL).address for i in range(16)]  # the /28 wraps to x
    assert x not in got
    assert holder(store, x).handle == record_handle("2" * 64)
    check_consistency(store)
