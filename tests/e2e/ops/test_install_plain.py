"""scripts/install's services step without systemd (systemd/setup's background mode), for real.

This machine, like CI machines, has no systemd, so scripts/install starts the
local etcd (scripts/local-etcd) and the node (``warrenctl node start``) in
the background. The step runs here exactly as install runs it, inside a
network namespace this test creates (so its etcd on 127.0.0.1:2379 and its
node are private), with every path under a temporary directory. The package
and virtualenv steps before it are exercised by CI's own run of
scripts/install.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from ctl.lab import procs
from plugin import server
from tests.e2e.helpers import E2E, REPO

pytestmark = E2E

SETUP = os.path.join(REPO, "systemd", "setup")


@pytest.fixture
def host_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "DOCKER_"))}
    env.update(WARREN_STATE_DIR=str(tmp_path / "state"), WARREN_RUN_DIR=str(tmp_path / "run"),
               WARREN_LOG_DIR=str(tmp_path / "log"), WARREN_PLUGIN_SOCKET=str(tmp_path / "run" / "warren.sock"),
               WARREN_NODE_NAME="plain1", WARREN_SYSTEMD_RUNTIME_DIR=str(tmp_path / "no-systemd"),
               PYTHONPATH=REPO)
    return env


def in_ns(netns: str, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], env=env, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def test_background_mode_starts_etcd_and_the_node_and_is_idempotent(private_netns, host_env, tmp_path):
    netns = private_netns.name
    try:
        first = in_ns(netns, host_env, SETUP)
        assert first.returncode == 0, first.stderr
        assert "started etcd on http://127.0.0.1:2379" in first.stdout
        assert "Node plain1 started: plugin on " + host_env["WARREN_PLUGIN_SOCKET"] in first.stdout
        assert not (tmp_path / "no-systemd").exists()   # nothing of systemd was touched
        status, answer = server.call(host_env["WARREN_PLUGIN_SOCKET"], "Plugin.Activate", timeout=5)
        assert status == 200 and {"NetworkDriver", "IpamDriver"} <= set(answer["Implements"])
        shown = in_ns(netns, host_env, "warrenctl", "node", "show")
        assert shown.returncode == 0 and "plain1" in shown.stdout, shown.stderr
        etcd_pid = int((tmp_path / "run" / "etcd.pid").read_text())

        again = in_ns(netns, host_env, SETUP)
        assert again.returncode == 0, again.stderr
        assert "etcd is serving http://127.0.0.1:2379" in again.stdout
        assert "the node is already running" in again.stdout
        assert int((tmp_path / "run" / "etcd.pid").read_text()) == etcd_pid and procs.is_alive(etcd_pid)
    finally:
        in_ns(netns, host_env, "warrenctl", "node", "stop")
        in_ns(netns, host_env, os.path.join(REPO, "scripts", "local-etcd"), "stop")


def test_background_mode_with_remote_etcd_starts_no_local_etcd(private_netns, host_env, tmp_path):
    netns = private_netns.name
    host_env["WARREN_ETCD_ENDPOINTS"] = "http://127.0.0.1:2379"
    res = in_ns(netns, host_env, SETUP)
    assert res.returncode == 1                      # no etcd there, and none was started
    assert "etcd is unreachable at http://127.0.0.1:2379" in res.stderr
    assert not (tmp_path / "run" / "etcd.pid").exists()
