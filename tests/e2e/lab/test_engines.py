"""End-to-end tests of warren-lab's engines and Docker's firewall (ctl/lab/engines.py, hostengine.py).

Each engine (20.10, 26, 28) comes up with dockerd's own firewall on, runs containers with
``--init`` (Debian 12's tini-static) on the default bridge and with ``--net=none``, reports
its version in ``status``, has Docker's chains in the host netns' iptables (DOCKER-FORWARD
only from 28), and compose v2 where the engine has one; ``down`` leaves nothing behind.
With the firewall off there are no Docker chains and no docker0. Bad choices are one-line
errors that leave no lab. One lab at a time, each with a name of its own, torn down in
``finally``; every probe runs inside the lab's namespaces.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ctl.lab import IMAGE, Lab, LabError
from ctl.lab import engines
from tests.e2e.lab.conftest import missing_requirements
from tests.e2e.lab.test_lab import REPO, assert_clean, cli, root_links, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(missing_requirements() is not None,
                                 reason=missing_requirements() or "")]

ENGINE_MAJOR = {"20.10": "20.10.", "26": "26.", "28": "28."}


def iptables(lab: Lab, host: str, cmd: str = "iptables") -> str:
    res = lab.exec(host, [cmd, "-S"], check=True)
    return res.stdout


def chains(rules: str) -> set[str]:
    return {line.split()[1] for line in rules.splitlines() if line.startswith("-N ")}


@pytest.mark.parametrize("engine", ["20.10", "26", "28"])
def test_engine_with_docker_firewall_on(engine):
    name = unique_name()
    lab = Lab(name)
    metric = None
    links_before = root_links()
    try:
        res = cli("up", "--hosts", "1", "--no-node", "--name", name, "--engine", engine,
                  "--docker-firewall", "on", "--json", timeout=300)
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        metric = st["guard_metric"]
        eng = engines.load(engine)
        assert eng is not None
        assert (st["engine"], st["docker_firewall"]) == (engine, True)
        assert st["engine_packages"] == eng.packages
        host = st["hosts"][0]
        assert (host["engine"], host["docker_firewall"]) == (engine, True)
        assert host["docker_version"].startswith(ENGINE_MAJOR[engine])
        assert lab.docker_cli == eng.docker and lab.dockerd == eng.dockerd
        with open(os.path.join(lab.dir, "state.json")) as f:
            recorded = json.load(f)
        assert recorded["engine"]["name"] == engine and recorded["docker_firewall"] is True

        # The engine's own CLI, on the host's PATH too, talks to the engine's dockerd.
        res = lab.exec("host1", ["docker", "version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
                       check=True)
        client, server = res.stdout.split()
        assert server == host["docker_version"] and client.startswith(ENGINE_MAJOR[engine])

        # --init runs Debian 12's tini-static as PID 1, on the default bridge and on --net=none.
        for netopt in ("--net=bridge", "--net=none"):
            res = lab.docker("host1", ["run", "--rm", "--init", netopt, IMAGE, "sh", "-c",
                                       "cat /proc/1/comm; ip -o -4 addr show eth0 2>/dev/null | wc -l"],
                             timeout=60)
            assert res.returncode == 0, res.stderr
            comm, eth0 = res.stdout.split()
            assert comm == "docker-init"
            assert eth0 == ("1" if netopt == "--net=bridge" else "0")

        # Docker's own firewall, inside the host netns: its chains, docker0, FORWARD's DROP.
        rules = iptables(lab, "host1")
        got = chains(rules)
        assert {"DOCKER", "DOCKER-USER", "DOCKER-ISOLATION-STAGE-1"} <= got, rules
        assert ("DOCKER-FORWARD" in got) == (engine == "28"), rules
        assert "-P FORWARD DROP" in rules.splitlines()
        nat = lab.exec("host1", ["iptables", "-t", "nat", "-S"], check=True).stdout
        assert "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in nat.splitlines(), nat
        res = lab.exec("host1", ["ip", "-o", "-4", "addr", "show", "docker0"], check=True)
        assert "172.17.0.1/16" in res.stdout
        # Nothing of it in the root netns.
        assert root_links() == links_before

        # compose v2: the engine's own plugin through DOCKER_CONFIG (20.10 has none).
        if eng.compose:
            res = lab.exec("host1", ["docker", "compose", "version", "--short"], check=True)
            assert res.stdout.strip().split("-")[0] == eng.packages["docker-compose"].split("-")[0]
            project = os.path.join(lab.dir, "compose")
            os.makedirs(project)
            with open(os.path.join(project, "compose.yaml"), "w") as f:
                f.write(textwrap.dedent(f"""\
                    services:
                      app:
                        image: {IMAGE}
                        command: sleep 300
                        init: true
                    """))
            lab.exec("host1", ["docker", "compose", "-p", "engtest", "up", "-d"], cwd=project,
                     check=True, timeout=120)
            ps = lab.exec("host1", ["docker", "compose", "-p", "engtest", "ps", "-q"], cwd=project,
                          check=True).stdout.split()
            assert len(ps) == 1
            lab.exec("host1", ["docker", "compose", "-p", "engtest", "down", "-t", "1"], cwd=project,
                     check=True, timeout=120)
            assert lab.docker("host1", ["ps", "-aq"], check=True).stdout.split() == []
        else:
            assert engine == "20.10"

        # down removes everything, Docker's rules and bridge with the netns.
        lab.docker("host1", ["run", "-d", "--init", IMAGE, "sleep", "1000"], check=True, timeout=60)
        res = cli("down", "--name", name)
        assert res.returncode == 0, res.stderr
        assert_clean(name, lab.dir, metric)
    finally:
        lab.down()
    assert_clean(name, lab.dir, metric)


def test_docker_firewall_off_has_no_docker_rules(monkeypatch):
    monkeypatch.setenv("WARREN_LAB_DOCKER_FIREWALL", "off")   # the environment default
    monkeypatch.setenv("WARREN_LAB_ENGINE", "28")
    lab = Lab(unique_name())
    try:
        st = lab.up(1, node=False)
        assert (st["engine"], st["docker_firewall"]) == ("28", False)
        assert st["hosts"][0]["docker_version"].startswith("28.")
        for cmd in ("iptables", "ip6tables"):
            assert not any(c.startswith("DOCKER") for c in chains(iptables(lab, "host1", cmd)))
        assert lab.exec("host1", ["ip", "link", "show", "docker0"]).returncode != 0
        res = lab.exec("host1", ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"],
                       check=True)
        assert res.stdout.split() == ["1", "1"]
        res = lab.docker("host1", ["run", "--rm", "--init", "--net=none", IMAGE, "echo", "hi"], timeout=60)
        assert (res.returncode, res.stdout.strip()) == (0, "hi"), res.stderr
    finally:
        lab.down()


ENGINE_CHOICES = "choose one of 20.10, 26, 28"


@pytest.mark.parametrize("args,env,message", [
    (["--engine", "27"], {}, f"unknown engine '27': {ENGINE_CHOICES}"),
    ([], {"WARREN_LAB_ENGINE": "nope"}, f"unknown engine 'nope' (from $WARREN_LAB_ENGINE): {ENGINE_CHOICES}"),
    (["--docker-firewall", "maybe"], {}, "--docker-firewall must be on or off, not 'maybe'"),
    ([], {"WARREN_LAB_DOCKER_FIREWALL": "1"},
     "--docker-firewall must be on or off, not '1' (from $WARREN_LAB_DOCKER_FIREWALL)"),
])
def test_bad_choices_are_one_line_errors(args, env, message):
    name = unique_name()
    res = subprocess.run([sys.executable, "-m", "ctl.lab", "up", "--hosts", "1", "--no-node",
                          "--name", name, *args],
                         cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert (res.returncode, res.stderr) == (1, f"warren-lab: error: {message}\n")
    assert not Lab(name).exists() and not os.path.exists(Lab(name).dir)
    with pytest.raises(LabError, match="unknown engine '29'"):
        Lab(name).up(1, node=False, engine="29")
    assert not os.path.exists(Lab(name).dir)


def test_fetch_engine_script_cached_and_errors():
    script = os.path.join(REPO, "scripts", "fetch-engine")
    res = subprocess.run([script, "20.10", "28"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("engine 20.10: ") and "docker.io 28." in lines[1]
    # Now cached: the same again, marked so, and the manifest names the exact versions.
    res = subprocess.run([script, "28", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    manifest = json.loads(res.stdout)
    assert manifest["suite"] == "sid" and manifest["packages"]["docker.io"].startswith("28.")
    assert os.path.realpath(os.path.join(manifest["dir"], "bin", "runc")) == "/usr/sbin/runc"
    assert os.path.realpath(os.path.join(manifest["dir"], "bin", "docker-init")) == "/usr/bin/tini-static"
    res = subprocess.run([script, "28"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.rstrip().endswith("(cached)")
    res = subprocess.run([script, "27"], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == "fetch-engine: error: unknown engine '27' (choose one of: 20.10, 26, 28)\n"
