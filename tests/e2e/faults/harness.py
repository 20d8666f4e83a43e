"""Fault injection on a 2-host warren-lab: lost pings, time to recover, leaks.

Shared by the e2e tests (:mod:`tests.e2e.faults.test_faults`) and the
benchmark (``bench/faults.py``); it imports no pytest.

**The fabric** (:class:`Fabric`): one Warren network ``fnet`` on both hosts; on
the victim host ``host1`` a long-lived target container ``fp-dst`` with a fixed
address and ``--restart always`` (so it comes back with the same address after
a dockerd restart without live-restore), on ``host2`` a source container
``fp-src``. A :class:`Probe` pings the target from inside the source's
network namespace 10 times a second (:mod:`tests.e2e.faults.pinger`, entered
with ``nsenter``: independent of dockerd and ``docker exec``), so the echo and
its reply cross both hosts' routes, BGP and policy. A request without reply
within 1 s is lost.

**One fault run** (:func:`run_fault`): while a :class:`Churn` loop runs and
removes containers on ``host1`` (``docker run -d`` / ``docker rm -f``, a few
alive at a time, until ``containers`` runs have succeeded), one fault from
:data:`FAULTS` is injected on ``host1``:

* ``plugin``, ``agent``, ``exabgp``: ``kill -9`` of the node process. Pids come
  from the node's pid files in the host's run dir (``HOSTDIR/run/warren/NODE/
  plugin.pid``, ``agent.pid``; ExaBGP from ``exabgp.pid`` when the node writes
  one, else the agent's child running ``exabgp``), and are checked (command
  line and network namespace of this lab's host) before the signal: never by
  name. Recovery: the product's own (the plugin server restarted alone, the
  agent's supervision of ExaBGP) for up to ``AUTO_RECOVERY`` s; if nothing
  came back, ``warrenctl node start`` in the host, as an operator would
  (reported as the recovery used).
* ``etcd``: ``keep`` containers run, etcd is stopped (``Lab.stop_etcd``), they
  are removed with ``docker rm -f`` while it is down, and it is started again
  30 s after it stopped; then the churn runs.
* ``dockerd-live-restore`` / ``dockerd``: dockerd of ``host1`` restarted
  (``Lab.restart_dockerd``: SIGTERM and start) with ``live-restore`` on / off,
  set in the host's ``/etc/docker/daemon.json`` and reloaded (SIGHUP) first.
* ``none``: the churn alone (the same-run baseline of the benchmark).

Then it waits until the node is healthy again (plugin answering, agent and
ExaBGP running, both BGP sessions up), and measures (:class:`FaultResult`):
pings sent and lost from the fault on, the longest outage, when the first ping
after the last loss was answered and when the first ``docker run`` started
after the fault (after etcd came back) succeeded; and **leaks** (:func:`leaks`),
compared with dockerd's own containers on both hosts after the churn removed
its containers: endpoint records, IPAM allocations and handles, ``wrn*``
veths, workload host routes, per-endpoint chains and tag ipset members that no
container dockerd knows owns. Leaks are polled until none is left or
``settle`` s passed (Leave deletes veths in the background; a janitor may
reconcile later): the time that took is reported too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ctl.lab import IMAGE, Lab, net as labnet, procs
from plugin import server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PINGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinger.py")

VICTIM, PEER = "host1", "host2"
HOSTS = (VICTIM, PEER)
NET, SUBNET = "fnet", "10.20.71.0/24"
DST_IP = "10.20.71.10"
SRC, DST = "fp-src", "fp-dst"
INTERVAL = 0.1            # 10 pings a second
REPLY_TIMEOUT = 1.0       # a request without reply within this is lost
AUTO_RECOVERY = 20.0      # how long a killed process may take to come back by itself
HEALTHY_TIMEOUT = 90.0
ETCD_DOWN = 30.0          # etcd stays stopped this long
CHURN_WINDOW = 3          # churn containers alive at a time
PLUGIN_MARK, AGENT_MARK, EXABGP_MARK = "plugin.wsgi", "ctl.agent", "exabgp"


class HarnessError(Exception):
    pass


def docker(lab: Lab, host: str, *args: str, timeout: float = 120, check: bool = True
           ) -> subprocess.CompletedProcess:
    res = lab.docker(host, list(args), timeout=timeout)
    if check and res.returncode != 0:
        raise HarnessError(f"{host}: docker {' '.join(args)}: {res.stderr.strip()}")
    return res


def warrenctl(lab: Lab, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return lab.exec(host, ["warrenctl", *args], timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)


# -- the node's processes, by pid file -------------------------------------------------------------

def run_dir(lab: Lab, host: str) -> str:
    """The node's run dir seen from outside the host (the host's /run is HOSTDIR/run)."""
    return lab.host(host).path("run", "warren", host)


def _ours(lab: Lab, host: str, pid: int | None, mark: str) -> int | None:
    """``pid`` if it runs ``mark`` in this lab's ``host`` (its network namespace), else None."""
    if pid is None or mark not in (procs.cmdline(pid) or ""):
        return None
    inode = labnet.netns_inode(lab.host(host).netns)
    return pid if inode is not None and procs.ns_inode(pid, "net") == inode else None


def node_pid(lab: Lab, host: str, which: str) -> int | None:
    """The live pid of the node's ``plugin``, ``agent`` or ``exabgp`` process on ``host``."""
    if which == "exabgp":
        return exabgp_pid(lab, host)
    pidfile, mark = {"plugin": ("plugin.pid", PLUGIN_MARK), "agent": ("agent.pid", AGENT_MARK)}[which]
    return _ours(lab, host, procs.read_pidfile(os.path.join(run_dir(lab, host), pidfile)), mark)


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def exabgp_pid(lab: Lab, host: str) -> int | None:
    """ExaBGP: from ``exabgp.pid`` if the node writes one, else the agent's child running it."""
    pid = _ours(lab, host, procs.read_pidfile(os.path.join(run_dir(lab, host), "exabgp.pid")), EXABGP_MARK)
    if pid is not None:
        return pid
    agent = node_pid(lab, host, "agent")
    if agent is None:
        return None
    for child in children(agent):
        if _ours(lab, host, child, EXABGP_MARK) and "bgp.api" not in (procs.cmdline(child) or ""):
            return child
    return None


def kill9(lab: Lab, host: str, which: str) -> int:
    pid = node_pid(lab, host, which)
    if pid is None:
        raise HarnessError(f"{host}: no running {which} process found by its pid file")
    os.kill(pid, signal.SIGKILL)
    return pid


def plugin_serving(lab: Lab, host: str) -> bool:
    sock = lab.host(host).path("run", "docker", "plugins", "warren.sock")
    try:
        status, answer = server.call(sock, "Plugin.Activate", timeout=2.0)
    except Exception:
        return False
    return status == 200 and "NetworkDriver" in answer.get("Implements", [])


def sessions_up(lab: Lab, host: str) -> bool:
    """Every BGP session of ``host``'s node is up (and there is one per other host)."""
    res = warrenctl(lab, host, "node", "status", "--json")
    if res.returncode != 0:
        return False
    try:
        sessions = json.loads(res.stdout)["sessions"]
    except (ValueError, KeyError, TypeError):
        return False
    return len(sessions) >= len(HOSTS) - 1 and all(s.get("state") == "up" for s in sessions)


def unhealthy(lab: Lab) -> list[str]:
    """What is not running as it should on the hosts' nodes (empty: healthy)."""
    out = []
    for host in HOSTS:
        for which in ("plugin", "agent", "exabgp"):
            if node_pid(lab, host, which) is None:
                out.append(f"{host}: no {which} process")
        if not plugin_serving(lab, host):
            out.append(f"{host}: plugin does not answer")
        if not sessions_up(lab, host):
            out.append(f"{host}: BGP session not up")
    return out


def wait_healthy(lab: Lab, timeout: float = HEALTHY_TIMEOUT) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        problems = unhealthy(lab)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.5)


def node_start(lab: Lab, host: str) -> subprocess.CompletedProcess:
    """``warrenctl node start`` in ``host``, as the lab starts it (output to node-start.log)."""
    h = lab.host(host)
    argv = ["warrenctl", "node", "start", "--name", h.name, "--ip", h.ipv4, "--ip6", h.ipv6]
    with open(h.path("node-start.log"), "ab") as out:
        return lab.exec(h, argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        capture=False, timeout=120, cwd=REPO)


# -- the probe: 10 pings a second across hosts -------------------------------------------------------

@dataclass
class PingStats:
    sent: int
    answered: int
    lost: int
    longest_outage: float       # seconds of the longest run of lost requests
    recovered_after: float | None  # from the window's start to the first reply after the last loss

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.lost == 0


class Probe:
    """The pinger in ``container``'s netns on ``host``; its events, kept in memory."""

    def __init__(self, lab: Lab, host: str, container: str, dst: str):
        self.lab, self.host, self.container, self.dst = lab, host, container, dst
        self.sent: dict[int, float] = {}
        self.replies: dict[int, float] = {}
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> "Probe":
        pid = docker(self.lab, self.host, "inspect", "-f", "{{.State.Pid}}", self.container).stdout.strip()
        if not pid.isdigit() or pid == "0":
            raise HarnessError(f"{self.container} on {self.host} is not running")
        self.proc = subprocess.Popen(["nsenter", "-t", pid, "-n", sys.executable, "-I", "-S", PINGER, self.dst,
                                      str(INTERVAL)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, name="probe", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            kind, n, t = line.split()
            with self._lock:
                (self.sent if kind == "s" else self.replies)[int(n)] = float(t)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader:
            self._reader.join(5)

    def __enter__(self) -> "Probe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_answering(self, streak: int = 10, timeout: float = 90.0) -> float:
        """Until ``streak`` requests in a row were answered; the time that was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise HarnessError("the pinger exited")
            with self._lock:
                last = sorted(self.sent)[-streak - 10:-10] if len(self.sent) > streak + 10 else []
                if len(last) == streak and all(n in self.replies for n in last):
                    return self.sent[last[-1]]
            time.sleep(0.2)
        raise HarnessError(f"{self.dst} not answering {self.container}'s pings within {timeout:.0f}s")

    def stats(self, start: float, end: float) -> PingStats:
        """Requests sent in [start, end] (wait REPLY_TIMEOUT after ``end`` before asking)."""
        with self._lock:
            seqs = sorted(n for n, t in self.sent.items() if start <= t <= end)
            lost = [n for n in seqs if n not in self.replies or self.replies[n] - self.sent[n] > REPLY_TIMEOUT]
            sent = dict(self.sent)
        longest, run_start, prev = 0.0, None, None
        lost_set = set(lost)
        for n in seqs:
            if n in lost_set:
                if run_start is None:
                    run_start = sent[n]
                prev = sent[n]
                longest = max(longest, prev - run_start + INTERVAL)
            else:
                run_start = None
        recovered = None
        if not lost:
            recovered = 0.0
        else:
            after = [n for n in seqs if n > lost[-1] and n not in lost_set]
            if after:
                recovered = self.replies[after[0]] - start
        return PingStats(len(seqs), len(seqs) - len(lost), len(lost), round(longest, 2),
                         None if recovered is None else round(recovered, 2))


# -- the churn: docker run / rm -f on the victim ---------------------------------------------------

@dataclass
class Op:
    verb: str
    name: str
    started: float
    ended: float
    ok: bool
    error: str = ""


class Churn:
    """``docker run -d`` then ``docker rm -f`` of containers on ``host`` (``window`` alive at a time)
    on a thread, until ``count`` runs succeeded (or ``deadline`` s); everything is removed at the end."""

    def __init__(self, lab: Lab, host: str, tag: str, count: int, window: int = CHURN_WINDOW,
                 deadline: float = 300.0):
        self.lab, self.host, self.tag, self.count, self.window = lab, host, tag, count, window
        self.deadline = deadline
        self.ops: list[Op] = []
        self.names: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"churn-{tag}", daemon=True)

    def _do(self, verb: str, name: str, *args: str) -> bool:
        t0 = time.monotonic()
        try:
            res = docker(self.lab, self.host, *args, timeout=180, check=False)
            ok, err = res.returncode == 0, res.stderr.strip()
        except subprocess.TimeoutExpired as exc:
            ok, err = False, f"timed out: {exc}"
        with self._lock:
            self.ops.append(Op(verb, name, t0, time.monotonic(), ok, err[-300:]))
        return ok

    def _loop(self) -> None:
        alive: list[str] = []
        start, i = time.monotonic(), 0
        while (self.runs_ok() < self.count and not self._stop.is_set()
               and time.monotonic() - start < self.deadline):
            name = f"fc{self.tag}{i}"
            i += 1
            with self._lock:
                self.names.append(name)
            if self._do("run", name, "run", "-d", "--init", "--name", name, "--net", NET, IMAGE, "sleep", "600"):
                alive.append(name)
            else:
                self._do("rm", name, "rm", "-f", name)
                time.sleep(0.5)
            while len(alive) > self.window:
                self._do("rm", alive[0], "rm", "-f", alive[0])
                alive.pop(0)
        for name in alive:
            self._do("rm", name, "rm", "-f", name)

    def start(self) -> "Churn":
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(300)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(300)

    def runs_ok(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.verb == "run" and op.ok)

    def runs_started(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.verb == "run") + (1 if self._thread.is_alive() else 0)

    def wait_runs(self, n: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.runs_ok() < n:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise HarnessError(f"churn: {self.runs_ok()} of {n} runs succeeded; last: {self.failures()[-3:]}")
            time.sleep(0.1)

    def failures(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if not op.ok]

    def first_run_ok_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the end of the first run started at or after ``t`` that succeeded."""
        with self._lock:
            ends = [op.ended for op in self.ops if op.verb == "run" and op.ok and op.started >= t]
        return round(min(ends) - t, 2) if ends else None

    def remove_everything(self) -> None:
        """Every container the churn ever named is gone (clean-up; also after failures)."""
        with self._lock:
            names = list(self.names)
        for i in range(0, len(names), 50):
            docker(self.lab, self.host, "rm", "-f", *names[i:i + 50], check=False, timeout=300)


# -- leaks: what Warren holds that no container of dockerd's owns ------------------------------------

@dataclass
class Owned:
    """Per host: the endpoint ids and addresses of every container dockerd has on a Warren network."""
    endpoints: dict[str, set[str]]
    addresses: dict[str, set[str]]

    @property
    def all_addresses(self) -> set[str]:
        return set().union(*self.addresses.values())


def warren_networks(lab: Lab, host: str) -> set[str]:
    res = docker(lab, host, "network", "ls", "-q", "--no-trunc", "--filter", "driver=warren")
    return set(res.stdout.split())


def owned(lab: Lab) -> Owned:
    endpoints: dict[str, set[str]] = {}
    addresses: dict[str, set[str]] = {}
    for host in HOSTS:
        endpoints[host], addresses[host] = set(), set()
        nets = warren_networks(lab, host)
        ids = docker(lab, host, "ps", "-aq", "--no-trunc").stdout.split()
        if not ids:
            continue
        res = docker(lab, host, "inspect", *ids, check=False)
        for c in json.loads(res.stdout or "[]"):
            for attached in ((c.get("NetworkSettings") or {}).get("Networks") or {}).values():
                if attached.get("NetworkID") not in nets or not attached.get("EndpointID"):
                    continue
                endpoints[host].add(attached["EndpointID"])
                for key in ("IPAddress", "GlobalIPv6Address"):
                    if attached.get(key):
                        addresses[host].add(attached[key])
    return Owned(endpoints, addresses)


def collect(lab: Lab, host: str, etcd: bool = False) -> dict:
    argv = [sys.executable, "-m", "tests.e2e.faults.collect"] + (["--etcd"] if etcd else [])
    res = lab.exec(host, argv, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise HarnessError(f"{host}: collect: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout)


LEAK_KINDS = ("endpoints", "allocations", "handles", "veths", "routes", "chains", "set members")


def leaks(lab: Lab) -> dict[str, list[str]]:
    """Every kind of state no container owns (kinds with none are left out)."""
    mine = owned(lab)
    states = {host: collect(lab, host, etcd=(host == HOSTS[0])) for host in HOSTS}
    records = states[HOSTS[0]]
    everywhere = mine.all_addresses
    out: dict[str, list[str]] = {kind: [] for kind in LEAK_KINDS}
    for e in records["endpoints"]:
        if e["id"] not in mine.endpoints.get(e["host"], set()):
            out["endpoints"].append(f"{e['host']}/{e['id'][:12]} {','.join(e['addresses'])}")
    for a in records["allocations"]:
        if a["address"] not in mine.addresses.get(a["host"], set()):
            out["allocations"].append(f"{a['address']} on {a['host']} ({a['handle']})")
    held = {(a["handle"], a["address"]) for a in records["allocations"]}
    for h in records["handles"]:
        if h["address"] not in everywhere or (h["handle"], h["address"]) not in held:
            out["handles"].append(f"{h['handle']}/{h['address']}")
    for host, state in states.items():
        ifaces = {"wrn" + e[:11] for e in mine.endpoints[host]}
        out["veths"] += [f"{host}:{v}" for v in state["veths"] if v not in ifaces]
        out["routes"] += [f"{host}:{r['dst']} dev {r['dev']}" for r in state["routes"]
                          if r["dst"] not in mine.addresses[host] or r["dev"] not in ifaces]
        out["chains"] += [f"{host}:{c}" for c in state["chains"] if c[len("WARREN-FW-"):] not in ifaces]
        for name, members in state["sets"].items():
            out["set members"] += [f"{host}:{name}:{m}" for m in members if m not in everywhere]
    return {kind: items for kind, items in out.items() if items}


def settle_leaks(lab: Lab, timeout: float) -> tuple[dict[str, list[str]], float | None]:
    """Poll :func:`leaks` until there are none (then: the seconds it took) or ``timeout``."""
    start = time.monotonic()
    while True:
        found = leaks(lab)
        if not found:
            return found, round(time.monotonic() - start, 1)
        if time.monotonic() - start > timeout:
            return found, None
        time.sleep(2)


# -- the fabric ------------------------------------------------------------------------------------

class Fabric:
    """The network, the two long-lived containers and the live-restore switch of one lab."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def setup(self) -> "Fabric":
        for host in HOSTS:
            if NET not in docker(self.lab, host, "network", "ls", "--format", "{{.Name}}").stdout.split():
                docker(self.lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
                       "--subnet", SUBNET, NET)
        self.ready()
        return self

    def _running(self, host: str, name: str) -> bool:
        res = docker(self.lab, host, "inspect", "-f", "{{.State.Running}}", name, check=False)
        return res.returncode == 0 and res.stdout.strip() == "true"

    def ready(self, timeout: float = 90.0) -> None:
        """Both containers run and the target answers the source's pings (recreated if not)."""
        if not self._running(VICTIM, DST):
            docker(self.lab, VICTIM, "rm", "-f", DST, check=False)
            docker(self.lab, VICTIM, "run", "-d", "--init", "--restart", "always", "--name", DST, "--net", NET,
                   "--ip", DST_IP, IMAGE, "sleep", "100000000")
        if not self._running(PEER, SRC):
            docker(self.lab, PEER, "rm", "-f", SRC, check=False)
            docker(self.lab, PEER, "run", "-d", "--init", "--name", SRC, "--net", NET, IMAGE, "sleep", "100000000")
        with self.probe() as p:
            p.wait_answering(timeout=timeout)

    def probe(self) -> Probe:
        return Probe(self.lab, PEER, SRC, DST_IP)

    def set_live_restore(self, host: str, on: bool) -> None:
        """``live-restore`` in the host's daemon.json, applied by a reload (SIGHUP: no restart)."""
        h = self.lab.host(host)
        path = h.path("etc-docker", "daemon.json")
        try:
            config = json.load(open(path))
        except (OSError, ValueError):
            config = {}
        config["live-restore"] = on
        with open(path + ".tmp", "w") as f:
            json.dump(config, f)
        os.replace(path + ".tmp", path)
        pid = procs.read_pidfile(h.path("dockerd.pid"))
        if not procs.matches(pid, self.lab.dockerd):
            raise HarnessError(f"{host}: dockerd not running")
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while docker(self.lab, host, "info", "-f", "{{.LiveRestoreEnabled}}").stdout.strip() != str(on).lower():
            if time.monotonic() > deadline:
                raise HarnessError(f"{host}: dockerd did not reload live-restore={on}")
            time.sleep(0.2)

    def teardown(self) -> None:
        for host, name in ((VICTIM, DST), (PEER, SRC)):
            docker(self.lab, host, "rm", "-f", name, check=False)
        for host in HOSTS:
            docker(self.lab, host, "network", "rm", NET, check=False)


# -- faults ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaultKind:
    name: str
    title: str
    zero_loss: bool       # the goal: no ping lost
    auto_recovery: bool   # the product brings the node back by itself (no operator action)


FAULTS: dict[str, FaultKind] = {k.name: k for k in (
    FaultKind("none", "no fault (churn only)", True, True),
    FaultKind("plugin", "kill -9 plugin server", True, True),
    FaultKind("agent", "kill -9 node agent", True, False),
    FaultKind("exabgp", "kill -9 ExaBGP", True, True),
    FaultKind("etcd", f"etcd stopped {ETCD_DOWN:.0f} s during rm -f", True, True),
    FaultKind("dockerd-live-restore", "dockerd restart, live-restore", True, True),
    FaultKind("dockerd", "dockerd restart, no live-restore", False, True),
)}


@dataclass
class FaultResult:
    fault: str
    containers: int
    pings: PingStats
    baseline: PingStats               # the same probe before the fault
    run_recovery: float | None        # s from the fault (etcd: from its restart) to the first run that succeeded
    failed_runs: int
    failed_rms: int
    recovered_by: str                 # "itself", "node start", "etcd start", "dockerd restart", "-"
    unhealthy: list[str]              # what was still wrong with the nodes after HEALTHY_TIMEOUT
    leaks: dict[str, list[str]]
    clean_after: float | None         # s until no leak was left (None: never, within settle)
    notes: list[str] = field(default_factory=list)  # information (failed runs...), not a goal

    def problems(self) -> list[str]:
        """Where this run misses the issue's goals (empty: met)."""
        kind = FAULTS[self.fault]
        out = []
        if kind.zero_loss and not self.pings.ok:
            out.append(f"{self.pings.lost} of {self.pings.sent} pings lost (longest outage "
                       f"{self.pings.longest_outage} s)")
        if self.pings.sent == 0 or self.pings.answered == 0:
            out.append("the probe saw no answered ping after the fault")
        if kind.auto_recovery and self.recovered_by not in ("itself", "etcd start", "dockerd restart", "-"):
            out.append(f"did not recover by itself (needed {self.recovered_by})")
        if self.unhealthy:
            out.append(f"nodes not healthy afterwards: {self.unhealthy}")
        if self.run_recovery is None:
            out.append("no docker run succeeded after the fault")
        for kind_name, items in self.leaks.items():
            out.append(f"{len(items)} leaked {kind_name}: {items[:6]}")
        return out


def _recover_process(lab: Lab, host: str, which: str, old: int) -> str:
    """Wait for the product to bring ``which`` back; else ``warrenctl node start``."""
    deadline = time.monotonic() + (AUTO_RECOVERY if which != "agent" else 3.0)
    while time.monotonic() < deadline:
        pid = node_pid(lab, host, which)
        if pid is not None and pid != old and (which != "plugin" or plugin_serving(lab, host)):
            return "itself"
        time.sleep(0.2)
    res = node_start(lab, host)
    return "node start" if res.returncode == 0 else f"node start (failed: exit {res.returncode})"


def run_fault(fabric: Fabric, fault: str, containers: int, settle: float, keep: int = 6) -> FaultResult:
    """Inject ``fault`` on the victim during a churn of ``containers`` runs; measure; clean up."""
    lab = fabric.lab
    if fault not in FAULTS:
        raise HarnessError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
    tag = fault.replace("-", "")[:6] + str(int(time.time()) % 10000)
    fabric.ready()
    if fault.startswith("dockerd"):
        fabric.set_live_restore(VICTIM, fault == "dockerd-live-restore")
    notes: list[str] = []
    recovered_by = "-"
    with fabric.probe() as probe:
        t_ok = probe.wait_answering()
        churn = Churn(lab, VICTIM, tag, containers)
        kept = [f"fk{tag}{i}" for i in range(keep)] if fault == "etcd" else []
        try:
            if fault == "etcd":
                for name in kept:
                    docker(lab, VICTIM, "run", "-d", "--init", "--name", name, "--net", NET, IMAGE, "sleep", "600")
                t_fault = time.monotonic()
                lab.stop_etcd()
                removals = [threading.Thread(target=docker, args=(lab, VICTIM, "rm", "-f", n),
                                             kwargs={"check": False, "timeout": 300}) for n in kept]
                for t in removals:   # one after another, as a script would; etcd comes back regardless
                    t.start()
                    t.join(max(0.0, t_fault + ETCD_DOWN - time.monotonic()))
                time.sleep(max(0.0, t_fault + ETCD_DOWN - time.monotonic()))
                lab.start_etcd()
                recovered_by = "etcd start"
                t_run_from = time.monotonic()
                for t in removals:
                    t.join(300)
                churn.start()
            else:
                churn.start()
                churn.wait_runs(max(1, containers // 3))
                time.sleep(0.1)  # into the next run's requests
                t_fault = time.monotonic()
                if fault in ("plugin", "agent", "exabgp"):
                    old = kill9(lab, VICTIM, fault)
                    recovered_by = _recover_process(lab, VICTIM, fault, old)
                elif fault.startswith("dockerd"):
                    lab.restart_dockerd(VICTIM)
                    recovered_by = "dockerd restart"
                t_run_from = t_fault
            churn.wait()
            problems = wait_healthy(lab)
            t_end = time.monotonic()
            time.sleep(REPLY_TIMEOUT + 0.5)
            pings, baseline = probe.stats(t_fault, t_end), probe.stats(t_ok, t_fault)
        finally:
            churn.stop()
            churn.remove_everything()
            if kept:
                lab.start_etcd()
                docker(lab, VICTIM, "rm", "-f", *kept, check=False, timeout=300)
    failed = churn.failures()
    found, clean_after = settle_leaks(lab, settle)
    if any(op.verb == "run" for op in failed):
        notes.append("failed runs: " + "; ".join(f"+{op.started - t_fault:.1f}s {op.error[-120:]}"
                                                 for op in failed if op.verb == "run")[:600])
    return FaultResult(fault, containers, pings, baseline, churn.first_run_ok_after(t_run_from),
                       sum(1 for op in failed if op.verb == "run"), sum(1 for op in failed if op.verb == "rm"),
                       recovered_by, problems, found, clean_after, notes)


def describe(result: FaultResult) -> str:
    return json.dumps({**{k: v for k, v in result.__dict__.items() if k not in ("pings", "baseline")},
                       "pings": result.pings.__dict__, "baseline": result.baseline.__dict__}, indent=1)
