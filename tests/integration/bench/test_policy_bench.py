"""bench.policy cannot rot: its resync part at a tiny size, against a real etcd and the real
iptables/ipset of namespaces it creates (no lab needed).

The figures themselves are not asserted (the machine is shared and noisy); what is
asserted is what the benchmark relies on: the kernel holds exactly the rules and set
entries the generator computes, the rule count is exactly linear in endpoints and
profile rules and does not move with four times the tag members, every timing is a
real measurement, and no namespace is left behind.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bench import policy

TOOLS = ("etcd", "iptables-restore", "ip6tables-restore", "ipset", "nsenter")
needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
                                  reason=f"needs root and {', '.join(TOOLS)}")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@needs_kernel
def test_resync_part_at_a_tiny_size(capsys):
    before = namespaces()
    args = policy.parse_args(["--parts", "resync", "--endpoints", "20", "--profiles", "5", "--runs", "1",
                              "--scale-endpoints", "10,20", "--scale-profiles", "3,5"])
    summary = policy.part_resync(args)
    printed = capsys.readouterr().out

    assert summary["kernel"] == summary["expected"]
    assert summary["kernel"]["rules4"] > 0 and summary["kernel"]["set_entries4"] > 0
    for case in ("empty", "restart"):
        figures = summary[case]
        # tools: summed over the IPv4 and IPv6 writers, which run at once (may exceed apply)
        assert 0 < figures["load"] < figures["agent"] and 0 < figures["tools"] and 0 < figures["apply"]
        assert figures["floor"] > 0
        assert figures["by_tool"]["iptables-restore"] > 0 and figures["by_tool"]["ip6tables-restore"] > 0
    points = summary["points"]
    assert len(points) == 5 and all(p["kernel"] == p["expected"] for p in points)
    a, b, c, worst = summary["fit"]
    assert worst < 0.5 and a > 0 and b > 0
    assert summary["members_growth"] == 0
    assert points[-1]["kernel"]["set_entries4"] > points[-2]["kernel"]["set_entries4"]
    assert "agent/floor" in printed and "MISMATCH" not in printed
    assert namespaces() - before == set()


def test_dataset_is_what_the_benchmark_says():
    profiles = policy.bench_profiles(5)
    assert [p.tags for p in profiles] == [[p.name] for p in profiles]
    assert all(len(p.inbound_rules) + len(p.outbound_rules) == 6 for p in profiles)
    endpoints = policy.bench_endpoints("h", 40, policy.LOCAL_BASE, 5)
    assert {len(e.profiles) for e in endpoints} == {1, 2}
    assert all(len(set(e.profiles)) == len(e.profiles) for e in endpoints)
    assert len({e.iface for e in endpoints}) == 40
    assert len(policy.remote_endpoints(10, 5)) == 10


def test_linear_fit_recovers_the_coefficients():
    rows = [(x1, x2, 13 * x1 + x2 + 18) for x1 in (10, 20, 40) for x2 in (3, 7)]
    a, b, c, worst = policy.fit_linear(rows)
    assert (round(a, 6), round(b, 6), round(c, 6), round(worst, 6)) == (13, 1, 18, 0)
    with pytest.raises(ValueError):
        policy.fit_linear([(1, 1, 1), (2, 2, 2), (3, 3, 3)])


def test_bad_parts_are_refused(capsys):
    with pytest.raises(SystemExit):
        policy.parse_args(["--parts", "resync,nope"])
    assert "unknown part nope" in capsys.readouterr().err
