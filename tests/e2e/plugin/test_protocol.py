"""The remote-driver protocol of Docker 20.10 to 28 through the real docker CLI (issue 11, part 2).

Runs on the engine the run selects (``WARREN_LAB_ENGINE``, see ctl/lab/README.md);
a case the engine cannot have (``--ipv4=false``, ``gw-priority``: 28+; Docker's
own ``disable_ipv6``: 26+) is skipped after reading the engine's version from
``docker version``. Every refusal is checked to be one line with nothing left
in etcd or the kernel.
"""
from __future__ import annotations

import json
import sys

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import (E2E, REPO, address, count_keys, ctl, dk, lab_fixture, pings, remove_all, run, wait_for,
                               used_addresses)

pytestmark = E2E

lab = lab_fixture("q", 2)
CREATE = ("network", "create", "-d", "warren", "--ipam-driver", "warren")


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, ("host1", "host2"))


def engine_major(lab) -> int:
    version = dk(lab, "host1", "version", "-f", "{{.Server.Version}}").stdout.strip()
    return int(version.split(".")[0])


def needs(lab, major: int, what: str) -> None:
    if engine_major(lab) < major:
        pytest.skip(f"{what} needs Docker {major}+ (this run's engine is older)")


def network_record(lab, name: str) -> dict:
    network_id = dk(lab, "host1", "network", "inspect", "-f", "{{.Id}}", name).stdout.strip()
    code = ("import json; from datastore import Datastore, EtcdConfig; "
            f"kv = Datastore(EtcdConfig.from_env()).get('/warren/v1/networks/{network_id}'); "
            "print(kv.value.decode() if kv else '{}')")
    result = lab.exec("host1", [sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def plugin_calls(lab, host: str, call: str) -> float:
    """How often this host's plugin answered ``call`` with 200 (its Prometheus counter)."""
    code = ("import urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:9091/metrics', timeout=10).read().decode())")
    result = lab.exec(host, [sys.executable, "-c", code], timeout=60)
    assert result.returncode == 0, result.stderr
    total = 0.0
    for line in result.stdout.splitlines():
        if line.startswith("warren_plugin_requests_total{") and f'"{call}"' in line and '"200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def refused(lab, *args) -> str:
    result = dk(lab, "host1", *args, check=False)
    assert result.returncode != 0, result.stdout
    message = result.stderr.strip()
    assert message.count("\n") == 0, f"not one line: {message!r}"
    return message


# -- CreateNetwork options --------------------------------------------------------

def test_docker_options_are_accepted_and_docker_mtu_honoured(lab):
    dk(lab, "host1", *CREATE, "--subnet", "10.20.41.0/24", "-o", "com.docker.network.driver.mtu=1400", "n41")
    assert network_record(lab, "n41")["mtu"] == 1400
    run(lab, "host1", "c41", "n41")
    assert "mtu 1400" in dk(lab, "host1", "exec", "c41", "ip", "link", "show", "eth0").stdout
    # a Docker label Warren has no use for (a daemon-wide default option would look like this)
    dk(lab, "host1", *CREATE, "--subnet", "10.20.42.0/24", "-o", "com.docker.network.bridge.name=br42",
       "-o", "mtu=1450", "n42")
    assert network_record(lab, "n42")["mtu"] == 1450


def test_bad_options_are_refused_in_one_line_and_leave_nothing(lab):
    networks, endpoints = count_keys(lab, "/warren/v1/networks/"), count_keys(lab, "/warren/v1/endpoints/")
    message = refused(lab, *CREATE, "--subnet", "10.20.43.0/24", "-o", "vlan=3", "nbad")
    assert "-o vlan" in message and "com.docker.network.driver.mtu=N" in message
    assert "-o mtu" in refused(lab, *CREATE, "--subnet", "10.20.43.0/24", "-o", "mtu=1400",
                               "-o", "com.docker.network.driver.mtu=1300", "nbad")
    assert "--gateway" in refused(lab, *CREATE, "--subnet", "10.20.43.0/24", "--gateway", "10.20.43.1", "nbad")
    assert "nbad" not in dk(lab, "host1", "network", "ls").stdout
    assert count_keys(lab, "/warren/v1/networks/") == networks
    assert count_keys(lab, "/warren/v1/endpoints/") == endpoints
    assert used_addresses(lab) == 0
    pools = [p["cidr"] for p in json.loads(ctl(lab, "host1", "pool", "show", "--json").stdout)]
    assert "10.20.43.0/24" not in pools, "a refused network left its pool behind"


def test_no_gateway_address_is_reserved(lab):
    dk(lab, "host1", *CREATE, "--ipv6", "--subnet", "10.20.44.0/24", "--subnet", "fd00:44::/64", "n44")
    assert used_addresses(lab) == 0
    if engine_major(lab) >= 28:
        assert plugin_calls(lab, "host1", "NetworkDriver.GwAllocCheck") >= 1


# -- IPv6-only, --internal ---------------------------------------------------------

def test_ipv6_only_network_needs_no_gwbridge(lab):
    needs(lab, 28, "--ipv4=false")
    for host in ("host1", "host2"):
        dk(lab, host, *CREATE, "--ipv4=false", "--ipv6", "--subnet", "fd00:45::/64", "n45")
    run(lab, "host1", "c45a", "n45")
    run(lab, "host2", "c45b", "n45")
    b6 = address(lab, "host2", "c45b", "n45", v6=True)
    assert b6.startswith("fd00:45:")
    assert address(lab, "host1", "c45a", "n45") == ""
    links = dk(lab, "host1", "exec", "c45a", "ip", "-o", "link").stdout
    assert "eth1" not in links, "docker_gwbridge was attached"
    assert "docker_gwbridge" not in dk(lab, "host1", "network", "ls").stdout
    routes6 = dk(lab, "host1", "exec", "c45a", "ip", "-6", "route").stdout
    assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in routes6
    # the route to host2's new block and the network's profile arrive in the background
    wait_for(lambda: pings(lab, "host1", "c45a", b6, v6=True), timeout=20, step=0.5, what="ping6 to host2")


def test_internal_network(lab):
    for host in ("host1", "host2"):
        dk(lab, host, *CREATE, "--internal", "--ipv6", "--subnet", "10.20.46.0/24",
           "--subnet", "fd00:46::/64", "n46")
    assert network_record(lab, "n46")["internal"] is True
    run(lab, "host1", "c46a", "n46")
    run(lab, "host2", "c46b", "n46")
    routes = dk(lab, "host1", "exec", "c46a", "ip", "route").stdout
    routes6 = dk(lab, "host1", "exec", "c46a", "ip", "-6", "route").stdout
    assert "default" not in routes and "default" not in routes6
    assert "10.20.46.0/24 via 169.254.1.1 dev eth0" in routes
    assert "docker_gwbridge" not in dk(lab, "host1", "network", "ls").stdout
    # the first cross-host packet may precede host1's route to host2's new block and the
    # agents' profile for a network whose name dockerd reports in the background: seconds at most
    b4, b6 = address(lab, "host2", "c46b", "n46"), address(lab, "host2", "c46b", "n46", v6=True)
    wait_for(lambda: pings(lab, "host1", "c46a", b4), timeout=20, step=0.5, what="ping to the peer on host2")
    wait_for(lambda: pings(lab, "host1", "c46a", b6, v6=True), timeout=20, step=0.5, what="ping6 to the peer")
    # dockerd never asks to publish on an internal network; nothing is published either way
    run(lab, "host1", "c46p", "n46", "-p", "18046:80")
    endpoint_id = dk(lab, "host1", "inspect", "-f",
                     '{{(index .NetworkSettings.Networks "n46").EndpointID}}', "c46p").stdout.strip()
    code = ("from datastore import Datastore, EtcdConfig; "
            f"kv = Datastore(EtcdConfig.from_env()).get('/warren/v1/endpoints/host1/{endpoint_id}'); "
            "print(kv.value.decode())")
    record = json.loads(lab.exec("host1", [sys.executable, "-c", code], cwd=REPO, timeout=60).stdout)
    assert record["published"] is False


# -- several Warren networks: gw-priority -----------------------------------------

def default_dev(lab, container: str, v6: bool = False) -> str:
    routes = dk(lab, "host1", "exec", container, "ip", *(["-6"] if v6 else []), "route").stdout
    line = next((l for l in routes.splitlines() if l.startswith("default")), "")
    return line.split(" dev ")[1].split()[0] if " dev " in line else ""


def iface_of(lab, container: str, address4: str) -> str:
    out = dk(lab, "host1", "exec", container, "ip", "-o", "-4", "addr").stdout
    return next(l.split()[1] for l in out.splitlines() if f" {address4}/" in l)


def test_gw_priority_picks_the_default_route(lab):
    needs(lab, 28, "gw-priority")
    for n, sub in (("na", "47"), ("nb", "48")):
        dk(lab, "host1", *CREATE, "--ipv6", "--subnet", f"10.20.{sub}.0/24", "--subnet", f"fd00:{sub}::/64", n)
    run(lab, "host1", "peer-a", "na")
    run(lab, "host1", "peer-b", "nb")
    dk(lab, "host1", "run", "-d", "--init", "--name", "c47", "--network", "name=na",
       "--network", "name=nb,gw-priority=10", IMAGE, "sleep", "600")
    b_if = iface_of(lab, "c47", address(lab, "host1", "c47", "nb"))
    assert default_dev(lab, "c47") == b_if and default_dev(lab, "c47", v6=True) == b_if
    # both networks still reachable, each through its own interface
    for peer, net in (("peer-a", "na"), ("peer-b", "nb")):
        assert pings(lab, "host1", "c47", address(lab, "host1", peer, net))
        assert pings(lab, "host1", "c47", address(lab, "host1", peer, net, v6=True), v6=True)
    # connect/disconnect: the higher priority wins, and the default comes back when it leaves
    # (dual-stack like the others: Docker prefers a dual-stack gateway to a higher-priority
    # single-stack one, see selectGatewayEndpoint in moby's libnetwork/default_gateway.go)
    dk(lab, "host1", *CREATE, "--ipv6", "--subnet", "10.20.49.0/24", "--subnet", "fd00:49::/64", "nc")
    dk(lab, "host1", "network", "connect", "--gw-priority", "20", "nc", "c47")
    c_if = iface_of(lab, "c47", address(lab, "host1", "c47", "nc"))
    assert default_dev(lab, "c47") == c_if and default_dev(lab, "c47", v6=True) == c_if
    dk(lab, "host1", "network", "disconnect", "nc", "c47")
    assert default_dev(lab, "c47") == b_if and default_dev(lab, "c47", v6=True) == b_if
    assert pings(lab, "host1", "c47", address(lab, "host1", "peer-a", "na"))


def test_two_networks_on_the_default_pool_in_one_container(lab):
    """Both networks use the default pool: routing it through the first interface would make
    libnetwork refuse the second interface's address ("conflicts with existing route"). One
    prefix cannot tell the two networks apart: the shared pool follows the default route
    (Docker's gateway endpoint, here nd1 by name), and the first network keeps working."""
    dk(lab, "host1", *CREATE, "nd1")
    dk(lab, "host1", *CREATE, "nd2")
    run(lab, "host1", "c51", "nd1")
    run(lab, "host1", "peer51", "nd1")
    dk(lab, "host1", "network", "connect", "nd2", "c51")
    assert address(lab, "host1", "c51", "nd2").startswith("10.30.")
    assert pings(lab, "host1", "c51", address(lab, "host1", "peer51", "nd1"))


# -- warrenctl container add into a container whose new interfaces start with IPv6 off -------

def test_container_add_ipv6_into_a_container_without_ipv6(lab):
    """Docker 26+ turns IPv6 off on interfaces it gave no IPv6 address (per interface; a new
    interface inherits ``default``). The container here starts with ``default`` off as well,
    so the interface container add makes inherits it: the case that failed with EACCES."""
    ctl(lab, "host1", "pool", "add", "fd00:50::/64")
    try:
        dk(lab, "host1", "run", "-d", "--init", "--net", "none", "--name", "c50",
           "--sysctl", "net.ipv6.conf.all.disable_ipv6=1", "--sysctl", "net.ipv6.conf.default.disable_ipv6=1",
           IMAGE, "sleep", "600")
        added = ctl(lab, "host1", "container", "add", "c50", "fd00:50::50")
        assert "fd00:50::50" in added.stdout
        addr = dk(lab, "host1", "exec", "c50", "ip", "-6", "addr", "show", "eth1").stdout
        assert "fd00:50::50/128" in addr
        assert dk(lab, "host1", "exec", "c50", "cat",
                  "/proc/sys/net/ipv6/conf/eth1/disable_ipv6").stdout.strip() == "0"
        assert "default via fe80::ecee:eeff:feee:eeee dev eth1" in dk(
            lab, "host1", "exec", "c50", "ip", "-6", "route").stdout
    finally:
        ctl(lab, "host1", "container", "remove", "c50", check=False)
        dk(lab, "host1", "rm", "-f", "c50", check=False)
        ctl(lab, "host1", "pool", "remove", "fd00:50::/64", check=False)
