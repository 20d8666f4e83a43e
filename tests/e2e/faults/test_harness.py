"""The fault harness's own judgement, without a lab: what counts as a lost ping and as a leak.

Pure functions on made-up data (no kernel, no dockerd): a harness that
cannot see a loss or a leak would make every fault test pass.
"""
from __future__ import annotations

from tests.e2e.faults.harness import FAULTS, FaultResult
from tests.e2e.faults.leaks import Owned, compare
from tests.e2e.faults.probe import INTERVAL, PingStats, Probe

EP1, EP2 = "a" * 64, "b" * 64          # endpoint ids; host-side interfaces wrn + 11 characters
IF1, IF2 = "wrn" + "a" * 11, "wrn" + "b" * 11


def probe_with(answered: list[bool], late: dict[int, float] | None = None) -> Probe:
    p = Probe(None, "host2", "src", "10.0.0.1")  # type: ignore[arg-type]  # never started
    for n, ok in enumerate(answered):
        p.sent[n] = 100.0 + n * INTERVAL
        if ok:
            p.replies[n] = p.sent[n] + (late or {}).get(n, 0.001)
    return p


def test_no_loss():
    stats = probe_with([True] * 20).stats(100.0, 102.0)
    assert stats == PingStats(sent=20, answered=20, lost=0, longest_outage=0.0, recovered_after=0.0)
    assert stats.ok


def test_an_outage_is_counted_and_its_end_found():
    answered = [True] * 5 + [False] * 8 + [True] * 7 + [False] + [True] * 4
    stats = probe_with(answered).stats(100.0, 103.0)
    assert (stats.sent, stats.lost, stats.answered) == (25, 9, 16)
    assert stats.longest_outage == round(8 * INTERVAL, 2)
    assert stats.recovered_after == round(21 * INTERVAL + 0.001, 2)   # the reply after the last loss
    assert not stats.ok


def test_a_late_reply_is_lost_and_the_window_is_respected():
    p = probe_with([True] * 10, late={3: 1.5})
    assert p.stats(100.0, 101.0).lost == 1
    assert p.stats(100.45, 101.0).lost == 0          # request 3 was sent before the window
    assert p.stats(100.0, 100.25).sent == 3


def test_still_losing_at_the_end_has_no_recovery():
    stats = probe_with([True] * 3 + [False] * 5).stats(100.0, 101.0)
    assert stats.recovered_after is None and stats.lost == 5


def kernel(veths=(), routes=(), chains=(), sets=None) -> dict:
    return {"veths": list(veths), "routes": [{"dst": d, "dev": v} for d, v in routes], "chains": list(chains),
            "sets": sets or {}}


def records(endpoints=(), allocations=(), handles=()) -> dict:
    return {"endpoints": [{"key": "", "host": h, "id": i, "addresses": a} for h, i, a in endpoints],
            "allocations": [{"address": a, "host": h, "handle": k} for a, h, k in allocations],
            "handles": [{"handle": k, "address": a} for k, a in handles]}


def test_what_a_running_container_holds_is_no_leak():
    mine = Owned({"host1": {EP1}, "host2": set()}, {"host1": {"10.0.0.5"}, "host2": set()})
    states = {"host1": kernel([IF1], [("10.0.0.5", IF1)], ["WARREN-FW-" + IF1, "WARREN-TW-" + IF1],
                              {"warren-v4-x": ["10.0.0.5"]}),
              "host2": kernel(sets={"warren-v4-x": ["10.0.0.5"]})}
    recs = records([("host1", EP1, ["10.0.0.5"])], [("10.0.0.5", "host1", "h1")], [("h1", "10.0.0.5")])
    assert compare(mine, states, recs) == {}


def test_every_kind_of_leftover_is_a_leak():
    mine = Owned({"host1": {EP1}, "host2": set()}, {"host1": {"10.0.0.5"}, "host2": set()})
    states = {"host1": kernel([IF1, IF2], [("10.0.0.5", IF1), ("10.0.0.6", IF2)],
                              ["WARREN-FW-" + IF1, "WARREN-FW-" + IF2, "WARREN-TW-" + IF2],
                              {"warren-v4-x": ["10.0.0.5", "10.0.0.6"]}),
              "host2": kernel(sets={"warren-v4-x": ["10.0.0.5", "10.0.0.6"]})}
    recs = records([("host1", EP1, ["10.0.0.5"]), ("host1", EP2, ["10.0.0.6"]), ("host2", EP1, ["10.0.0.5"])],
                   [("10.0.0.5", "host1", "h1"), ("10.0.0.6", "host1", "h2"), ("10.0.0.5", "host2", "h3")],
                   [("h1", "10.0.0.5"), ("h2", "10.0.0.6"), ("h9", "10.0.0.5")])
    found = compare(mine, states, recs)
    assert found == {
        "endpoints": ["host1/" + EP2[:12] + " 10.0.0.6", "host2/" + EP1[:12] + " 10.0.0.5"],
        "allocations": ["10.0.0.6 on host1 (h2)", "10.0.0.5 on host2 (h3)"],
        "handles": ["h2/10.0.0.6", "h9/10.0.0.5"],
        "veths": ["host1:" + IF2],
        "routes": ["host1:10.0.0.6 dev " + IF2],
        "chains": ["host1:WARREN-FW-" + IF2, "host1:WARREN-TW-" + IF2],
        "set members": ["host1:warren-v4-x:10.0.0.6", "host2:warren-v4-x:10.0.0.6"],
    }


def result(fault: str, lost: int = 0, leaks=None, recovered_by: str = "itself") -> FaultResult:
    pings = PingStats(100, 100 - lost, lost, round(lost * INTERVAL, 2), 0.0 if not lost else 5.0)
    return FaultResult(fault, 8, pings, pings, 1.0, 0, 0, recovered_by, [], leaks or {}, leaks or {}, 0.0)


def test_goals_per_fault_kind():
    assert result("plugin").problems() == []
    assert result("plugin", lost=3).problems() == ["3 of 100 pings lost (longest outage 0.3 s)"]
    assert result("plugin", recovered_by="node start").problems() != []      # must come back by itself
    assert result("agent", recovered_by="node start").problems() == []       # the issue does not ask it
    assert result("dockerd", lost=30).problems() == []                        # the target stops by design
    assert result("dockerd-live-restore", lost=1).problems() != []
    assert result("etcd", leaks={"endpoints": ["host1/x"]}).problems() == ["1 leaked endpoints: ['host1/x']"]
    assert set(FAULTS) >= {"plugin", "agent", "exabgp", "etcd", "dockerd", "dockerd-live-restore"}
