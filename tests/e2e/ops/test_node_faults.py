"""Process faults stay local (issue 12): a node process killed -9 is recovered alone, and a 10/s
cross-host ping between two containers loses nothing meanwhile.

A 2-host lab of its own (its nodes get killed; the package's ops_lab stays
untouched), dockerd with live-restore on both hosts. The probe
(``probe.py``) runs in host1's container's netns via nsenter, so neither
dockerd nor ``docker exec`` is on its path. What each test kills and what
must hold:

* the plugin server: its supervisor starts it again alone (agent and
  supervisor keep their pids); ``docker run`` works again; 0 pings lost;
* the agent: its supervisor starts a new one; the BGP session comes back;
  0 pings lost (the kernel keeps the routes, peers keep ours by graceful
  restart);
* the supervisor and the agent: ``node start`` adopts the running plugin
  server (same pid) and starts an agent; 0 pings lost;
* dockerd restarted with live-restore: the plugin keeps its pid and socket;
  0 pings lost; ``docker run`` works after;
* ``node stop`` after a kill -9 of the agent: no process of the node is left
  in the host (supervisor, agent, plugin server, ExaBGP, its API process).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time

import pytest

from ctl.lab import Lab, procs
from tests.e2e.helpers import E2E, IMAGE, REPO, address, ctl, dk, pings, remove_all, run, wait_for

pytestmark = E2E

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py")
NET, SUBNET = "faultnet", "10.20.77.0/24"
NODE_MARKS = ("ctl.supervisor", "ctl.agent", "plugin.wsgi", "exabgp", "bgp.api")


@pytest.fixture(scope="module")
def lab():
    lab = Lab("nf" + secrets.token_hex(3))
    try:
        lab.up(2, node=True)
        for host in ("host1", "host2"):
            h = lab.host(host)
            path = h.path("etc-docker", "daemon.json")
            config = json.load(open(path)) if os.path.exists(path) else {}
            with open(path, "w") as f:
                json.dump(dict(config, **{"live-restore": True}), f)
            lab.restart_dockerd(host)  # nothing runs yet: the new dockerd reads live-restore
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def pair(lab):
    """c1 on host1 and c2 on host2 on one network; yields c2's address once c1 reaches it."""
    try:
        for host in ("host1", "host2"):
            dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", SUBNET, NET)
        run(lab, "host1", "c1", NET)
        run(lab, "host2", "c2", NET)
        dst = address(lab, "host2", "c2", NET)
        wait_for(lambda: pings(lab, "host1", "c1", dst), 60, step=0.5, what="first cross-host ping")
        yield dst
    finally:
        remove_all(lab, ["host1", "host2"])


class Probe:
    """The 10/s ping from c1 to ``dst`` (see probe.py); ``result()`` stops it and reads its count."""

    def __init__(self, lab: Lab, dst: str):
        pid = int(dk(lab, "host1", "inspect", "-f", "{{.State.Pid}}", "c1").stdout)
        self.proc = subprocess.Popen(["nsenter", "-t", str(pid), "-n", "python3", "-I", "-S", PROBE, dst],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # some replies before the fault

    def result(self) -> dict:
        time.sleep(2.0)  # and after the recovery
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        result = json.loads(out)
        print(f"probe: sent {result['sent']}, received {result['received']}, lost {result['lost']}")
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_dir(lab: Lab, host: str) -> str:
    return lab.host(host).path("run", "warren", host)


def pid_of(lab: Lab, host: str, what: str) -> int | None:
    try:
        with open(os.path.join(run_dir(lab, host), f"{what}.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if procs.is_alive(pid) else None


def node_processes(lab: Lab, host: str) -> dict[int, str]:
    """The node's processes in ``host``'s netns (for assertions only; nothing is killed by name)."""
    inode = os.stat(f"/run/netns/{lab.host(host).netns}").st_ino
    found = {}
    for pid in procs.find(net_inodes=[inode]):
        line = procs.cmdline(pid) or ""
        if any(m in line for m in NODE_MARKS):
            found[pid] = line
    return found


def plugin_answers(lab: Lab, host: str) -> bool:
    return dk(lab, host, "network", "inspect", NET, check=False).returncode == 0 and \
        dk(lab, host, "run", "--rm", "--net", NET, IMAGE, "true", check=False, timeout=60).returncode == 0


def sessions(lab: Lab, host: str) -> list[tuple[str, str, str]]:
    """``host``'s BGP sessions as ``node status`` shows them: (peer, state, since)."""
    result = ctl(lab, host, "node", "status", "--json", check=False)
    try:
        rows = json.loads(result.stdout)["sessions"] if result.returncode == 0 else []
    except (ValueError, KeyError):
        rows = []
    return [(r["peer"], r["state"], r["since"]) for r in rows]


def established_again(lab: Lab, host: str, before: list[tuple[str, str, str]]) -> bool:
    """Every session of ``host`` is up, and was (re)established after ``before`` was read."""
    now = sessions(lab, host)
    return bool(now) and all(state == "up" for _, state, _ in now) and now != before


def node_start(lab: Lab, host: str) -> subprocess.CompletedProcess:
    h = lab.host(host)
    return lab.exec(h, ["warrenctl", "node", "start", "--name", host, "--ip", h.ipv4, "--ip6", h.ipv6],
                    timeout=120, stdin=subprocess.DEVNULL, cwd=REPO)


def test_node_start_warns_about_plain_http_etcd_off_the_host(lab):
    log = open(lab.host("host1").path("node-start.log")).read()
    warned = "is plain HTTP off this host" in log
    assert warned == (not lab.status()["etcd_tls"]), log


def test_plugin_server_killed_is_restarted_alone_without_loss(lab, pair):
    supervisor, agent, plugin = (pid_of(lab, "host1", w) for w in ("supervisor", "agent", "plugin"))
    assert supervisor and agent and plugin
    probe = Probe(lab, pair)
    try:
        os.kill(plugin, signal.SIGKILL)
        wait_for(lambda: pid_of(lab, "host1", "plugin") not in (None, plugin), 60, step=0.1,
                 what="a new plugin server")
        wait_for(lambda: plugin_answers(lab, "host1"), 60, step=0.5, what="docker run with the new plugin server")
        result = probe.result()
    finally:
        probe.close()
    assert (pid_of(lab, "host1", "supervisor"), pid_of(lab, "host1", "agent")) == (supervisor, agent)
    assert result["received"] > 0 and result["lost"] == []
    again = node_start(lab, "host1")
    assert again.returncode == 1 and "already running" in again.stderr


def test_agent_killed_is_restarted_without_loss(lab, pair):
    supervisor, agent, plugin = (pid_of(lab, "host1", w) for w in ("supervisor", "agent", "plugin"))
    assert supervisor and agent and plugin
    wait_for(lambda: all(st == "up" for _, st, _ in sessions(lab, "host1")), 60, step=1, what="BGP up")
    before = {h: sessions(lab, h) for h in ("host1", "host2")}
    time.sleep(1.1)  # "since" has a resolution of one second
    probe = Probe(lab, pair)
    try:
        os.kill(agent, signal.SIGKILL)
        wait_for(lambda: pid_of(lab, "host1", "agent") not in (None, agent), 60, step=0.1, what="a new agent")
        for h in ("host1", "host2"):
            wait_for(lambda: established_again(lab, h, before[h]), 120, step=1, what=f"{h}'s session again")
        result = probe.result()
    finally:
        probe.close()
    left = {p: c for p, c in node_processes(lab, "host1").items() if p not in (supervisor, plugin)}
    print("host1's node processes after the agent's restart:", left)
    assert (pid_of(lab, "host1", "supervisor"), pid_of(lab, "host1", "plugin")) == (supervisor, plugin)
    assert result["received"] > 0 and result["lost"] == []
    assert pings(lab, "host2", "c2", address(lab, "host1", "c1", NET))


def test_supervisor_and_agent_killed_then_node_start_adopts_the_plugin_server(lab, pair):
    supervisor, agent, plugin = (pid_of(lab, "host1", w) for w in ("supervisor", "agent", "plugin"))
    assert supervisor and agent and plugin
    before = sessions(lab, "host2")
    time.sleep(1.1)
    probe = Probe(lab, pair)
    try:
        os.kill(supervisor, signal.SIGKILL)
        os.kill(agent, signal.SIGKILL)
        procs.wait_gone([supervisor, agent], 10)
        started = node_start(lab, "host1")
        assert started.returncode == 0, started.stderr
        assert "adopting its running plugin server, starting the agent" in started.stdout
        wait_for(lambda: pid_of(lab, "host1", "agent") not in (None, agent), 60, step=0.1, what="a new agent")
        wait_for(lambda: established_again(lab, "host2", before), 120, step=1, what="host2's session again")
        result = probe.result()
    finally:
        probe.close()
    assert pid_of(lab, "host1", "plugin") == plugin and pid_of(lab, "host1", "supervisor") not in (None, supervisor)
    assert result["received"] > 0 and result["lost"] == []
    assert plugin_answers(lab, "host1")


def test_dockerd_restart_with_live_restore_keeps_traffic_and_the_plugin(lab, pair):
    plugin = pid_of(lab, "host1", "plugin")
    probe = Probe(lab, pair)
    try:
        lab.restart_dockerd("host1")
        wait_for(lambda: plugin_answers(lab, "host1"), 60, step=0.5, what="docker run after the restart")
        result = probe.result()
    finally:
        probe.close()
    assert pid_of(lab, "host1", "plugin") == plugin
    assert os.path.exists(lab.host("host1").path("run", "docker", "plugins", "warren.sock"))
    assert result["received"] > 0 and result["lost"] == []


def test_node_stop_after_agent_kill_ends_every_node_process(lab, pair):
    agent = pid_of(lab, "host1", "agent")
    before = node_processes(lab, "host1")
    assert any("exabgp" in c for c in before.values()), before
    os.kill(agent, signal.SIGKILL)
    procs.wait_gone([agent], 10)
    stopped = ctl(lab, "host1", "node", "stop", "--name", "host1")
    assert "stopped" in stopped.stdout
    assert procs.wait_gone(list(before), 30) == []
    assert node_processes(lab, "host1") == {}
    started = node_start(lab, "host1")   # the module's last test: leave a running node behind
    assert started.returncode == 0, started.stderr
    wait_for(lambda: pings(lab, "host1", "c1", pair), 120, step=1, what="cross-host ping after node start")
