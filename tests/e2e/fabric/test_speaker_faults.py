"""The BGP speaker under faults, for real: a 2-host warren-lab, dockerd, etcd and ExaBGP.

* bad records written straight to etcd (a peer with an out-of-range AS, a peer at a
  node's own address, ``nodes/x = {}``, a garbage block, invalid settings) leave the
  sessions up and the config working; ``node status`` reports what was left out; a new
  block is still announced;
* a password with an apostrophe is a valid config;
* kill -9 of a host's node agent: its ExaBGP dies with it (no orphan), peers keep the
  host's routes (graceful restart), the next ``node start`` runs a new ExaBGP that owns
  port 179, and routes come back; ``node stop`` then ends the speaker.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.helpers import E2E, REPO, ctl, dk, lab_fixture, pings, remove_all, run, underlay, wait_for

pytestmark = E2E

HOSTS = ("host1", "host2")

lab = lab_fixture("fs", 2)


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, HOSTS)


def py(lab, host, code: str) -> str:
    result = lab.exec(host, [sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def put_raw(lab, key: str, value: str) -> None:
    py(lab, "host1", "from datastore import Datastore, EtcdConfig; "
                     f"Datastore(EtcdConfig.from_env()).put({key!r}, {value!r}.encode())")


def delete(lab, key: str) -> None:
    py(lab, "host1", f"from datastore import Datastore, EtcdConfig; Datastore(EtcdConfig.from_env()).delete({key!r})")


def status(lab, host) -> dict:
    return json.loads(ctl(lab, host, "node", "status", "--json").stdout)


def sessions(lab, host) -> dict[str, dict]:
    return {s["peer"]: s for s in status(lab, host)["sessions"]}


def mesh_up(lab) -> None:
    for host, other in (("host1", "host2"), ("host2", "host1")):
        peer = underlay(lab, other)
        wait_for(lambda: sessions(lab, host).get(peer, {}).get("state") == "up", 40, step=0.5,
                 what=f"{host}'s session to {other}")


def speakers(lab, host) -> list[tuple[int, int]]:
    """(pid, ppid) of every ExaBGP process running in ``host``'s network namespace."""
    code = """
import os
me = os.readlink("/proc/self/ns/net")
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        if os.readlink(f"/proc/{pid}/ns/net") != me:
            continue
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if stat[0] != "Z" and any(a.endswith(b"/exabgp") for a in argv[:2]) and b"server" in argv:
        print(pid, stat[1])
"""
    out = py(lab, host, code)
    return [tuple(map(int, line.split())) for line in out.splitlines()]


def agent_pid(lab, host) -> int | None:
    out = lab.exec(host, ["cat", f"/run/warren/{host}/agent.pid"]).stdout.strip()
    try:
        pid = int(out)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except (ValueError, OSError):
        return None
    return pid if b"ctl.agent" in cmdline else None


def bound_179(lab, host) -> set[int]:
    """Pids of the processes listening on TCP port 179 in ``host``."""
    out = lab.exec(host, ["ss", "-Htlnp", "sport = :179"]).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def bgp_routes(lab, host, via: str) -> list[str]:
    return [r for r in lab.exec(host, ["ip", "route", "show", "proto", "81"]).stdout.splitlines()
            if f"via {via} " in r]


def node_start(lab, host, supervised_ok=False):
    """``warrenctl node start``; with ``supervised_ok`` a node whose supervisor already
    restarted the agent ("already running") is fine too."""
    six = next(h["ipv6"] for h in lab.status()["hosts"] if h["name"] == host)
    result = lab.exec(host, ["warrenctl", "node", "start", "--name", host, "--ip", underlay(lab, host),
                             "--ip6", six], timeout=90)
    if supervised_ok and result.returncode != 0 and "is already running" in result.stderr:
        return
    assert result.returncode == 0, result.stderr


def network(lab, subnet, name):
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", subnet, name)


def test_bad_records_leave_the_sessions_up_and_are_reported(lab):
    mesh_up(lab)
    host2 = underlay(lab, "host2")
    before = sessions(lab, "host1")[host2]["since"]
    exabgp_before = status(lab, "host1")["speaker"]["exabgp_pid"]
    silent = lab.status()["subnet_v4"].rsplit(".", 1)[0] + ".250"  # in the underlay, nobody there
    refused = ctl(lab, "host1", "bgp", "peer", "add", host2, "as", "65099", check=False)
    assert refused.returncode == 1 and "is the address of node host2" in refused.stderr
    bad = {
        "/warren/v1/bgp/peers/198.19.250.1": json.dumps({"address": "198.19.250.1", "as_number": 2**32}),
        "/warren/v1/bgp/peers/198.19.250.2": json.dumps({"address": "198.19.250.2", "as_number": 0}),
        f"/warren/v1/bgp/peers/{host2}": json.dumps({"address": host2, "as_number": 65099}),
        "/warren/v1/bgp/peers/0.0.0.0": json.dumps({"address": "0.0.0.0", "as_number": 65099}),
        "/warren/v1/bgp/peers/127.0.0.1": json.dumps({"address": "127.0.0.1", "as_number": 65099}),
        "/warren/v1/nodes/x": "{}",
        "/warren/v1/ipam/blocks/10.20.99.0-26": "garbage",
    }
    try:
        for key, value in bad.items():
            put_raw(lab, key, value)
        # a valid peer whose password has every character that used to break ExaBGP's config
        ctl(lab, "host1", "bgp", "peer", "add", silent, "as", "65001", "--password", "it's \"a\" \\ test;#")
        wait_for(lambda: silent in sessions(lab, "host1"), 30, step=0.5, what="the silent peer in the config")
        shown = status(lab, "host1")
        speaker = shown["speaker"]
        assert speaker["running"] and speaker["config_ok"], speaker
        assert speaker["exabgp_pid"] == exabgp_before, "ExaBGP restarted"
        skipped = " | ".join(speaker["skipped"])
        for what in ("198.19.250.1", "198.19.250.2", f"global peer {host2}: the address of node host2",
                     "/warren/v1/bgp/peers/0.0.0.0", "/warren/v1/bgp/peers/127.0.0.1", "/warren/v1/nodes/x"):
            assert what in skipped, (what, skipped)
        now = shown["sessions"]
        mine = {s["peer"]: s for s in now}
        assert mine[host2]["state"] == "up" and mine[host2]["since"] == before and mine[host2]["type"] == "mesh"
        assert sessions(lab, "host2")[underlay(lab, "host1")]["state"] == "up"
        # every node still announces new blocks despite the garbage block record
        network(lab, "10.20.60.0/24", "net60")
        run(lab, "host1", "src", "net60")
        run(lab, "host2", "dst", "net60", "--ip", "10.20.60.200")
        wait_for(lambda: pings(lab, "host1", "src", "10.20.60.200"), 40, step=0.5, what="ping across hosts")
        assert "Speaker: running" in ctl(lab, "host1", "node", "status").stdout
    finally:
        for key in bad:
            delete(lab, key)
        ctl(lab, "host1", "bgp", "peer", "remove", silent, check=False)


def test_agent_kill_9_leaves_no_orphan_and_the_next_start_gets_port_179(lab):
    mesh_up(lab)
    network(lab, "10.20.61.0/24", "net61")
    run(lab, "host1", "src", "net61")
    run(lab, "host2", "dst", "net61", "--ip", "10.20.61.200")
    host2 = underlay(lab, "host2")
    wait_for(lambda: bgp_routes(lab, "host1", host2), 30, step=0.5, what="host2's route on host1")
    agent = agent_pid(lab, "host2")
    assert agent is not None
    old = speakers(lab, "host2")
    assert [ppid for _, ppid in old] == [agent], old
    subprocess.run(["kill", "-9", str(agent)], check=True)  # the lab's process: we started it
    # its ExaBGP dies with it (unless a supervisor already started a new agent and speaker)
    wait_for(lambda: all(pid not in {p for p, _ in speakers(lab, "host2")} for pid, _ in old), 20,
             step=0.2, what="the old ExaBGP to die with its agent")
    assert bgp_routes(lab, "host1", host2), "peers must keep the host's routes (graceful restart)"
    node_start(lab, "host2", supervised_ok=True)
    wait_for(lambda: agent_pid(lab, "host2") not in (None, agent), 30, step=0.5, what="a new agent")
    new_agent = agent_pid(lab, "host2")
    wait_for(lambda: len(speakers(lab, "host2")) == 1, 30, step=0.5, what="one ExaBGP")
    [(exabgp, parent)] = speakers(lab, "host2")
    assert parent == new_agent
    wait_for(lambda: bound_179(lab, "host2") == {exabgp}, 30, step=0.5, what="port 179 bound by the new ExaBGP")
    mesh_up(lab)
    shown = status(lab, "host2")["speaker"]
    assert shown["running"] and shown["exabgp_pid"] == exabgp
    wait_for(lambda: bgp_routes(lab, "host1", host2), 30, step=0.5, what="host2's route back on host1")
    assert pings(lab, "host1", "src", "10.20.61.200")
    # node stop ends the speaker: no ExaBGP left, peers drop the routes at once (Cease)
    ctl(lab, "host2", "node", "stop", "--name", "host2")
    try:
        assert speakers(lab, "host2") == []
        wait_for(lambda: not bgp_routes(lab, "host1", host2), 10, step=0.2, what="routes withdrawn")
        assert not status(lab, "host2")["speaker"]["running"]
    finally:
        node_start(lab, "host2")
    mesh_up(lab)
