"""``warrenctl pool add|remove`` and issue 12: no address held twice, no pool over the control plane.

The real CLI as a subprocess against a real etcd (the helpers of test_cli.py).
"""
from __future__ import annotations

import ipaddress

import pytest

from datastore import codec, keys
from ipam import Allocator, Block, PoolStore
from ipam.nodes import Node, register
from plugin.dataplane import Dataplane

from .test_cli import ctl, ok, one_line_error  # noqa: F401  (fixtures and helpers)

POOL = "10.30.0.0/16"


def blocks(store) -> list[Block]:
    return codec.load_all(Block, store.get_prefix(keys.BLOCKS))


def test_forced_removal_keeps_held_addresses_and_the_re_added_pool_never_repeats_them(ctl, store):
    ok(ctl("pool", "add", POOL))
    a = Allocator(store, "hostA")
    held = [a.assign(f"a{i}", pool=POOL).address for i in range(4)]
    line = one_line_error(ctl("pool", "remove", POOL))
    assert "--force" in line and "4 allocated addresses" in line
    out = ok(ctl("pool", "remove", POOL, "--force"))
    assert out.strip() == f"Removed pool {POOL} (4 allocated addresses stay allocated to their " \
                          "containers until released)"
    assert PoolStore(store).get(POOL) is None
    assert sum(b.used for b in blocks(store)) == 4  # still held, by the same handles
    assert sorted(keys.split_handle_key(kv.key)[0] for kv in store.get_prefix(keys.HANDLES)) == \
        ["a0", "a1", "a2", "a3"]

    ok(ctl("pool", "add", POOL))
    new = [Allocator(store, "hostA").assign(f"n{i}", pool=POOL).address for i in range(70)]
    assert not set(new) & set(held) and len(set(new)) == 70
    line = one_line_error(ctl("pool", "remove", POOL))  # the kept addresses count again
    assert "74 allocated addresses" in line


def test_forced_removal_of_an_unused_pool(ctl, store):
    ok(ctl("pool", "add", POOL))
    assert ok(ctl("pool", "remove", POOL, "--force")).strip() == f"Removed pool {POOL}"
    assert store.get_prefix(keys.PREFIX).kvs == []


def test_pool_add_refuses_a_nodes_underlay_address(ctl, store):
    register(store, Node(name="far", ipv4="10.61.7.9", ipv6="fd00:61::9"))
    for cidr, what in (("10.61.0.0/16", "10.61.7.9 of node far"), ("fd00:61::/64", "fd00:61::9 of node far")):
        line = one_line_error(ctl("pool", "add", cidr))
        assert what in line and "choose another subnet" in line
    line = one_line_error(ctl("pool", "add", "10.62.0.0/16", "10.61.7.0/24"))  # all or nothing
    assert "node far" in line
    assert PoolStore(store).list() == []
    ok(ctl("pool", "add", "10.62.0.0/16"))


def test_pool_add_refuses_this_hosts_subnet(ctl, store):
    subnets = [(name, cidr) for name, cidr in Dataplane().host_subnets()
               if ipaddress.ip_network(cidr).version == 4]
    if not subnets:
        pytest.skip("this host has no IPv4 subnet")
    name, cidr = subnets[0]
    net = ipaddress.ip_network(cidr)
    inside = str(next(net.subnets(new_prefix=min(net.prefixlen + 2, 30))))
    line = one_line_error(ctl("pool", "add", inside))
    assert f"this host's subnet {net} ({name})" in line
    assert PoolStore(store).list() == []
