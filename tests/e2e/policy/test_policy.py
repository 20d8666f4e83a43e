"""Profiles enforced for real: a 2-host warren-lab with dockerd, etcd, ExaBGP and the policy agents.

* the seed's scenario word for word (``--net=none`` containers, ``container
  add``, two profiles): members talk across hosts, others are cut off;
* Docker networks get their profiles by themselves: same network talks,
  different networks do not, on one host and across hosts; a rule opens
  exactly one port, and removing it closes the port again;
* anti-spoofing: a container that sends from an address it does not own
  reaches nobody (observed with tcpdump on the receiving host);
* ``kill -9`` of the node agent keeps every rule in the kernel, and its
  restart applies what changed meanwhile.

Probes retry for a while before they pass (policy is applied asynchronously),
and a probe that must fail is only trusted after a matching one passed.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import E2E, address, ctl, dk, lab_fixture, pings, remove_all, run, underlay, wait_for

pytestmark = E2E

HOSTS = ("host1", "host2")
lab = lab_fixture("pol", 2)
SERVE = ("mkdir -p /www && echo port80 > /www/index.html && httpd -p 80 -h /www && "
         "mkdir -p /w81 && echo port81 > /w81/index.html && httpd -p 81 -h /w81 && exec sleep 600")


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, HOSTS)
    for name in ("myprofile1", "myprofile2", "neta", "netb"):
        ctl(lab, "host1", "profile", "remove", name, "--no-check", check=False)


def eventually(probe, timeout: float = 20.0, what: str = "") -> None:
    wait_for(probe, timeout, step=0.3, what=what)


def fetch(lab, host: str, container: str, target: str, port: int) -> str:
    """The body served at target:port, or "" (busybox nc, 2 s timeout)."""
    result = dk(lab, host, "exec", container, "sh", "-c",
                f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target} {port}", check=False, timeout=30)
    return result.stdout if result.returncode == 0 else ""


def net(lab, name: str, subnet: str) -> None:
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", subnet, name)


# -- the seed (002): --net=none containers, container add, two profiles ------------------------

def test_seed_scenario(lab):
    for host, name in (("host1", "centos-1"), ("host1", "centos-2"), ("host2", "centos-3")):
        dk(lab, host, "run", "-itd", "--init", "--net=none", "--name", name, IMAGE, "sleep", "600")
    ctl(lab, "host1", "pool", "add", "10.20.10.0/24", "--nat-outgoing")
    try:
        ctl(lab, "host1", "container", "add", "centos-1", "10.20.10.1")
        ctl(lab, "host1", "container", "add", "centos-2", "10.20.10.2")
        ctl(lab, "host2", "container", "add", "centos-3", "10.20.10.3")
        inside = dk(lab, "host1", "exec", "centos-1", "ip", "-o", "addr", "show", "eth1").stdout
        assert "10.20.10.1/32" in inside
        assert "default via 169.254.1.1 dev eth1" in dk(lab, "host1", "exec", "centos-1", "ip", "route").stdout
        # no profile yet: nothing gets through
        assert not pings(lab, "host1", "centos-1", "10.20.10.3")
        ctl(lab, "host1", "profile", "add", "myprofile1")
        ctl(lab, "host1", "profile", "add", "myprofile2")
        ctl(lab, "host1", "container", "centos-1", "profile", "append", "myprofile1")
        ctl(lab, "host2", "container", "centos-3", "profile", "append", "myprofile1")
        ctl(lab, "host1", "container", "centos-2", "profile", "append", "myprofile2")
        eventually(lambda: pings(lab, "host1", "centos-1", "10.20.10.3"), what="centos-1 -> centos-3")
        assert pings(lab, "host2", "centos-3", "10.20.10.1")
        assert not pings(lab, "host1", "centos-1", "10.20.10.2")
        assert not pings(lab, "host1", "centos-2", "10.20.10.1")
        shown = ctl(lab, "host1", "container", "centos-1", "endpoint", "show").stdout
        assert "eth1" in shown and "10.20.10.1" in shown and "myprofile1" in shown
        detailed = ctl(lab, "host1", "endpoint", "show", "--detailed").stdout
        assert "10.20.10.3" in detailed and "host2" in detailed
        # more addresses and removal give everything back
        ctl(lab, "host1", "container", "centos-1", "ip", "add", "10.20.10.11")
        assert "10.20.10.11/32" in dk(lab, "host1", "exec", "centos-1", "ip", "-o", "addr").stdout
        eventually(lambda: pings(lab, "host2", "centos-3", "10.20.10.11"), what="the added address")
        ctl(lab, "host1", "container", "centos-1", "ip", "remove", "10.20.10.11")
        links = lab.exec("host1", ["ip", "-o", "link"]).stdout.count(": wrn")
        ctl(lab, "host1", "container", "remove", "centos-1")
        assert lab.exec("host1", ["ip", "-o", "link"]).stdout.count(": wrn") == links - 1
        assert "eth1" not in dk(lab, "host1", "exec", "centos-1", "ip", "-o", "link").stdout
        endpoints = ctl(lab, "host1", "endpoint", "show", "--detailed").stdout
        assert "10.20.10.1," not in endpoints and "| 10.20.10.1 " not in endpoints
    finally:
        for host, name in (("host1", "centos-1"), ("host1", "centos-2"), ("host2", "centos-3")):
            ctl(lab, host, "container", "remove", name, check=False)
        ctl(lab, "host1", "pool", "remove", "10.20.10.0/24", check=False)


def test_container_add_refuses_bad_input_and_leaves_nothing(lab):
    dk(lab, "host1", "run", "-d", "--init", "--net=none", "--name", "lone", IMAGE, "sleep", "600")
    ctl(lab, "host1", "pool", "add", "10.20.11.0/24")
    try:
        links = lab.exec("host1", ["ip", "-o", "link"]).stdout.count(": wrn")
        for request, message in (("nosuch", "container nosuch does not exist"),):
            result = ctl(lab, "host1", "container", "add", request, "10.20.11.5", check=False)
            assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
        result = ctl(lab, "host1", "container", "add", "lone", "10.99.0.1", check=False)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
        result = ctl(lab, "host1", "container", "add", "lone", "not-an-ip", check=False)
        assert result.returncode == 1 and "invalid address request" in result.stderr
        assert lab.exec("host1", ["ip", "-o", "link"]).stdout.count(": wrn") == links
        assert "10.20.11." not in ctl(lab, "host1", "endpoint", "show", "--detailed").stdout
        ctl(lab, "host1", "container", "add", "lone", "10.20.11.0/24")
        again = ctl(lab, "host1", "container", "add", "lone", "10.20.11.0/24", check=False)
        assert again.returncode == 1 and "already has a warren interface" in again.stderr
        ctl(lab, "host1", "container", "remove", "lone")
        assert ctl(lab, "host1", "ipam", "check", "--grace", "0").returncode == 0
    finally:
        ctl(lab, "host1", "container", "remove", "lone", check=False)
        ctl(lab, "host1", "pool", "remove", "10.20.11.0/24", check=False)


# -- Docker networks get profiles ------------------------------------------------------------

def test_networks_are_isolated_and_a_rule_opens_one_port(lab):
    net(lab, "neta", "10.20.20.0/24")
    net(lab, "netb", "10.20.21.0/24")
    run(lab, "host1", "a1", "neta")
    run(lab, "host2", "a2", "neta")
    run(lab, "host1", "b1", "netb", command=("sh", "-c", SERVE))
    run(lab, "host2", "b2", "netb")
    a2, b1 = address(lab, "host2", "a2", "neta"), address(lab, "host1", "b1", "netb")
    b2 = address(lab, "host2", "b2", "netb")
    eventually(lambda: pings(lab, "host1", "a1", a2), what="same network across hosts")
    eventually(lambda: pings(lab, "host2", "b2", b1), what="same network, other pair")
    assert "port80" in fetch(lab, "host2", "b2", b1, 80)
    assert not pings(lab, "host2", "a2", b1)                      # across hosts
    assert not pings(lab, "host1", "a1", b1)                      # on one host
    assert not pings(lab, "host1", "b1", a2)
    assert fetch(lab, "host1", "a1", b1, 80) == ""
    # the defaults came from the agent: profiles named after the networks
    assert set(ctl(lab, "host1", "profile", "show").stdout.split()) >= {"neta", "netb"}

    ctl(lab, "host1", "profile", "netb", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80",
        "from", "tag", "neta")
    eventually(lambda: "port80" in fetch(lab, "host1", "a1", b1, 80), what="port 80 opened (same host)")
    eventually(lambda: "port80" in fetch(lab, "host2", "a2", b1, 80), what="port 80 opened (across)")
    assert fetch(lab, "host2", "a2", b1, 81) == ""                # exactly that port
    assert not pings(lab, "host2", "a2", b1)
    ctl(lab, "host2", "profile", "netb", "rule", "remove", "inbound", "allow", "tcp", "to", "ports", "80",
        "from", "tag", "neta")
    eventually(lambda: fetch(lab, "host2", "a2", b1, 80) == "", what="port 80 closed again")
    assert "port80" in fetch(lab, "host2", "b2", b1, 80)          # members still reach it


def test_network_profile_option(lab):
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet",
           "10.20.22.0/24", "-o", "profile=neta", "netc")
    net(lab, "neta", "10.20.20.0/24")
    run(lab, "host1", "c1", "netc")
    run(lab, "host2", "a2", "neta")
    a2 = address(lab, "host2", "a2", "neta")
    eventually(lambda: pings(lab, "host1", "c1", a2), what="netc uses profile neta")


# -- anti-spoofing ---------------------------------------------------------------------------

def captured(lab, host: str, source: str, send) -> bool:
    """Whether a packet from ``source`` shows up on any interface of ``host`` while ``send`` runs."""
    out: list[str] = []
    dump = threading.Thread(target=lambda: out.append(lab.exec(
        host, ["timeout", "6", "tcpdump", "-n", "-i", "any", "-c", "1", "src", "host", source],
        timeout=30).stdout))
    dump.start()
    time.sleep(1.5)  # tcpdump is listening
    send()
    dump.join(30)
    return bool(out and source in out[0])


def test_a_spoofed_source_reaches_nobody(lab):
    net(lab, "neta", "10.20.20.0/24")
    run(lab, "host1", "spoofer", "neta", "--cap-add", "NET_ADMIN")
    run(lab, "host2", "a2", "neta")
    a2 = address(lab, "host2", "a2", "neta")
    own = address(lab, "host1", "spoofer", "neta")
    eventually(lambda: pings(lab, "host1", "spoofer", a2), what="the spoofer's own address works")
    send_own = lambda: dk(lab, "host1", "exec", "spoofer", "ping", "-c", "3", "-W", "1", a2, check=False)
    assert captured(lab, "host2", own, send_own)                  # the probe can see packets
    fake = "10.20.20.250"
    dk(lab, "host1", "exec", "spoofer", "ip", "addr", "add", f"{fake}/32", "dev", "eth0")
    send_fake = lambda: dk(lab, "host1", "exec", "spoofer", "ping", "-c", "3", "-W", "1", "-I", fake, a2,
                           check=False)
    assert not captured(lab, "host2", fake, send_fake)


# -- the agent killed ------------------------------------------------------------------------

def agent_pid(lab, host: str) -> int:
    """The agent's pid from its pid file; 0 while there is none (the supervisor is restarting it)."""
    text = lab.exec(host, ["cat", f"/run/warren/{host}/agent.pid"]).stdout.strip()
    return int(text) if text.isdigit() else 0


def test_agent_kill_9_keeps_isolation_and_resyncs(lab):
    net(lab, "neta", "10.20.20.0/24")
    net(lab, "netb", "10.20.21.0/24")
    run(lab, "host1", "a1", "neta")
    run(lab, "host2", "a2", "neta")
    run(lab, "host2", "b2", "netb", command=("sh", "-c", SERVE))
    a2, b2 = address(lab, "host2", "a2", "neta"), address(lab, "host2", "b2", "netb")
    eventually(lambda: pings(lab, "host1", "a1", a2), what="same network")
    assert not pings(lab, "host1", "a1", b2)
    killed = agent_pid(lab, "host2")
    os.kill(killed, 9)
    assert pings(lab, "host1", "a1", a2)                          # rules stay in the kernel
    assert not pings(lab, "host1", "a1", b2)                      # isolation too
    # a change made around the crash: the agent the node's supervisor starts again resyncs it
    ctl(lab, "host1", "profile", "netb", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80",
        "from", "tag", "neta")
    eventually(lambda: agent_pid(lab, "host2") not in (0, killed), what="agent restarted by the supervisor")
    eventually(lambda: "port80" in fetch(lab, "host1", "a1", b2, 80), what="resynced after restart")
    assert pings(lab, "host1", "a1", a2) and not pings(lab, "host1", "a1", b2)


# -- metrics (the node agent's exporter) -------------------------------------------------------

def scrape(lab, host: str) -> dict[str, float]:
    code = ("import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:9091/metrics', timeout=5).read().decode())")
    text = lab.exec(host, ["python3", "-c", code], timeout=30).stdout
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_move_with_docker_run(lab):
    before = scrape(lab, "host1")
    joins = 'warren_plugin_requests_total{code="200",endpoint="NetworkDriver.Join"}'
    assigned = 'warren_ipam_operations_total{operation="assign",result="ok"}'
    net(lab, "neta", "10.20.20.0/24")
    run(lab, "host1", "m1", "neta")
    after = scrape(lab, "host1")
    assert after[joins] == before.get(joins, 0) + 1
    assert after[assigned] == before.get(assigned, 0) + 1
    assert after['warren_plugin_request_seconds_count{endpoint="NetworkDriver.Join"}'] >= 1
    eventually(lambda: scrape(lab, "host1").get('warren_bgp_sessions{state="up"}') == 1,
               what="one BGP session up")
    applied = 'warren_policy_apply_seconds_count{kind="incremental"}'
    assert after.get(applied, 0) > before.get(applied, 0)       # the new endpoint was applied
