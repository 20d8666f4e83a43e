"""Block records and block arithmetic (pure, no etcd)."""
from __future__ import annotations

import ipaddress
import itertools
import time

import pytest

from datastore import codec
from ipam.blocks import (Allocation, Block, block_count, block_of,
                         candidate_blocks, nth_block)
from ipam.errors import AddressInUse, PoolExhausted
from ipam.pools import Pool, make_pool


def test_new_block_size_and_order():
    b = Block.new("10.0.0.0/26", "10.0.0.0/16", "hostA")
    assert b.size == 64
    assert b.free == 64 and b.used == 0
    assert b.unallocated == list(range(64))
    assert b.allocations == {}
    assert (b.cidr, b.pool, b.affinity) == ("10.0.0.0/26", "10.0.0.0/16", "hostA")


def test_new_ipv6_block():
    b = Block.new("fd00::40/122", "fd00::/64", None)
    assert b.size == 64 and b.unallocated == list(range(64))
    assert b.affinity is None
    assert b.address(0) == "fd00::40" and b.address(63) == "fd00::7f"


def test_allocate_ascending_and_every_address_usable():
    b = Block.new("10.0.0.0/30", "10.0.0.0/24", "hostA")
    got = [b.allocate(f"h{i}", "hostA", {}) for i in range(4)]
    # network (.0) and broadcast-looking (.3) addresses are handed out too
    assert got == ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert b.used == 4 and b.free == 0
    assert {o: a.handle for o, a in b.allocations.items()} == {0: "h0", 1: "h1", 2: "h2", 3: "h3"}


def test_allocate_records_handle_host_and_attrs_copy():
    b = Block.new("10.0.0.0/30", "10.0.0.0/24", "hostA")
    attrs = {"purpose": "container"}
    ip = b.allocate("h1", "hostB", attrs)
    attrs["purpose"] = "changed"
    assert b.holder(ip) == Allocation("h1", "hostB", {"purpose": "container"})


def test_full_block_raises_pool_exhausted():
    b = Block.new("10.0.0.4/31", "10.0.0.0/24", "hostA")
    b.allocate("a", "hostA", {})
    b.allocate("b", "hostA", {})
    with pytest.raises(PoolExhausted, match="10.0.0.4/31 is full"):
        b.allocate("c", "hostA", {})
    assert b.used == 2  # the failed call changed nothing


def test_released_address_reused_least_recently_freed_first():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    ips = [b.allocate(f"h{i}", "hostA", {}) for i in range(8)]
    a_ip, b_ip = ips[5], ips[2]
    assert b.release(a_ip).handle == "h5"
    assert b.release(b_ip).handle == "h2"
    assert b.unallocated == [5, 2]
    assert b.allocate("n1", "hostA", {}) == a_ip
    assert b.allocate("n2", "hostA", {}) == b_ip


def test_released_address_goes_to_end_of_queue():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    first = b.allocate("h0", "hostA", {})
    b.release(first)
    # .1 .. .7 come before the just-freed .0
    assert [b.allocate(f"n{i}", "hostA", {}) for i in range(8)] == \
        [f"10.0.0.{i}" for i in range(1, 8)] + ["10.0.0.0"]


def test_release_unallocated_returns_none_and_changes_nothing():
    b = Block.new("10.0.0.0/30", "10.0.0.0/24", "hostA")
    assert b.release("10.0.0.1") is None
    assert b.unallocated == [0, 1, 2, 3]
    ip = b.allocate("h", "hostA", {})
    assert b.release(ip) is not None
    assert b.release(ip) is None  # twice: still once in the free list
    assert sorted(b.unallocated) == [0, 1, 2, 3] and len(b.unallocated) == 4


def test_allocate_address_specific():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    b.allocate_address("10.0.0.5", "h1", "hostB", {"k": "v"})
    assert 5 not in b.unallocated
    assert b.holder("10.0.0.5") == Allocation("h1", "hostB", {"k": "v"})
    assert b.addresses_of("h1") == ["10.0.0.5"]


def test_allocate_address_in_use():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    ip = b.allocate("h1", "hostA", {})
    with pytest.raises(AddressInUse) as exc:
        b.allocate_address(ip, "h2", "hostA", {})
    assert "h1" in str(exc.value) and ip in str(exc.value)
    assert b.holder(ip).handle == "h1"


def test_address_outside_block():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    with pytest.raises(ValueError, match="not in block"):
        b.ordinal("10.0.0.8")
    with pytest.raises(ValueError):
        b.allocate_address("10.0.1.1", "h", "hostA", {})


def test_addresses_of_sorted():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    b.allocate_address("10.0.0.6", "h", "hostA", {})
    b.allocate_address("10.0.0.1", "h", "hostA", {})
    b.allocate("other", "hostA", {})
    assert b.addresses_of("h") == ["10.0.0.1", "10.0.0.6"]
    assert b.addresses_of("nobody") == []


def test_to_dict_from_dict_round_trip_via_codec():
    b = Block.new("10.0.0.0/29", "10.0.0.0/24", "hostA")
    b.allocate("h0", "hostA", {"purpose": "ctr"})
    b.allocate_address("10.0.0.6", "h6", "hostB", {})
    b.allocate("h1", "hostA", {})
    b.release("10.0.0.0")
    raw = codec.dumps(b)
    back = codec.loads(Block, raw)
    assert back == b
    assert back.unallocated == b.unallocated  # order survives
    assert all(isinstance(o, int) for o in back.allocations)
    # and it keeps working after the round trip
    assert back.allocate("n", "hostA", {}) == b.allocate("n", "hostA", {})


def test_copy_is_deep():
    b = Block.new("10.0.0.0/30", "10.0.0.0/24", "hostA")
    c = b.copy()
    c.allocate("h", "hostA", {})
    assert b.used == 0 and b.unallocated == [0, 1, 2, 3]


# -- pool arithmetic ---------------------------------------------------------

def test_block_of():
    p = make_pool("10.1.0.0/16")
    assert block_of(p, "10.1.3.77") == "10.1.3.64/26"
    assert block_of(p, "10.1.0.0") == "10.1.0.0/26"
    assert block_of(p, "10.1.255.255") == "10.1.255.192/26"
    assert block_of(make_pool("fd00::/64"), "fd00::abcd") == "fd00::abc0/122"
    assert block_of(make_pool("10.0.0.0/28", block_size=28), "10.0.0.9") == "10.0.0.0/28"


def test_block_count_and_nth_block():
    p = make_pool("10.1.0.0/16")
    assert block_count(p) == 1024
    assert nth_block(p, 0) == "10.1.0.0/26"
    assert nth_block(p, 1) == "10.1.0.64/26"
    assert nth_block(p, 1023) == "10.1.255.192/26"
    assert block_count(make_pool("10.0.0.0/28", block_size=28)) == 1
    assert block_count(make_pool("fd00::/64")) == 1 << 58
    assert nth_block(make_pool("fd00::/64"), 2) == "fd00::80/122"


def test_nth_block_is_consistent_with_block_of():
    p = make_pool("10.8.0.0/22", block_size=27)
    for i in range(block_count(p)):
        cidr = nth_block(p, i)
        net = ipaddress.ip_network(cidr)
        assert block_of(p, str(net.network_address + 5)) == cidr
        assert net.subnet_of(p.network)


def test_candidate_blocks_visits_every_block_once():
    p = make_pool("10.1.0.0/16")
    blocks = list(candidate_blocks(p, "hostA"))
    assert len(blocks) == 1024
    assert set(blocks) == {nth_block(p, i) for i in range(1024)}


def test_candidate_blocks_wrap_around_in_order():
    p = make_pool("10.1.0.0/16")
    blocks = list(candidate_blocks(p, "hostA"))
    start = [nth_block(p, i) for i in range(1024)].index(blocks[0])
    assert blocks == [nth_block(p, (start + i) % 1024) for i in range(1024)]


def test_candidate_blocks_start_differs_per_host():
    p = make_pool("10.1.0.0/16")
    a = list(candidate_blocks(p, "hostA"))
    b = list(candidate_blocks(p, "hostB"))
    assert a[0] != b[0]
    assert set(a) == set(b)
    # many hosts spread over many starting blocks
    starts = {next(candidate_blocks(p, f"node-{i}")) for i in range(50)}
    assert len(starts) > 40


def test_candidate_blocks_deterministic_for_one_host():
    p = make_pool("10.1.0.0/16")
    assert list(candidate_blocks(p, "hostA")) == list(candidate_blocks(p, "hostA"))
    again = Pool(cidr="10.1.0.0/16", block_size=26)
    assert list(itertools.islice(candidate_blocks(again, "hostA"), 5)) == \
        list(itertools.islice(candidate_blocks(p, "hostA"), 5))


def test_candidate_blocks_single_block_pool():
    p = make_pool("10.0.0.0/28", block_size=28)
    assert list(candidate_blocks(p, "anyhost")) == ["10.0.0.0/28"]


def test_candidate_blocks_lazy_for_huge_ipv6_pool():
    p = Pool(cidr="fd00::/48", block_size=122)
    assert block_count(p) == 1 << 74
    t0 = time.monotonic()
    first = list(itertools.islice(candidate_blocks(p, "hostA"), 3))
    assert time.monotonic() - t0 < 1.0
    assert len(first) == 3 and len(set(first)) == 3
    nets = [ipaddress.ip_network(c) for c in first]
    assert all(n.prefixlen == 122 and n.subnet_of(p.network) for n in nets)
    # consecutive blocks (unless the walk wraps at the end of the pool)
    assert int(nets[1].network_address) - int(nets[0].network_address) in (64, -(1 << 80) + 64)
