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
:data:`FAULTS` is injected on ``host1`` - once a third of the runs succeeded,
``IN_RUN`` s into the next ``docker run`` (meant to hit dockerd's calls to the
plugin for that container; their exact moment is not observed):

* ``plugin``, ``supervisor``, ``agent``, ``exabgp``, ``bgp-api``: ``kill -9`` of
  that node process. Pids come from the node's pid files in the host's run dir
  (``HOSTDIR/run/warren/NODE/plugin.pid``, ``supervisor.pid``, ``agent.pid``,
  ``exabgp.pid``; without ``exabgp.pid`` the agent's child running ``exabgp``;
  the API process is ExaBGP's child running ``bgp.api``), each checked
  (command line, and the network namespace of this lab's host) before the
  signal: never by name. Recovery: the product's own (the supervisor restarts
  the plugin server or the agent alone, the agent's speaker restarts ExaBGP,
  ExaBGP its API process) for up to ``AUTO_RECOVERY`` s (3 s for the kinds
  the issue does not require to come back by themselves); if nothing came back,
  ``warrenctl node start`` in the host, as an operator would (reported as the
  recovery used).
* ``etcd``: ``keep`` containers run, etcd is stopped (``Lab.stop_etcd``), they
  are removed with ``docker rm -f`` while it is down, and it is started again
  30 s after it stopped; then the churn runs.
* ``dockerd-live-restore`` / ``dockerd``: dockerd of ``host1`` restarted
  (``Lab.restart_dockerd``: SIGTERM and start) with ``live-restore`` on / off,
  set in the host's ``/etc/docker/daemon.json`` and reloaded (SIGHUP) first.
* ``none``: the churn alone (the same-run baseline of the benchmark).

Then it waits until the nodes are healthy again (every node process running,
the plugin answering, both BGP sessions up), and measures (:class:`FaultResult`):
pings sent and lost from the fault on, the longest outage, when the first ping
after the last loss was answered and when the first ``docker run`` started
after the fault (after etcd came back) succeeded; and **leaks** (:func:`leaks`),
compared with dockerd's own containers on both hosts after the churn removed
its containers: endpoint records, IPAM allocations and handles, ``wrn*``
veths, workload host routes, per-endpoint chains and tag ipset members that no
container dockerd knows owns. Leaks are polled until none is left or
``settle`` s passed (Leave deletes veths in the background; the janitor
reconciles later): what was found first, what is left and how long it took to
go are reported. The first check comes when the churn has ended (during it,
a container being created would count); for ``etcd`` also right after etcd
is back and the removals returned, before the churn starts, so what the
outage left is seen before a janitor round removes it.

The parts: :mod:`.common` (names, docker and warrenctl in a host),
:mod:`.nodeprocs` (pid files, kill, health, ``node start``), :mod:`.probe`
with :mod:`.pinger`, :mod:`.churn`, :mod:`.leaks` with :mod:`.collect`; this
module puts them together.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from ctl.lab import IMAGE, Lab, procs

from .churn import Churn
from .common import DST, DST_IP, HOSTS, NET, PEER, SRC, SUBNET, VICTIM, HarnessError, docker
from .leaks import leaks, settle_leaks
from .nodeprocs import PROCESSES, kill9, node_pid, node_start, plugin_serving, wait_healthy
from .probe import REPLY_TIMEOUT, PingStats, Probe

__all__ = ["FAULTS", "Fabric", "FaultKind", "FaultResult", "HarnessError", "describe", "run_fault"]

AUTO_RECOVERY = 45.0      # s a killed process may take to come back by itself (a bound, not a goal)
ETCD_DOWN = 30.0          # etcd stays stopped this long
IN_RUN = 0.3              # s into a docker run when a process fault hits (meant: during its plugin calls)


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
        """Both containers run and the target answers the source's pings."""
        self.ensure_containers()
        with self.probe() as p:
            p.wait_answering(timeout=timeout)

    def ensure_containers(self) -> None:
        """Both containers run (recreated if not: a dockerd restart without live-restore may
        have left the target stopped)."""
        if not self._running(VICTIM, DST):
            docker(self.lab, VICTIM, "rm", "-f", DST, check=False)
            docker(self.lab, VICTIM, "run", "-d", "--init", "--restart", "always", "--name", DST, "--net", NET,
                   "--ip", DST_IP, IMAGE, "sleep", "100000000")
        if not self._running(PEER, SRC):
            docker(self.lab, PEER, "rm", "-f", SRC, check=False)
            docker(self.lab, PEER, "run", "-d", "--init", "--name", SRC, "--net", NET, IMAGE, "sleep", "100000000")

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
    FaultKind("supervisor", "kill -9 node supervisor", True, False),
    FaultKind("agent", "kill -9 node agent", True, False),
    FaultKind("exabgp", "kill -9 ExaBGP", True, True),
    FaultKind("bgp-api", "kill -9 ExaBGP's API process", True, True),
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
    leaks: dict[str, list[str]]       # left after ``settle`` s
    first_leaks: dict[str, list[str]]  # found at the first check: when the churn ended (etcd: when it
                                       # was back and the removals done, before the churn)
    clean_after: float | None         # s from the first check until no leak was left (None: never)
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
    deadline = time.monotonic() + (AUTO_RECOVERY if FAULTS[which].auto_recovery else 3.0)
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
    fabric.ensure_containers()
    if fault.startswith("dockerd"):
        fabric.set_live_restore(VICTIM, fault == "dockerd-live-restore")
    notes: list[str] = []
    recovered_by = "-"
    early: dict[str, list[str]] = {}
    t_early = 0.0
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
                if any(m["running"] for m in lab.etcd_status()):
                    raise HarnessError("etcd still answers after Lab.stop_etcd")
                removed: list[str] = []

                def remove(name: str) -> None:
                    if docker(lab, VICTIM, "rm", "-f", name, check=False, timeout=300).returncode == 0:
                        removed.append(name)
                removals = [threading.Thread(target=remove, args=(n,)) for n in kept]
                for t in removals:   # one after another, as a script would; etcd comes back regardless
                    t.start()
                    t.join(max(0.0, t_fault + ETCD_DOWN - time.monotonic()))
                time.sleep(max(0.0, t_fault + ETCD_DOWN - time.monotonic()))
                removed_while_down = len(removed)
                lab.start_etcd()
                recovered_by = "etcd start"
                t_run_from = time.monotonic()
                for t in removals:
                    t.join(300)
                early, t_early = leaks(lab), time.monotonic()   # before the churn: nothing in flight
                if removed_while_down < len(kept):   # the rest went after etcd came back
                    notes.append(f"only {removed_while_down} of {len(kept)} containers were removed while "
                                 f"etcd was down")
                churn.start()
            else:
                churn.start()
                churn.wait_runs(max(1, containers // 3))
                churn.wait_in_flight("run", IN_RUN)   # a docker run in flight, as in the case
                t_fault = time.monotonic()
                if fault in PROCESSES:
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
    t_settle = time.monotonic()
    first, found, clean_after = settle_leaks(lab, settle)
    if early:   # etcd: what its outage left, and how long it took to go from then on
        first = early
        clean_after = None if clean_after is None else round(t_settle + clean_after - t_early, 1)
    if any(op.verb == "run" for op in failed):
        notes.append("failed runs: " + "; ".join(f"at {op.started - t_fault:+.1f} s: {op.error[-160:]}"
                                                 for op in failed if op.verb == "run")[:800])
    return FaultResult(fault, containers, pings, baseline, churn.first_run_ok_after(t_run_from),
                       sum(1 for op in failed if op.verb == "run"), sum(1 for op in failed if op.verb == "rm"),
                       recovered_by, problems, found, first, clean_after, notes)


def describe(result: FaultResult) -> str:
    return json.dumps({**{k: v for k, v in result.__dict__.items() if k not in ("pings", "baseline")},
                       "pings": result.pings.__dict__, "baseline": result.baseline.__dict__}, indent=1)
