"""A lab host's node processes, found by the node's pid files (never by name), and its health.

The node's run dir inside a lab host is ``/run/warren/NODE``, which is
``HOSTDIR/run/warren/NODE`` from outside (each host bind-mounts its own
/run). Pid files there: ``plugin.pid``, ``supervisor.pid``, ``agent.pid``,
``exabgp.pid``; without ``exabgp.pid``, ExaBGP is the agent's child running
``exabgp``; its API process is ExaBGP's child running ``bgp.api``. Every pid
is checked before use: its command line has the process's mark and it runs
in this lab's host's network namespace (other labs have a ``host1`` too).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from ctl.lab import Lab, net as labnet, procs
from plugin import server

from .common import HOSTS, REPO, HarnessError, warrenctl

HEALTHY_TIMEOUT = 45.0
PLUGIN_MARK, AGENT_MARK, EXABGP_MARK, API_MARK = "plugin.wsgi", "ctl.agent", "exabgp", "bgp.api"
SUPERVISOR_MARK = "ctl.supervisor"
PIDFILES = {"plugin": ("plugin.pid", PLUGIN_MARK), "agent": ("agent.pid", AGENT_MARK),
            "supervisor": ("supervisor.pid", SUPERVISOR_MARK)}
PROCESSES = ("plugin", "supervisor", "agent", "exabgp", "bgp-api")


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
    """The live pid of the node's ``plugin``, ``supervisor``, ``agent``, ``exabgp`` or ``bgp-api``
    process on ``host``."""
    if which == "exabgp":
        return exabgp_pid(lab, host)
    if which == "bgp-api":
        speaker = exabgp_pid(lab, host)
        found = [c for c in children(speaker) if _ours(lab, host, c, API_MARK)] if speaker else []
        return found[0] if found else None
    pidfile, mark = PIDFILES[which]
    return _ours(lab, host, procs.read_pidfile(os.path.join(run_dir(lab, host), pidfile)), mark)


def has_supervisor(lab: Lab, host: str) -> bool:
    """The node was started with a supervisor (it wrote the pid file)."""
    return os.path.exists(os.path.join(run_dir(lab, host), PIDFILES["supervisor"][0]))


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
        if _ours(lab, host, child, EXABGP_MARK) and API_MARK not in (procs.cmdline(child) or ""):
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
        for which in PROCESSES:
            if which == "supervisor" and not has_supervisor(lab, host):
                continue
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
