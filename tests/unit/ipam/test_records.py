"""IPAM's records check themselves (validate, check_key) at every read and write; listings skip bad ones."""
from __future__ import annotations

import json

import pytest

from datastore import codec, keys
from datastore.codec import InvalidRecord
from datastore.ops import KV, Range
from ipam.blocks import Block
from ipam.config import IpamConfig, load_config
from ipam.inventory import list_blocks
from ipam.nodes import Liveness, Node, alive, get_node, list_nodes
from ipam.pools import Pool
from ipam.poolstore import PoolStore
from ipam.workloads import Endpoint, Network, WorkloadStore

EID = "e" * 64


class MemStore:
    """The read API of Datastore over a dict of key -> raw value."""

    def __init__(self, data: dict[str, object]):
        self.data = {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in data.items()}

    def get(self, key):
        return KV(key, self.data[key], 1, 1) if key in self.data else None

    def get_prefix(self, prefix, keys_only=False):
        return Range([KV(k, v, 1, 1) for k, v in sorted(self.data.items()) if k.startswith(prefix)], 1)


def good_endpoint(**over) -> dict:
    record = {"id": EID, "network": "n" * 64, "host": "h1", "ipv4": ["10.20.0.1"], "ipv6": ["fd00:20::1"],
              "mac": "02:00:00:00:00:01", "mtu": 1500, "sandbox": "/var/run/docker/netns/abc",
              "gateway_slot": 1, "ports": [{"proto": "tcp", "host_port": 8080, "container_port": 80,
                                            "host_ip": "0.0.0.0"}],
              "profiles": ["web"], "container": "c" * 64, "ifname": "eth1"}
    record.update(over)
    return record


def load(cls, record, key=None):
    return codec.loads(cls, json.dumps(record).encode(), key)


def refused(cls, record, reason, key=None):
    with pytest.raises(InvalidRecord) as info:
        load(cls, record, key)
    assert reason in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


# -- Endpoint ---------------------------------------------------------------------------------

def test_a_good_endpoint_round_trips_at_its_key():
    endpoint = load(Endpoint, good_endpoint(), keys.endpoint("h1", EID))
    assert codec.loads(Endpoint, codec.dumps(endpoint), keys.endpoint("h1", EID)) == endpoint
    load(Endpoint, {"id": "x1", "network": "", "host": "h1"})  # container add, no address yet: fine


@pytest.mark.parametrize("over, reason", [
    ({"ipv4": ["not-an-ip"]}, "ipv4 address 'not-an-ip' is not an IPv4 address"),
    ({"ipv4": ["fd00::1"]}, "is not an IPv4 address"),
    ({"ipv6": ["10.0.0.1"]}, "is not an IPv6 address"),
    ({"ipv4": "10.0.0.1"}, "'ipv4' should be"),
    ({"ipv4": [None]}, "'ipv4' should be"),
    ({"ipv4": ["10.0.0.1/32"]}, "is not an IPv4 address"),
    ({"id": ""}, "endpoint id"),
    ({"id": "../../etc"}, "endpoint id"),
    ({"host": ""}, "host"),
    ({"network": "a/b"}, "network id"),
    ({"mac": "garbage"}, "is not a MAC"),
    ({"mtu": 0}, "mtu 0 is out of range"),
    ({"mtu": 10 ** 9}, "out of range"),
    ({"mtu": "1500"}, "'mtu' should be int"),
    ({"gateway_slot": 0}, "gateway_slot 0 is out of range"),
    ({"gateway_slot": 255}, "gateway_slot 255"),
    ({"ports": ["x"]}, "'ports' should be"),
    ({"ports": [{"proto": "icmp", "host_port": 1, "container_port": 1}]}, "ports proto 'icmp'"),
    ({"ports": [{"proto": "tcp", "host_port": 70000, "container_port": 1}]}, "host_port 70000"),
    ({"ports": [{"proto": "tcp", "host_port": 80, "container_port": "80"}]}, "container_port '80'"),
    ({"ports": [{"proto": "tcp", "host_port": 80, "container_port": 80, "host_ip": "x"}]}, "host_ip 'x'"),
    ({"ports": [{"proto": "tcp", "host_port": 80, "container_port": 80, "evil": 1}]}, "unknown field 'evil'"),
    ({"profiles": ["ok", "bad name"]}, "profile 'bad name'"),
    ({"profiles": "web"}, "'profiles' should be"),
    ({"sandbox": ""}, "sandbox"),
    ({"ifname": "a-very-long-interface"}, "ifname"),
    ({"ifname": "../x"}, "ifname"),
    ({"published": "yes"}, "'published' should be bool"),
])
def test_bad_endpoints_are_refused_with_one_line(over, reason):
    refused(Endpoint, good_endpoint(**over), reason)


@pytest.mark.parametrize("missing", ["id", "network", "host"])
def test_an_endpoint_without_a_required_field_is_refused(missing):
    record = good_endpoint()
    del record[missing]
    refused(Endpoint, record, f"{missing!r} is missing")


def test_an_endpoint_must_sit_under_its_own_key():
    refused(Endpoint, good_endpoint(), "belongs at " + keys.endpoint("h1", EID), keys.endpoint("h2", EID))
    refused(Endpoint, good_endpoint(), "belongs at", keys.endpoint("h1", "other"))


def test_our_own_code_cannot_write_an_invalid_record():
    with pytest.raises(InvalidRecord, match="'garbage' is not an IPv4 address"):
        codec.dumps(Endpoint(EID, "", "h1", ipv4=["garbage"]))
    with pytest.raises(InvalidRecord, match="as_number 0 is out of range"):
        codec.dumps(Node("n1", as_number=0))


# -- Network ----------------------------------------------------------------------------------

def test_a_good_network():
    record = {"id": "n" * 64, "pools_v4": ["10.20.0.0/24"], "pools_v6": ["fd00:20::/64"], "mtu": 1450,
              "profile": "p", "name": "net1", "profile_created": True, "internal": False,
              "aux_addresses": ["10.20.0.5"]}
    assert load(Network, record, keys.network("n" * 64)).mtu == 1450


@pytest.mark.parametrize("over, reason", [
    ({"pools_v4": ["garbage"]}, "IPv4 pool 'garbage' is not an IPv4 network CIDR"),
    ({"pools_v4": ["10.20.0.1/24"]}, "is not an IPv4 network"),
    ({"pools_v4": ["fd00::/64"]}, "is not an IPv4 network"),
    ({"pools_v6": ["10.0.0.0/8"]}, "is not an IPv6 network"),
    ({"mtu": 12}, "mtu 12 is out of range"),
    ({"profile": "a b"}, "profile 'a b'"),
    ({"name": ""}, "network name"),
    ({"aux_addresses": ["x"]}, "aux address 'x'"),
    ({"id": ""}, "network id"),
    ({"internal": "no"}, "'internal' should be bool"),
])
def test_bad_networks_are_refused(over, reason):
    refused(Network, {"id": "n1", **over}, reason)


def test_a_network_must_sit_under_its_own_key():
    refused(Network, {"id": "n1"}, "belongs at", keys.network("n2"))


# -- Node, Liveness ---------------------------------------------------------------------------

@pytest.mark.parametrize("record, reason", [
    ({}, "'name' is missing"),
    ({"name": ""}, "node name"),
    ({"name": "n1", "ipv4": "fd00::1"}, "ipv4 'fd00::1' is not an IPv4 address"),
    ({"name": "n1", "ipv6": "10.0.0.1"}, "is not an IPv6 address"),
    ({"name": "n1", "as_number": 0}, "as_number 0 is out of range 1-4294967295"),
    ({"name": "n1", "as_number": 4294967296}, "out of range"),
    ({"name": "n1", "as_number": "64512"}, "'as_number' should be"),
    ({"name": "n1", "vtep_mac": "zz"}, "vtep_mac 'zz'"),
])
def test_bad_nodes_are_refused(record, reason):
    refused(Node, record, reason)


def test_a_good_node_and_its_key():
    record = {"name": "n1", "ipv4": "198.19.0.1", "ipv6": "fd00::1", "as_number": 4294967295,
              "vtep_mac": "02:aa:bb:cc:dd:ee"}
    assert load(Node, record, keys.node("n1")).as_number == 4294967295
    refused(Node, record, "belongs at /warren/v1/nodes/n1", keys.node("x"))


@pytest.mark.parametrize("over, reason", [
    ({"lease": 0}, "lease 0"),
    ({"since": -1}, "since -1"),
    ({"ipv4": "x"}, "ipv4 'x'"),
    ({"name": "a/b"}, "node name"),
])
def test_bad_liveness_is_refused(over, reason):
    refused(Liveness, {"name": "n1", "ipv4": "198.19.0.1", "since": 1.5, "lease": 7, **over}, reason)


# -- Pool, Block, IpamConfig ------------------------------------------------------------------

@pytest.mark.parametrize("record, reason", [
    ({"cidr": "garbage"}, "garbage"),
    ({"cidr": "10.20.0.1/24"}, "host bits set"),
    ({"cidr": "10.20.0.0"}, "not a network CIDR"),
    ({"cidr": "127.0.0.0/24"}, "loopback"),
    ({"cidr": "10.20.0.0/24", "encap": "gre"}, "encap 'gre'"),
    ({"cidr": "fd00::/64", "encap": "ipip"}, "IP-in-IP is not supported"),
    ({"cidr": "10.20.0.0/24", "block_size": 99}, "longer than an IPv4 address"),
    ({"cidr": "10.20.0.0/24", "block_size": 20}, "smaller than one /20 block"),
    ({"cidr": "10.0.0.0/8", "block_size": 9}, "at most 65536"),
    ({"cidr": "10.20.0.0/24", "nat_outgoing": "true"}, "'nat_outgoing' should be bool"),
])
def test_bad_pools_are_refused(record, reason):
    refused(Pool, record, reason)


def test_a_pool_must_sit_under_its_own_key():
    assert load(Pool, {"cidr": "10.20.0.0/24"}, keys.pool("10.20.0.0/24")).block_size == 26
    refused(Pool, {"cidr": "10.20.0.0/24"}, "belongs at", keys.pool("10.20.1.0/24"))


def good_block() -> dict:
    block = Block.new("10.20.0.0/30", "10.20.0.0/24", "h1")
    block.allocate("handle1", "h1", {"container": "x"})
    return block.to_dict()


def test_a_good_block_round_trips():
    block = load(Block, good_block(), keys.block("10.20.0.0/30"))
    assert block.used == 1 and block.free == 3


def _with(**over):
    record = good_block()
    record.update(over)
    return record


@pytest.mark.parametrize("record, reason", [
    ("garbage", "not JSON"),
    ({}, "'cidr' is missing"),
    ({"cidr": "10.20.0.0/30"}, "'pool' is missing"),
    (_with(cidr="x"), "cidr 'x'"),
    (_with(cidr=5), "'cidr' should be str"),
    (_with(pool="10.21.0.0/24"), "not inside its pool"),
    (_with(affinity="a b"), "affinity"),
    (_with(affinity=7), "'affinity' should be str"),
    (_with(allocations=[]), "'allocations' should be dict"),
    (_with(allocations={"x": {"handle": "h", "host": "h1"}}), "ordinal 'x' is not a number"),
    (_with(allocations={"0": "h"}), "is not an object"),
    (_with(allocations={"0": {"handle": "h"}}), "with a handle and a host"),
    (_with(allocations={"9": {"handle": "h", "host": "h1"}}), "ordinal 9 is outside"),
    (_with(allocations={"0": {"handle": "", "host": "h1"}}), "handle"),
    (_with(allocations={"0": {"handle": "h", "host": "h1", "attrs": {"a": 1}}}), "not string pairs"),
    (_with(unallocated=[1, 2, 3, 3]), "twice"),
    (_with(unallocated=[0, 1, 2, 3]), "both allocated and free"),
    (_with(unallocated=[1, 2]), "neither allocated nor free"),
    (_with(unallocated=[1, 2, 99]), "unallocated ordinal 99"),
    (_with(unallocated=["1", 2, 3]), "unallocated ordinal '1'"),
    (_with(unallocated="x"), "'unallocated' should be list"),
])
def test_bad_blocks_are_refused(record, reason):
    if record == "garbage":
        with pytest.raises(InvalidRecord, match=reason):
            codec.loads(Block, b"garbage")
        return
    refused(Block, record, reason)


def test_a_block_must_sit_under_its_own_key():
    refused(Block, good_block(), "belongs at", keys.block("10.20.0.4/30"))


def test_ipam_config():
    refused(IpamConfig, {"strict_affinity": "yes"}, "'strict_affinity' should be bool")
    assert load_config(MemStore({keys.IPAM_CONFIG: {"strict_affinity": True}})).strict_affinity
    before = codec.SKIPPED["IpamConfig"]
    assert load_config(MemStore({keys.IPAM_CONFIG: b"garbage"})) == IpamConfig()  # defaults, counted
    assert codec.SKIPPED["IpamConfig"] == before + 1


def test_deeply_nested_garbage_is_just_invalid():
    with pytest.raises(InvalidRecord, match="not JSON"):
        codec.loads(Node, b"[" * 100_000)


# -- listings skip and count; single reads treat invalid as absent ------------------------------

def test_listings_skip_invalid_records_and_count_them():
    good = good_endpoint()
    store = MemStore({
        keys.endpoint("h1", EID): good,
        keys.endpoint("h1", "bad1"): good_endpoint(id="bad1", ipv4=["not-an-ip"]),
        keys.endpoint("h1", "bad2"): b"garbage",
        keys.endpoint("h1", "bad3"): good,                    # at another endpoint's key
        keys.network("n1"): {"id": "n1", "name": "net1"},
        keys.network("n2"): {"id": "n2", "pools_v4": ["garbage"]},
        keys.node("n1"): {"name": "n1", "ipv4": "198.19.0.1"},
        keys.node("x"): {},
        keys.node_alive("n1"): {"name": "n1", "ipv4": "198.19.0.1", "since": 1.0, "lease": 5},
        keys.node_alive("x"): {"name": "x"},
        keys.pool("10.20.0.0/24"): {"cidr": "10.20.0.0/24"},
        keys.pool("10.21.0.0/24"): b"[]",
        keys.block("10.20.0.0/30"): good_block(),
        keys.block("10.20.0.4/30"): b'{"cidr": 1}',
    })
    before = sum(codec.SKIPPED.values())
    workloads = WorkloadStore(store)
    assert [e.id for e in workloads.endpoints()] == [EID]
    assert [e.id for e in workloads.endpoints("h1")] == [EID]
    assert list(workloads.networks()) == ["n1"]
    assert [n.name for n in list_nodes(store)] == ["n1"]
    assert list(alive(store)) == ["n1"]
    assert [p.cidr for p in PoolStore(store).list()] == ["10.20.0.0/24"]
    assert [b.cidr for b in list_blocks(store)] == ["10.20.0.0/30"]
    assert [b.cidr for b, _ in PoolStore(store).blocks("10.20.0.0/24")] == ["10.20.0.0/30"]
    assert sum(codec.SKIPPED.values()) - before == 3 + 3 + 1 + 1 + 1 + 1 + 2  # blocks listed twice
    # single reads: invalid is absent
    assert get_node(store, "x") is None and get_node(store, "n1").ipv4 == "198.19.0.1"
    assert PoolStore(store).get("10.21.0.0/24") is None
    assert workloads.find(EID[:6]).id == EID
