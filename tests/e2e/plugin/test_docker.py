"""The plugin driven by real dockerd in warren-lab hosts, through the real docker CLI.

One 2-host lab (nodes on) serves the module; every test removes its containers
and networks afterwards, even when it fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import (E2E, lab_fixture, address, count_keys, ctl, dk, network_name, pings, remove_all, run,
                               underlay, used_addresses, wait_for)

pytestmark = E2E


lab = lab_fixture("p", 2)


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, ("host1", "host2"))


# -- networks and addresses -------------------------------------------------------

def test_two_containers_ping_v4_and_v6(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--ipv6",
       "--subnet", "10.20.11.0/24", "--subnet", "fd00:11::/64", "net11")
    config = json.loads(dk(lab, "host1", "network", "inspect", "net11", "-f", "{{json .IPAM.Config}}").stdout)
    assert {c["Subnet"] for c in config} == {"10.20.11.0/24", "fd00:11::/64"}
    run(lab, "host1", "ca", "net11")
    run(lab, "host1", "cb", "net11")
    b4, b6 = address(lab, "host1", "cb", "net11"), address(lab, "host1", "cb", "net11", v6=True)
    assert b4.startswith("10.20.11.") and b6.startswith("fd00:11:")
    routes = dk(lab, "host1", "exec", "ca", "ip", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in routes
    assert pings(lab, "host1", "ca", b4)
    assert pings(lab, "host1", "ca", b6, v6=True)


def test_network_without_subnet_uses_the_default_pool(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "netdef")
    subnet = dk(lab, "host1", "network", "inspect", "netdef", "-f", "{{(index .IPAM.Config 0).Subnet}}").stdout
    assert subnet.strip() == "10.30.0.0/16"
    run(lab, "host1", "ca", "netdef")
    assert address(lab, "host1", "ca", "netdef").startswith("10.30.")


def test_ipam_options_and_their_errors(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.12.0/24",
       "--ipam-opt", "nat-outgoing=true", "--ipam-opt", "block-size=28", "net12")
    pools = {p["cidr"]: p for p in json.loads(ctl(lab, "host1", "pool", "show", "--json").stdout)}
    assert pools["10.20.12.0/24"]["nat_outgoing"] and pools["10.20.12.0/24"]["block_size"] == 28
    bad = dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren",
             "--subnet", "10.20.13.0/24", "--ipam-opt", "colour=blue", "netbad", check=False)
    assert bad.returncode != 0 and "unknown --ipam-opt colour" in bad.stderr and "nat-outgoing=true" in bad.stderr
    foreign = dk(lab, "host1", "network", "create", "-d", "warren", "--subnet", "10.20.14.0/24", "netforeign",
                 check=False)
    assert foreign.returncode != 0 and "--ipam-driver warren" in foreign.stderr


def test_pinned_address_and_mac(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.15.0/24", "net15")
    run(lab, "host1", "ca", "net15", "--ip", "10.20.15.50", "--mac-address", "02:42:0a:14:0f:32")
    link = dk(lab, "host1", "exec", "ca", "ip", "addr", "show", "eth0").stdout
    assert "10.20.15.50/32" in link and "02:42:0a:14:0f:32" in link
    info = ctl(lab, "host1", "ipam", "info", "10.20.15.50").stdout
    assert "Host:       host1" in info and "purpose=docker" in info
    taken = dk(lab, "host1", "run", "--rm", "--init", "--net", "net15", "--ip", "10.20.15.50", IMAGE, "true",
               check=False)
    assert taken.returncode != 0 and "10.20.15.50 is already in use" in taken.stderr


def test_pool_exhausted_shows_the_plugin_message(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.16.0/30",
       "--ipam-opt", "block-size=30", "net16")
    for i in range(4):
        run(lab, "host1", f"c{i}", "net16")
    full = dk(lab, "host1", "run", "-d", "--init", "--net", "net16", IMAGE, "sleep", "60", check=False)
    assert full.returncode != 0 and "no free address left in pool 10.20.16.0/30" in full.stderr


def test_second_network_with_docker_network_connect(lab):
    for n, subnet in (("neta", "10.20.17.0/24"), ("netb", "10.20.18.0/24")):
        dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", subnet, n)
    run(lab, "host1", "cx", "neta")
    run(lab, "host1", "peer-a", "neta")
    run(lab, "host1", "peer-b", "netb")
    dk(lab, "host1", "network", "connect", "netb", "cx")
    routes = dk(lab, "host1", "exec", "cx", "ip", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in routes
    assert "10.20.18.0/24 via 169.254.1.2 dev eth1" in routes
    assert pings(lab, "host1", "cx", address(lab, "host1", "peer-a", "neta"))
    assert pings(lab, "host1", "cx", address(lab, "host1", "peer-b", "netb"))
    dk(lab, "host1", "network", "disconnect", "netb", "cx")
    assert "eth1" not in dk(lab, "host1", "exec", "cx", "ip", "link").stdout


def test_stop_start_rm_release_and_reacquire(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.19.0/24", "net19")
    before = used_addresses(lab, "10.20.19.0/24")
    run(lab, "host1", "ca", "net19")
    assert used_addresses(lab, "10.20.19.0/24") == before + 1
    dk(lab, "host1", "stop", "-t", "1", "ca")
    assert used_addresses(lab, "10.20.19.0/24") == before
    dk(lab, "host1", "start", "ca")
    assert used_addresses(lab, "10.20.19.0/24") == before + 1
    assert address(lab, "host1", "ca", "net19").startswith("10.20.19.")
    dk(lab, "host1", "rm", "-f", "ca")
    assert used_addresses(lab, "10.20.19.0/24") == before
    assert count_keys(lab, "/warren/v1/endpoints/host1/") == 0
    assert count_keys(lab, "/warren/v1/sandboxes/host1/") == 0
    assert "consistent" in ctl(lab, "host1", "ipam", "check", "--grace", "0").stdout


def test_network_rm_removes_the_record(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.20.0/24", "net20")
    network_id = dk(lab, "host1", "network", "inspect", "net20", "-f", "{{.Id}}").stdout.strip()
    assert count_keys(lab, f"/warren/v1/networks/{network_id}") == 1
    for _ in range(50):  # the name arrives from a background lookup, not from Docker's request
        if network_name(lab, network_id) == "net20":
            break
        time.sleep(0.1)
    assert network_name(lab, network_id) == "net20"
    dk(lab, "host1", "network", "rm", "net20")
    assert count_keys(lab, f"/warren/v1/networks/{network_id}") == 0
    pools = [p["cidr"] for p in json.loads(ctl(lab, "host1", "pool", "show", "--json").stdout)]
    assert "10.20.20.0/24" in pools  # other hosts' networks may still use the pool


# -- port publishing ------------------------------------------------------------

def test_published_port_is_reachable_from_another_host(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.21.0/24", "net21")
    serve = "mkdir -p /www && echo hello-from-warren > /www/index.html && exec httpd -f -p 80 -h /www"
    run(lab, "host1", "web", "net21", "-p", "8080:80", command=("sh", "-c", serve))
    request = "GET / HTTP/1.0\r\n\r\n"  # busybox-static's wget crashes outside a container
    fetched = None
    for _ in range(20):
        fetched = lab.exec("host2", ["busybox", "nc", "-w", "2", underlay(lab, "host1"), "8080"],
                           input=request, timeout=30)
        if "hello-from-warren" in fetched.stdout:
            break
        time.sleep(0.2)
    assert "hello-from-warren" in fetched.stdout, fetched.stderr
    dk(lab, "host1", "rm", "-f", "web")
    rules = lab.exec("host1", ["iptables", "-t", "nat", "-S", "WARREN-DNAT"]).stdout
    assert "8080" not in rules


# -- restarts ---------------------------------------------------------------------

def plugin_master(lab, host) -> int | None:
    result = lab.exec(host, ["cat", f"/run/warren/{host}/plugin.pid"])
    try:
        pid = int(result.stdout.strip())
    except ValueError:
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def plugin_pids(lab, host) -> list[int]:
    master = int(lab.exec(host, ["cat", f"/run/warren/{host}/plugin.pid"]).stdout.strip())
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [master, *map(int, children)]


def test_plugin_kill_9_keeps_traffic_and_restarts_clean(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.22.0/24", "net22")
    run(lab, "host1", "ca", "net22")
    run(lab, "host1", "cb", "net22")
    target = address(lab, "host1", "cb", "net22")
    dk(lab, "host1", "exec", "-d", "ca", "sh", "-c", f"ping -i 0.2 -c 20 -W 1 {target} > /tmp/ping.log 2>&1")
    time.sleep(0.5)
    killed = plugin_pids(lab, "host1")
    for pid in killed:
        os.kill(pid, 9)
    # traffic flows while no plugin runs; the node's supervisor starts the plugin server again
    # on its own (issue 12: never by stopping the agent, never by an operator's node start)
    wait_for(lambda: plugin_master(lab, "host1") not in (None, killed[0]), timeout=60,
             what="the plugin server restarted by the node's supervisor")
    run(lab, "host1", "cc", "net22")
    assert pings(lab, "host1", "cc", target)
    time.sleep(3)
    log = dk(lab, "host1", "exec", "ca", "cat", "/tmp/ping.log").stdout
    assert "20 packets transmitted, 20 packets received" in log, log
    assert ctl(lab, "host1", "ipam", "check", "--grace", "0").returncode == 0


def test_dockerd_restart(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.23.0/24", "net23")
    run(lab, "host1", "ca", "net23", "--restart", "always")
    run(lab, "host1", "cb", "net23", "--restart", "always")
    lab.restart_dockerd("host1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = dk(lab, "host1", "ps", "--format", "{{.Names}} {{.State}}").stdout.split("\n")
        if sorted(s for s in states if s) == ["ca running", "cb running"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"containers did not come back: {states}")
    assert pings(lab, "host1", "ca", address(lab, "host1", "cb", "net23"))
    assert ctl(lab, "host1", "ipam", "check", "--grace", "0").returncode == 0
    # no interface left behind by the old containers (Leave deletes veths just after it answers)
    wait_for(lambda: lab.exec("host1", ["ip", "-o", "link"]).stdout.count(" wrn") == 2, timeout=10,
             what="only the two live containers' veths on host1")


def test_aux_addresses_are_reservations_not_leaks(lab):
    """--aux-address: dockerd reserves the address through RequestAddress and hands it to
    CreateNetwork; ipam check must call it held (not leaked) and --repair must keep it."""
    before = used_addresses(lab)
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", "10.20.23.0/24",
       "--aux-address", "router=10.20.23.7", "--aux-address", "nas=10.20.23.8", "net23")
    assert used_addresses(lab) == before + 2
    info = ctl(lab, "host1", "ipam", "info", "10.20.23.7").stdout
    assert "docker" in info                              # allocated by dockerd's request, not by hand
    check = ctl(lab, "host1", "ipam", "check", "--grace", "0")
    assert "consistent" in check.stdout, check.stdout
    ctl(lab, "host1", "ipam", "check", "--grace", "0", "--repair")
    assert used_addresses(lab) == before + 2             # nothing freed
    run(lab, "host1", "ca", "net23")
    assert address(lab, "host1", "ca", "net23") not in ("10.20.23.7", "10.20.23.8")
    dk(lab, "host1", "rm", "-f", "ca")
    dk(lab, "host1", "network", "rm", "net23")
    assert used_addresses(lab) == before                 # released with the network
