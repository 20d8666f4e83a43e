"""Warren beside Docker's own firewall: a 2-host lab whose dockerds run with ``--iptables`` on.

On whatever engine the run selects (``WARREN_LAB_ENGINE``: 20.10, 26 or 28):

* a Docker bridge network and a Warren network on host1 are isolated from each
  other in both directions (TCP to a served port, ping), also when the Warren
  network's profile is opened to everyone, except through published ports:
  Docker's ``-p`` on the bridge container is reachable from a Warren workload,
  Warren's ``-p`` from a bridge container;
* every negative probe has a positive control that uses the same client, the
  same server and the same port (a server that answers, a route that works);
* the same holds after ``Lab.restart_dockerd`` (dockerd rewrites its chains on
  start) and Warren's jumps are first in DOCKER-USER and then FORWARD again;
* an ``--internal`` Warren network reaches its peers on the other host but not
  the outside (a namespace on the underlay, reachable from an ordinary Warren
  network of a nat-outgoing pool), even when its container routes there itself.

Servers are busybox httpd inside the test's containers; the outside host is a
namespace this module attaches to the lab's underlay (removed with the lab).
"""
from __future__ import annotations

import secrets
import time
from typing import Iterator

import pytest

from ctl.lab import Lab
from profiles import generator as g
from tests.e2e.helpers import E2E, address, ctl, dk, pings, wait_for

pytestmark = E2E

HOSTS = ("host1", "host2")
CREATE = ("network", "create", "-d", "warren", "--ipam-driver", "warren")
SERVE = ("mkdir -p /w80 /w81 && echo port80 > /w80/index.html && echo port81 > /w81/index.html && "
         "httpd -p 80 -h /w80 && httpd -p 81 -h /w81 && exec sleep 3600")
WPOOL, WPOOL6, IPOOL = "10.20.60.0/24", "fd00:60::/64", "10.20.61.0/24"
BRIDGE_SUBNETS = ("172.30.0.0/24", "fd00:172:30::/64")
DOCKER_PORT, WARREN_PORT = 18080, 19090


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab("f" + secrets.token_hex(3))
    try:
        lab.up(2, node=True, docker_firewall=True)
        yield lab
    finally:
        lab.down()


def run(lab, host, name, net, *extra, command=("sleep", "3600")):
    dk(lab, host, "run", "-d", "--init", "--restart", "always", "--name", name, "--net", net, *extra,
       "warren-lab/busybox:latest", *command)


def fetch(lab, host: str, container: str, target: str, port: int) -> str:
    """The body served at target:port, or "" (busybox nc, 2 s timeout)."""
    result = dk(lab, host, "exec", container, "sh", "-c",
                f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target} {port}", check=False, timeout=30)
    return result.stdout if result.returncode == 0 else ""


def served(lab, host, container, target, port, body, attempts: int = 30) -> bool:
    """Whether ``body`` comes back, tried again a while (policy and restarts settle asynchronously)."""
    for _ in range(attempts):
        if body in fetch(lab, host, container, target, port):
            return True
        time.sleep(0.5)
    return False


def underlay(lab, host) -> str:
    return lab.host(host).ipv4


def first_rules(lab, host, chain, tool="iptables") -> list[str]:
    out = lab.exec(host, [tool, "-w", "-S", chain]).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]


@pytest.fixture(scope="module")
def world(lab):
    """host1: a bridge network with a served container (Docker -p) and a client; a Warren network
    (nat-outgoing pool) on both hosts with a served container (Warren -p), a client, a peer."""
    ctl(lab, "host1", "pool", "add", WPOOL, "--nat-outgoing")
    ctl(lab, "host1", "pool", "add", IPOOL, "--nat-outgoing")
    dk(lab, "host1", "network", "create", "--ipv6", "--subnet", BRIDGE_SUBNETS[0], "--subnet",
       BRIDGE_SUBNETS[1], "brnet")
    for host in HOSTS:
        dk(lab, host, *CREATE, "--ipv6", "--subnet", WPOOL, "--subnet", WPOOL6, "wnet")
    run(lab, "host1", "brsrv", "brnet", "-p", f"{DOCKER_PORT}:80", command=("sh", "-c", SERVE))
    run(lab, "host1", "brcli", "brnet")
    run(lab, "host1", "wsrv", "wnet", "-p", f"{WARREN_PORT}:80", command=("sh", "-c", SERVE))
    run(lab, "host1", "wcli", "wnet")
    run(lab, "host2", "wpeer", "wnet")
    wait_for(lambda: ctl(lab, "host1", "profile", "wnet", "rule", "show", check=False).returncode == 0,
             20, step=0.2, what="the agents created wnet's profile")
    return lab


def addresses(lab, v6: bool = False) -> dict[str, str]:
    return {"brsrv": address(lab, "host1", "brsrv", "brnet", v6=v6),
            "wsrv": address(lab, "host1", "wsrv", "wnet", v6=v6)}


def check_isolation_v6(lab) -> None:
    """The same over IPv6 (published ports left out: 20.10 and 26 serve Docker's IPv6 -p with
    docker-proxy on the host, not by DNAT, so it is a workload-to-host connection there)."""
    ip = addresses(lab, v6=True)
    assert ip["brsrv"].startswith("fd00:172:30:") and ip["wsrv"].startswith("fd00:60:")
    assert served(lab, "host1", "brcli", ip["brsrv"], 81, "port81"), "bridge server on 81 (IPv6)"
    assert served(lab, "host1", "wcli", ip["wsrv"], 81, "port81"), "warren server on 81 (IPv6)"
    assert fetch(lab, "host1", "wcli", ip["brsrv"], 81) == ""
    assert not pings(lab, "host1", "wcli", ip["brsrv"], v6=True)
    assert fetch(lab, "host1", "brcli", ip["wsrv"], 81) == ""
    assert not pings(lab, "host1", "brcli", ip["wsrv"], v6=True)


def check_isolation(lab) -> None:
    ip = addresses(lab)
    host1 = underlay(lab, "host1")
    # positive controls: the servers answer, on both ports, to their own kind
    assert served(lab, "host1", "brcli", ip["brsrv"], 81, "port81"), "bridge server on 81"
    assert served(lab, "host1", "wcli", ip["wsrv"], 81, "port81"), "warren server on 81"
    assert served(lab, "host2", "wpeer", ip["wsrv"], 80, "port80"), "warren across hosts"
    # published ports cross, both ways
    assert served(lab, "host1", "wcli", host1, DOCKER_PORT, "port80"), "Docker's -p from a Warren workload"
    assert served(lab, "host1", "brcli", host1, WARREN_PORT, "port80"), "Warren's -p from a bridge container"
    # nothing else does
    assert fetch(lab, "host1", "wcli", ip["brsrv"], 81) == ""
    assert fetch(lab, "host1", "wcli", ip["brsrv"], 80) == ""
    assert not pings(lab, "host1", "wcli", ip["brsrv"])
    assert fetch(lab, "host1", "brcli", ip["wsrv"], 81) == ""
    assert fetch(lab, "host1", "brcli", ip["wsrv"], 80) == ""
    assert not pings(lab, "host1", "brcli", ip["wsrv"])
    assert pings(lab, "host1", "brcli", ip["brsrv"]) and pings(lab, "host1", "wcli", ip["wsrv"])


def test_bridge_and_warren_networks_meet_only_at_published_ports(world):
    check_isolation(world)


def test_and_over_ipv6(world):
    check_isolation_v6(world)


def test_a_profile_open_to_all_does_not_open_it_to_docker_bridges(world):
    lab = world
    wsrv, wsrv6 = addresses(lab)["wsrv"], addresses(lab, v6=True)["wsrv"]
    probe = ["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {wsrv} 81"]
    assert "port81" not in lab.exec("host2", probe, timeout=30).stdout     # host2 itself: not a member
    ctl(lab, "host1", "profile", "wnet", "rule", "add", "inbound", "allow")
    try:
        wait_for(lambda: "port81" in lab.exec("host2", probe, timeout=30).stdout, 30, step=0.5,
                 what="the open profile lets host2 in")
        assert fetch(lab, "host1", "brcli", wsrv, 81) == ""
        assert not pings(lab, "host1", "brcli", wsrv)
        probe6 = ["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {wsrv6} 81"]
        wait_for(lambda: "port81" in lab.exec("host2", probe6, timeout=30).stdout, 30, step=0.5,
                 what="the open profile lets host2 in over IPv6")
        assert fetch(lab, "host1", "brcli", wsrv6, 81) == ""
    finally:
        ctl(lab, "host1", "profile", "wnet", "rule", "remove", "inbound", "allow")


def test_docker_user_and_forward_start_with_warren(world):
    lab = world
    ip6 = lab.exec("host1", ["ip6tables", "-w", "-S", "DOCKER-USER"]).returncode == 0  # 27+: on by default
    tools = ["iptables"] + (["ip6tables"] if ip6 else [])
    for tool in tools:
        wait_for(lambda: first_rules(lab, "host1", "DOCKER-USER", tool)[:1] == [f"-A DOCKER-USER -j {g.FORWARD_CHAIN}"],
                 15, step=0.2, what=f"{tool}: DOCKER-USER starts with Warren")
        wait_for(lambda: first_rules(lab, "host1", "FORWARD", tool)[:1] == [f"-A FORWARD -j {g.FORWARD_CHAIN}"],
                 15, step=0.2, what=f"{tool}: FORWARD starts with Warren")
        assert any("-o docker0" in r for r in first_rules(lab, "host1", g.DOCKER_BOUNDARY, tool))
    assert "-P FORWARD DROP" in lab.exec("host1", ["iptables", "-w", "-S", "FORWARD"]).stdout


def test_isolation_survives_a_dockerd_restart(world):
    lab = world
    lab.restart_dockerd("host1")
    # DOCKER-USER is first in FORWARD again (dockerd's doing) and starts with Warren (kept)
    rules = first_rules(lab, "host1", "DOCKER-USER")
    assert rules[:1] == [f"-A DOCKER-USER -j {g.FORWARD_CHAIN}"], rules
    wait_for(lambda: all(dk(lab, "host1", "inspect", "-f", "{{.State.Running}}", c).stdout.strip() == "true"
                         for c in ("brsrv", "brcli", "wsrv", "wcli")), 60, step=0.5,
             what="containers restarted")
    check_isolation(lab)
    check_isolation_v6(lab)
    wait_for(lambda: first_rules(lab, "host1", "FORWARD")[:1] == [f"-A FORWARD -j {g.FORWARD_CHAIN}"],
             15, step=0.2, what="FORWARD starts with Warren again")


def test_a_new_bridge_network_is_isolated_at_once(world):
    lab = world
    dk(lab, "host1", "network", "create", "--subnet", "172.31.0.0/24", "brnet2")
    try:
        run(lab, "host1", "br2srv", "brnet2", command=("sh", "-c", SERVE))
        run(lab, "host1", "br2cli", "brnet2")
        br2 = address(lab, "host1", "br2srv", "brnet2")
        assert served(lab, "host1", "br2cli", br2, 81, "port81")
        assert fetch(lab, "host1", "wcli", br2, 81) == ""
        assert fetch(lab, "host1", "br2cli", addresses(lab)["wsrv"], 81) == ""
    finally:
        dk(lab, "host1", "rm", "-f", "br2srv", "br2cli", check=False)
        dk(lab, "host1", "network", "rm", "brnet2", check=False)


@pytest.fixture(scope="module")
def outside(lab) -> dict:
    return lab.attach(f"{lab.name}-out")


def test_internal_network_reaches_its_peers_and_nothing_outside(world, outside):
    lab = world
    for host in HOSTS:
        dk(lab, host, *CREATE, "--internal", "--subnet", IPOOL, "inet")
    run(lab, "host1", "i1", "inet", "--cap-add", "NET_ADMIN")
    run(lab, "host2", "i2", "inet")
    i2 = address(lab, "host2", "i2", "inet")
    wait_for(lambda: pings(lab, "host1", "i1", i2), 30, step=0.5, what="internal peers across hosts")
    # control: an ordinary network of a nat-outgoing pool reaches the outside
    wait_for(lambda: pings(lab, "host1", "wcli", outside["ipv4"]), 30, step=0.5, what="wcli -> outside")
    assert not pings(lab, "host1", "i1", outside["ipv4"])              # no route: Docker's part
    # the container routes out by itself: Warren's rules are what stops it
    dk(lab, "host1", "exec", "i1", "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    assert pings(lab, "host1", "i1", i2)                               # the route itself works
    assert not pings(lab, "host1", "i1", outside["ipv4"], count=2)
    assert fetch(lab, "host1", "i1", underlay(lab, "host1"), DOCKER_PORT) == ""   # a bridge's -p
    assert served(lab, "host1", "wcli", underlay(lab, "host1"), DOCKER_PORT, "port80")
