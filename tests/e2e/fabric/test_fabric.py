"""The multi-host fabric for real: 3 warren-lab hosts, dockerd, etcd and ExaBGP.

The seed scenario (the same network on every host, containers everywhere,
every pair pings), reachability right after ``docker run``, and the failure
cases: ExaBGP killed (graceful restart, no loss), node stop (routes withdrawn
at once), a host that vanishes (routes gone within the hold time).
"""
from __future__ import annotations

import itertools
import json
import subprocess
import time

import pytest

from tests.e2e.helpers import E2E, lab_fixture, address, ctl, dk, pings, remove_all, run, underlay, wait_for

pytestmark = E2E

HOSTS = ("host1", "host2", "host3")


lab = lab_fixture("f", 3)


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, HOSTS)


def bgp_routes(lab, host, via: str | None = None) -> list[str]:
    routes = lab.exec(host, ["ip", "route", "show", "proto", "81"]).stdout.splitlines()
    routes += lab.exec(host, ["ip", "-6", "route", "show", "proto", "81"]).stdout.splitlines()
    return [r for r in routes if via is None or f"via {via} " in r]


def node_start(lab, host, env=()):
    six = next(h["ipv6"] for h in lab.status()["hosts"] if h["name"] == host)
    argv = ["env", *env, "warrenctl", "node", "start", "--name", host, "--ip", underlay(lab, host),
            "--ip6", six]
    result = lab.exec(host, argv, timeout=90)
    assert result.returncode == 0, result.stderr


def sessions_up(lab) -> None:
    """Every host's BGP sessions to the other hosts are established (as node status says)."""
    for host in HOSTS:
        others = {underlay(lab, h) for h in HOSTS if h != host}
        wait_for(lambda: others <= {s["peer"] for s in status(lab, host) if s["state"] == "up"},
                 timeout=30, step=0.3)


def test_seed_scenario_every_pair_pings(lab):
    ctl(lab, "host1", "pool", "add", "10.20.10.0/24", "--nat-outgoing")
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--ipv6",
           "--subnet", "10.20.10.0/24", "--subnet", "fd00:20::/64", "net1")
        run(lab, host, f"c-{host}", "net1")
    run(lab, "host2", "pinned2", "net1", "--ip", "10.20.10.201")
    run(lab, "host3", "pinned3", "net1", "--ip", "10.20.10.202")
    sessions_up(lab)
    addresses = {h: (address(lab, h, f"c-{h}", "net1"), address(lab, h, f"c-{h}", "net1", v6=True))
                 for h in HOSTS}
    for src, dst in itertools.permutations(HOSTS, 2):
        v4, v6 = addresses[dst]
        assert pings(lab, src, f"c-{src}", v4), f"{src} -> {dst} {v4}"
        assert pings(lab, src, f"c-{src}", v6, v6=True), f"{src} -> {dst} {v6}"
    for pinned in ("10.20.10.201", "10.20.10.202"):
        assert pings(lab, "host1", "c-host1", pinned)
    # one route per block, not per container; a /32 only for an address pinned in a block
    # another host owns (borrowed)
    for route in bgp_routes(lab, "host1"):
        prefix = route.split()[1] if route.startswith("blackhole") else route.split()[0]
        assert prefix.endswith(("/26", "/122")) or prefix in ("10.20.10.201", "10.20.10.202"), route


def test_reachable_as_soon_as_docker_run_returns(lab):
    for host in ("host1", "host2"):
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.50.0/24", "net50")
    run(lab, "host1", "src", "net50")
    for i in range(3):  # the first container of a new block included
        run(lab, "host2", f"dst{i}", "net50", "--ip", f"10.20.50.{200 + i}")
        assert pings(lab, "host1", "src", f"10.20.50.{200 + i}")


def speaker_children(lab, host) -> list[int]:
    agent = int(lab.exec(host, ["cat", f"/run/warren/{host}/agent.pid"]).stdout.strip())
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(agent)], capture_output=True,
                                           text=True).stdout.split()]


def test_exabgp_kill_9_loses_no_traffic(lab):
    for host in ("host1", "host2"):
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.51.0/24", "net51")
    run(lab, "host1", "src", "net51")
    run(lab, "host2", "dst", "net51", "--ip", "10.20.51.200")
    sessions_up(lab)
    assert pings(lab, "host1", "src", "10.20.51.200")
    dk(lab, "host1", "exec", "-d", "src", "sh", "-c", "ping -i 0.1 -c 60 -W 1 10.20.51.200 > /tmp/p.log 2>&1")
    time.sleep(0.5)
    exabgp = speaker_children(lab, "host2")
    assert exabgp, "host2's speaker has no ExaBGP child"
    for pid in exabgp:
        subprocess.run(["kill", "-9", str(pid)], check=True)
    time.sleep(7)
    log = dk(lab, "host1", "exec", "src", "cat", "/tmp/p.log").stdout
    assert "60 packets transmitted, 60 packets received" in log, log
    wait_for(lambda: speaker_children(lab, "host2") and speaker_children(lab, "host2") != exabgp, 20)
    sessions_up(lab)


def test_node_stop_withdraws_at_once(lab):
    sessions_up(lab)
    dk(lab, "host3", "network", "create", "-d", "warren", "--ipam-driver", "warren",
       "--subnet", "10.20.52.0/24", "net52")
    run(lab, "host3", "c3", "net52")
    host3 = underlay(lab, "host3")
    wait_for(lambda: bgp_routes(lab, "host1", via=host3), 10)
    ctl(lab, "host3", "node", "stop", "--name", "host3")
    assert wait_for(lambda: not bgp_routes(lab, "host1", via=host3), 5) < 1.0
    node_start(lab, "host3")
    wait_for(lambda: bgp_routes(lab, "host1", via=host3), 30)


def test_a_node_name_in_use_is_refused(lab):
    taken = ctl(lab, "host2", "node", "start", "--name", "host1", "--ip", underlay(lab, "host2"), check=False)
    assert taken.returncode == 1, taken.stdout
    assert f"node name host1 is in use by a running node at {underlay(lab, 'host1')}" in taken.stderr
    shown = {n["name"]: n for n in json.loads(ctl(lab, "host1", "node", "show", "--json").stdout)}
    assert shown["host1"]["alive"] and shown["host1"]["ipv4"] == underlay(lab, "host1")
    ctl(lab, "host3", "node", "stop", "--name", "host3")
    try:
        shown = {n["name"]: n for n in json.loads(ctl(lab, "host1", "node", "show", "--json").stdout)}
        assert not shown["host3"]["alive"]  # a stopped node is down at once
    finally:
        node_start(lab, "host3")
    sessions_up(lab)


def test_vanished_host_routes_go_within_the_hold_time(lab):
    node_start_env = ["WARREN_BGP_HOLD_TIME=9"]
    ctl(lab, "host2", "node", "stop", "--name", "host2")
    node_start(lab, "host2", env=node_start_env)  # hold time = min of both sides = 9 s
    dk(lab, "host2", "network", "create", "-d", "warren", "--ipam-driver", "warren",
       "--subnet", "10.20.53.0/24", "net53")
    run(lab, "host2", "c2", "net53")
    host2 = underlay(lab, "host2")
    wait_for(lambda: bgp_routes(lab, "host1", via=host2), 30, step=0.2)
    lab.exec("host2", ["ip", "link", "set", "eth0", "down"], check=True)  # vanishes silently
    try:
        gone = wait_for(lambda: not bgp_routes(lab, "host1", via=host2), 20, step=0.2)
        assert gone <= 12, f"routes lingered {gone:.1f}s with a 9 s hold time"
    finally:
        lab.exec("host2", ["ip", "link", "set", "eth0", "up"], check=True)
        lab.exec("host2", ["ip", "route", "replace", "default", "via",
                           lab.status()["gateway_v4"]], check=False)
    wait_for(lambda: bgp_routes(lab, "host1", via=host2), 40, step=0.2)


def test_global_peer_added_at_runtime_keeps_existing_sessions(lab):
    sessions_up(lab)
    ctl(lab, "host1", "node", "status", "--json")  # status is published
    wait_for(lambda: len(status(lab, "host1")) == 2 and all(s["state"] == "up" for s in status(lab, "host1")),
             20, step=0.2)
    before = {s["peer"]: s["since"] for s in status(lab, "host1")}
    silent = lab.status()["subnet_v4"].rsplit(".", 1)[0] + ".250"  # in the underlay, nobody there
    ctl(lab, "host1", "bgp", "peer", "add", silent, "as", "65001")
    try:
        wait_for(lambda: any(s["peer"] == silent for s in status(lab, "host1")), 15, step=0.2)
        time.sleep(2)
        after = {s["peer"]: s for s in status(lab, "host1")}
        assert after[silent]["type"] == "global" and after[silent]["state"] != "up"
        for peer, since in before.items():
            assert after[peer]["state"] == "up" and after[peer]["since"] == since, "a session was reset"
        summary = ctl(lab, "host2", "status").stdout
        assert "3 nodes" in summary
    finally:
        ctl(lab, "host1", "bgp", "peer", "remove", silent)


def status(lab, host) -> list[dict]:
    import json
    return json.loads(ctl(lab, host, "node", "status", "--json").stdout)["sessions"]


def test_vxlan_pool_every_pair_pings(lab):
    ctl(lab, "host1", "pool", "add", "10.20.70.0/24", "fd00:70::/64", "--vxlan")
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--ipv6",
           "--subnet", "10.20.70.0/24", "--subnet", "fd00:70::/64", "vx")
        run(lab, host, f"v-{host}", "vx")
    sessions_up(lab)
    mtu = dk(lab, "host1", "exec", "v-host1", "cat", "/sys/class/net/eth0/mtu").stdout.strip()
    assert mtu == "1450"  # underlay 1500 - vxlan 50
    for src, dst in itertools.permutations(HOSTS, 2):
        v4, v6 = address(lab, dst, f"v-{dst}", "vx"), address(lab, dst, f"v-{dst}", "vx", v6=True)
        assert pings(lab, src, f"v-{src}", v4), f"{src} -> {dst} {v4}"
        assert pings(lab, src, f"v-{src}", v6, v6=True), f"{src} -> {dst} {v6}"
    routes = bgp_routes(lab, "host1")
    assert any("10.20.70." in r and "dev warren-vxlan onlink" in r for r in routes), routes
    assert any("fd00:70:" in r and "via fe80::" in r and "warren-vxlan" in r for r in routes), routes


def test_etcd_outage_keeps_routes_and_sessions_then_recovers(lab):
    for host in ("host1", "host2"):
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.54.0/24", "net54")
    run(lab, "host1", "src", "net54")
    run(lab, "host2", "dst", "net54", "--ip", "10.20.54.200")
    sessions_up(lab)
    before = sorted(bgp_routes(lab, "host1"))
    lab.stop_etcd()
    try:
        time.sleep(5)  # several watch retries later
        assert sorted(bgp_routes(lab, "host1")) == before, "routes changed while etcd was down"
        assert pings(lab, "host1", "src", "10.20.54.200")
        alive = lab.exec("host1", ["ss", "-tn", "state", "established", "( sport = :179 or dport = :179 )"])
        assert alive.stdout.count(":179") >= 2, alive.stdout  # the BGP sessions stayed up
    finally:
        lab.start_etcd()
    run(lab, "host2", "after", "net54", "--ip", "10.20.54.210")   # allocation works again at once
    # the policy agents resync after their etcd retry (at most 2 s apart): then it is reachable
    wait_for(lambda: pings(lab, "host1", "src", "10.20.54.210"), 15, step=0.3)
    ctl(lab, "host2", "pool", "add", "10.20.55.0/24")               # the nodes' watches resumed:
    for host in ("host1", "host2"):                                 # a new pool's block propagates
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.55.0/24", "net55")
    run(lab, "host2", "late", "net55", "--ip", "10.20.55.9")
    run(lab, "host1", "probe", "net55")
    wait_for(lambda: pings(lab, "host1", "probe", "10.20.55.9"), 20, step=0.5)
