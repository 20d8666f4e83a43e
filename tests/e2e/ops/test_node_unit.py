"""warren-node.service's commands, run the way systemd runs them (this machine has no systemd).

In a network namespace this test creates, with a local etcd (scripts/local-etcd)
and every path under a temporary directory: ExecStart (``warrenctl node start
--foreground``) as the main process; ExecStartPost must return only once the
plugin answers; then, as KillMode=mixed does, SIGTERM to the main process only
must stop the whole node (agent and server) with exit status 0.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time

import pytest

from ctl.lab import procs
from plugin import server
from tests.e2e.helpers import E2E, REPO
from tests.unit.ctl.test_systemd import exec_argv, parse_unit

pytestmark = E2E

UNIT = os.path.join(REPO, "systemd", "warren-node.service")


def test_unit_commands_start_wait_and_stop_the_node(private_netns, tmp_path):
    ns, inode = private_netns.name, private_netns.inode
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "DOCKER_"))}
    env.update(WARREN_STATE_DIR=str(tmp_path / "state"), WARREN_RUN_DIR=str(tmp_path / "run"),
               WARREN_LOG_DIR=str(tmp_path / "log"), WARREN_PLUGIN_SOCKET=str(tmp_path / "warren.sock"),
               WARREN_NODE_NAME="unit1", PYTHONPATH=REPO)
    etcd = subprocess.run(["ip", "netns", "exec", ns, os.path.join(REPO, "scripts", "local-etcd"), "start"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert etcd.returncode == 0, etcd.stderr
    unit = parse_unit(UNIT)
    start = [a for a in exec_argv(unit) if a != "$WARREN_NODE_ARGS"]  # unset: systemd drops the word
    main = subprocess.Popen(["ip", "netns", "exec", ns, *start], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "node.err", "wb"),
                            start_new_session=True)
    try:
        post = exec_argv(unit, "ExecStartPost")
        t0 = time.monotonic()
        ready = subprocess.run(["ip", "netns", "exec", ns, *post], env=dict(env, MAINPID=str(main.pid)),
                               capture_output=True, text=True, timeout=120)
        assert ready.returncode == 0, ready.stderr + (tmp_path / "node.err").read_text()
        assert main.poll() is None, "the main process must stay (it supervises the node)"
        status, answer = server.call(env["WARREN_PLUGIN_SOCKET"], "Plugin.Activate", timeout=5)
        assert status == 200 and "NetworkDriver" in answer["Implements"]
        node_pids = [p for p in procs.find(net_inodes=[inode]) if "etcd" not in (procs.cmdline(p) or "")]
        assert len(node_pids) >= 3, [procs.cmdline(p) for p in node_pids]  # main, server, agent (+ BGP)
        print(f"ExecStartPost returned {time.monotonic() - t0:.2f}s after start")

        os.kill(main.pid, signal.SIGTERM)              # KillMode=mixed: the main process only
        assert main.wait(timeout=60) == 0, (tmp_path / "node.err").read_text()
        assert procs.wait_gone(node_pids, 30) == [], [procs.cmdline(p) for p in node_pids if procs.is_alive(p)]
        with pytest.raises(OSError):
            server.call(env["WARREN_PLUGIN_SOCKET"], "Plugin.Activate", timeout=2)
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
        subprocess.run(["ip", "netns", "exec", ns, os.path.join(REPO, "scripts", "local-etcd"), "stop"],
                       env=env, capture_output=True, timeout=60)


def test_unit_start_post_gives_up_when_the_node_dies(private_netns, tmp_path):
    """etcd is not running: the node exits; ExecStartPost must fail quickly, not wait 55 s."""
    ns = private_netns.name
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "DOCKER_"))}
    env.update(WARREN_RUN_DIR=str(tmp_path / "run"), WARREN_LOG_DIR=str(tmp_path / "log"),
               WARREN_PLUGIN_SOCKET=str(tmp_path / "warren.sock"), WARREN_NODE_NAME="unit2", PYTHONPATH=REPO)
    unit = parse_unit(UNIT)
    main = subprocess.Popen(["ip", "netns", "exec", ns, *[a for a in exec_argv(unit) if a != "$WARREN_NODE_ARGS"]],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    result: dict[str, str] = {}
    reaper = threading.Thread(target=lambda: result.update(err=main.communicate(timeout=120)[1]))
    reaper.start()   # systemd reaps the main process at once; so do we
    try:
        t0 = time.monotonic()
        ready = subprocess.run(["ip", "netns", "exec", ns, *exec_argv(unit, "ExecStartPost")],
                               env=dict(env, MAINPID=str(main.pid)), capture_output=True, text=True, timeout=120)
        assert ready.returncode != 0 and time.monotonic() - t0 < 45
        reaper.join(timeout=120)
        assert main.returncode != 0 and "etcd is unreachable" in result["err"]   # Restart=on-failure retries
        assert shlex.split(unit["Service"]["Restart"][0]) == ["on-failure"]
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
