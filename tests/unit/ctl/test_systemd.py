"""The systemd units (systemd/*.service) and systemd/setup's systemd path.

The units are parsed (systemd's syntax: sections, repeated keys, ``\\``
continuations) and checked for what they must say; ``systemd-analyze verify``
also checks them when it is installed. systemd/setup runs for real with a fake
``systemctl`` (and ``etcdctl``) first on PATH and its file locations pointed
at a temporary directory, so no real unit is touched. Its background mode
(no systemd) is exercised end to end in tests/e2e/ops/test_install_plain.py.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
UNITS = os.path.join(REPO, "systemd")
SETUP = os.path.join(UNITS, "setup")


def parse_unit(path: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax -> {section: {key: [values...]}}; fails on anything malformed."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if pending:
                line = pending + " " + line.strip()
                pending = ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", ";")):
                continue
            if stripped.startswith("["):
                assert stripped.endswith("]"), f"{path}:{number}: bad section header"
                current = sections.setdefault(stripped[1:-1], {})
                continue
            assert current is not None, f"{path}:{number}: key outside a section"
            key, sep, value = stripped.partition("=")
            assert sep and key.strip() and key.strip() == key.strip().replace(" ", ""), \
                f"{path}:{number}: not KEY=VALUE"
            current.setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path}: ends in a continuation"
    return sections


def words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


def exec_argv(unit: dict, key: str = "ExecStart") -> list[str]:
    [value] = unit["Service"][key]
    return shlex.split(value)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def node():
    return parse_unit(os.path.join(UNITS, "warren-node.service"))


@pytest.fixture(scope="module")
def etcd():
    return parse_unit(os.path.join(UNITS, "warren-etcd.service"))


def test_node_unit_runs_the_node_in_the_foreground(node):
    argv = exec_argv(node)
    assert argv[0] == "/opt/warren/venv/bin/warrenctl" and argv[1:4] == ["node", "start", "--foreground"]
    assert node["Service"]["Type"] == ["exec"] and node["Service"]["Restart"] == ["on-failure"]
    # The foreground node stops its agent, then its server, on SIGTERM: only it gets the signal.
    assert node["Service"]["KillMode"] == ["mixed"] and "ExecStop" not in node["Service"]
    assert node["Service"]["EnvironmentFile"] == ["-/etc/warren/warren.env"]


def test_node_unit_is_started_only_when_the_plugin_answers(node, tmp_path):
    """ExecStartPost waits for Plugin.Activate on the socket: run it against a real one."""
    import http.server
    import json
    import threading

    from tests.support.unixhttp import UnixHTTPServer

    argv = exec_argv(node, "ExecStartPost")
    assert argv[0] == "/opt/warren/venv/bin/python" and argv[1] == "-c"
    code = argv[2]
    sock = str(tmp_path / "warren.sock")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.dumps({"Implements": ["NetworkDriver", "IpamDriver"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass


    def ready(mainpid: int, timeout: float = 30) -> subprocess.CompletedProcess:
        # systemd gives ExecStartPost the main process's PID in $MAINPID.
        env = dict(os.environ, WARREN_PLUGIN_SOCKET=sock, PYTHONPATH=REPO, MAINPID=str(mainpid))
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    # The main process is gone and nothing answers: fails at once, does not wait 55 s.
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert ready(dead.pid).returncode != 0
    server = UnixHTTPServer(sock, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert ready(os.getpid()).returncode == 0
    finally:
        server.shutdown()
        server.server_close()


def test_node_unit_starts_before_docker_and_after_etcd(node):
    assert "docker.service" in words(node["Unit"]["Before"])
    after = words(node["Unit"]["After"])
    assert "warren-etcd.service" in after and "etcd.service" in after
    assert "docker.service" not in after and "docker.service" not in words(node["Unit"].get("Requires", []))
    # The local etcd is wanted only through the drop-in systemd/setup writes when etcd is local.
    assert "warren-etcd.service" not in words(node["Unit"].get("Wants", []))
    assert node["Install"]["WantedBy"] == ["multi-user.target"]


def test_etcd_unit_listens_on_loopback_only(etcd):
    argv = exec_argv(etcd)
    assert argv[0] == "/usr/bin/etcd"
    assert flag(argv, "--data-dir") == "/var/lib/warren/etcd"
    for name in ("--listen-client-urls", "--advertise-client-urls"):
        assert flag(argv, name) == "http://127.0.0.1:2379"
    for name in ("--listen-peer-urls", "--initial-advertise-peer-urls"):
        assert flag(argv, name) == "http://127.0.0.1:2380"
    assert flag(argv, "--initial-cluster") == "warren=http://127.0.0.1:2380"
    assert etcd["Service"]["Type"] == ["notify"] and etcd["Service"]["Restart"] == ["on-failure"]
    assert etcd["Install"]["WantedBy"] == ["multi-user.target"]


def test_etcd_unit_matches_local_etcd(etcd):
    """The background mode (scripts/local-etcd) runs the same server on the same data."""
    script = open(os.path.join(REPO, "scripts", "local-etcd")).read()
    start = script[script.index("setsid etcd"):]
    command = start[:start.index(">>")].replace("\\\n", " ")
    command = command.replace('"$STATE/etcd"', "/var/lib/warren/etcd").replace('"$URL"', "http://127.0.0.1:2379")
    local = shlex.split(command)[1:]
    unit = exec_argv(etcd)
    for name in ("--name", "--data-dir", "--listen-client-urls", "--advertise-client-urls", "--listen-peer-urls",
                 "--initial-advertise-peer-urls", "--initial-cluster"):
        assert flag(local, name) == flag(unit, name), name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.skipif(not os.access("/opt/warren/venv/bin/warrenctl", os.X_OK) or not os.access("/usr/bin/etcd", os.X_OK),
                    reason="verify needs the units' executables (/opt/warren, /usr/bin/etcd)")
def test_systemd_analyze_verify_is_silent(tmp_path):
    for name in ("warren-node.service", "warren-etcd.service"):
        shutil.copy(os.path.join(UNITS, name), tmp_path / name)
    res = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "warren-etcd.service"),
                          str(tmp_path / "warren-node.service")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


# --- systemd/setup with systemd present (a fake systemctl) --------------------------------------

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0") $*" in
  "systemctl is-active"*) exit {active} ;;
  "etcdctl"*) exit {foreign_etcd} ;;
esac
exit 0
"""


@pytest.fixture
def fake_host(tmp_path):
    """Paths of a pretend systemd host, and a runner for systemd/setup in it."""
    bindir, prefix, state = tmp_path / "bin", tmp_path / "prefix", tmp_path / "state"
    for d in (bindir, prefix / "venv" / "bin", tmp_path / "runtime", state):
        d.mkdir(parents=True)
    log = tmp_path / "calls.log"

    def tool(path, active=3, foreign_etcd=1):
        path.write_text(FAKE.format(log=log, active=active, foreign_etcd=foreign_etcd))
        path.chmod(0o755)

    def run(active: int = 3, foreign_etcd: int = 1, **env):
        for name in ("systemctl", "etcdctl"):
            tool(bindir / name, active, foreign_etcd)
        tool(prefix / "venv" / "bin" / "warrenctl")
        base = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
        base.update(PATH=f"{bindir}:{base.get('PATH', '/usr/bin:/bin')}", WARREN_PREFIX=str(prefix),
                    WARREN_STATE_DIR=str(state), WARREN_SYSTEMD_RUNTIME_DIR=str(tmp_path / "runtime"),
                    WARREN_UNIT_DIR=str(tmp_path / "units"), WARREN_CONF_DIR=str(tmp_path / "etc"),
                    WARREN_RUN_DIR=str(tmp_path / "run"), WARREN_LOG_DIR=str(tmp_path / "log"), **env)
        log.write_text("")
        res = subprocess.run([SETUP], env=base, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res, log.read_text().splitlines()

    run.dir = tmp_path  # type: ignore[attr-defined]
    run.prefix, run.state = prefix, state  # type: ignore[attr-defined]
    return run


def test_setup_installs_and_starts_units_with_local_etcd(fake_host):
    res, calls = fake_host()
    units = fake_host.dir / "units"
    node = (units / "warren-node.service").read_text()
    etcd = (units / "warren-etcd.service").read_text()
    assert f"ExecStart={fake_host.prefix}/venv/bin/warrenctl node start --foreground" in node
    assert "/opt/warren" not in node and "/var/lib/warren/" not in etcd
    assert f"--data-dir {fake_host.state}/etcd" in etcd
    dropin = (units / "warren-node.service.d" / "local-etcd.conf").read_text()
    assert "Wants=warren-etcd.service" in dropin
    assert "systemctl daemon-reload" in calls
    assert "systemctl enable --now warren-etcd.service" in calls
    assert calls.index("systemctl enable --now warren-etcd.service") < calls.index("systemctl enable warren-node.service")
    assert "systemctl restart warren-node.service" in calls
    assert "warrenctl node stop" in calls  # a node left from the background mode is handed over


def test_setup_is_idempotent(fake_host):
    fake_host()
    _, calls = fake_host(active=0)
    assert "systemctl daemon-reload" not in calls            # nothing changed
    assert "systemctl restart warren-node.service" not in calls
    assert "systemctl start warren-node.service" in calls
    assert "warrenctl node stop" not in calls                # the unit is the node now


def test_setup_with_remote_etcd_writes_the_settings_and_no_local_etcd(fake_host):
    fake_host()
    _, calls = fake_host(WARREN_ETCD_ENDPOINTS="https://192.0.2.1:2379,https://192.0.2.2:2379",
                         WARREN_ETCD_CA="/etc/warren/ca.crt", WARREN_NODE_ARGS="--ip 192.0.2.10")
    env_file = fake_host.dir / "etc" / "warren.env"
    lines = env_file.read_text().splitlines()
    assert 'WARREN_ETCD_ENDPOINTS="https://192.0.2.1:2379,https://192.0.2.2:2379"' in lines
    assert 'WARREN_ETCD_CA="/etc/warren/ca.crt"' in lines and 'WARREN_NODE_ARGS="--ip 192.0.2.10"' in lines
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert not (fake_host.dir / "units" / "warren-node.service.d" / "local-etcd.conf").exists()
    assert "systemctl enable --now warren-etcd.service" not in calls
    assert "systemctl disable --now --quiet warren-etcd.service" in calls
    # Run again without the variables: the settings in the file stay, etcd stays remote.
    _, calls = fake_host()
    assert 'WARREN_ETCD_ENDPOINTS="https://192.0.2.1:2379,https://192.0.2.2:2379"' in env_file.read_text()
    assert "systemctl enable --now warren-etcd.service" not in calls


def test_setup_reuses_a_foreign_local_etcd(fake_host):
    res, calls = fake_host(foreign_etcd=0)
    assert "not managed by Warren" in res.stdout
    assert "systemctl enable --now warren-etcd.service" not in calls
    assert "systemctl enable warren-node.service" in calls
