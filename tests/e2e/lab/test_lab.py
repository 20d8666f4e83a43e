"""End-to-end tests of warren-lab (ctl.lab): real netns, dockerd, etcd.

Every test uses a lab name of its own and tears it down in ``finally``. The
read-only checks share one 2-host lab (module fixture); the teardown tests
bring up labs of their own. Nothing here runs a network client in the root
netns: every probe goes through ``Lab.exec`` (inside a host) or the
underlay's own namespaces.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest

from ctl.lab import GUARD_PROTO, IMAGE, Lab, LabError
from tests.e2e.lab.conftest import missing_requirements

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(missing_requirements() is not None,
                                 reason=missing_requirements() or "")]


def unique_name() -> str:
    return "e" + secrets.token_hex(3)


def cli(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl.lab", *args], cwd=REPO, input=input,
                          capture_output=True, text=True, timeout=timeout)


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def guard_routes(metric: int | None = None) -> list[str]:
    routes = []
    for fam in ("-4", "-6"):
        out = subprocess.run(["ip", "-j", fam, "route", "show", "proto", str(GUARD_PROTO)],
                             capture_output=True, text=True, check=True).stdout
        routes += [r["dst"] for r in json.loads(out or "[]")
                   if r.get("type") == "blackhole" and (metric is None or r.get("metric") == metric)]
    return routes


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def assert_clean(name: str, state_dir: str, metric: int | None, pids: list[int] = ()) -> None:
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in netns if n.startswith(name + "-")] == []
    assert processes_mentioning(state_dir + "/") == []
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if state_dir in line] == []
    if metric is not None:
        assert guard_routes(metric) == []
    cgroups = [os.path.join(r, d) for r in os.listdir("/sys/fs/cgroup")
               if os.path.isdir(os.path.join("/sys/fs/cgroup", r))
               for d in os.listdir(os.path.join("/sys/fs/cgroup", r))
               if d.startswith(f"warren-lab-{name}-")]
    assert cgroups == []
    assert not os.path.exists(state_dir)
    assert [p for p in pids if p and alive(p)] == []


def lab_pids(status: dict) -> list[int]:
    """Every daemon PID the lab knows of, plus containerd's."""
    pids = [status["etcd_pid"]]
    for h in status["hosts"]:
        pids += [h["anchor_pid"], h["dockerd_pid"]]
        try:
            with open(os.path.join(h["state_dir"], "exec/containerd/containerd.pid")) as f:
                pids.append(int(f.read()))
        except (OSError, ValueError):
            pass
    return pids


# --- one shared 2-host lab for the read-only checks ---------------------------------

@pytest.fixture(scope="module")
def lab():
    links_before = root_links()
    lab = Lab(unique_name())
    try:
        lab.up(2, node=False)
        lab.links_before = links_before  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.down()


def test_status_json_fields(lab):
    res = cli("status", "--json", "--name", lab.name)
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["name"] == lab.name and st["phase"] == "up"
    assert st["underlay_netns"] == f"{lab.name}-ul" and st["bridge"] == "br0"
    v4, v6 = ipaddress.ip_network(st["subnet_v4"]), ipaddress.ip_network(st["subnet_v6"])
    assert v4.prefixlen == 24 and v4.subnet_of(ipaddress.ip_network("198.18.0.0/15"))
    assert v6.prefixlen == 64 and v6.subnet_of(ipaddress.ip_network("2001:db8::/32"))
    scheme = "https" if st["etcd_tls"] else "http"  # $WARREN_LAB_ETCD_TLS may turn TLS on
    assert st["etcd_endpoint"] == f"{scheme}://{st['gateway_v4']}:2379" and st["etcd_running"]
    assert st["state_dir"] == lab.dir
    assert [h["name"] for h in st["hosts"]] == ["host1", "host2"]
    for i, h in enumerate(st["hosts"], 1):
        assert h["netns"] == f"{lab.name}-h{i}" and len(h["netns"]) <= 15
        assert os.path.exists(f"/run/netns/{h['netns']}")
        assert alive(h["anchor_pid"]) and h["anchor_running"]
        assert ipaddress.ip_address(h["ipv4"]) in v4 and ipaddress.ip_address(h["ipv6"]) in v6
        assert h["docker_host"] == f"unix://{h['docker_socket']}"
        assert os.path.exists(h["docker_socket"]) and h["dockerd_running"] is True
    assert len({h["ipv4"] for h in st["hosts"]}) == 2
    # The human form works too.
    res = cli("status", "--name", lab.name)
    assert res.returncode == 0 and "host2" in res.stdout


def test_root_netns_has_no_new_links(lab):
    assert root_links() == lab.links_before


def test_hosts_have_their_own_hostname(lab):
    for h in ("host1", "host2"):
        assert lab.exec(h, ["hostname"], check=True).stdout.strip() == h
    assert os.uname().nodename not in ("host1", "host2")
    res = cli("exec", "--name", lab.name, "host2", "--", "hostname")
    assert (res.returncode, res.stdout.strip()) == (0, "host2")


def test_host1_pings_host2_over_the_underlay(lab):
    h2 = lab.host(2)
    for addr in (h2.ipv4, h2.ipv6):
        res = lab.exec("host1", ["ping", "-c", "1", "-W", "2", addr])
        assert res.returncode == 0, res.stdout + res.stderr


def test_exec_environment_and_cwd(lab):
    res = lab.exec("host1", ["sh", "-c", "echo $WARREN_ETCD_ENDPOINTS $WARREN_NODE_NAME $DOCKER_HOST; pwd"],
                   check=True, cwd="/tmp")
    env_line, cwd = res.stdout.splitlines()
    assert env_line.split() == [lab.layout.etcd_endpoint, "host1", lab.host(1).docker_host]
    assert cwd == "/tmp"
    assert lab.exec("host1", ["sh", "-c", "command -v warrenctl"]).stdout.strip() == \
        os.path.join(os.path.dirname(sys.executable), "warrenctl")


def test_exec_passes_exit_code_and_stdio(lab):
    res = cli("exec", "--name", lab.name, "host1", "--", "sh", "-c", "exit 7")
    assert res.returncode == 7
    res = cli("exec", "--name", lab.name, "host2", "--", "cat", input="hello lab\n")
    assert (res.returncode, res.stdout) == (0, "hello lab\n")
    res = cli("exec", "--name", lab.name, "host9", "--", "true")
    assert res.returncode == 1 and res.stderr.startswith("warren-lab: error:") and "host9" in res.stderr
    assert "Traceback" not in res.stderr


def test_docker_run_on_a_host(lab):
    res = cli("docker", "--name", lab.name, "host1", "run", "--rm", "--init", "--net=none", IMAGE,
              "echo", "hi")
    assert (res.returncode, res.stdout.strip()) == (0, "hi"), res.stderr
    # The image carries the promised applets.
    res = lab.docker("host2", ["run", "--rm", "--net=none", IMAGE, "sh", "-c",
                               "for a in sh ping ping6 ip nc wget sleep cat echo ls ifconfig route "
                               "hostname true httpd; do command -v $a >/dev/null || echo missing $a; done"])
    assert (res.returncode, res.stdout) == (0, ""), res.stderr
    # Each host has its own engine.
    ids = {lab.docker(h, ["info", "--format", "{{.ID}} {{.Name}}"], check=True).stdout.strip()
           for h in ("host1", "host2")}
    assert len(ids) == 2 and {i.split()[1] for i in ids} == {"host1", "host2"}


def test_run_docker_plugins_is_per_host(lab):
    probe = f"probe-{secrets.token_hex(4)}.spec"
    lab.exec("host1", ["sh", "-c", f"echo unix:///x > /run/docker/plugins/{probe}"], check=True)
    assert lab.exec("host1", ["test", "-e", f"/run/docker/plugins/{probe}"]).returncode == 0
    assert lab.exec("host2", ["test", "-e", f"/run/docker/plugins/{probe}"]).returncode == 1
    assert not os.path.exists(f"/run/docker/plugins/{probe}")
    # It physically lives in host1's state dir.
    assert os.path.exists(os.path.join(lab.host(1).dir, "run/docker/plugins", probe))


def test_guard_routes_while_up(lab):
    lay = lab.layout
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    assert f"blackhole {lay.subnet_v4} proto {GUARD_PROTO} metric {lay.guard_metric}" in out
    assert set(guard_routes(lay.guard_metric)) >= {lay.subnet_v4, lay.subnet_v6, "10.20.0.0/16",
                                                   "10.30.0.0/16", "2001:db8::/32", "fd00::/8"}
    # From the root netns the underlay is unroutable (no packet leaves the machine).
    res = subprocess.run(["ip", "route", "get", lay.gateway_v4], capture_output=True, text=True)
    assert res.returncode != 0


def test_etcd_reachable_from_a_host(lab):
    key = f"/warren-lab-test/{secrets.token_hex(4)}"
    code = ("import sys; from datastore import Datastore, EtcdConfig;"
            "ds = Datastore(EtcdConfig.from_env());"
            f"ds.put({key!r}, 'from-' + sys.argv[1]); print(ds.get({key!r}).value.decode())")
    res = lab.exec("host1", [sys.executable, "-c", code, "host1"], timeout=30)
    assert (res.returncode, res.stdout.strip()) == (0, "from-host1"), res.stderr
    tls = []
    if lab.layout.etcd_tls:
        tls = [f"--cacert={lab.layout.pki('ca.crt')}", f"--cert={lab.layout.pki('client.crt')}",
               f"--key={lab.layout.pki('client.key')}"]
    res = lab.exec("host2", ["etcdctl", "--endpoints", lab.layout.etcd_endpoint, *tls, "get",
                             "--print-value-only", key], timeout=30)
    assert (res.returncode, res.stdout.strip()) == (0, "from-host1"), res.stderr


def test_attach_extra_namespace(lab):
    extra = f"{lab.name}-out"
    rec = lab.attach(extra)
    assert rec["created"] and ipaddress.ip_address(rec["ipv4"]) in ipaddress.ip_network(lab.layout.subnet_v4)
    res = lab.exec("host1", ["ping", "-c", "1", "-W", "2", rec["ipv4"]])
    assert res.returncode == 0, res.stdout
    res = subprocess.run(["nsenter", f"--net=/run/netns/{extra}", "/bin/busybox", "ping", "-c", "1",
                          "-W", "2", lab.host(2).ipv6], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    assert lab.status()["attachments"][0]["netns"] == extra
    with pytest.raises(LabError, match="already attached"):
        lab.attach(extra)


def test_up_refuses_an_existing_lab(lab):
    res = cli("up", "--hosts", "1", "--no-node", "--name", lab.name)
    assert res.returncode == 1 and "already exists" in res.stderr
    assert lab.status()["hosts"][0]["dockerd_running"]


# --- labs of their own: teardown ---------------------------------------------------------

def test_down_leaves_nothing_behind():
    name = unique_name()
    lab = Lab(name)
    metric = None
    try:
        res = cli("up", "--hosts", "2", "--no-node", "--name", name, "--json")
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        metric = st["guard_metric"]
        for h in ("host1", "host2"):  # running containers, one without --init
            lab.docker(h, ["run", "-d", "--net=none", IMAGE, "sleep", "1000"], check=True)
            lab.docker(h, ["run", "-d", "--init", "--net=none", IMAGE, "sleep", "1000"], check=True)
        lab.attach(f"{name}-out")
        # A background process in a host, started by exec and never waited for here.
        subprocess.Popen(lab.nsenter_argv("host1", ["sleep", "1000"]), env=lab.env("host1"),
                         start_new_session=True)
        assert len(processes_mentioning(lab.dir + "/")) >= 7  # etcd, 2 dockerd/containerd, shims
        pids = lab_pids(st)
        t = time.monotonic()
        res = cli("down", "--name", name)
        elapsed = time.monotonic() - t
        assert res.returncode == 0 and "down" in res.stdout, res.stderr
        assert_clean(name, lab.dir, metric, pids)
        assert elapsed < 20
        res = cli("down", "--name", name)  # idempotent
        assert res.returncode == 0 and "nothing to remove" in res.stdout
        res = cli("status", "--name", name)
        assert res.returncode == 1 and "not up" in res.stderr
    finally:
        lab.down()
    assert_clean(name, lab.dir, metric)


def test_down_after_kill_9_of_dockerd():
    name = unique_name()
    lab = Lab(name)
    metric = None
    try:
        res = cli("up", "--hosts", "1", "--no-node", "--name", name, "--json")
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        metric = st["guard_metric"]
        lab.docker("host1", ["run", "-d", "--net=none", IMAGE, "sleep", "1000"], check=True)
        pids = lab_pids(st)
        os.kill(st["hosts"][0]["dockerd_pid"], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while lab.status()["hosts"][0]["dockerd_running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not lab.status()["hosts"][0]["dockerd_running"]
        res = cli("down", "--name", name)
        assert res.returncode == 0, res.stderr
        assert_clean(name, lab.dir, metric, pids)
    finally:
        lab.down()
    assert_clean(name, lab.dir, metric)


def test_two_labs_at_once_do_not_collide():
    a, b = Lab(unique_name()), Lab(unique_name())
    errors: list[BaseException] = []

    def up(lab: Lab) -> None:
        try:
            lab.up(1, node=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    metrics: dict[str, int] = {}
    try:
        threads = [threading.Thread(target=up, args=(x,)) for x in (a, b)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert errors == []
        sa, sb = a.status(), b.status()
        metrics = {a.name: sa["guard_metric"], b.name: sb["guard_metric"]}
        assert sa["subnet_v4"] != sb["subnet_v4"] and sa["subnet_v6"] != sb["subnet_v6"]
        assert sa["etcd_endpoint"] != sb["etcd_endpoint"]
        assert sa["guard_metric"] != sb["guard_metric"]
        assert sa["underlay_netns"] != sb["underlay_netns"] and sa["state_dir"] != sb["state_dir"]
        assert sa["hosts"][0]["netns"] != sb["hosts"][0]["netns"]
        # Each host reaches its own etcd, not the other lab's underlay.
        res = a.exec("host1", ["ping", "-c", "1", "-W", "1", sb["hosts"][0]["ipv4"]])
        assert res.returncode != 0
        # Tearing one down leaves the other whole, guards included.
        a.down()
        assert guard_routes(metrics[a.name]) == []
        assert sb["subnet_v4"] in guard_routes(metrics[b.name])
        sb2 = b.status()
        assert sb2["etcd_running"] and sb2["hosts"][0]["dockerd_running"]
        res = b.docker("host1", ["run", "--rm", "--init", "--net=none", IMAGE, "echo", "still"])
        assert res.stdout.strip() == "still"
    finally:
        a.down()
        b.down()
    for lab in (a, b):
        assert_clean(lab.name, lab.dir, metrics.get(lab.name))


def test_failed_up_cleans_up_after_itself():
    name = unique_name()
    lab = Lab(name, warrenctl="/bin/false")  # 'node start' fails on every host
    try:
        with pytest.raises(LabError, match="warrenctl node start failed"):
            lab.up(1)
        assert not lab.exists()
        assert_clean(name, lab.dir, None)
    finally:
        lab.down()
    assert_clean(name, lab.dir, None)
