"""bgp.fib against a real kernel, in a namespace this test makes: what ``ip -batch`` installs is
what ``ip -json`` reads back, failures are counted per route, other protocols' routes are never touched."""
import os

import pytest

from bgp.fib import Fib
from tests.support.netns import run_in_netns, sh, temp_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

ROUTES = {
    "10.99.0.5/32": ("192.0.2.2", None),                    # a borrowed address, plain routed
    "10.99.1.0/26": ("192.0.2.3", "warren-vxlan"),          # a block over vxlan (onlink)
    "fd00:99::7/128": ("2001:db8:7::2", None),
    "fd00:99::40/122": ("fe80::1", "warren-vxlan"),         # IPv6 over vxlan: the VTEP's link-local
}


@pytest.fixture
def ns():
    with temp_netns("wfib") as name:
        sh(name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        sh(name, "ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
        sh(name, "ip", "-6", "addr", "add", "2001:db8:7::1/64", "dev", "eth0", "nodad")
        sh(name, "ip", "link", "add", "warren-vxlan", "type", "vxlan", "id", "4096", "local", "192.0.2.1",
           "dev", "eth0", "dstport", "4789", "nolearning")
        for dev in ("eth0", "eth1", "warren-vxlan"):
            sh(name, "ip", "link", "set", dev, "up")
        sh(name, "ip", "route", "add", "10.99.5.0/24", "via", "192.0.2.2", "proto", "static")
        yield name


def install_and_read():
    fib = Fib()
    return fib.apply(ROUTES, []), fib.learned()


def test_installed_routes_read_back_the_same(ns):
    failures, learned = run_in_netns(ns, install_and_read)
    assert failures == 0
    assert learned == ROUTES
    assert "onlink" in sh(ns, "ip", "route", "show", "10.99.1.0/26").stdout


def churn():
    fib = Fib()
    fib.apply(ROUTES, [])
    bad = fib.apply({"10.99.2.0/26": ("10.1.1.1", None),          # no route to that gateway
                     "10.99.3.0/26": ("192.0.2.4", None)},
                    ["10.99.0.5/32", "10.99.9.9/32", "10.99.5.0/24"])  # absent / another protocol's
    blackholes = fib.set_blackholes({"10.98.0.0/26", "fd00:98::/122"})
    first = (fib.blackholes(), fib.learned())
    fib.set_blackholes({"fd00:98::/122"})
    return bad, blackholes, first, fib.blackholes(), fib.learned()


def test_failures_are_per_route_and_nothing_else_is_touched(ns):
    bad, blackholes, (holes1, learned1), holes2, learned2 = run_in_netns(ns, churn)
    assert bad == 1                                   # only the unreachable gateway
    assert blackholes == 0 and holes1 == {"10.98.0.0/26", "fd00:98::/122"} and holes2 == {"fd00:98::/122"}
    expected = {p: r for p, r in ROUTES.items() if p != "10.99.0.5/32"}
    expected["10.99.3.0/26"] = ("192.0.2.4", None)
    assert learned1 == expected and learned2 == expected  # blackholes are not learned routes
    # the static route of the same family stays: proto 81 only
    assert "10.99.5.0/24 via 192.0.2.2 dev eth0 proto static" in sh(ns, "ip", "route").stdout
