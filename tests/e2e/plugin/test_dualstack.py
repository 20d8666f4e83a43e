"""Dual-stack containers, started many times, and compose v2 (issue 11, part 3).

Docker 26 failed 41 % of dual-stack starts ("failed to set IPv6 gateway ...
route for the gateway fe80::ecee:eeff:feee:eeee could not be found"): it
resolves the IPv6 gateway right after link-up, before the kernel has made the
interface's fe80::/64 route; Join's connected route to the gateway fixes it
(plugin/networks.py). The start test prints how many of
``WARREN_DUALSTACK_STARTS`` (default 100) starts failed, and wants none. The
compose test uses the engine's own ``docker compose`` (26 and 28 in the lab;
skipped where the engine has none, 20.10): a dual-stack network, fixed
addresses, service-name DNS, ``--scale``, ``down``/``up`` ``WARREN_COMPOSE_UPS``
(default 10) times, and ``warrenctl ipam check`` clean after. A container whose
runc init died before any network existed (``RUNTIME_FLAKES``) is not a network
failure: it is counted and printed apart (bounded), and compose retries one.
"""
from __future__ import annotations

import os

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import E2E, ctl, dk, lab_fixture, remove_all, used_addresses

pytestmark = E2E

lab = lab_fixture("q", 1)
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"
STARTS = int(os.environ.get("WARREN_DUALSTACK_STARTS", "100"))
COMPOSE_UPS = int(os.environ.get("WARREN_COMPOSE_UPS", "10"))

COMPOSE = f"""
name: qds
services:
  fixed:
    image: {IMAGE}
    command: ["sleep", "600"]
    init: true
    networks:
      dsnet:
        ipv4_address: 10.20.61.10
        ipv6_address: fd00:61::10
  web:
    image: {IMAGE}
    command: ["sleep", "600"]
    init: true
    deploy:
      replicas: 4
    networks: [dsnet]
networks:
  dsnet:
    driver: warren
    enable_ipv6: true
    ipam:
      driver: warren
      config:
        - subnet: 10.20.61.0/24
        - subnet: fd00:61::/64
"""


# The container's init process was gone before its network existed: "read init-p: connection
# reset by peer" from runc, or dockerd failing to bind-mount /proc/<init pid>/ns/net (20.10/26:
# in the setkey hook, whose bare "no such file or directory"; 28: "bind-mount /proc/N/ns/net ->
# ...: no such file or directory"). Seen about once in 100-200 starts on every engine of this
# 2-core machine while other labs run; no Warren call is involved yet. Counted and printed apart.
RUNTIME_FLAKES = ("read init-p: connection reset by peer", 'level=fatal msg="no such file or directory"')


def runtime_flake(message: str) -> bool:
    init_gone = "bind-mount /proc/" in message and "/ns/net" in message and "no such file" in message
    return init_gone or any(flake in message for flake in RUNTIME_FLAKES)


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, ("host1",))


def test_dual_stack_starts_never_fail(lab, capsys):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--ipv6",
       "--subnet", "10.20.60.0/24", "--subnet", "fd00:60::/64", "ds60")
    failures: list[str] = []
    for _ in range(STARTS):
        result = dk(lab, "host1", "run", "--rm", "--init", "--net", "ds60", IMAGE, "ip", "-6", "route",
                    check=False)
        if result.returncode != 0:
            failures.append(" | ".join(result.stderr.strip().splitlines()) or f"exit {result.returncode}")
        elif f"default via {GATEWAY_V6} dev eth0" not in result.stdout:
            failures.append(f"no IPv6 default route: {result.stdout.strip()!r}")
    engine = dk(lab, "host1", "version", "-f", "{{.Server.Version}}").stdout.strip()
    flakes = [m for m in failures if runtime_flake(m)]
    network = [m for m in failures if not runtime_flake(m)]
    with capsys.disabled():
        print(f"\ndual-stack starts on Docker {engine}: {len(network)} of {STARTS} failed"
              f" (and {len(flakes)} runc init deaths before any network setup)")
        for message in (network + flakes)[:3]:
            print("  " + message)
    assert not network
    assert len(flakes) <= max(1, STARTS // 20), "runc keeps failing: the lab host is unwell"
    assert used_addresses(lab) == 0


def compose(lab, path, *args, check=True):
    return dk(lab, "host1", "compose", "-f", path, *args, check=check, timeout=300)


def states(lab, path) -> str:
    """Each container's state and error, for a failure message."""
    ids = compose(lab, path, "ps", "-a", "-q", check=False).stdout.split()
    if not ids:
        return "no containers"
    return dk(lab, "host1", "inspect", "-f", "{{.Name}} {{.State.Status}} exit={{.State.ExitCode}} "
              "error={{.State.Error}}", *ids, check=False).stdout.replace("\n", "; ")


def resolves(lab, path, service, name, family="-4") -> str:
    """The address ``name`` resolves to inside ``service`` (Docker's DNS, A or AAAA by
    ``family``), by ping's first line; the ping must be answered too."""
    result = compose(lab, path, "exec", "-T", service, "ping", family, "-c", "1", "-W", "2", name,
                     check=False)
    assert result.returncode == 0, f"{service} cannot reach {name}: {result.stdout} {result.stderr}"
    return result.stdout.split("(", 1)[1].split(")", 1)[0]


def test_compose_dual_stack_up_down_scale(lab, tmp_path):
    if dk(lab, "host1", "compose", "version", check=False).returncode != 0:
        pytest.skip("this engine has no compose v2")
    path = str(tmp_path / "compose.yaml")
    with open(path, "w") as f:
        f.write(COMPOSE)
    flakes = 0
    try:
        for round_ in range(COMPOSE_UPS):
            up = compose(lab, path, "up", "-d", check=False)
            if up.returncode != 0 and runtime_flake(up.stderr) and flakes == 0:
                flakes += 1  # once: runc's init died (see RUNTIME_FLAKES); this round again
                print(f"compose up #{round_ + 1}: runc init died, retried: {up.stderr.strip()[-300:]}")
                compose(lab, path, "down")
                up = compose(lab, path, "up", "-d", check=False)
            assert up.returncode == 0, f"compose up #{round_ + 1}: {up.stderr}"
            running = compose(lab, path, "ps", "-q", "--status", "running").stdout.split()
            assert len(running) == 5, (f"round {round_ + 1}: {len(running)} of 5 containers running: "
                                       + states(lab, path))
            assert resolves(lab, path, "web", "fixed") == "10.20.61.10"
            assert resolves(lab, path, "web", "fixed", "-6") == "fd00:61::10"
            assert resolves(lab, path, "fixed", "web").startswith("10.20.61.")
            assert resolves(lab, path, "fixed", "web", "-6").startswith("fd00:61:")
            if round_ < COMPOSE_UPS - 1:
                compose(lab, path, "down")
        compose(lab, path, "up", "-d", "--scale", "web=6")
        assert len(compose(lab, path, "ps", "-q", "--status", "running").stdout.split()) == 7
        assert used_addresses(lab) == 14  # 7 containers, dual-stack
        assert ctl(lab, "host1", "ipam", "check", "--grace", "0").returncode == 0
        compose(lab, path, "down")
        assert used_addresses(lab) == 0
        check = ctl(lab, "host1", "ipam", "check", "--grace", "0")
        assert "consistent" in check.stdout
    finally:
        compose(lab, path, "down", check=False)
