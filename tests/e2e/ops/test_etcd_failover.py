"""etcd failover: failing the member a node talks to costs no operation.

Two Warren nodes run on a 3-member etcd cluster with TLS (``conftest.ops_lab``).
While a workload of operations that all need etcd runs on both hosts (``docker
run --rm`` on a warren network: IPAM allocation and release, endpoint
records; ``warrenctl pool show``; ``warrenctl ipam show``), the member host1's
node is connected to (seen with ``ss`` in host1's netns) is killed - as a
follower, then as the leader - or frozen. Every operation must succeed, during
and after the failure, and the containers' data path must keep working.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from ctl.lab import IMAGE, Lab
from tests.e2e.helpers import E2E, ctl, dk, pings, run
from tests.e2e.ops.conftest import remove

pytestmark = E2E

NET, SUBNET = "fo61", "10.20.61.0/24"
DST_IP = "10.20.61.200"
MEMBERS = ("etcd1", "etcd2", "etcd3")


@dataclass
class Outcome:
    op: str
    started: float
    ended: float
    ok: bool
    detail: str


@dataclass
class Workload:
    """Each operation in a loop on its own thread until ``stop``; every result is kept."""
    ops: dict[str, Callable[[], tuple[bool, str]]]
    results: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self, name: str, op: Callable[[], tuple[bool, str]]) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                ok, detail = op()
            except Exception as exc:  # a timeout of the command itself is a failure too
                ok, detail = False, repr(exc)
            with self._lock:
                self.results.append(Outcome(name, t0, time.monotonic(), ok, detail))

    def __enter__(self) -> "Workload":
        for name, op in self.ops.items():
            t = threading.Thread(target=self._loop, args=(name, op), name=f"wl-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=300)

    def done_since(self, since: float) -> dict[str, int]:
        """Operations of each kind that started at or after ``since`` and finished."""
        with self._lock:
            counts = {name: 0 for name in self.ops}
            for r in self.results:
                if r.started >= since:
                    counts[r.op] += 1
            return counts

    def wait(self, since: float, each: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while min(self.done_since(since).values()) < each:
            assert time.monotonic() < deadline, f"workload stalled: {self.done_since(since)}"
            time.sleep(0.5)

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [r for r in self.results if not r.ok]


def workload(lab: Lab) -> Workload:
    def docker_run(host: str) -> Callable[[], tuple[bool, str]]:
        def op() -> tuple[bool, str]:
            res = dk(lab, host, "run", "--rm", "--init", "--net", NET, IMAGE, "true", check=False, timeout=180)
            return res.returncode == 0, res.stderr.strip()
        return op

    def cli(host: str, *args: str) -> Callable[[], tuple[bool, str]]:
        def op() -> tuple[bool, str]:
            res = ctl(lab, host, *args, check=False)
            return res.returncode == 0, res.stderr.strip()
        return op

    return Workload({"docker run host1": docker_run("host1"), "docker run host2": docker_run("host2"),
                     "pool show host1": cli("host1", "pool", "show"),
                     "ipam show host2": cli("host2", "ipam", "show")})


@pytest.fixture(scope="module")
def fabric(ops_lab):
    for host in ("host1", "host2"):
        dk(ops_lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", SUBNET, NET)
    run(ops_lab, "host2", "fo-dst", NET, "--ip", DST_IP)
    run(ops_lab, "host1", "fo-src", NET)
    eventually(lambda: pings(ops_lab, "host1", "fo-src", DST_IP), 90, "host1 -> host2 never pinged")
    try:
        yield ops_lab
    finally:
        remove(ops_lab, "host1", ["fo-src"])
        remove(ops_lab, "host2", ["fo-dst"])
        for host in ("host1", "host2"):
            remove(ops_lab, host, networks=[NET])


@pytest.fixture
def cluster(fabric):
    """The lab; afterwards every member is running again, whatever the test did."""
    try:
        yield fabric
    finally:
        fabric.start_etcd()


def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """BGP sessions and routes converge in seconds; wait for them, never sleep blindly."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(1)


def session_up(lab: Lab, host: str, peer: str) -> bool:
    res = ctl(lab, host, "node", "status", "--json", check=False)
    return res.returncode == 0 and any(s["peer"] == peer and s["state"] == "up"
                                       for s in json.loads(res.stdout)["sessions"])


def talked_to(lab: Lab, host: str) -> str:
    """The member ``host``'s node holds the most connections to (its processes start on the first
    endpoint and stay where failover took them)."""
    counts = lab.etcd_connections(host)
    member = max(counts, key=lambda m: counts[m])
    assert counts[member] > 0, f"{host} has no connection to any etcd member: {counts}"
    return member


def fail_member_under_load(lab: Lab, victim: str, sig: int) -> None:
    with workload(lab) as wl:
        t0 = time.monotonic()
        wl.wait(t0, each=1, timeout=180)                 # everything works before...
        lab.stop_etcd(member=victim, sig=sig)
        t_fail = time.monotonic()
        wl.wait(t_fail, each=3, timeout=300)             # ...and keeps working after the failure
    assert wl.failures() == [], "\n".join(f"{f.op} at +{f.started - t_fail:.1f}s: {f.detail}"
                                          for f in wl.failures())
    assert min(wl.done_since(t_fail).values()) >= 3
    assert lab.etcd_connections("host1")[victim] == 0
    assert sum(lab.etcd_connections("host1").values()) > 0  # the node moved to the other members


def check_fabric_still_works(lab: Lab, tag: str) -> None:
    assert pings(lab, "host1", "fo-src", DST_IP)
    run(lab, "host2", f"fo-{tag}", NET)                    # a new allocation on host2...
    try:
        addr = dk(lab, "host2", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{NET}").IPAddress}}}}',
                  f"fo-{tag}").stdout.strip()
        assert addr
        eventually(lambda: pings(lab, "host1", "fo-src", addr), 60, f"{addr} on host2 unreachable")
    finally:
        remove(lab, "host2", [f"fo-{tag}"])


def test_killing_the_follower_a_node_talks_to(cluster):
    victim = talked_to(cluster, "host1")
    if cluster.etcd_leader() == victim:
        cluster.move_etcd_leader(next(m for m in MEMBERS if m != victim))
    assert cluster.etcd_leader() != victim
    fail_member_under_load(cluster, victim, signal.SIGKILL)
    check_fabric_still_works(cluster, "after-follower")


def test_killing_the_leader_a_node_talks_to(cluster):
    victim = talked_to(cluster, "host1")
    cluster.move_etcd_leader(victim)
    assert cluster.etcd_leader() == victim
    fail_member_under_load(cluster, victim, signal.SIGKILL)
    assert cluster.etcd_leader() not in (None, victim)      # the others elected a new leader
    check_fabric_still_works(cluster, "after-leader")


def test_restarted_member_rejoins_and_serves(cluster):
    victim = talked_to(cluster, "host1")
    cluster.stop_etcd(member=victim, sig=signal.SIGKILL)
    ctl(cluster, "host1", "pool", "add", "10.20.62.0/24")    # written while the member is down
    try:
        cluster.start_etcd(member=victim)
        # Only the restarted member: it has caught up, and a node can use it alone.
        alone = cluster.etcd_member(victim).endpoint
        shown = ctl(cluster, "host2", "--etcd-endpoints", alone, "pool", "show")
        assert "10.20.62.0/24" in shown.stdout
    finally:
        ctl(cluster, "host1", "pool", "remove", "10.20.62.0/24", check=False)


def test_a_hung_member_costs_no_operation(cluster):
    """SIGSTOP: connections to the member stay open and nothing answers (a hung or
    partitioned machine); calls time out and move on to the other members."""
    victim = talked_to(cluster, "host1")
    if cluster.etcd_leader() == victim:
        cluster.move_etcd_leader(next(m for m in MEMBERS if m != victim))
    with workload(cluster) as wl:
        t0 = time.monotonic()
        wl.wait(t0, each=1, timeout=180)
        cluster.stop_etcd(member=victim, sig=signal.SIGSTOP)
        t_fail = time.monotonic()
        wl.wait(t_fail, each=3, timeout=300)
    assert wl.failures() == [], "\n".join(f"{f.op} at +{f.started - t_fail:.1f}s: {f.detail}"
                                          for f in wl.failures())
    assert pings(cluster, "host1", "fo-src", DST_IP)


def test_watches_survive_a_hung_member(cluster):
    """A node whose watches are all on one member (freshly started: the first endpoint)
    must notice when that member hangs: a container it starts afterwards, in a block it
    claims afterwards, must get its policy and its route announced."""
    first = cluster.etcd_member(1).name
    if cluster.etcd_leader() == first:
        cluster.move_etcd_leader(next(m for m in MEMBERS if m != first))
    for host in ("host1", "host2"):
        dk(cluster, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.63.0/24", "fo63")
    try:
        run(cluster, "host1", "fo-probe", "fo63")
        cluster.restart_node("host2")
        eventually(lambda: session_up(cluster, "host2", cluster.host(1).ipv4), 60, "host2's BGP session never came up")
        time.sleep(5)  # settled: no etcd call pending in host2's BGP process
        counts = cluster.etcd_connections("host2")
        assert counts[first] > 0 and sum(counts.values()) == counts[first], counts
        cluster.stop_etcd(member=first, sig=signal.SIGSTOP)
        run(cluster, "host2", "fo-new", "fo63", "--ip", "10.20.63.200")   # a new block of host2's
        eventually(lambda: pings(cluster, "host1", "fo-probe", "10.20.63.200"), 90,
                   "a container host2 started while its etcd member hung never became reachable")
    finally:
        cluster.start_etcd(member=first)
        remove(cluster, "host1", ["fo-probe"], ["fo63"])
        remove(cluster, "host2", ["fo-new"], ["fo63"])
