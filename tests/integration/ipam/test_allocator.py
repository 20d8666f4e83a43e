"""Allocation against a real etcd: affinity, claims, borrowing, specific addresses, release."""
from __future__ import annotations

import ipaddress

import pytest

from datastore import codec, keys
from ipam import (AddressInUse, AddressNotInPool, Allocator, Block, IpamConfig,
                  InvalidRequest, PoolExhausted, PoolNotFound, PoolStore,
                  make_pool, save_config)
from ipam.inventory import address_info

from .helpers import check_consistency

POOL = "10.20.10.0/24"


@pytest.fixture
def pools(store):
    ps = PoolStore(store)
    ps.add([make_pool(POOL), make_pool("fd00:20::/64")])
    return ps


def test_host_allocates_from_its_own_block(store, pools):
    a = Allocator(store, "host1")
    first = a.assign("ep1", pool=POOL)
    second = a.assign("ep2", pool=POOL)
    assert first.block == second.block
    block = codec.loads(Block, store.get(keys.block(first.block)).value)
    assert block.affinity == "host1"
    assert ipaddress.ip_address(second.address) == ipaddress.ip_address(first.address) + 1
    check_consistency(store)


def test_two_hosts_get_different_blocks(store, pools):
    one = Allocator(store, "host1").assign("ep1", pool=POOL)
    two = Allocator(store, "host2").assign("ep2", pool=POOL)
    assert one.block != two.block


def test_one_transaction_per_allocation_in_an_owned_block(store, pools):
    a = Allocator(store, "host1")
    a.assign("warm", pool=POOL)
    calls = []
    original_txn, original_get, original_prefix = store.txn, store.get, store.get_prefix
    store.txn = lambda *args, **kw: calls.append("txn") or original_txn(*args, **kw)
    store.get = lambda *args, **kw: calls.append("get") or original_get(*args, **kw)
    store.get_prefix = lambda *args, **kw: calls.append("range") or original_prefix(*args, **kw)
    try:
        a.assign("ep", pool=POOL)
    finally:
        del store.txn, store.get, store.get_prefix
    assert calls == ["txn"]


def test_stale_cache_is_refreshed_from_the_failed_transaction(store, pools):
    a, b = Allocator(store, "host1"), Allocator(store, "host1")
    x = a.assign("a1", pool=POOL)
    y = b.assign("b1", pool=POOL)   # same host, same block; a's cached revision is now stale
    z = a.assign("a2", pool=POOL)
    assert len({x.address, y.address, z.address}) == 3
    check_consistency(store)


def test_new_block_when_owned_blocks_are_full(store):
    PoolStore(store).add([make_pool("10.30.0.0/24", block_size=30)])
    a = Allocator(store, "host1")
    got = [a.assign(f"ep{i}", pool="10.30.0.0/24") for i in range(6)]
    assert len({g.block for g in got}) == 2
    assert len({g.address for g in got}) == 6


def test_every_address_of_a_block_is_used(store):
    PoolStore(store).add([make_pool("10.30.0.0/29", block_size=30)])
    a = Allocator(store, "host1")
    addresses = {a.assign(f"ep{i}", pool="10.30.0.0/29").address for i in range(8)}
    assert addresses == {str(ip) for ip in ipaddress.ip_network("10.30.0.0/29")}
    with pytest.raises(PoolExhausted, match="no free address"):
        a.assign("one-too-many", pool="10.30.0.0/29")
    check_consistency(store)


def test_borrowing_when_no_free_block(store):
    PoolStore(store).add([make_pool("10.30.0.0/30", block_size=31)])
    Allocator(store, "host1").assign("h1a", pool="10.30.0.0/30")
    Allocator(store, "host2").assign("h2a", pool="10.30.0.0/30")
    borrowed = Allocator(store, "host3").assign("h3", pool="10.30.0.0/30")
    info = address_info(store, borrowed.address)
    assert info.allocation.host == "host3"
    assert info.block.affinity in ("host1", "host2")
    check_consistency(store)


def test_strict_affinity_forbids_borrowing(store):
    PoolStore(store).add([make_pool("10.30.0.0/30", block_size=31)])
    save_config(store, IpamConfig(strict_affinity=True))
    Allocator(store, "host1").assign("h1a", pool="10.30.0.0/30")
    Allocator(store, "host2").assign("h2a", pool="10.30.0.0/30")
    with pytest.raises(PoolExhausted):
        Allocator(store, "host3").assign("h3", pool="10.30.0.0/30")


def test_specific_address_claims_its_block(store, pools):
    got = Allocator(store, "host2").assign("pinned", address="10.20.10.200")
    assert got.address == "10.20.10.200" and got.block == "10.20.10.192/26"
    block = codec.loads(Block, store.get(keys.block(got.block)).value)
    assert block.affinity == "host2"
    check_consistency(store)


def test_specific_address_in_another_hosts_block(store, pools):
    owned = Allocator(store, "host1").assign("ep", pool=POOL)
    neighbour = str(ipaddress.ip_address(owned.address) + 5)
    got = Allocator(store, "host2").assign("pinned", address=neighbour)
    assert got.block == owned.block
    assert address_info(store, neighbour).allocation.host == "host2"


def test_specific_address_in_use_and_idempotent(store, pools):
    a = Allocator(store, "host1")
    a.assign("ep1", address="10.20.10.5")
    assert a.assign("ep1", address="10.20.10.5").address == "10.20.10.5"  # same handle: no-op
    with pytest.raises(AddressInUse, match="10.20.10.5"):
        a.assign("ep2", address="10.20.10.5")
    with pytest.raises(AddressNotInPool):
        a.assign("ep3", address="192.0.2.1")
    with pytest.raises(InvalidRequest):
        a.assign("ep3", address="not-an-ip")


def test_ipv6(store, pools):
    a = Allocator(store, "host1")
    got = a.assign("ep6", version=6)
    assert ipaddress.ip_address(got.address) in ipaddress.ip_network("fd00:20::/64")
    assert got.block.endswith("/122")
    assert a.release(got.address)


def test_release_is_idempotent_and_checks_the_handle(store, pools):
    a = Allocator(store, "host1")
    got = a.assign("ep1", pool=POOL)
    assert not a.release(got.address, handle="someone-else")
    assert a.release(got.address, handle="ep1")
    assert not a.release(got.address)
    assert a.addresses("ep1") == []
    check_consistency(store)


def test_release_by_handle(store, pools):
    a = Allocator(store, "host1")
    v4 = a.assign("ep1", pool=POOL).address
    v6 = a.assign("ep1", version=6).address
    a.assign("ep2", pool=POOL)
    assert sorted(a.release_handle("ep1")) == sorted([v4, v6])
    assert a.release_handle("ep1") == []
    assert list(check_consistency(store).values()) == ["ep2"]


def test_freed_address_is_not_reused_at_once(store, pools):
    a = Allocator(store, "host1")
    first = a.assign("ep1", pool=POOL).address
    a.release(first)
    assert a.assign("ep2", pool=POOL).address != first


def test_least_recently_freed_is_reused_first(store):
    PoolStore(store).add([make_pool("10.30.0.0/30", block_size=30)])
    a = Allocator(store, "host1")
    got = [a.assign(f"ep{i}", pool="10.30.0.0/30").address for i in range(4)]
    a.release(got[2])
    a.release(got[0])
    assert [a.assign("n1", pool="10.30.0.0/30").address,
            a.assign("n2", pool="10.30.0.0/30").address] == [got[2], got[0]]


def test_disabled_and_missing_pools(store, pools):
    a = Allocator(store, "host1")
    a.assign("warm", pool=POOL)
    pools.set_disabled(POOL, True)
    with pytest.raises(PoolExhausted, match="disabled"):
        a.assign("ep", pool=POOL)  # the cached pool revision is stale: the txn must notice
    with pytest.raises(PoolNotFound):
        a.assign("ep", pool="10.99.0.0/24")


def test_pool_removed_under_a_cached_allocator(store, pools):
    a = Allocator(store, "host1")
    a.release(a.assign("warm", pool=POOL).address)
    pools.remove(POOL)
    with pytest.raises(PoolNotFound):
        a.assign("ep", pool=POOL)
    assert store.get_prefix(keys.BLOCKS).kvs == [] or all(
        codec.loads(Block, kv.value).pool != POOL for kv in store.get_prefix(keys.BLOCKS))


def test_pool_remove_refuses_then_force(store, pools):
    a = Allocator(store, "host1")
    a.assign("ep1", pool=POOL)
    with pytest.raises(Exception, match="--force"):
        pools.remove(POOL)
    assert not pools.get(POOL).disabled  # refusal changed nothing
    assert pools.remove(POOL, force=True) == 1
    assert pools.get(POOL) is None
    check_consistency(store)
    assert store.get_prefix(keys.HANDLES).kvs == []


def test_concurrent_overlapping_pool_adds_cannot_both_land(store):
    import threading
    results = []

    def add(cidr):
        try:
            PoolStore(store).add([make_pool(cidr)])
            results.append(cidr)
        except Exception as exc:  # noqa: BLE001 - the loser's error is expected
            results.append(exc)
    for _ in range(5):
        store.delete_prefix(keys.POOLS)
        results.clear()
        threads = [threading.Thread(target=add, args=(c,)) for c in ("10.40.0.0/16", "10.40.1.0/24")]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert len(PoolStore(store).list()) == 1
