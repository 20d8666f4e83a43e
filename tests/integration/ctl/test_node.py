"""`warrenctl node` for real: the plugin server on a socket, in a namespace the test made."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin import server
import shutil

from datastore.localetcd import LocalEtcd
from tests.support.etcd import tmpfs_dir
from tests.support.netns import run_in_netns, sh, temp_netns

ROOT = Path(__file__).parents[3]
NET, EP = "e" * 64, "f" * 64


@pytest.fixture
def host(tmp_path):
    """A host namespace with an underlay interface, a default route and its own etcd."""
    with temp_netns("wtn") as ns:
        sh(ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "ul0")
        sh(ns, "ip", "addr", "add", "192.0.2.11/24", "dev", "eth0")
        for dev in ("eth0", "ul0"):
            sh(ns, "ip", "link", "set", dev, "up")
        sh(ns, "ip", "route", "add", "default", "via", "192.0.2.1")
        etcd = LocalEtcd(tmpfs_dir("warren-etcd-node-"), netns=ns, die_with_parent=True).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
        env.update(WARREN_ETCD_ENDPOINTS=etcd.endpoint, WARREN_RUN_DIR=str(tmp_path / "run"),
                   WARREN_LOG_DIR=str(tmp_path / "log"), PYTHONPATH=str(ROOT))
        sock = str(tmp_path / "plugins" / "warren.sock")
        try:
            yield ns, env, sock
        finally:
            warrenctl(ns, env, "node", "stop", "--name", "t1", check=False)
            etcd.stop()
            shutil.rmtree(etcd.data_dir, ignore_errors=True)


def warrenctl(ns, env, *args, check=True):
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "ctl.main", *args],
                            env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def plugin_pids(tmp_path):
    master = int((tmp_path / "run" / "t1" / "plugin.pid").read_text())
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return master, [int(c) for c in children]


def ok(sock, name, body=None):
    status, answer = server.call(sock, name, body)
    assert status == 200, answer
    return answer


def run_container_flow(sock, address=""):
    pool = ok(sock, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    ok(sock, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": [
        {"Pool": pool["Pool"], "Gateway": pool["Data"]["com.docker.network.gateway"]}]})
    got = ok(sock, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": address})
    ok(sock, "NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP,
                                              "Interface": {"Address": got["Address"]}})
    return ok(sock, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})


def test_node_start_serves_and_survives_kill(host, tmp_path):
    ns, env, sock = host
    started = warrenctl(ns, env, "node", "start", "--name", "t1", "--socket", sock)
    assert "started" in started.stdout
    assert oct(os.stat(sock).st_mode & 0o777) == "0o700"  # root only
    shown = warrenctl(ns, env, "node", "show", "--json").stdout
    assert '"ipv4": "192.0.2.11"' in shown and '"name": "t1"' in shown
    joined = run_container_flow(sock)
    assert joined["Gateway"] == "169.254.1.1"
    ifname = "wrn" + EP[:11]
    assert "mtu 1500" in sh(ns, "ip", "-o", "link", "show", ifname).stdout
    assert "10.20.10." in sh(ns, "ip", "route", "show", "proto", "80").stdout
    forward = sh(ns, "iptables", "-S", "FORWARD").stdout
    assert "-A FORWARD -j WARREN-FORWARD" in forward

    # kill -9 the plugin server: its supervisor starts it again alone; the agent is not touched
    master, workers = plugin_pids(tmp_path)
    agent = int((tmp_path / "run" / "t1" / "agent.pid").read_text())
    for pid in [master, *workers]:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            if int((tmp_path / "run" / "t1" / "plugin.pid").read_text()) != master and ok(sock, "Plugin.Activate"):
                break
        except (OSError, ValueError, AssertionError):
            pass
        assert time.monotonic() < deadline, "the plugin server was not restarted"
        time.sleep(0.1)
    assert int((tmp_path / "run" / "t1" / "agent.pid").read_text()) == agent and _live(agent)
    again = warrenctl(ns, env, "node", "start", "--name", "t1", "--socket", sock, check=False)
    assert again.returncode == 1 and "already running" in again.stderr

    # a full start after a stop: the dataplane stays without the node; lost routes, an orphan veth
    warrenctl(ns, env, "node", "stop", "--name", "t1")
    assert not _live(agent)
    route = sh(ns, "ip", "route", "show", "proto", "80").stdout
    sh(ns, "ip", "route", "flush", "proto", "80")           # simulate lost routes
    sh(ns, "ip", "link", "add", "wrnorphan0000", "type", "veth", "peer", "name", "tmporphan0000")
    assert ifname in sh(ns, "ip", "-o", "link").stdout      # still there without the plugin
    warrenctl(ns, env, "node", "start", "--name", "t1", "--socket", sock)
    links = sh(ns, "ip", "-o", "link").stdout
    assert "wrnorphan0000" not in links and ifname in links  # orphan swept, workload kept
    assert sh(ns, "ip", "route", "show", "proto", "80").stdout == route  # routes restored
    assert ok(sock, "Plugin.Activate")["Implements"]
    ok(sock, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})
    assert ifname not in sh(ns, "ip", "-o", "link").stdout

    stopped = warrenctl(ns, env, "node", "stop", "--name", "t1")
    assert "stopped" in stopped.stdout
    time.sleep(0.2)
    with pytest.raises(OSError):
        server.call(sock, "Plugin.Activate", timeout=1)


def _register_other(endpoint):
    from datastore import Datastore, EtcdConfig
    from ipam.nodes import Node, register
    register(Datastore(EtcdConfig.from_env(env={}, endpoints=endpoint)), Node(name="other", ipv4="192.0.2.11"))


def test_node_address_conflict_is_refused(host):
    ns, env, sock = host
    run_in_netns(ns, _register_other, env["WARREN_ETCD_ENDPOINTS"])
    result = warrenctl(ns, env, "node", "start", "--name", "t1", "--socket", sock, check=False)
    assert result.returncode == 1
    assert "192.0.2.11 is already used by node other" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_node_start_rejects_a_foreign_address(host):
    ns, env, sock = host
    result = warrenctl(ns, env, "node", "start", "--name", "t1", "--ip", "192.0.2.99", "--socket", sock, check=False)
    assert result.returncode == 1 and "not an address of this host" in result.stderr


def test_node_start_foreground_serves_until_stopped(host):
    ns, env, sock = host
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ctl.main", "node", "start",
                             "--name", "t1", "--socket", sock, "--foreground"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server.wait_ready(sock, alive=lambda: proc.poll() is None, timeout=20)
        assert ok(sock, "NetworkDriver.GetCapabilities")["Scope"] == "local"
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode is not None


def test_foreground_node_notifies_supervises_and_stops_cleanly(host, tmp_path):
    """What a systemd unit or a container gets: READY=1 once the socket answers, a dead agent
    restarted, a dead server restarted alone (the agent stays), and SIGTERM stopping the agent,
    then the server, with exit 0."""
    import socket as socketlib
    ns, env, sock = host
    notify = str(tmp_path / "notify.sock")
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    listener.bind(notify)
    listener.settimeout(60)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ctl.main", "node", "start",
                             "--name", "t1", "--socket", sock, "--no-bgp", "--foreground"],
                            env=dict(env, NOTIFY_SOCKET=notify), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.recv(100) == b"READY=1"
        assert ok(sock, "Plugin.Activate")["Implements"]
        agent_pid = int((tmp_path / "run" / "t1" / "agent.pid").read_text())
        os.kill(agent_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while int((tmp_path / "run" / "t1" / "agent.pid").read_text()) == agent_pid:
            assert time.monotonic() < deadline, "the agent was not restarted"
            time.sleep(0.2)
        shown = warrenctl(ns, env, "node", "show", "--json").stdout
        assert '"alive": true' in shown
        # kill -9 the plugin server: restarted alone; the main process and the agent stay
        agent_pid = int((tmp_path / "run" / "t1" / "agent.pid").read_text())
        server_pid = int((tmp_path / "run" / "t1" / "plugin.pid").read_text())
        os.kill(server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if int((tmp_path / "run" / "t1" / "plugin.pid").read_text()) != server_pid and \
                        ok(sock, "Plugin.Activate"):
                    break
            except (OSError, ValueError, AssertionError):
                pass
            assert time.monotonic() < deadline, "the plugin server was not restarted"
            time.sleep(0.1)
        assert proc.poll() is None and _live(agent_pid)
        assert int((tmp_path / "run" / "t1" / "agent.pid").read_text()) == agent_pid
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert not os.path.exists(sock)
        new_agent = int((tmp_path / "run" / "t1" / "agent.pid").read_text())
        deadline = time.monotonic() + 10
        while _live(new_agent):  # gone, or a zombie waiting for init to reap it
            assert time.monotonic() < deadline, "the agent outlived the node"
            time.sleep(0.2)
        assert '"alive": false' in warrenctl(ns, env, "node", "show", "--json").stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


def _live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
