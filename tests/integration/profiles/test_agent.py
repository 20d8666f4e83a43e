"""The policy agent against a real etcd and the real iptables/ipset of a test-made netns."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import replace

import pytest

from datastore import codec, keys
from ipam.workloads import Endpoint, Network
from profiles import Profile, ProfileStore
from profiles import generator as g
from profiles import names
from profiles.agent import PolicyAgent
from profiles.grammar import parse_rule
from profiles.kernel import Kernel
from tests.support.netns import sh, temp_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("iptables-restore", "ip6tables-restore", "ipset")),
    reason="needs root, iptables-restore, ip6tables-restore and ipset")

NODE = "n1"


def put_endpoint(store, endpoint: Endpoint) -> None:
    store.put(keys.endpoint(endpoint.host, endpoint.id), codec.dumps(endpoint))


def chains(ns: str, version: int = 4) -> dict[str, list[str]]:
    out = sh(ns, "iptables-save" if version == 4 else "ip6tables-save", "-t", "filter").stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith(":WARREN-"):
            found.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A WARREN-"):
            found.setdefault(line.split()[1], []).append(line)
    return found


def members(ns: str, name: str) -> set[str]:
    out = sh(ns, "ipset", "list", name, check=False).stdout
    return set(out.split("Members:", 1)[1].split()) if "Members:" in out else set()


def first_rule(ns: str, parent: str) -> str:
    return next(line for line in sh(ns, "iptables", "-S", parent).stdout.splitlines()
                if line.startswith("-A "))


def eventually(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met within %ss" % timeout)


@pytest.fixture
def ns():
    with temp_netns("wpa") as name:
        yield name


@pytest.fixture
def running(store, ns):
    """An agent following etcd in a thread, writing the netns' kernel."""
    stop = threading.Event()
    agent = PolicyAgent(store, NODE, Kernel(["ip", "netns", "exec", ns]), refresh=3600)
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(10)


def test_the_agent_follows_endpoints_profiles_and_members(store, ns, running):
    ProfileStore(store).add(Profile.new("web"))
    a = Endpoint("a" * 64, "", NODE, ["10.0.0.1"], ["fd00::1"], profiles=["web"])
    put_endpoint(store, a)
    fw = names.from_endpoint_chain(a.iface)
    eventually(lambda: fw in chains(ns))
    assert first_rule(ns, "FORWARD") == f"-A FORWARD -j {g.FORWARD_CHAIN}"
    assert first_rule(ns, "INPUT") == f"-A INPUT -j {g.INPUT_CHAIN}"
    assert fw in chains(ns, 6)
    web4 = names.tag_set("web", 4)
    eventually(lambda: members(ns, web4) == {"10.0.0.1"})
    assert members(ns, names.tag_set("web", 6)) == {"fd00::1"}

    # a member on another host: only the set changes, no chain is rewritten
    before = chains(ns)
    put_endpoint(store, Endpoint("b" * 64, "", "n2", ["10.0.9.9"], profiles=["web"]))
    eventually(lambda: members(ns, web4) == {"10.0.0.1", "10.0.9.9"})
    assert chains(ns) == before
    assert names.from_endpoint_chain(Endpoint("b" * 64, "", "n2").iface) not in before

    # a rule change rewrites the profile's chain
    ProfileStore(store).add_rule("web", "inbound", parse_rule("allow tcp to ports 80".split()))
    pi = names.profile_chain("web", "inbound")
    eventually(lambda: any("--dports 80" in line for line in chains(ns).get(pi, [])))

    # the endpoint goes: its chains and (no longer used) sets go too
    store.delete(keys.endpoint(NODE, a.id))
    eventually(lambda: fw not in chains(ns))
    assert pi not in chains(ns)
    eventually(lambda: web4 not in sh(ns, "ipset", "list", "-n").stdout.split())
    assert running.stats.failures == 0


def test_a_network_gets_its_profile_and_its_endpoints_use_it(store, ns, running):
    net = Network("f" * 64, ["10.1.0.0/24"], name="net1")
    store.put(keys.network(net.id), codec.dumps(net))
    e = Endpoint("c" * 64, net.id, NODE, ["10.1.0.5"])
    put_endpoint(store, e)
    eventually(lambda: ProfileStore(store).find("net1") is not None)
    assert ProfileStore(store).get("net1") == replace(Profile.new("net1"), auto=True)
    eventually(lambda: codec.loads(Network, store.get(keys.network(net.id)).value).profile_created)
    tw = names.to_endpoint_chain(e.iface)
    pi = names.profile_chain("net1", "inbound")
    eventually(lambda: any(pi in line for line in chains(ns).get(tw, [])))
    eventually(lambda: members(ns, names.tag_set("net1", 4)) == {"10.1.0.5"})
    # removed by the user: not created again
    ProfileStore(store).remove("net1")
    eventually(lambda: any("profile net1 is missing" in line for line in chains(ns).get(tw, [])))
    time.sleep(0.5)
    assert ProfileStore(store).find("net1") is None


def test_start_removes_stale_warren_state_and_keeps_foreign(store, ns):
    stale_chain = names.profile_chain("old", "inbound")
    stale_set = names.tag_set("old", 4)
    sh(ns, "iptables", "-N", stale_chain)
    sh(ns, "iptables", "-N", "USER-CHAIN")
    sh(ns, "ipset", "create", stale_set, "hash:ip")
    sh(ns, "ipset", "create", "user-set", "hash:ip")
    sh(ns, "iptables", "-A", "FORWARD", "-j", "USER-CHAIN")
    agent = PolicyAgent(store, NODE, Kernel(["ip", "netns", "exec", ns]))
    agent.load()
    agent.apply(full=True)
    assert stale_chain not in chains(ns) and "USER-CHAIN" in sh(ns, "iptables", "-S").stdout
    sets = sh(ns, "ipset", "list", "-n").stdout.split()
    assert stale_set not in sets and "user-set" in sets
    # the parent jump is first, once, and the user's rule is still there
    rules = [line for line in sh(ns, "iptables", "-S", "FORWARD").stdout.splitlines() if line.startswith("-A")]
    assert rules == [f"-A FORWARD -j {g.FORWARD_CHAIN}", "-A FORWARD -j USER-CHAIN"]
    # someone (dockerd) puts a jump above ours: it is moved back on top, not duplicated
    sh(ns, "iptables", "-I", "FORWARD", "1", "-j", "USER-CHAIN")
    assert agent.kernel.ensure_first(4, "FORWARD", g.FORWARD_CHAIN)
    rules = [line for line in sh(ns, "iptables", "-S", "FORWARD").stdout.splitlines() if line.startswith("-A")]
    assert rules == [f"-A FORWARD -j {g.FORWARD_CHAIN}", "-A FORWARD -j USER-CHAIN", "-A FORWARD -j USER-CHAIN"]
    assert not agent.kernel.ensure_first(4, "FORWARD", g.FORWARD_CHAIN)


def test_etcd_outage_keeps_the_rules_and_recovers(private_etcd, ns):
    from tests.support.etcd import datastore_for
    store = datastore_for(private_etcd)
    ProfileStore(store).add(Profile.new("web"))
    a = Endpoint("d" * 64, "", NODE, ["10.0.0.4"], profiles=["web"])
    put_endpoint(store, a)
    stop = threading.Event()
    agent = PolicyAgent(store, NODE, Kernel(["ip", "netns", "exec", ns]), refresh=3600)
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        fw = names.from_endpoint_chain(a.iface)
        eventually(lambda: fw in chains(ns))
        private_etcd.stop()
        time.sleep(2)
        assert fw in chains(ns) and members(ns, names.tag_set("web", 4)) == {"10.0.0.4"}
        private_etcd.start()
        b = Endpoint("e" * 64, "", NODE, ["10.0.0.5"], profiles=["web"])
        eventually(lambda: put_endpoint(store, b) is None, timeout=30)
        eventually(lambda: members(ns, names.tag_set("web", 4)) == {"10.0.0.4", "10.0.0.5"}, timeout=30)
    finally:
        stop.set()
        thread.join(10)
        store.close()


def docker_like_forward(ns: str, version: int) -> None:
    """What dockerd 28 writes at start: DOCKER-USER and DOCKER-FORWARD on top of FORWARD,
    and an accept for its bridge's outgoing traffic (20.10/26 put that one in FORWARD itself)."""
    tool = "iptables" if version == 4 else "ip6tables"
    for chain in ("DOCKER-USER", "DOCKER-FORWARD"):
        sh(ns, tool, "-N", chain)
    sh(ns, tool, "-A", "DOCKER-FORWARD", "-i", "br-0123456789ab", "!", "-o", "br-0123456789ab", "-j", "ACCEPT")
    sh(ns, tool, "-I", "FORWARD", "1", "-j", "DOCKER-FORWARD")
    sh(ns, tool, "-I", "FORWARD", "1", "-j", "DOCKER-USER")


def rules_of(ns: str, chain: str, version: int = 4) -> list[str]:
    out = sh(ns, "iptables" if version == 4 else "ip6tables", "-S", chain).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]


def test_beside_dockers_firewall_jumps_boundary_and_pools(store, ns, running):
    from ipam.pools import Pool

    store.put(keys.pool("10.0.0.0/24"), codec.dumps(Pool("10.0.0.0/24")))
    closed = Network("9" * 64, ["10.0.0.0/24"], name="closed", internal=True)
    store.put(keys.network(closed.id), codec.dumps(closed))
    e = Endpoint("f" * 64, closed.id, NODE, ["10.0.0.7"])
    put_endpoint(store, e)
    fw = names.from_endpoint_chain(e.iface)
    eventually(lambda: any("warren-pools-v4" in line for line in chains(ns).get(fw, [])))
    assert members(ns, names.POOLS_SET[4]) == {"10.0.0.0/24"}
    store.put(keys.pool("10.0.5.0/24"), codec.dumps(Pool("10.0.5.0/24")))
    eventually(lambda: members(ns, names.POOLS_SET[4]) == {"10.0.0.0/24", "10.0.5.0/24"})
    assert chains(ns)[g.DOCKER_BOUNDARY] and all("docker0" in line for line in chains(ns)[g.DOCKER_BOUNDARY])

    # dockerd starts: its chains go on top; told of its bridges, the agent answers at once
    for version in (4, 6):
        docker_like_forward(ns, version)
        assert rules_of(ns, "FORWARD", version)[0] == "-A FORWARD -j DOCKER-USER"
    running.docker_changed({"docker0", "br-0123456789ab"})
    for version in (4, 6):
        eventually(lambda: rules_of(ns, "DOCKER-USER", version) == [f"-A DOCKER-USER -j {g.FORWARD_CHAIN}"])
        assert rules_of(ns, "FORWARD", version)[0] == f"-A FORWARD -j {g.FORWARD_CHAIN}"
        assert rules_of(ns, "FORWARD", version).count(f"-A FORWARD -j {g.FORWARD_CHAIN}") == 1
    eventually(lambda: any("br-0123456789ab" in line for line in chains(ns)[g.DOCKER_BOUNDARY]))
    assert any("br-0123456789ab" in line for line in chains(ns, 6)[g.DOCKER_BOUNDARY])
    # dockerd restarts (28): DOCKER-USER on top again; ours stays first inside it
    sh(ns, "iptables", "-D", "FORWARD", "-j", "DOCKER-USER")
    sh(ns, "iptables", "-I", "FORWARD", "1", "-j", "DOCKER-USER")
    assert rules_of(ns, "DOCKER-USER")[0] == f"-A DOCKER-USER -j {g.FORWARD_CHAIN}"
    running.docker_changed({"docker0"})
    eventually(lambda: not any("br-0123456789ab" in line for line in chains(ns)[g.DOCKER_BOUNDARY]))
    eventually(lambda: rules_of(ns, "FORWARD")[0] == f"-A FORWARD -j {g.FORWARD_CHAIN}")
    assert running.stats.failures == 0


# -- issue 12: the control plane, bad records, profiles made for a network -----------------------

def test_the_control_plane_set_holds_etcd_nodes_and_this_host(store, ns, running):
    from ipam.nodes import Node

    sh(ns, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
    sh(ns, "ip", "addr", "add", "198.19.77.1/24", "dev", "ul0")
    store.put(keys.node("other"), codec.dumps(Node("other", "198.19.77.2", "2001:db8:77::2")))
    eventually(lambda: "198.19.77.2" in members(ns, names.CONTROL_SET[4]))
    assert members(ns, names.CONTROL_SET[6]) >= {"2001:db8:77::2"}
    running.docker_changed({"docker0"})  # re-reads this host's addresses at once
    eventually(lambda: "198.19.77.1" in members(ns, names.CONTROL_SET[4]))
    # the test's etcd is a loopback member: a workload's 127.0.0.1 is its own, nothing to add
    assert not any(m.startswith("127.") for m in members(ns, names.CONTROL_SET[4]))
    e = Endpoint("7" * 64, "", NODE, ["10.0.0.8"], profiles=[])
    put_endpoint(store, e)
    fw = names.from_endpoint_chain(e.iface)
    eventually(lambda: any(g.FAILSAFE in line for line in chains(ns).get(fw, [])))
    store.delete(keys.node("other"))
    eventually(lambda: "198.19.77.2" not in members(ns, names.CONTROL_SET[4]))
    assert running.stats.failures == 0


def test_a_bad_record_never_stops_the_agent(store, ns, running):
    ProfileStore(store).add(Profile.new("web"))
    good = Endpoint("1" * 64, "", NODE, ["10.0.0.11"], profiles=["web"])
    put_endpoint(store, good)
    eventually(lambda: members(ns, names.tag_set("web", 4)) == {"10.0.0.11"})
    bad = json.loads(codec.dumps(Endpoint("2" * 64, "", "elsewhere", ["10.0.0.12"], profiles=["web"])))
    bad["ipv4"] = ["not-an-ip"]
    store.put(keys.endpoint("elsewhere", "2" * 64), json.dumps(bad).encode())
    store.put(keys.node("x"), b"{}")
    store.put(keys.profile("junk"), b"not json")
    later = Endpoint("3" * 64, "", NODE, ["10.0.0.13"], profiles=["web"])
    put_endpoint(store, later)  # still followed: a new container gets its chains and set entry
    eventually(lambda: members(ns, names.tag_set("web", 4)) == {"10.0.0.11", "10.0.0.13"})
    assert names.from_endpoint_chain(later.iface) in chains(ns)
    assert running.stats.failures == 0


def test_a_profile_made_for_a_network_goes_when_nothing_uses_it(store, ns, running):
    one = Network("a1" * 32, ["10.1.0.0/24"], name="gcnet")
    two = Network("b2" * 32, ["10.1.0.0/24"], name="gcnet")  # the same network on another host
    for net in (one, two):
        store.put(keys.network(net.id), codec.dumps(net))
    eventually(lambda: ProfileStore(store).find("gcnet") is not None)
    e = Endpoint("c3" * 32, "", "elsewhere", ["10.1.0.9"], profiles=["gcnet"])
    put_endpoint(store, e)
    store.delete(keys.network(one.id))
    store.delete(keys.network(two.id))
    time.sleep(1)
    assert ProfileStore(store).find("gcnet") is not None  # an endpoint still names it
    store.delete(keys.endpoint(e.host, e.id))
    eventually(lambda: ProfileStore(store).find("gcnet") is None)
    # a profile the user made, or changed, is theirs
    ProfileStore(store).add(Profile.new("handmade"))
    mine = Network("d4" * 32, ["10.1.0.0/24"], name="kept")
    store.put(keys.network(mine.id), codec.dumps(mine))
    eventually(lambda: ProfileStore(store).find("kept") is not None)
    ProfileStore(store).add_tag("kept", "extra")
    store.delete(keys.network(mine.id))
    time.sleep(1)
    assert ProfileStore(store).find("kept") is not None and ProfileStore(store).find("handmade") is not None
    assert running.stats.failures == 0
