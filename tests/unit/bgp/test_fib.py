"""The FIB through iproute2: parsing ``ip -json``, batch lines, per-line failures.

The kernel side is exercised for real by tests/integration/bgp/test_fib.py and the
e2e fabric tests; here ``ip`` is replaced by a recorder to check what is asked of it."""
import subprocess

import pytest

from bgp import fabric, fib


def test_device_names_match_bgp_fabric():
    assert (fib.VXLAN_DEV, fib.IPIP_DEV) == (fabric.VXLAN_DEV, fabric.IPIP_DEV)


def test_parse_routes_normalizes_and_keeps_only_encapsulation_devices():
    v4 = ('[{"type":"blackhole","dst":"10.98.0.0/26","flags":[]},'
          '{"dst":"10.99.0.5","gateway":"198.19.0.12","dev":"eth0","flags":[]},'
          '{"dst":"10.99.0.64/26","gateway":"198.19.0.13","dev":"warren-vxlan","flags":["onlink"]},'
          '{"dst":"10.99.1.0/26","gateway":"198.19.0.13","dev":"tunl0","flags":["onlink"]}]')
    assert fib.parse_routes(v4, 4) == {
        "10.98.0.0/26": (fib.RTN_BLACKHOLE, None, None),
        "10.99.0.5/32": (fib.RTN_UNICAST, "198.19.0.12", None),
        "10.99.0.64/26": (fib.RTN_UNICAST, "198.19.0.13", "warren-vxlan"),
        "10.99.1.0/26": (fib.RTN_UNICAST, "198.19.0.13", "tunl0")}
    v6 = ('[{"type":"blackhole","dst":"fd00:98::/122","dev":"lo","flags":[]},'
          '{"dst":"fd00:99::40/122","gateway":"fe80::1","dev":"warren-vxlan","flags":[]},'
          '{"dst":"fd00:99::7","gateway":"2001:db8::2","dev":"eth0","flags":[]}]')
    assert fib.parse_routes(v6, 6) == {
        "fd00:98::/122": (fib.RTN_BLACKHOLE, None, None),
        "fd00:99::40/122": (fib.RTN_UNICAST, "fe80::1", "warren-vxlan"),
        "fd00:99::7/128": (fib.RTN_UNICAST, "2001:db8::2", None)}
    assert fib.parse_routes("", 4) == {}


def test_batch_lines():
    assert fib.route_line("10.99.0.0/26", ("198.19.0.12", None)) == \
        "route replace 10.99.0.0/26 via 198.19.0.12 proto 81"
    assert fib.route_line("10.99.0.0/26", ("198.19.0.12", "tunl0")) == \
        "route replace 10.99.0.0/26 via 198.19.0.12 dev tunl0 onlink proto 81"
    assert fib.route_line("fd00::/122", ("fe80::1", "warren-vxlan")) == \
        "route replace fd00::/122 via fe80::1 dev warren-vxlan proto 81"
    assert fib.delete_line("10.99.0.0/26") == "route del unicast 10.99.0.0/26 proto 81"
    assert fib.delete_line("10.98.0.0/26", fib.RTN_BLACKHOLE) == "route del blackhole 10.98.0.0/26 proto 81"


def test_failed_lines_pairs_each_error_with_its_line():
    stderr = ("Error: Nexthop has invalid gateway.\nCommand failed -:2\n"
              "RTNETLINK answers: No such process\nCommand failed -:5\n")
    assert fib.failed_lines(stderr) == {2: "Error: Nexthop has invalid gateway.",
                                        5: "RTNETLINK answers: No such process"}


class FakeIp:
    """Stands in for subprocess.run: records batches, fails the lines it is told to."""

    def __init__(self, fail=(), shown=("[]", "[]")):
        self.fail, self.shown, self.batches = dict(fail), list(shown), []

    def __call__(self, argv, input=None, **kw):
        if "-batch" in argv:
            lines = input.splitlines()
            self.batches.append(lines)
            err = "".join(f"{self.fail[i]}\nCommand failed -:{i}\n" for i in self.fail if i <= len(lines))
            return subprocess.CompletedProcess(argv, 1 if err else 0, "", err)
        return subprocess.CompletedProcess(argv, 0, self.shown[0 if "-4" in argv else 1], "")


@pytest.fixture
def ip(monkeypatch):
    fake = FakeIp()
    monkeypatch.setattr(fib.subprocess, "run", fake)
    return fake


def test_apply_is_one_batch_and_counts_failed_installs_not_absent_deletes(ip):
    ip.fail = {2: "Error: Nexthop has invalid gateway.", 3: "RTNETLINK answers: No such process"}
    failures = fib.Fib().apply({"10.99.0.1/32": ("198.19.0.12", None), "10.99.0.2/32": ("10.1.1.1", None)},
                               ["10.99.0.3/32"])
    assert ip.batches == [["route replace 10.99.0.1/32 via 198.19.0.12 proto 81",
                           "route replace 10.99.0.2/32 via 10.1.1.1 proto 81",
                           "route del unicast 10.99.0.3/32 proto 81"]]
    assert failures == 1


def test_apply_skips_what_before_refuses(ip):
    seen = []

    def before(prefix, route):
        seen.append((prefix, route))
        return route[1] != "warren-vxlan"

    failures = fib.Fib().apply({"10.99.0.0/26": ("198.19.0.12", None),
                                "10.99.0.64/26": ("198.19.0.13", "warren-vxlan")}, [], before=before)
    assert failures == 1 and len(seen) == 2
    assert ip.batches == [["route replace 10.99.0.0/26 via 198.19.0.12 proto 81"]]


def test_nothing_to_do_runs_no_ip(ip):
    assert fib.Fib().apply({}, []) == 0
    assert ip.batches == []


def test_set_blackholes_adds_and_removes_only_the_difference(ip):
    ip.shown = ['[{"type":"blackhole","dst":"10.98.0.0/26","flags":[]},'
                '{"type":"blackhole","dst":"10.98.0.64/26","flags":[]},'
                '{"dst":"10.99.0.5","gateway":"198.19.0.12","dev":"eth0","flags":[]}]', "[]"]
    assert fib.Fib().set_blackholes({"10.98.0.0/26", "fd00:98::/122"}) == 0
    assert ip.batches == [["route replace blackhole fd00:98::/122 proto 81",
                           "route del blackhole 10.98.0.64/26 proto 81"]]
    assert fib.Fib().learned() == {"10.99.0.5/32": ("198.19.0.12", None)}


def test_ip_itself_failing_fails_every_line(monkeypatch):
    monkeypatch.setattr(fib.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 255, "", "ip: command crashed"))
    assert fib.Fib().apply({"10.99.0.1/32": ("198.19.0.12", None)}, []) == 1
