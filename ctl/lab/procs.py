"""Processes the lab starts, finds and kills.

Daemons are started detached (``sh -c 'setsid CMD & echo $!'``): they are
re-parented to init at once, so neither the CLI nor a test process ever holds
their zombies, and the PID we get is the daemon's own (``setsid``, ``nsenter``
and ``unshare`` without ``--fork`` all exec in place).

Nothing is ever killed by name. A process is the lab's when it is in one of the
lab's live namespaces (net namespace of a lab netns, mount namespace of a lab
anchor), in one of its cgroups, or its command line mentions the lab's state
dir; the check is repeated right before each signal to guard against PID
reuse.
"""
from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
import time
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

_SPAWN = 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!'


def spawn_daemon(argv: list[str], log_path: str, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` in its own session, detached, output appended to ``log_path``."""
    out = subprocess.run(["sh", "-c", _SPAWN, "sh", log_path, *argv], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def read_pidfile(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (init reaps orphans ~1 s later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def matches(pid: int | None, needle: str) -> bool:
    """Alive and its command line contains ``needle`` (guards against PID reuse)."""
    if not pid or not is_alive(pid):
        return False
    cmd = cmdline(pid)
    return bool(cmd) and needle in cmd


def ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None
    return int(link[link.index("[") + 1:-1])


def _protected() -> set[int]:
    """This process and its ancestors: never ours to kill."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    pids.add(1)
    return pids


def find(net_inodes: Iterable[int] = (), mnt_inodes: Iterable[int] = (),
         needles: Iterable[str] = ()) -> list[int]:
    """Live processes in any of the given namespaces or mentioning any needle."""
    net, mnt, needles = set(net_inodes), set(mnt_inodes), tuple(needles)
    protected, found = _protected(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in protected:
            continue
        pid = int(entry)
        if ((net and ns_inode(pid, "net") in net) or (mnt and ns_inode(pid, "mnt") in mnt)
                or (needles and any(n in (cmdline(pid) or "") for n in needles))):
            if is_alive(pid):
                found.append(pid)
    return found


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending if is_alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.05)


def terminate(pids: Iterable[int], timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL what is left."""
    pids = list(pids)
    if not pids:
        return
    signal_pids(pids, signal.SIGTERM)
    left = wait_gone(pids, timeout)
    if left:
        log.debug("SIGKILL %s", left)
        signal_pids(left, signal.SIGKILL)
        wait_gone(left, 5.0)


# --- cgroups -----------------------------------------------------------------

def cgroup_roots() -> list[str]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy in this mount ns."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] in ("cgroup", "cgroup2"):
                roots.append(left.split()[4].replace("\\040", " "))
    return roots


def cgroup_dirs(name: str) -> list[str]:
    """Existing ``<root>/<name>`` dirs, deepest sub-cgroups first."""
    dirs = []
    for root in cgroup_roots():
        top = os.path.join(root, name)
        if os.path.isdir(top):
            for path, _subdirs, _files in os.walk(top, topdown=False):
                dirs.append(path)
    return dirs


def cgroup_pids(name: str) -> list[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(name):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(p for p in pids if is_alive(p))


def remove_cgroup(name: str, timeout: float = 5.0) -> list[str]:
    """Kill what is left in cgroup ``name`` and rmdir it; return dirs that stayed."""
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(name)
        signal_pids(pids, signal.SIGKILL)
        for d in cgroup_dirs(name):
            try:
                os.rmdir(d)
            except OSError:
                pass
        left = cgroup_dirs(name)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def leftover_cgroups(prefix: str) -> list[str]:
    return [d for root in cgroup_roots() for d in glob.glob(os.path.join(root, prefix + "*"))]
