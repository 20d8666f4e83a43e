"""ctl.supervisor with real (tiny) child processes: each child is restarted alone with backoff,
survivors are adopted, a plugin server that stops answering is killed and restarted, stop goes
agent first, and what a killed agent left in its process group is ended by the recorded group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ctl import supervisor as sv

SLEEPER = "import sys, time; time.sleep(600)"
TERM_LOGGER = ("import signal, sys, time\n"
               "def bye(*_):\n"
               "    open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); sys.exit(0)\n"
               "signal.signal(signal.SIGTERM, bye)\n"
               "time.sleep(600)\n")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def child(tmp_path, name: str, code: str = SLEEPER, *extra: str, **options) -> sv.Child:
    mark = f"warren-test-{name}-{os.getpid()}"
    return sv.Child(name, [sys.executable, "-c", code, *extra, mark], str(tmp_path / f"{name}.pid"), mark,
                    **options)


def wait_dead(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while sv._state(pid) not in ("Z", "X", None):
        assert time.monotonic() < deadline, f"{pid} still alive"
        time.sleep(0.02)


def exec_done(c: sv.Child, timeout: float = 10) -> None:
    """Wait until the child's command line shows (it is empty for a moment after fork+exec)."""
    deadline = time.monotonic() + timeout
    while not sv.running(c.pid, (c.mark.encode(),)):
        assert time.monotonic() < deadline, f"{c.name} never ran"
        time.sleep(0.01)


@pytest.fixture
def cleanup():
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill9(c: sv.Child) -> int:
    pid = c.pid
    os.kill(pid, signal.SIGKILL)
    if c.proc is not None:
        c.proc.wait(10)
    else:
        wait_dead(pid)
    return pid


def test_missing_children_are_started_and_only_the_dead_one_is_restarted(tmp_path, cleanup):
    clock = Clock()
    agent, plugin = child(tmp_path, "agent"), child(tmp_path, "plugin")
    sup = sv.Supervisor([agent, plugin], clock=clock)
    sup.check()
    cleanup += [agent.pid, plugin.pid]
    exec_done(agent)
    exec_done(plugin)
    assert sv.running_pid(agent.pidfile, agent.mark.encode()) == agent.pid
    assert sv.running_pid(plugin.pidfile, plugin.mark.encode()) == plugin.pid
    first_agent, first_plugin = agent.pid, plugin.pid

    kill9(plugin)
    clock.now += 100  # a healthy run: started again at once
    sup.check()
    cleanup.append(plugin.pid)
    assert plugin.pid not in (None, first_plugin) and sup.alive(plugin)
    assert agent.pid == first_agent and sup.alive(agent)  # untouched


def test_restarts_back_off_and_a_healthy_run_resets_the_backoff(tmp_path, cleanup):
    clock = Clock()
    agent = child(tmp_path, "agent")
    sup = sv.Supervisor([agent], clock=clock)
    sup.check()
    cleanup.append(agent.pid)
    clock.now += 100
    delays = []
    for _ in range(7):
        kill9(agent)
        sup.check()                       # notices the death, schedules the restart
        delays.append(agent.next_start - clock.now)
        clock.now = agent.next_start
        sup.check()
        cleanup.append(agent.pid)
        assert sup.alive(agent)
    assert delays == [0, 1, 2, 4, 8, 16, 30]
    clock.now += sv.HEALTHY_AFTER
    kill9(agent)
    sup.check()
    assert sup.alive(agent)               # at once again
    cleanup.append(agent.pid)


def test_running_children_are_adopted_not_started_twice(tmp_path, cleanup):
    agent = child(tmp_path, "agent")
    survivor = subprocess.Popen(agent.argv, start_new_session=True)
    cleanup.append(survivor.pid)
    deadline = time.monotonic() + 10
    while not sv.running(survivor.pid, (agent.mark.encode(),)):  # its command line, once exec is done
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sv._write_pidfile(agent.pidfile, survivor.pid)
    sup = sv.Supervisor([agent], clock=Clock())
    sup.adopt()
    sup.check()
    assert agent.pid == survivor.pid and agent.proc is None
    os.kill(survivor.pid, signal.SIGKILL)
    survivor.wait(10)                      # (its real parent is init after a supervisor's death)
    sup.check()
    cleanup.append(agent.pid)
    assert agent.pid != survivor.pid and sup.alive(agent)


def test_a_stale_pid_file_of_another_process_is_not_adopted(tmp_path, cleanup):
    agent = child(tmp_path, "agent")
    sv._write_pidfile(agent.pidfile, os.getpid())  # alive, but not the agent
    sup = sv.Supervisor([agent], clock=Clock())
    sup.adopt()
    assert agent.pid is None
    sup.check()
    cleanup.append(agent.pid)
    assert agent.pid != os.getpid()


def test_a_plugin_server_that_stops_answering_is_killed_and_restarted(tmp_path, cleanup):
    clock, answers = Clock(), {"ok": True}
    (tmp_path / "warren.sock").touch()
    plugin = child(tmp_path, "plugin", socket=str(tmp_path / "warren.sock"))
    sup = sv.Supervisor([plugin], probe=lambda path: answers["ok"], clock=clock)
    sup.check()
    cleanup.append(plugin.pid)
    clock.now += 2
    sup.check()
    assert plugin.answered
    hung = plugin.pid
    answers["ok"] = False
    for _ in range(sv.HUNG_AFTER - 1):
        clock.now += sv.PROBE_INTERVAL
        sup.check()
        assert plugin.pid == hung and sup.alive(plugin)
    clock.now += sv.PROBE_INTERVAL
    sup.check()                            # the last failed probe: SIGKILL
    plugin.proc.wait(10)
    clock.now += sv.TICK
    sup.check()
    cleanup.append(plugin.pid)
    assert plugin.pid != hung and sup.alive(plugin)


def test_a_starting_plugin_server_gets_its_grace_period(tmp_path, cleanup):
    clock = Clock()
    plugin = child(tmp_path, "plugin", socket=str(tmp_path / "warren.sock"))
    sup = sv.Supervisor([plugin], probe=lambda path: False, clock=clock)
    sup.check()
    cleanup.append(plugin.pid)
    first = plugin.pid
    while clock.now < 1000 + sv.START_GRACE - sv.PROBE_INTERVAL:
        clock.now += sv.PROBE_INTERVAL
        sup.check()
    assert plugin.pid == first and plugin.failures == 0 and sup.alive(plugin)


def test_stop_ends_the_agent_before_the_plugin_server(tmp_path, cleanup):
    order = tmp_path / "order"
    plugin = child(tmp_path, "plugin", TERM_LOGGER, str(order), "plugin")
    agent = child(tmp_path, "agent", TERM_LOGGER, str(order), "agent")
    sup = sv.Supervisor([plugin, agent], clock=Clock())
    sup.check()
    cleanup += [plugin.pid, agent.pid]
    time.sleep(1.0)  # their SIGTERM handlers are installed
    sup.stop()
    assert order.read_text().split() == ["agent", "plugin"]
    assert not sup.alive(plugin) and not sup.alive(agent)


LEADER = ("import subprocess, sys, time\n"
          "ours = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', 'exabgp-stand-in'])\n"
          "theirs = subprocess.Popen(['sleep', '600'])\n"
          "print(ours.pid, theirs.pid, flush=True)\n"
          "time.sleep(600)\n")


def test_stop_groups_ends_what_a_killed_agent_left_in_its_group(tmp_path, cleanup):
    groups = str(tmp_path / "agent.groups")
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    cleanup.append(leader.pid)
    ours, theirs = map(int, leader.stdout.readline().split())
    cleanup += [ours, theirs]
    sv.record_group(groups, leader.pid)
    assert sv.read_groups(groups) == [leader.pid]
    os.kill(leader.pid, signal.SIGKILL)    # kill -9 of the agent: its children run on
    leader.wait(10)
    assert sorted(sv.group_members(leader.pid)) == sorted([ours, theirs])
    stopped = sv.stop_groups(groups, timeout=5)
    assert stopped == [ours]
    wait_dead(ours)
    assert sv._state(theirs) not in ("Z", "X", None)   # not a process of this installation: left alone
    assert not os.path.exists(groups)


def test_record_group_drops_groups_that_ended(tmp_path):
    groups = str(tmp_path / "agent.groups")
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait()
    sv.record_group(groups, gone.pid)
    sv.record_group(groups, os.getpgid(0))
    assert sv.read_groups(groups) == [os.getpgid(0)]


def test_reap_orphans_keeps_several_children_for_their_popen(tmp_path):
    code = ("import json, subprocess, os, time\n"
            "from ctl.supervisor import reap_orphans\n"
            "kept = [subprocess.Popen(['sh', '-c', 'exit 3']) for _ in range(2)]\n"
            "other = os.posix_spawnp('true', ['true'], os.environ)\n"
            "time.sleep(0.5)\n"
            "reaped = []\n"
            "for _ in range(10):\n"
            "    reaped += reap_orphans(keep=[k.pid for k in kept])\n"
            "    [k.poll() for k in kept]\n"
            "print(json.dumps({'reaped': reaped, 'other': other, 'kept': [k.wait() for k in kept]}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["reaped"] == [result["other"]] and result["kept"] == [3, 3]


def test_the_supervisor_process_restarts_retries_on_sigusr1_and_stops_on_sigterm(tmp_path, cleanup):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    order = tmp_path / "order"
    agent = child(tmp_path, "agent", TERM_LOGGER, str(order), "agent", group_file=str(tmp_path / "groups"))
    plugin = child(tmp_path, "plugin", TERM_LOGGER, str(order), "plugin")
    sv.write_spec(str(tmp_path / "spec.json"), [agent, plugin])
    proc = subprocess.Popen([sys.executable, "-m", "ctl.supervisor", str(tmp_path / "spec.json"),
                             "--pid", str(tmp_path / "sup.pid"), "--log", str(tmp_path / "sup.log")],
                            cwd=repo, env=dict(os.environ, PYTHONPATH=repo))
    cleanup.append(proc.pid)
    try:
        def pid(c):
            return sv.running_pid(c.pidfile, c.mark.encode())

        deadline = time.monotonic() + 30
        while not (pid(agent) and pid(plugin) and os.path.exists(tmp_path / "sup.pid")):
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "sup.log").read_text()
            time.sleep(0.05)
        first_agent, first_plugin = pid(agent), pid(plugin)
        cleanup += [first_agent, first_plugin]
        for _ in range(2):  # a second quick death waits 1 s of backoff, unless SIGUSR1
            killed = pid(agent)
            os.kill(killed, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while pid(agent) in (None, killed):
                assert time.monotonic() < deadline, (tmp_path / "sup.log").read_text()
                time.sleep(0.05)
            cleanup.append(pid(agent))
        assert pid(plugin) == first_plugin
        assert sv.read_groups(str(tmp_path / "groups"))[-1] == pid(agent)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert order.read_text().split() == ["agent", "plugin"]
        assert not os.path.exists(tmp_path / "sup.pid")
        log = (tmp_path / "sup.log").read_text()
        assert "agent (pid" in log and "died after" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SPAWNER = ("import subprocess, sys, time\n"
           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
           "open(sys.argv[1], 'w').write(str(child.pid))\n"
           "time.sleep(600)\n")


def test_the_supervisor_adopts_and_reaps_what_a_killed_agent_left(tmp_path, cleanup):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    grandchild_file = tmp_path / "grandchild"
    agent = child(tmp_path, "agent", SPAWNER, str(grandchild_file))
    sv.write_spec(str(tmp_path / "spec.json"), [agent])
    proc = subprocess.Popen([sys.executable, "-m", "ctl.supervisor", str(tmp_path / "spec.json"),
                             "--pid", str(tmp_path / "sup.pid"), "--log", str(tmp_path / "sup.log")],
                            cwd=repo, env=dict(os.environ, PYTHONPATH=repo))
    cleanup.append(proc.pid)
    try:
        deadline = time.monotonic() + 30
        while not (grandchild_file.exists() and grandchild_file.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "sup.log").read_text()
            time.sleep(0.05)
        grandchild = int(grandchild_file.read_text())
        first = sv.running_pid(agent.pidfile, agent.mark.encode())
        cleanup += [grandchild, first]
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while sv._stat(grandchild)[1] != str(proc.pid):     # reparented to the supervisor
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(grandchild, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{grandchild}"):          # reaped, not a zombie
            assert time.monotonic() < deadline, sv._state(grandchild)
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:  # the restarted agent's own grandchild
            os.kill(int(grandchild_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_a_plugin_server_whose_socket_is_gone_is_restarted_at_once(tmp_path, cleanup):
    clock, sock = Clock(), tmp_path / "warren.sock"
    sock.touch()
    plugin = child(tmp_path, "plugin", socket=str(sock))
    sup = sv.Supervisor([plugin], probe=lambda path: os.path.exists(path), clock=clock)
    sup.check()
    cleanup.append(plugin.pid)
    clock.now += 2
    sup.check()
    assert plugin.answered
    first = plugin.pid
    sock.unlink()
    clock.now += sv.PROBE_INTERVAL
    sup.check()                            # one probe: killed
    plugin.proc.wait(10)
    clock.now += sv.TICK
    sup.check()
    cleanup.append(plugin.pid)
    assert plugin.pid != first and sup.alive(plugin)
