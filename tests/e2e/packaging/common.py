"""Shared by the packaging tests: running the build scripts against lab hosts, and waiting.

The scripts run in the root namespaces (they need the host's debootstrap and wheel caches, and
PyPI or deb.debian.org when those caches are cold) and reach a lab host's dockerd through its
unix socket only (``DOCKER_HOST``), so no packet goes to a lab address from outside the lab.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from typing import Callable

import pytest

from ctl.lab import Lab
from plugin import server
from tests.e2e.helpers import REPO, dk

BUILD_TIMEOUT = 1200.0   # a cold cache runs debootstrap and fills the wheel cache from PyPI
NODE_IMAGE = "warren/node:latest"
NODE_CONTAINER = "warren-node"
PLUGIN_NAME = "warren/warren"


def script_env(lab: Lab, host: str) -> dict[str, str]:
    env = dict(os.environ, DOCKER=lab.docker_cli, DOCKER_HOST=lab.host(host).docker_host)
    for var in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(var, None)
    return env


def script(lab: Lab, host: str, name: str, *args: str,
           timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``scripts/NAME`` against ``host``'s dockerd."""
    return subprocess.run([os.path.join(REPO, "scripts", name), *args], env=script_env(lab, host),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def copy_image(lab: Lab, image: str, source: str, target: str) -> None:
    """``docker save`` on ``source`` piped into ``docker load`` on ``target``."""
    save = subprocess.Popen([lab.docker_cli, "save", image], env=script_env(lab, source),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    load = subprocess.run([lab.docker_cli, "load", "-q"], env=script_env(lab, target), stdin=save.stdout,
                          capture_output=True, text=True, timeout=300)
    save.stdout.close()
    _, err = save.communicate(timeout=300)
    assert save.returncode == 0 and load.returncode == 0, f"save/load {image}: {err!r} {load.stderr}"


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, step: float = 0.1,
             detail: Callable[[], str] | None = None) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout`` (with ``detail()``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f}s" + (f"\n{detail()}" if detail else ""))
        time.sleep(step)
    return time.monotonic() - start


def activates(socket_path: str) -> bool:
    """The plugin socket answers ``Plugin.Activate`` as a network and IPAM driver.

    A managed plugin's socket path (with its 64-character id) is longer than AF_UNIX allows,
    so the socket is reached through a descriptor of its directory.
    """
    try:
        fd = os.open(os.path.dirname(socket_path), os.O_PATH)
    except OSError:
        return False
    try:
        short = f"/proc/self/fd/{fd}/{os.path.basename(socket_path)}"
        status, answer = server.call(short, "Plugin.Activate", timeout=2.0)
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        os.close(fd)
    return status == 200 and {"NetworkDriver", "IpamDriver"} <= set(answer.get("Implements", []))


def nodes(lab: Lab) -> dict[str, dict]:
    """The node registry in etcd: name -> record."""
    code = ("import json; from datastore import Datastore, EtcdConfig; from ipam.nodes import list_nodes; "
            "print(json.dumps({n.name: {'ipv4': n.ipv4, 'ipv6': n.ipv6} "
            "for n in list_nodes(Datastore(EtcdConfig.from_env()))}))")
    result = lab.exec("host1", [sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def container_address(lab: Lab, host: str, name: str, network: str) -> str:
    return dk(lab, host, "inspect", "-f",
              f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', name).stdout.strip()


def remove_containers_and_networks(lab: Lab, hosts: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
    """Test clean-up: every container but ``keep``, then every network a test made."""
    for host in hosts:
        names = dk(lab, host, "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        doomed = [n for n in names if n not in keep]
        if doomed:
            dk(lab, host, "rm", "-f", *doomed, check=False)
        nets = dk(lab, host, "network", "ls", "--format", "{{.Name}} {{.Driver}}", check=False).stdout
        ours = [line.split()[0] for line in nets.splitlines()
                if line.split()[1:] and line.split()[1] not in ("host", "null", "bridge")]
        if ours:
            dk(lab, host, "network", "rm", *ours, check=False)
