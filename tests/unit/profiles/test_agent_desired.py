"""The agent's pure part: etcd records -> the chains and sets one host wants."""
from __future__ import annotations

from datastore import codec, keys
from ipam.workloads import Endpoint, Network
from profiles import Profile
from profiles import generator as g
from profiles import names
from profiles.agent import Snapshot, desired, local_endpoints, profiles_to_create

NET = Network("n" * 64, ["10.0.0.0/24"], name="net1")


def snapshot(*endpoints: Endpoint, profiles=("net1",), networks=(NET,)) -> Snapshot:
    snap = Snapshot()
    for e in endpoints:
        snap.update(keys.ENDPOINTS, keys.endpoint(e.host, e.id), codec.dumps(e))
    for n in networks:
        snap.update(keys.NETWORKS, keys.network(n.id), codec.dumps(n))
    for p in profiles:
        snap.update(keys.PROFILES, keys.profile(p), codec.dumps(Profile.new(p)))
    return snap


def test_endpoints_use_their_networks_profile_unless_they_have_their_own():
    snap = snapshot(Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"]),
                    Endpoint("b" * 64, NET.id, "h1", ["10.0.0.2"], profiles=["other"]),
                    Endpoint("c" * 64, "", "h1", ["10.0.0.3"], profiles=[]))
    assert {e.id[0]: list(e.profiles) for e in local_endpoints(snap, "h1")} == {
        "a": ["net1"], "b": ["other"], "c": []}


def test_tag_members_come_from_every_host_but_chains_only_from_this_one():
    snap = snapshot(Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"], ["fd00::1"]),
                    Endpoint("b" * 64, NET.id, "h2", ["10.0.0.2"]),
                    Endpoint("c" * 64, "", "h2", ["10.0.0.3"], profiles=[]))
    chains, sets = desired(snap, "h1", 4)
    assert sets == {names.tag_set("net1", 4): ["10.0.0.1", "10.0.0.2"]}
    assert names.from_endpoint_chain("wrn" + "a" * 11) in chains
    assert names.from_endpoint_chain("wrn" + "b" * 11) not in chains
    assert desired(snap, "h1", 6)[1] == {names.tag_set("net1", 6): ["fd00::1"]}


def test_an_unresolved_network_name_fails_closed():
    unnamed = Network("u" * 64, ["10.0.1.0/24"])
    snap = snapshot(Endpoint("a" * 64, unnamed.id, "h1", ["10.0.1.1"]), networks=(unnamed,))
    chains, sets = desired(snap, "h1", 4)
    fw = chains[names.from_endpoint_chain("wrn" + "a" * 11)]
    assert fw[-1].endswith("-j DROP") and not any("WARREN-PO-" in line for line in fw)
    assert sets == {}


def test_a_bad_record_counts_as_absent():
    snap = snapshot(Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"]))
    snap.update(keys.PROFILES, keys.profile("net1"), b'{"name": "net1", "inbound_rules": [{"bogus": 1}]}')
    assert "net1" not in snap.profiles
    fw = desired(snap, "h1", 4)[0][names.from_endpoint_chain("wrn" + "a" * 11)]
    assert any("profile net1 is missing" in line for line in fw)


def test_networks_needing_a_profile():
    named = Network("1" * 64, name="web")
    optioned = Network("2" * 64, profile="shared", name="x")
    done = Network("3" * 64, name="old", profile_created=True)
    assert profiles_to_create([named, optioned, done, Network("4" * 64)]) == [named, optioned]
    assert optioned.default_profile == "shared"


def test_internal_networks_confine_their_endpoints_and_pools_are_read():
    from ipam.pools import Pool
    from profiles.agent import pool_cidrs

    closed = Network("i" * 64, ["10.0.9.0/24"], name="net1", internal=True)
    snap = snapshot(Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"]),
                    Endpoint("b" * 64, closed.id, "h1", ["10.0.9.1"]), networks=(NET, closed))
    for pool in (Pool("10.0.0.0/24"), Pool("10.0.9.0/24", disabled=True), Pool("fd00::/64")):
        snap.update(keys.POOLS, keys.pool(pool.cidr), codec.dumps(pool))
    assert {e.id[0]: e.internal for e in local_endpoints(snap, "h1")} == {"a": False, "b": True}
    chains, _ = desired(snap, "h1", 4)
    bound = "--match-set warren-pools-v4 dst"
    assert any(bound in line for line in chains[names.from_endpoint_chain("wrn" + "b" * 11)])
    assert not any(bound in line for line in chains[names.from_endpoint_chain("wrn" + "a" * 11)])
    assert pool_cidrs(snap, 4) == ["10.0.0.0/24", "10.0.9.0/24"] and pool_cidrs(snap, 6) == ["fd00::/64"]
    snap.update(keys.POOLS, keys.pool("fd00::/64"), None)
    assert pool_cidrs(snap, 6) == []


def test_docker_bridges_reach_the_boundary_chain():

    snap = snapshot(Endpoint("a" * 64, NET.id, "h1", ["10.0.0.1"]))
    chains, _ = desired(snap, "h1", 4, docker_bridges=["br-0123456789ab"])
    assert [line.split()[3] for line in chains[g.DOCKER_BOUNDARY]] == [
        "br-0123456789ab", "br-0123456789ab", "docker0", "docker0"]


# -- which watch events can change the policy ------------------------------------------

def test_snapshot_update_reports_only_changes_a_rule_can_read():
    from dataclasses import replace as _replace

    from datastore import codec, keys
    from ipam.workloads import Endpoint
    from profiles.agent import Snapshot

    snap = Snapshot()
    key = keys.endpoint("h1", "e" * 64)
    ep = Endpoint(id="e" * 64, network="n" * 64, host="h1", ipv4=["10.20.0.5"])
    assert snap.update(keys.ENDPOINTS, key, codec.dumps(ep)) is True            # new endpoint
    joined = _replace(ep, sandbox="/var/run/docker/netns/x", gateway_slot=2, mac="02:00:00:00:00:01")
    assert snap.update(keys.ENDPOINTS, key, codec.dumps(joined)) is False       # Join: no rule reads these
    programmed = _replace(joined, published=True)
    assert snap.update(keys.ENDPOINTS, key, codec.dumps(programmed)) is False   # Program without -p
    assert snap.endpoints[key] == programmed                                    # ... but the copy is current
    published = _replace(joined, ports=[{"proto": "tcp", "host_port": 80, "container_port": 80}], published=True)
    assert snap.update(keys.ENDPOINTS, key, codec.dumps(published)) is True     # -p: the published-ports set
    assert snap.update(keys.ENDPOINTS, key, codec.dumps(_replace(published, profiles=["web"]))) is True
    assert snap.update(keys.ENDPOINTS, key, codec.dumps(_replace(published, ipv6=["fd00::5"]))) is True
    assert snap.update(keys.ENDPOINTS, key, None) is True                        # delete
    assert snap.update(keys.ENDPOINTS, key, None) is False                       # delete of nothing
    assert snap.update(keys.ENDPOINTS, key, b"not json") is False                # bad record, nothing before


# -- ports the nodes publish: open to workloads at the node's control-plane address -------------

def test_published_ports_are_each_nodes_address_protocol_and_port():
    from ipam.nodes import Node
    from profiles.agent import published_ports

    web = Endpoint("a" * 64, NET.id, "h2", ["10.0.0.2"], published=True, ports=[
        {"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": "0.0.0.0"},
        {"proto": "udp", "host_port": 5353, "container_port": 53, "host_ip": "::"},
        {"proto": "tcp", "host_port": 9000, "container_port": 90, "host_ip": "127.0.0.1"},   # loopback only
        {"proto": "tcp", "host_port": 7000, "container_port": 70, "host_ip": "198.19.0.3"},  # h2's address
        {"proto": "tcp", "host_port": 7001, "container_port": 71, "host_ip": "203.0.113.9"},  # another one
        {"proto": "sctp", "host_port": 6000, "container_port": 60},                          # older record
    ])
    unpublished = Endpoint("b" * 64, NET.id, "h2", ["10.0.0.3"], published=False,
                           ports=[{"proto": "tcp", "host_port": 1, "container_port": 1}])
    nowhere = Endpoint("c" * 64, NET.id, "h9", ["10.0.0.4"], published=True,
                       ports=[{"proto": "tcp", "host_port": 2, "container_port": 2}])
    snap = snapshot(web, unpublished, nowhere)
    snap.nodes["h2"] = Node("h2", ipv4="198.19.0.3", ipv6="fd00:19::3")
    assert sorted(published_ports(snap)) == sorted([
        ("198.19.0.3", "tcp", 8080), ("fd00:19::3", "udp", 5353), ("198.19.0.3", "tcp", 7000),
        ("198.19.0.3", "sctp", 6000), ("fd00:19::3", "sctp", 6000)])
    assert g.published_members(published_ports(snap), 4) == [
        "198.19.0.3,sctp:6000", "198.19.0.3,tcp:7000", "198.19.0.3,tcp:8080"]
    assert g.published_members(published_ports(snap), 6) == ["fd00:19::3,sctp:6000", "fd00:19::3,udp:5353"]


def test_published_members_leave_out_what_is_not_an_address_protocol_or_port():
    entries = [("198.19.0.3", "tcp", 80), ("nope", "tcp", 80), ("198.19.0.3", "icmp", 80),
               ("198.19.0.3", "tcp", 0), ("198.19.0.3", "tcp", 70000), ("198.19.0.3", "tcp", True),
               ("198.19.0.3", "tcp", "80"), (None, "tcp", 80), ("fd00::1", "tcp", 80)]
    assert g.published_members(entries, 4) == ["198.19.0.3,tcp:80"]
    text = g.published_text(entries, 4)
    assert "create warren-published-v4 hash:ip,port family inet -exist" in text
    assert "add warren-published-v4-tmp 198.19.0.3,tcp:80" in text
    assert text.rstrip().endswith("destroy warren-published-v4-tmp")


def test_failsafe_returns_for_published_ports_before_the_drop():
    lines = g.failsafe_lines(4)
    published = [i for i, line in enumerate(lines) if "warren-published-v4 dst,dst" in line]
    assert published and lines[published[0]].endswith("-j RETURN")
    assert published[0] < len(lines) - 1 and lines[-1].endswith("-j DROP")
