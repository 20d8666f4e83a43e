"""Helpers shared by the end-to-end tests: the docker CLI and warrenctl inside lab hosts."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from ctl.lab import IMAGE, Lab
from tests.e2e.lab.conftest import missing_requirements

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Every e2e module: pytestmark = E2E
E2E = [pytest.mark.e2e, pytest.mark.slow,
       pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")]


def lab_fixture(prefix: str, hosts: int, node: bool = True):
    """A module-scoped warren-lab fixture that always comes down, even on failure."""
    @pytest.fixture(scope="module")
    def lab():
        lab = Lab(prefix + secrets.token_hex(3))
        try:
            lab.up(hosts, node=node)
            yield lab
        finally:
            lab.down()
    return lab


def wait_for(predicate, timeout: float, step: float = 0.05, what: str = "") -> float:
    """Seconds until ``predicate()`` held; the test fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what or 'condition'} not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def dk(lab, host, *args, check=True, timeout=120) -> subprocess.CompletedProcess:
    result = lab.docker(host, list(args), timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result


def ctl(lab, host, *args, check=True) -> subprocess.CompletedProcess:
    result = lab.exec(host, ["warrenctl", *args], timeout=60, cwd=REPO)
    if check:
        assert result.returncode == 0, f"warrenctl {' '.join(args)}: {result.stderr}"
    return result


RUNC_FLAKE = "error during container init"  # runc's init gone before any network setup (~1 in 100-200 starts)


def run(lab, host, name, net, *extra, command=("sleep", "600")):
    """``docker run -d``; retried once after runc's intermittent init failure, which every engine
    shows now and then before a network plugin is involved (the dual-stack test counts them)."""
    argv = ("run", "-d", "--init", "--name", name, "--net", net, *extra, IMAGE, *command)
    result = dk(lab, host, *argv, check=False)
    if result.returncode != 0 and RUNC_FLAKE in result.stderr:
        dk(lab, host, "rm", "-f", name, check=False)
        result = dk(lab, host, *argv, check=False)
    assert result.returncode == 0, f"docker {' '.join(argv)}: {result.stderr}"


def address(lab, host, name, network, v6=False) -> str:
    field = "GlobalIPv6Address" if v6 else "IPAddress"
    return dk(lab, host, "inspect", "-f",
              f'{{{{(index .NetworkSettings.Networks "{network}").{field}}}}}', name).stdout.strip()


def pings(lab, host, container, target, v6=False, count=1) -> bool:
    argv = ["exec", container, "ping6" if v6 else "ping", "-c", str(count), "-W", "2", target]
    return dk(lab, host, *argv, check=False).returncode == 0


def used_addresses(lab, pool: str | None = None) -> int:
    """Addresses in use in every block (or only in ``pool``'s: a test counting its own network's
    addresses is not disturbed by the janitor cleaning up after earlier tests)."""
    blocks = json.loads(ctl(lab, "host1", "ipam", "show", "--json").stdout)
    return sum(b["used"] for b in blocks if pool is None or b["pool"] == pool)


def count_keys(lab, prefix: str) -> int:
    code = ("from datastore import Datastore, EtcdConfig; "
            f"print(len(Datastore(EtcdConfig.from_env()).get_prefix({prefix!r})))")
    result = lab.exec("host1", [sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def network_name(lab, network_id: str) -> str | None:
    code = ("import json; from datastore import Datastore, EtcdConfig; "
            f"kv = Datastore(EtcdConfig.from_env()).get('/warren/v1/networks/{network_id}'); "
            "print(json.loads(kv.value)['name'] if kv else '')")
    result = lab.exec("host1", [sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() or None


def underlay(lab, host) -> str:
    return next(h["ipv4"] for h in lab.status()["hosts"] if h["name"] == host)



def remove_all(lab, hosts) -> None:
    """Remove every container and warren network on ``hosts`` (test clean-up)."""
    for host in hosts:
        ids = dk(lab, host, "ps", "-aq").stdout.split()
        if ids:
            dk(lab, host, "rm", "-f", *ids, check=False)
        nets = dk(lab, host, "network", "ls", "-q", "--filter", "driver=warren").stdout.split()
        if nets:
            dk(lab, host, "network", "rm", *nets, check=False)
