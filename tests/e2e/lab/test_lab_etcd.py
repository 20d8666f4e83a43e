"""warren-lab's etcd cluster and TLS (ctl.lab.etcd, ctl.lab.pki): real etcd members in lab namespaces.

Without Warren nodes: these check the lab itself (the members form one
cluster, a member can be killed, paused and restarted and catches up, the
leader can be moved, TLS is enforced, ``down`` removes it all). Every etcd
client here runs inside a lab host (``Lab.exec``), never in the root netns.
"""
from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys

import pytest

from ctl.lab import Lab
from tests.e2e.lab.conftest import missing_requirements

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(missing_requirements() is not None,
                                 reason=missing_requirements() or "")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def etcdctl(lab: Lab, endpoint: str, *args: str, tls: bool = False) -> subprocess.CompletedProcess:
    argv = ["etcdctl", "--endpoints", endpoint, "--dial-timeout", "3s", "--command-timeout", "10s"]
    if tls:
        argv += ["--cacert", lab.layout.pki("ca.crt"), "--cert", lab.layout.pki("client.crt"),
                 "--key", lab.layout.pki("client.key")]
    return lab.exec("host1", ["env", "ETCDCTL_API=3", *argv, *args], timeout=60)


@pytest.fixture(scope="module")
def cluster():
    lab = Lab("c" + secrets.token_hex(3))
    try:
        lab.up(1, node=False, etcd_members=3)
        yield lab
    finally:
        lab.down()


def test_status_lists_three_members_in_their_own_namespaces(cluster):
    st = cluster.status()
    members = st["etcd_members"]
    assert [m["name"] for m in members] == ["etcd1", "etcd2", "etcd3"]
    assert len({m["netns"] for m in members}) == 3 and all(os.path.exists(f"/run/netns/{m['netns']}")
                                                          for m in members)
    assert len({m["ipv4"] for m in members}) == 3
    assert all(m["running"] and m["process"] for m in members)
    assert st["etcd_endpoints"] == [m["endpoint"] for m in members]
    assert st["etcd_endpoint"] == members[0]["endpoint"] and st["etcd_running"] and not st["etcd_tls"]
    assert all(m["endpoint"].startswith("http://") for m in members)


def test_hosts_get_every_endpoint(cluster):
    out = cluster.exec("host1", ["sh", "-c", "echo $WARREN_ETCD_ENDPOINTS; echo ${WARREN_ETCD_CA:-none}"])
    endpoints, ca = out.stdout.split()
    assert endpoints.split(",") == cluster.status()["etcd_endpoints"]
    assert ca == "none"


def test_members_are_one_cluster(cluster):
    eps = cluster.status()["etcd_endpoints"]
    assert etcdctl(cluster, eps[0], "put", "/lab-test/one", "1").returncode == 0
    got = etcdctl(cluster, eps[2], "get", "--print-value-only", "/lab-test/one")
    assert got.returncode == 0 and got.stdout.strip() == "1", got.stderr
    members = etcdctl(cluster, eps[1], "member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["etcd1", "etcd2", "etcd3"]


def test_killed_member_restarts_and_catches_up(cluster):
    leader = cluster.etcd_leader()
    assert leader in ("etcd1", "etcd2", "etcd3")
    victim = next(n for n in ("etcd1", "etcd2", "etcd3") if n != leader)
    m = cluster.etcd_member(victim)
    cluster.stop_etcd(member=victim, sig=signal.SIGKILL)
    try:
        row = next(r for r in cluster.etcd_status() if r["name"] == victim)
        assert not row["running"] and not row["process"]
        assert not cluster.status()["etcd_running"]
        others = ",".join(e for e in cluster.status()["etcd_endpoints"] if e != m.endpoint)
        assert etcdctl(cluster, others, "put", "/lab-test/while-down", "2").returncode == 0
    finally:
        cluster.start_etcd(member=victim)
    assert all(r["running"] for r in cluster.etcd_status())
    # A serializable read is answered from the member's own copy: it caught up.
    got = etcdctl(cluster, m.endpoint, "get", "--consistency=s", "--print-value-only", "/lab-test/while-down")
    assert got.stdout.strip() == "2", got.stderr


def test_paused_member_resumes(cluster):
    leader = cluster.etcd_leader()
    victim, other = [n for n in ("etcd1", "etcd2", "etcd3") if n != leader]
    cluster.stop_etcd(member=victim, sig=signal.SIGSTOP)
    try:
        row = next(r for r in cluster.etcd_status() if r["name"] == victim)
        assert row["process"] and not row["running"]  # there, but not answering
        assert etcdctl(cluster, cluster.etcd_member(other).endpoint, "put", "/lab-test/paused", "3").returncode == 0
    finally:
        cluster.start_etcd(member=victim)
    assert next(r for r in cluster.etcd_status() if r["name"] == victim)["running"]


def test_leadership_moves_on_request(cluster):
    target = next(n for n in ("etcd1", "etcd2", "etcd3") if n != cluster.etcd_leader())
    cluster.move_etcd_leader(target)
    assert cluster.etcd_leader() == target


def test_cli_etcd_commands(cluster):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ctl.lab", "--name", cluster.name, "etcd", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    leader = cli("leader")
    assert leader.returncode == 0 and leader.stdout.strip() == cluster.etcd_leader()
    stopped = cli("stop", "2")
    assert stopped.returncode == 0 and stopped.stdout.split() == ["etcd2", cluster.etcd_member(2).endpoint, "down"]
    started = cli("start", "etcd2")
    assert started.returncode == 0 and started.stdout.split()[-1] == "up"
    bad = cli("kill", "etcd9")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no etcd member 'etcd9'" in bad.stderr


def test_tls_lab_requires_client_certificates_and_cleans_up():
    lab = Lab("t" + secrets.token_hex(3))
    netns, data_dirs, pids = [], [], []
    try:
        st = lab.up(1, node=False, etcd_members=3, etcd_tls=True)
        members = st["etcd_members"]
        netns = [m["netns"] for m in members]
        data_dirs = [m["data_dir"] for m in members]
        pids = [m["pid"] for m in members]
        assert st["etcd_tls"] and all(m["endpoint"].startswith("https://") and m["running"] for m in members)
        pki = st["etcd_pki"]
        assert stat.S_IMODE(os.stat(pki).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(pki, "client.key")).st_mode) == 0o600
        env = lab.exec("host1", ["sh", "-c", "echo $WARREN_ETCD_CA $WARREN_ETCD_CERT $WARREN_ETCD_KEY"])
        assert env.stdout.split() == [os.path.join(pki, f) for f in ("ca.crt", "client.crt", "client.key")]
        ep = members[1]["endpoint"]
        assert etcdctl(lab, ep, "put", "/lab-test/tls", "ok", tls=True).returncode == 0
        # The client certificate is required: the CA alone is refused, and so is plain text.
        no_cert = lab.exec("host1", ["env", "ETCDCTL_API=3", "etcdctl", "--endpoints", ep, "--dial-timeout", "3s",
                                     "--command-timeout", "5s", "--cacert", os.path.join(pki, "ca.crt"),
                                     "get", "/lab-test/tls"], timeout=60)
        assert no_cert.returncode != 0
        plain = etcdctl(lab, ep.replace("https://", "http://"), "get", "/lab-test/tls")
        assert plain.returncode != 0
    finally:
        lab.down()
    assert [n for n in netns if os.path.exists(f"/run/netns/{n}")] == []
    assert [d for d in data_dirs if os.path.exists(d)] == []
    assert [p for p in pids if p and os.path.exists(f"/proc/{p}")
            and "etcd" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")] == []
    assert not os.path.exists(lab.dir)
