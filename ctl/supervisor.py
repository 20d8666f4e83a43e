"""The node supervisor: keeps this host's two node processes running, each on its own.

A node is two processes: the **plugin server** (:mod:`plugin.wsgi`, dockerd's
only contact) and the **node agent** (:mod:`ctl.agent`: policy, nat-outgoing,
the BGP speaker with its ExaBGP). Neither is on the data path: the kernel
forwards with the routes, rules and veths they left, and peers keep this
host's routes through graceful restart. So a fault of one must be repaired by
restarting *that one alone*: stopping the agent to recover a dead plugin
server withdraws the host's routes and cuts cross-host traffic.

:class:`Supervisor` does that. Every ``TICK`` s it checks each child:

* **alive?** its own child's exit status, or - for a process it adopted -
  the pid file's pid still running our command line (``mark``);
* the plugin server also **answers?** ``Plugin.Activate`` on its socket every
  ``PROBE_INTERVAL`` s; ``HUNG_AFTER`` failures in a row once it has
  answered, or ``START_GRACE`` s after it started, and it is killed
  (SIGKILL) and started again - at once if its socket file is gone (a
  socket nobody can find is as good as a dead server);
* a dead child is started again at once after a healthy run
  (``HEALTHY_AFTER`` s), else after a backoff doubling from 1 s to
  ``MAX_BACKOFF`` s. SIGUSR1 (sent by ``node start``) retries now.

Where it runs:

* ``warrenctl node start`` (background): a detached ``python -m
  ctl.supervisor SPEC`` (stdlib only, ~15 MiB resident), with its pid file
  ``supervisor.pid`` and its log ``supervisor.log``; SPEC is the JSON
  ``supervisor.json`` node start writes (argv and files of both children; the
  environment is inherited);
* ``warrenctl node start --foreground`` (systemd's warren-node.service, a
  container's PID 1): the same class in the main process.

Either way it is a child subreaper and reaps orphans (:func:`reap_orphans`):
what a killed agent leaves is reparented to it, not to an init that may not
reap (a container's PID 1 is the supervisor itself).

When the supervisor itself is killed its children run on; the next ``node
start`` starts a supervisor that **adopts** them (by pid file) and starts only
what is missing. The agent is started as a process-group leader and every
agent group is recorded in ``agent.groups``: whatever a killed agent left
(ExaBGP, its API process) keeps that group, and :func:`stop_groups` ends it
on stop - found by the recorded group, never by name; each member is
checked to be a process of this installation (its command line has this
Python's directory). Restarting an agent does not touch the previous
agent's group: a speaker may adopt what it left (bgp.speaker).

SIGTERM/SIGINT stop the node in order: the agent first (its speaker withdraws
the routes at once, the liveness lease goes), the recorded agent groups, then
the plugin server; exit status 0.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

log = logging.getLogger("warren.supervisor")

TICK = 0.2             # s between checks
PROBE_INTERVAL = 5.0   # s between Plugin.Activate probes
PROBE_TIMEOUT = 3.0    # s one probe may take
HUNG_AFTER = 6         # failed probes in a row: a hung plugin server is killed
START_GRACE = 60.0     # s a starting plugin server gets before probes count
HEALTHY_AFTER = 60.0   # s of running after which a death is restarted at once
MAX_BACKOFF = 30.0
STOP_TIMEOUT = 15.0    # s from SIGTERM to SIGKILL
SUPERVISOR_MARKS = (b"ctl.supervisor", b"--foreground")
PR_SET_CHILD_SUBREAPER = 36
INSTALL_MARK = os.path.dirname(sys.executable).encode()  # a process of this installation


@dataclass
class Child:
    name: str                   # "agent" | "plugin"
    argv: list[str]
    pidfile: str
    mark: str                   # in the command line of a process that is this child
    out: str | None = None      # file for stdout/stderr (None: the supervisor's)
    socket: str | None = None   # probed with Plugin.Activate (the plugin server)
    writes_pidfile: bool = False  # the process writes its own pid file (plugin.wsgi)
    group_file: str | None = None  # record its process group there (the agent)
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    pid: int | None = None
    started: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    answered: bool = False
    failures: int = 0
    next_probe: float = 0.0

    def spec(self) -> dict:
        keep = ("name", "argv", "pidfile", "mark", "out", "socket", "writes_pidfile", "group_file")
        return {k: v for k, v in asdict(self).items() if k in keep}


# --- processes by pid file and group ------------------------------------------------------------

def cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return None


def running(pid: int | None, marks: tuple[bytes, ...]) -> bool:
    """``pid`` runs (not a zombie) a command line with one of ``marks``."""
    if not pid:
        return False
    line = cmdline(pid)
    return bool(line) and any(m in line for m in marks) and _state(pid) not in ("Z", "X", None)


def running_pid(pidfile: str, marks: bytes | tuple[bytes, ...]) -> int | None:
    """The pid in ``pidfile`` if that process is still ours (its command line has a mark)."""
    marks = (marks,) if isinstance(marks, bytes) else marks
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if running(pid, marks) else None


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _state(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[2] == str(pgid) and stat[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def stop_pids(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(_state(p) not in ("Z", "X", None) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [p for p in pids if _state(p) not in ("Z", "X", None)]
        if not pids:
            return


def record_group(group_file: str, pgid: int) -> None:
    groups = [g for g in read_groups(group_file) if group_members(g)] + [pgid]  # drop ended ones
    tmp = f"{group_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write("".join(f"{g}\n" for g in dict.fromkeys(groups)))
    os.replace(tmp, group_file)


def read_groups(group_file: str) -> list[int]:
    try:
        with open(group_file) as f:
            return [int(line) for line in f if line.strip().isdigit()]
    except OSError:
        return []


def stop_groups(group_file: str, timeout: float = STOP_TIMEOUT) -> list[int]:
    """End every process left in the recorded agent groups (ExaBGP and its API process of a
    killed agent); returns their pids. The file is emptied."""
    pids = [p for g in read_groups(group_file) for p in group_members(g)
            if INSTALL_MARK in (cmdline(p) or b"")]
    if pids:
        log.info("stopping what earlier agents left: %s", " ".join(map(str, pids)))
        stop_pids(pids, timeout)
    try:
        os.unlink(group_file)
    except FileNotFoundError:
        pass
    return pids


def reap_orphans(keep) -> list[int]:
    """Reap every exited child except those in ``keep`` (a pid or pids, which their Popen waits
    for); return their pids.

    As PID 1 of a container we inherit every orphan: an ExaBGP whose agent was
    killed, a restarted agent's predecessor. Nobody else waits for them, so
    without this they stay zombies. ``WNOWAIT`` peeks first, so a kept
    child's exit status is left for its ``Popen.poll()``.
    """
    keep = {keep} if isinstance(keep, int) else set(keep)
    reaped = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # no children at all
            return reaped
        if info is None or info.si_pid in keep:
            return reaped
        os.waitpid(info.si_pid, 0)
        reaped.append(info.si_pid)


# --- the supervisor --------------------------------------------------------------------------

class Supervisor:
    def __init__(self, children: list[Child], env: dict[str, str] | None = None,
                 probe: Callable[[str], bool] | None = None, clock: Callable[[], float] = time.monotonic):
        self.children = children
        self.env = env
        self.probe = probe or answers
        self.clock = clock
        self.stopping: list[int] = []

    # the loop

    def adopt(self) -> None:
        """Take over the children already running (by pid file); the others start at the first check."""
        now = self.clock()
        for child in self.children:
            pid = running_pid(child.pidfile, child.mark.encode())
            if pid:
                log.info("%s is running (pid %d): adopted", child.name, pid)
                child.pid, child.started, child.answered = pid, now - HEALTHY_AFTER, True
                child.next_probe = now

    def check(self) -> None:
        """One round: start what is dead (when its backoff allows), kill a hung plugin server."""
        now = self.clock()
        for child in self.children:
            if self.alive(child):
                if child.socket:
                    self.check_answers(child, now)
                continue
            if child.pid is not None:
                self.died(child, now)
            if now >= child.next_start and not self.stopping:
                self.start(child)

    def alive(self, child: Child) -> bool:
        if child.proc is not None:
            return child.proc.poll() is None
        return child.pid is not None and running(child.pid, (child.mark.encode(),))

    def died(self, child: Child, now: float) -> None:
        status = child.proc.returncode if child.proc is not None else "unknown (adopted)"
        lived = now - child.started
        if lived >= HEALTHY_AFTER:
            child.backoff = 0.0
        log.warning("%s (pid %d) died after %.0fs, exit status %s; starting it again in %.0fs",
                    child.name, child.pid, lived, status, child.backoff)
        child.next_start = now + child.backoff
        child.backoff = min(max(child.backoff * 2, 1.0), MAX_BACKOFF)
        child.pid, child.proc = None, None

    def check_answers(self, child: Child, now: float) -> None:
        if now < child.next_probe:
            return
        child.next_probe = now + PROBE_INTERVAL
        if child.answered and not os.path.exists(child.socket):  # removed: dockerd cannot find us
            log.error("%s (pid %d): its socket %s is gone: killing it", child.name, child.pid, child.socket)
            self.kill(child)
            return
        if self.probe(child.socket):
            child.answered, child.failures = True, 0
            return
        if not child.answered and now - child.started < START_GRACE:
            return
        child.failures += 1
        if child.failures >= HUNG_AFTER:
            log.error("%s (pid %d) has not answered on %s for %d probes: killing it", child.name, child.pid,
                      child.socket, child.failures)
            self.kill(child)

    def kill(self, child: Child) -> None:
        """SIGKILL: the next check sees it dead and starts it again."""
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.failures = 0

    def start(self, child: Child) -> None:
        out = open(child.out, "ab") if child.out else None
        try:
            child.proc = subprocess.Popen(child.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT if out else None,
                                          start_new_session=True)  # its own group: see stop_groups
        finally:
            if out:
                out.close()
        child.pid, child.started = child.proc.pid, self.clock()
        child.answered, child.failures, child.next_probe = False, 0, child.started + 1.0
        if child.group_file:  # first: once the pid file names it, node stop may look for its group
            record_group(child.group_file, child.pid)
        if not child.writes_pidfile:
            _write_pidfile(child.pidfile, child.pid)
        log.info("started %s (pid %d)", child.name, child.pid)

    def retry_now(self) -> None:
        """SIGUSR1: start what is dead at the next check, whatever its backoff."""
        for child in self.children:
            child.next_start = 0.0

    def run(self, reap: bool = False, on_ready: Callable[[], None] | None = None) -> int:
        """Supervise until SIGTERM/SIGINT; then stop the children in order."""
        signal.signal(signal.SIGTERM, lambda signum, _: self.stopping.append(signum))
        signal.signal(signal.SIGINT, lambda signum, _: self.stopping.append(signum))
        signal.signal(signal.SIGUSR1, lambda *_: self.retry_now())
        if reap:
            become_subreaper()
        self.adopt()
        ready = on_ready is None
        while not self.stopping:
            self.check()
            if not ready and all(c.answered for c in self.children if c.socket):
                on_ready()
                ready = True
            if reap:
                reap_orphans(keep=[c.proc.pid for c in self.children if c.proc is not None])
            time.sleep(TICK)
        self.stop()
        return 0

    def stop(self) -> None:
        """The agent first (peers withdraw our routes at once), what earlier agents left, the plugin."""
        for child in sorted(self.children, key=lambda c: c.name != "agent"):
            if self.alive(child):
                log.info("stopping %s (pid %d)", child.name, child.pid)
                stop_pids([child.pid])
            if child.proc is not None:
                child.proc.wait()
            if child.group_file:
                stop_groups(child.group_file)


def become_subreaper() -> bool:
    """Orphans of our descendants (an ExaBGP whose agent was killed) become our children, so
    :func:`reap_orphans` reaps them instead of an init that may not (a container's)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def answers(socket_path: str) -> bool:
    """The plugin server answers Plugin.Activate on ``socket_path``."""
    from plugin import server
    try:
        status, answer = server.call(socket_path, "Plugin.Activate", timeout=PROBE_TIMEOUT)
    except Exception:
        return False
    return status == 200 and "NetworkDriver" in answer.get("Implements", [])


def _write_pidfile(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def write_spec(path: str, children: list[Child]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"children": [c.spec() for c in children]}, f, indent=1)
    os.replace(tmp, path)


def read_spec(path: str) -> list[Child]:
    with open(path) as f:
        return [Child(**spec) for spec in json.load(f)["children"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="warren-node-supervisor")
    ap.add_argument("spec", help="supervisor.json written by warrenctl node start")
    ap.add_argument("--pid", required=True, help="this process's pid file")
    ap.add_argument("--log", required=True)
    args = ap.parse_args(argv)
    from plugin.config import setup_logging
    setup_logging(args.log)
    _write_pidfile(args.pid, os.getpid())
    log.info("node supervisor started")
    try:
        return Supervisor(read_spec(args.spec)).run(reap=True)
    finally:
        try:
            with open(args.pid) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(args.pid)
        except OSError:
            pass
        log.info("node supervisor stopped")


if __name__ == "__main__":
    sys.exit(main())
