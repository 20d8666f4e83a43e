"""nat-outgoing for real: a 2-host warren-lab, dockerd, etcd, ExaBGP and an "outside" host.

The outside host is a namespace this module attaches to the lab's underlay
bridge (``Lab.attach``), in no pool and with no route to any pool. It runs
a tiny TCP server that answers every connection with the peer address it
sees, so a test reads the source address of its traffic after any NAT. The
same server runs inside receiving containers (entered from their host with
``nsenter``) to show that traffic between pools keeps its source.

Everything stays inside lab namespaces and the one this module attaches;
servers are started here and killed by PID; the lab (and with it the
attached namespace) is removed even when a test fails.
"""
from __future__ import annotations

import os
import secrets
import select
import subprocess
import sys
import time
from typing import Callable, Iterator

import pytest

from bgp.natout import ALL_POOLS, CHAIN, MASQ_POOLS
from ctl.lab import Lab
from ctl.lab import net as labnet
from tests.e2e.helpers import E2E, REPO, address, ctl, dk, pings, remove_all, run, wait_for

pytestmark = E2E

HOSTS = ("host1", "host2")
PORT = 7000
NAT_POOL, NAT_POOL6 = "10.20.30.0/24", "fd00:30::/64"
PLAIN_POOL = "10.20.31.0/24"
SERVER_LIFETIME = 900  # seconds: a server orphaned by a killed test run exits by itself

# Answers each TCP connection with the peer's address (IPv4-mapped shown as IPv4).
WHOAMI = r"""
import signal, socket, sys
signal.alarm(int(sys.argv[2]))
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    host = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
    try:
        c.sendall((host + "\n").encode())
    except OSError:
        pass
    c.close()
"""


# -- fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab("n" + secrets.token_hex(3))
    try:
        lab.up(2, node=True)
        yield lab
    finally:
        lab.down()
        outside_ns = f"{lab.name}-out"
        if labnet.netns_exists(outside_ns):  # down removes it; make sure
            labnet.netns_del(outside_ns)


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[list[str], dict[str, str] | None], subprocess.Popen]]:
    """Start WHOAMI servers; every one is killed by its PID at the end of the module."""
    started: list[subprocess.Popen] = []

    def start(prefix: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([*prefix, sys.executable, "-c", WHOAMI, str(PORT), str(SERVER_LIFETIME)],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "ready", f"server did not start: {line!r} {proc.poll()=}"
        return proc
    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def outside(lab, servers) -> dict[str, str]:
    """A plain host on the underlay, in no pool, answering on PORT with the peer it sees."""
    record = lab.attach(f"{lab.name}-out")
    assert record["created"]
    servers(["ip", "netns", "exec", record["netns"]])
    return record


@pytest.fixture(scope="module")
def networks(lab) -> None:
    """The pools and, on both hosts, one network per pool."""
    ctl(lab, "host1", "pool", "add", NAT_POOL, "--nat-outgoing")
    ctl(lab, "host1", "pool", "add", NAT_POOL6, "--nat-outgoing")
    ctl(lab, "host1", "pool", "add", PLAIN_POOL)
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--ipv6",
           "--subnet", NAT_POOL, "--subnet", NAT_POOL6, "natnet")
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", PLAIN_POOL, "plainnet")
        wait_for(lambda: NAT_POOL in members(lab, host, MASQ_POOLS[4])
                 and PLAIN_POOL in members(lab, host, ALL_POOLS[4]), 20, step=0.2, what=f"{host}'s ipsets")
    # the two networks are isolated by their default profiles: let natnet reach plainnet's server
    wait_for(lambda: ctl(lab, "host1", "profile", "plainnet", "rule", "show", check=False).returncode == 0,
             20, step=0.2, what="the agents created plainnet's profile")
    ctl(lab, "host1", "profile", "plainnet", "rule", "add", "inbound", "allow", "tcp", "to", "ports",
        str(PORT), "from", "tag", "natnet")


@pytest.fixture(autouse=True)
def clean(lab) -> Iterator[None]:
    yield
    for host in HOSTS:
        ids = dk(lab, host, "ps", "-aq").stdout.split()
        if ids:
            dk(lab, host, "rm", "-f", *ids, check=False)


@pytest.fixture(scope="module", autouse=True)
def clean_networks(lab) -> Iterator[None]:
    yield
    remove_all(lab, HOSTS)


# -- helpers ---------------------------------------------------------------------------

def members(lab, host: str, ipset: str) -> set[str]:
    out = lab.exec(host, ["ipset", "list", ipset]).stdout
    return set(out.split("Members:", 1)[1].split()) if "Members:" in out else set()


def host_address(lab, host: str, v6: bool = False) -> str:
    h = lab.host(host)
    return h.ipv6 if v6 else h.ipv4


def speaker_log(lab, host: str) -> str:
    path = os.path.join(lab.host(host).path("log"), host, "agent.log")
    try:
        with open(path) as f:
            return "".join(f.readlines()[-20:])
    except OSError as exc:
        return str(exc)


def source_seen(lab, host: str, container: str, target: str, attempts: int = 10) -> str:
    """Connect from ``container`` to the WHOAMI server at ``target``; the source it saw."""
    dest = f"[{target}]" if ":" in target else target
    last = None
    for _ in range(attempts):
        last = dk(lab, host, "exec", container, "sh", "-c", f"nc -w 3 {target} {PORT} </dev/null",
                  check=False, timeout=30)
        if last.returncode == 0 and last.stdout.strip():
            return last.stdout.strip()
        time.sleep(0.5)  # e.g. a BGP route still on its way
    pytest.fail(f"{container} on {host} could not reach {dest}:{PORT}: rc={last.returncode} "
                f"{last.stdout!r} {last.stderr!r}\nspeaker log:\n{speaker_log(lab, host)}")


def server_in(lab, servers, host: str, container: str) -> None:
    """Run WHOAMI in ``container``'s network namespace (entered from its host)."""
    pid = dk(lab, host, "inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    servers(lab.nsenter_argv(host, ["nsenter", "-t", pid, "-n", "--"], cwd=REPO), lab.env(host))


# -- tests -----------------------------------------------------------------------------

def test_kernel_state_on_every_node(lab, networks):
    for host in HOSTS:
        rules = lab.exec(host, ["iptables", "-w", "-t", "nat", "-S"]).stdout
        assert f"-A POSTROUTING -j {CHAIN}" in rules, rules
        assert rules.count(f"-A POSTROUTING -j {CHAIN}") == 1, rules
        assert (f"-A {CHAIN} -m set --match-set {MASQ_POOLS[4]} src "
                f"-m set ! --match-set {ALL_POOLS[4]} dst -j MASQUERADE") in rules, rules
        assert members(lab, host, MASQ_POOLS[4]) == {NAT_POOL}
        assert {NAT_POOL, PLAIN_POOL} <= members(lab, host, ALL_POOLS[4])
        assert members(lab, host, MASQ_POOLS[6]) == {NAT_POOL6}


def test_nat_pool_to_outside_shows_the_node_address(lab, networks, outside):
    run(lab, "host1", "natc", "natnet")
    assert address(lab, "host1", "natc", "natnet").startswith("10.20.30.")
    assert source_seen(lab, "host1", "natc", outside["ipv4"]) == host_address(lab, "host1")
    assert pings(lab, "host1", "natc", outside["ipv4"])  # ICMP too, and the reply comes back


def test_nat_pool_to_outside_over_ipv6(lab, networks, outside):
    run(lab, "host2", "natc6", "natnet")
    assert address(lab, "host2", "natc6", "natnet", v6=True).startswith("fd00:30:")
    assert source_seen(lab, "host2", "natc6", outside["ipv6"]) == host_address(lab, "host2", v6=True)


def test_plain_pool_to_outside_keeps_the_container_address(lab, networks, outside):
    run(lab, "host1", "plainc", "plainnet")
    plain = address(lab, "host1", "plainc", "plainnet")
    ns = outside["netns"]
    # The outside host is router-less: it needs a route back to the pool.
    labnet.ip("route", "add", PLAIN_POOL, "via", host_address(lab, "host1"), netns=ns)
    try:
        assert source_seen(lab, "host1", "plainc", outside["ipv4"]) == plain
    finally:
        labnet.ip("route", "del", PLAIN_POOL, netns=ns, check=False)


@pytest.mark.parametrize("receiver_host", ["host1", "host2"])
def test_traffic_between_pools_is_not_natted(lab, networks, servers, receiver_host):
    run(lab, "host1", "natc", "natnet")
    run(lab, receiver_host, "plainrx", "plainnet")
    run(lab, receiver_host, "natrx", "natnet")
    server_in(lab, servers, receiver_host, "plainrx")
    server_in(lab, servers, receiver_host, "natrx")
    src = address(lab, "host1", "natc", "natnet")
    # nat pool -> other pool, and nat pool -> the same nat pool: the container's own address
    assert source_seen(lab, "host1", "natc", address(lab, receiver_host, "plainrx", "plainnet")) == src
    assert source_seen(lab, "host1", "natc", address(lab, receiver_host, "natrx", "natnet")) == src


def test_pool_changes_reach_every_node(lab, networks):
    extra = "10.20.32.0/24"
    ctl(lab, "host1", "pool", "add", extra, "--nat-outgoing")
    for host in HOSTS:
        wait_for(lambda: extra in members(lab, host, MASQ_POOLS[4]) and extra in members(lab, host, ALL_POOLS[4]),
                 10, step=0.2, what=f"{extra} in {host}'s ipsets")
    ctl(lab, "host2", "pool", "remove", extra)
    for host in HOSTS:
        wait_for(lambda: extra not in members(lab, host, ALL_POOLS[4]), 10, step=0.2, what=f"{extra} gone on {host}")
        assert members(lab, host, MASQ_POOLS[4]) == {NAT_POOL}
