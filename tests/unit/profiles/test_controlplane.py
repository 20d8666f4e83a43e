"""The control plane's members and the agent's defences against bad records (issue 12), without etcd
or a kernel: the agent runs on a fake store and a recording kernel."""
from __future__ import annotations

import json
import threading

import pytest

from datastore import DatastoreError, codec, keys
from ipam.nodes import Node
from ipam.workloads import Endpoint, Network
from profiles import Profile
from profiles import controlplane as cp
from profiles import names
from profiles.agent import (PolicyAgent, Snapshot, desired, local_endpoints, unused_auto_profiles,
                            used_profiles)

NET = Network("n" * 64, ["10.0.0.0/24"], name="net1")

IP_JSON = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.19.0.1"},
                                     {"family": "inet6", "local": "2001:db8::1"},
                                     {"family": "inet6", "local": "fe80::1"}]},
    {"ifname": "docker0", "addr_info": [{"family": "inet", "local": "172.17.0.1"}]},
    {"ifname": "wrn0123456789a", "addr_info": [{"family": "inet6", "local": "fe80::ecee:eeff:feee:eeee"},
                                               {"family": "inet", "local": "169.254.1.1"}]},
    {"ifname": "odd", "addr_info": [{"local": "not-an-ip"}, "garbage"]},
    "garbage"])


def test_local_addresses_leave_out_loopback_workloads_and_link_local():
    assert cp.local_addresses(IP_JSON) == ["172.17.0.1", "198.19.0.1", "2001:db8::1"]
    assert cp.local_addresses("not json") == [] and cp.local_addresses("") == []


def test_members_unite_etcd_nodes_and_this_host():
    got = cp.members({"etcd1": ["198.19.0.100"], "localhost": ["127.0.0.1", "::1"]},
                     [("198.19.0.2", "2001:db8::2"), (None, None), ("nope", None)], ["198.19.0.1"])
    assert got == ["198.19.0.1", "198.19.0.2", "198.19.0.100", "2001:db8::2"]


def test_etcd_names_are_resolved_and_a_failure_keeps_the_last_answer():
    answers = {"etcd.example": ["198.19.0.100"], "198.19.0.101": ["198.19.0.101"]}

    def resolver(host):
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host]
    first = cp.etcd_addresses(["etcd.example", "198.19.0.101"], None, resolver)
    assert first == {"etcd.example": ["198.19.0.100"], "198.19.0.101": ["198.19.0.101"]}
    del answers["etcd.example"]
    assert cp.etcd_addresses(["etcd.example"], first, resolver) == {"etcd.example": ["198.19.0.100"]}
    assert cp.etcd_addresses(["etcd.example"], None, resolver) == {"etcd.example": []}
    assert cp.resolve("198.19.0.7") == ["198.19.0.7"] and cp.resolve("[2001:db8::7]") == ["2001:db8::7"]


# -- the agent, with a fake kernel -----------------------------------------------------------------

class FakeKernel:
    def __init__(self):
        self.restored: list[tuple[int, str]] = []
        self.ipsets: list[str] = []

    def versions(self):
        return [4, 6]

    def restore(self, version, text):
        self.restored.append((version, text))

    def chains(self, version):
        return set()

    def ipset_restore(self, text):
        self.ipsets.append(text)

    def sets(self):
        return set()

    def destroy_set(self, name):
        pass

    def ensure_first(self, version, parent, target, optional=False):
        return False

    def addresses(self):
        return IP_JSON


def agent_with(snapshot: Snapshot) -> tuple[PolicyAgent, FakeKernel]:
    kernel = FakeKernel()
    agent = PolicyAgent(object(), "h1", kernel, etcd_hosts=["etcd.example", "127.0.0.1"],
                        resolver=lambda host: {"etcd.example": ["198.19.0.100"]}.get(host, [host]))
    agent.snapshot = snapshot
    return agent, kernel


def put(snap: Snapshot, prefix: str, key: str, record) -> None:
    raw = record if isinstance(record, (bytes, str)) else codec.dumps(record)
    snap.update(prefix, key, raw.encode() if isinstance(raw, str) else raw)


def test_the_agent_fills_the_control_set_before_the_rules_that_name_it():
    snap = Snapshot()
    put(snap, keys.NODES, keys.node("h2"), Node("h2", "198.19.0.2", "2001:db8::2"))
    put(snap, keys.NETWORKS, keys.network(NET.id), NET)
    put(snap, keys.PROFILES, keys.profile("net1"), Profile.new("net1"))
    put(snap, keys.ENDPOINTS, keys.endpoint("h1", "a" * 64), Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"]))
    agent, kernel = agent_with(snap)
    agent.refresh_control()
    agent.apply(full=True)
    control4 = next(t for t in kernel.ipsets if "create warren-control-v4" in t)
    members = {line.split()[2] for line in control4.splitlines() if line.startswith("add ")}
    assert members == {"198.19.0.1", "198.19.0.2", "198.19.0.100", "172.17.0.1"}
    control6 = next(t for t in kernel.ipsets if "create warren-control-v6" in t)
    assert {line.split()[2] for line in control6.splitlines() if line.startswith("add ")} == {
        "2001:db8::1", "2001:db8::2"}
    v4 = next(text for version, text in kernel.restored if version == 4)
    assert "-m set --match-set warren-control-v4 dst -j WARREN-FAILSAFE" in v4
    # a node that joins is in the set at the next apply, without a full refresh
    kernel.ipsets.clear()
    put(snap, keys.NODES, keys.node("h3"), Node("h3", "198.19.0.3"))
    agent.apply()
    assert any("add warren-v4-tmp 198.19.0.3" in t for t in kernel.ipsets)


def test_a_bad_endpoint_address_never_stops_the_render():
    snap = Snapshot()
    put(snap, keys.NETWORKS, keys.network(NET.id), NET)
    put(snap, keys.PROFILES, keys.profile("net1"), Profile.new("net1"))
    good = Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"])
    put(snap, keys.ENDPOINTS, keys.endpoint("h1", good.id), good)
    bad = json.loads(codec.dumps(Endpoint("b" * 64, NET.id, "h2", ["10.0.0.2"])))
    bad["ipv4"] = ["not-an-ip"]  # on another host, sharing the profile: the attack of issue 12
    put(snap, keys.ENDPOINTS, keys.endpoint("h2", "b" * 64), json.dumps(bad))
    chains, sets = desired(snap, "h1", 4)
    assert names.from_endpoint_chain(good.iface) in chains
    assert sets == {names.tag_set("net1", 4): ["10.0.0.1"]}
    put(snap, keys.ENDPOINTS, keys.endpoint("h2", "b" * 64), b'{"id": 3}')  # not an endpoint at all
    put(snap, keys.NODES, keys.node("x"), b"{}")
    assert desired(snap, "h1", 4)[1] == sets


def test_interfaces_no_render_can_use_are_left_out():
    snap = Snapshot()
    one = Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"])
    twin = Endpoint("a" * 11 + "b" * 53, NET.id, "h1", ["10.0.0.2"])  # the same interface name
    odd = Endpoint("d d" + "d" * 61, NET.id, "h1", ["10.0.0.4"])       # no valid interface name
    fine = Endpoint("c" * 64, NET.id, "h1", ["10.0.0.3"])
    snap.endpoints = {"1": one, "2": twin, "3": fine, "4": odd}
    assert one.iface == twin.iface
    assert [e.id[0] for e in local_endpoints(snap, "h1")] == ["c"]
    chains, _ = desired(snap, "h1", 4, docker_bridges=["docker0", "bad bridge name!"])
    assert names.from_endpoint_chain(fine.iface) in chains


def test_unexpected_errors_are_logged_and_the_loop_resumes(caplog):
    snap = Snapshot()
    agent, kernel = agent_with(snap)
    calls = []
    stop = threading.Event()

    def load():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        stop.set()
        raise DatastoreError("etcd is away")
    agent.load = load
    agent.run(stop)  # returns: the second attempt stops it
    assert len(calls) == 2 and agent.stats.failures == 1
    assert "unexpected error" in caplog.text and "a bug" in caplog.text


# -- profiles made for a network, removed when unused -------------------------------------------

def test_only_unused_auto_profiles_are_candidates():
    snap = Snapshot()
    snap.networks = {NET.id: NET}
    snap.profiles = {"net1": Profile("net1", auto=True), "gone": Profile("gone", auto=True),
                     "mine": Profile("mine"), "used": Profile("used", auto=True)}
    snap.endpoints = {"k": Endpoint("a" * 64, "", "h1", ["10.0.0.1"], profiles=["used"])}
    assert unused_auto_profiles(snap) == ["gone"]
    assert used_profiles(snap.endpoints.values(), snap.networks) == {"net1", "used"}


def test_the_auto_flag_round_trips_and_is_refused_when_not_a_bool():
    p = Profile("p", ["p"], auto=True)
    assert codec.loads(Profile, codec.dumps(p)) == p
    assert "auto" not in json.loads(codec.dumps(Profile("q")))
    with pytest.raises(codec.InvalidRecord, match="auto flag"):
        codec.loads(Profile, b'{"name": "p", "auto": "yes"}')
    with pytest.raises(codec.InvalidRecord, match="another name"):
        codec.loads(Profile, codec.dumps(p), keys.profile("q"))
