"""The control plane is off limits to workloads (issue 12), for real: a 2-host warren-lab.

The attack of issue 12: a plain container (no extra capabilities) on a
network of a nat-outgoing pool opened TCP connections to etcd's client port
(plain http on the underlay) and to the other host's BGP port. Here every
probe is a TCP connect with a short timeout from inside a container to the
lab's own underlay addresses (etcd in the underlay netns, host2, host1):

* "dropped" (the connect times out) by default, whatever the profile says
  (the default profile allows all outbound, and even ``allow to cidr
  0.0.0.0/0`` or a rule naming the whole underlay subnet opens nothing);
* "open" or "refused" - the SYN arrived - once a rule of the container's
  profile names that one address (``to cidr ADDR/32``), only for that
  profile and those ports. That a probe can pass is the control that makes
  its failing mean something.

The appended host rule of the README (issue 12, item 7) is checked the same
way on host1's own address, and the profile Warren made for a Docker network
goes away once no host has the network any more (item 4).
"""
from __future__ import annotations

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import E2E, ctl, dk, lab_fixture, remove_all, run, underlay, wait_for

pytestmark = E2E

HOSTS = ("host1", "host2")
lab = lab_fixture("fs", 2)
POOL = "10.20.91.0/24"
REACHED = ("open", "refused")


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, HOSTS)
    for name in ("fsnet", "fsother", "fsgc"):
        ctl(lab, "host1", "profile", "remove", name, "--no-check", check=False)
    ctl(lab, "host1", "pool", "remove", POOL, check=False)


def connect(lab, host: str, container: str, target: str, port: int) -> str:
    """open (connected), refused (the host answered with a reset) or dropped (no answer in 2 s)."""
    result = dk(lab, host, "exec", container, "sh", "-c", f"nc -w 2 {target} {port} </dev/null",
                check=False, timeout=30)
    if result.returncode == 0:
        return "open"
    return "refused" if "refused" in result.stderr else "dropped"


def etcd_address(lab) -> tuple[str, int]:
    url = lab.status()["etcd_endpoint"]  # http://198.19.K.1:2379
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def networks(lab, *names: str) -> None:
    ctl(lab, "host1", "pool", "add", POOL, "--nat-outgoing")
    for name in names:
        for host in HOSTS:
            dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", POOL, name)
    for name in names:
        wait_for(lambda: name in ctl(lab, "host1", "profile", "show").stdout, 30, step=0.3,
                 what=f"the profile of {name}")


def rule(lab, profile: str, *words: str) -> None:
    ctl(lab, "host1", "profile", profile, "rule", "add", "outbound", *words)


def test_workloads_cannot_reach_the_control_plane_until_a_rule_names_it(lab):
    networks(lab, "fsnet", "fsother")
    run(lab, "host1", "att", "fsnet")
    run(lab, "host1", "bystander", "fsother")
    etcd, etcd_port = etcd_address(lab)
    host1, host2 = underlay(lab, "host1"), underlay(lab, "host2")
    targets = [(etcd, etcd_port), (host2, 179), (host2, 2379), (host2, 9091), (host1, 22), (host1, 179)]
    for target, port in targets:
        assert connect(lab, "host1", "att", target, port) == "dropped", (target, port)
    # rules that do not name the address itself open nothing; a rule naming etcd opens etcd
    rule(lab, "fsnet", "allow", "to", "cidr", "0.0.0.0/0")
    rule(lab, "fsnet", "allow", "tcp", "to", "ports", "179,2379,9091", "cidr", host1.rsplit(".", 1)[0] + ".0/24")
    rule(lab, "fsnet", "allow", "tcp", "to", "ports", str(etcd_port), "cidr", f"{etcd}/32")
    wait_for(lambda: connect(lab, "host1", "att", etcd, etcd_port) == "open", 30, step=0.5,
             what="etcd opened by the rule naming it")
    for port in (179, 2379, 9091):  # the broader rules are in the kernel too by now
        assert connect(lab, "host1", "att", host2, port) == "dropped", port
    assert connect(lab, "host1", "att", etcd, 2380) == "dropped"       # etcd's peer port: not named
    assert connect(lab, "host1", "bystander", etcd, etcd_port) == "dropped"  # another profile

    # host2's three ports, for profile fsnet only
    rule(lab, "fsnet", "allow", "tcp", "to", "ports", "179,2379,9091", "cidr", f"{host2}/32")
    wait_for(lambda: connect(lab, "host1", "att", host2, 179) in REACHED, 30, step=0.5,
             what="host2:179 opened by the rule naming it")
    for port in (2379, 9091):
        assert connect(lab, "host1", "att", host2, port) in REACHED, port
    assert connect(lab, "host1", "att", host2, 22) == "dropped"       # a port the rule does not name
    assert connect(lab, "host1", "att", host1, 179) == "dropped"       # nor this host
    assert connect(lab, "host1", "bystander", host2, 179) == "dropped"

    # removing the rule closes it again (new connections; the probe's are all gone)
    ctl(lab, "host1", "profile", "fsnet", "rule", "remove", "outbound", "allow", "tcp", "to", "ports",
        str(etcd_port), "cidr", f"{etcd}/32")
    wait_for(lambda: connect(lab, "host1", "att", etcd, etcd_port) == "dropped", 30, step=0.5,
             what="etcd closed again")


def test_an_appended_rule_naming_the_host_opens_it(lab):
    networks(lab, "fsnet")
    run(lab, "host1", "att", "fsnet")
    host1 = underlay(lab, "host1")
    assert connect(lab, "host1", "att", host1, 22) == "dropped"
    # appended behind the default profile's "allow": it still opens exactly what it names
    rule(lab, "fsnet", "allow", "tcp", "to", "ports", "22", "cidr", f"{host1}/32")
    wait_for(lambda: connect(lab, "host1", "att", host1, 22) in REACHED, 30, step=0.5,
             what="host1:22 opened by the appended rule")
    assert connect(lab, "host1", "att", host1, 23) == "dropped"


def test_the_profile_made_for_a_network_goes_with_the_network(lab):
    networks(lab, "fsgc")
    dk(lab, "host1", "network", "rm", "fsgc")
    # host2 still has the network: the profile stays
    assert "fsgc" in ctl(lab, "host1", "profile", "show").stdout
    dk(lab, "host2", "network", "rm", "fsgc")
    wait_for(lambda: "fsgc" not in ctl(lab, "host1", "profile", "show").stdout, 30, step=0.5,
             what="the unused profile removed")
    # the network again: its profile comes back with it
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", POOL, "fsgc")
    wait_for(lambda: "fsgc" in ctl(lab, "host1", "profile", "show").stdout, 30, step=0.5,
             what="the profile made again")


def test_a_port_another_host_publishes_is_reachable_there(lab):
    """``docker run -p`` publishes to everyone, workloads on other hosts included (as Docker's
    bridge does), although that host's underlay address is control plane: only the published
    port opens, and it closes with its container."""
    networks(lab, "fsnet")
    run(lab, "host2", "web", "fsnet", "-p", "8088:80",
        command=("sh", "-c", "while true; do echo hi | nc -l -p 80; done"))
    run(lab, "host1", "att", "fsnet")
    host2 = underlay(lab, "host2")
    wait_for(lambda: connect(lab, "host1", "att", host2, 8088) == "open", 30, step=0.5,
             what="host2's published port from a workload on host1")
    assert connect(lab, "host1", "att", host2, 9091) == "dropped"     # the rest of host2 stays closed
    dk(lab, "host2", "rm", "-f", "web")
    wait_for(lambda: connect(lab, "host1", "att", host2, 8088) == "dropped", 30, step=0.5,
             what="the port closed with its container")
