"""etcd for a lab: one server in the underlay netns, or a static cluster.

Without a cluster, the one member listens on the bridge address of the
underlay namespace (``http://198.19.K.1:2379``), as the lab always did. With
``etcd_members=N`` (N > 1) each member gets a netns of its own on the
underlay bridge (``NAME-eI``, 198.19.K.(1+I)) and they form a static cluster
(``--initial-cluster`` naming every member, the recipe of the static set-up),
so a member can be killed, frozen or restarted like a failing machine. With
TLS every member serves https and requires a client certificate signed by the
lab's CA, for clients and for its peers alike (see ``pki``).

Members are started detached (``procs.spawn_daemon``) so they outlive
``warren-lab up``; their PIDs are recorded in the lab's state. Readiness is
etcd's ``/health`` polled from a thread inside the member's netns; cluster
questions (leader, leadership transfer) go to etcd's JSON gateway. Nothing
here talks to etcd from the root netns.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from . import procs
from .layout import ETCD_CLIENT_PORT, EtcdMemberLayout, Layout
from .net import add_veth, in_netns, ip, netns_add, netns_path
from .probe import TlsFiles, etcd_healthy, etcd_post

# Generous raft timings: two busy cores must not trigger spurious elections.
HEARTBEAT_MS, ELECTION_MS = "200", "2000"


class EtcdError(Exception):
    pass


def tls_files(lay: Layout) -> TlsFiles:
    return (lay.pki("ca.crt"), lay.pki("client.crt"), lay.pki("client.key")) if lay.etcd_tls else None


def command(m: EtcdMemberLayout, binary: str = "etcd") -> list[str]:
    lay = m.lab
    cluster = ",".join(f"{x.name}={x.peer_url}" for x in lay.etcd)
    argv = ["nsenter", f"--net={netns_path(m.netns)}", "--", binary,
            "--name", m.name, "--data-dir", m.data_dir,
            "--listen-client-urls", m.endpoint, "--advertise-client-urls", m.endpoint,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"warren-lab-{lay.name}", "--log-level", "warn"]
    if lay.etcd_cluster:
        argv += ["--heartbeat-interval", HEARTBEAT_MS, "--election-timeout", ELECTION_MS]
    if lay.etcd_tls:
        ca = lay.pki("ca.crt")
        argv += ["--cert-file", m.cert, "--key-file", m.key, "--client-cert-auth",
                 "--trusted-ca-file", ca, "--peer-cert-file", m.cert, "--peer-key-file", m.key,
                 "--peer-client-cert-auth", "--peer-trusted-ca-file", ca]
    return argv


def make_netns(m: EtcdMemberLayout) -> None:
    """A cluster member's own netns on the underlay bridge (nothing to do otherwise)."""
    if not m.own_netns:
        return
    lay = m.lab
    netns_add(m.netns)
    add_veth(lay.ul_netns, m.ul_veth, m.netns, "eth0")
    ip("link", "set", m.ul_veth, "master", lay.bridge, "up", netns=lay.ul_netns)
    ip("addr", "add", f"{m.ipv4}/24", "dev", "eth0", netns=m.netns)
    ip("link", "set", "eth0", "up", netns=m.netns)


def start(m: EtcdMemberLayout, binary: str = "etcd") -> int:
    """Start the member detached; call ``wait_ready`` before using it."""
    os.makedirs(m.data_dir, mode=0o700, exist_ok=True)
    return procs.spawn_daemon(command(m, binary), m.log_path)


def is_ours(m: EtcdMemberLayout, pid: int | None) -> bool:
    """``pid`` is still this member's etcd (its data dir is on the command line)."""
    return procs.matches(pid, f"--data-dir {m.data_dir} ")


def stop(m: EtcdMemberLayout, pid: int | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal the member; SIGTERM waits and falls back to SIGKILL, SIGKILL waits too,
    SIGSTOP/SIGCONT return at once."""
    if not is_ours(m, pid):
        return
    procs.signal_pids([pid], sig)  # type: ignore[list-item]
    if sig in (signal.SIGSTOP, signal.SIGCONT):
        return
    if procs.wait_gone([pid], timeout):  # type: ignore[list-item]
        procs.signal_pids([pid], signal.SIGKILL)  # type: ignore[list-item]
        procs.wait_gone([pid], 5.0)  # type: ignore[list-item]


def healthy(m: EtcdMemberLayout, timeout: float = 1.0) -> bool:
    if not os.path.exists(netns_path(m.netns)):
        return False
    return in_netns(m.netns, etcd_healthy, m.ipv4, ETCD_CLIENT_PORT, timeout, tls_files(m.lab))


def wait_ready(members: dict[EtcdMemberLayout, int | None], timeout: float = 30.0) -> None:
    """Wait until every member answers healthy (a cluster needs its quorum for that)."""
    deadline = time.monotonic() + timeout
    pending = dict(members)
    while pending:
        for m, pid in list(pending.items()):
            if healthy(m):
                del pending[m]
            elif pid is not None and not procs.is_alive(pid):
                raise EtcdError(f"etcd {m.name} exited at start (see {m.log_path})")
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{m.name} at {m.endpoint}" for m in pending)
            raise EtcdError(f"etcd {names} not ready after {timeout:.0f}s "
                            f"(see {next(iter(pending)).log_path})")
        time.sleep(0.1)


def status(m: EtcdMemberLayout) -> dict[str, Any]:
    """The member's view: its id, the leader's id, raft term (via the JSON gateway)."""
    answer = in_netns(m.netns, etcd_post, m.ipv4, ETCD_CLIENT_PORT, "/v3/maintenance/status", {},
                      3.0, tls_files(m.lab))
    return {"member_id": answer["header"]["member_id"], "leader": answer.get("leader"),
            "raft_term": answer.get("raftTerm")}


def leader(lay: Layout) -> EtcdMemberLayout | None:
    """The member that currently leads, as the reachable members see it."""
    ids: dict[str, EtcdMemberLayout] = {}
    leaders = []
    for m in lay.etcd:
        try:
            st = status(m)
        except OSError:
            continue
        ids[st["member_id"]] = m
        leaders.append(st["leader"])
    for lead in leaders:
        if lead in ids:
            return ids[lead]
    return None


def move_leader(lay: Layout, target: EtcdMemberLayout, timeout: float = 20.0) -> None:
    """Make ``target`` the leader (etcd's MoveLeader, sent to the current leader)."""
    deadline = time.monotonic() + timeout
    while True:
        current = leader(lay)
        if current == target:
            return
        if current is not None:
            try:
                target_id = status(target)["member_id"]
                in_netns(current.netns, etcd_post, current.ipv4, ETCD_CLIENT_PORT,
                         "/v3/maintenance/transfer-leadership", {"targetID": target_id}, 10.0,
                         tls_files(lay))
            except OSError:
                pass  # leadership moved meanwhile, or an election: look again
        if time.monotonic() > deadline:
            raise EtcdError(f"could not make {target.name} the etcd leader in {timeout:.0f}s")
        time.sleep(0.2)
