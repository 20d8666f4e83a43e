"""The node exporter's pure parts: its address and the scrape-time BGP gauges."""
from __future__ import annotations

import pytest

from bgp.settings import SessionStatus
from ctl import metrics


@pytest.mark.parametrize("text, parsed", [("127.0.0.1:9091", ("127.0.0.1", 9091)),
                                          ("[::1]:9100", ("::1", 9100)), ("off", None), ("", None)])
def test_parse_addr(text, parsed):
    assert metrics.parse_addr(text) == parsed


@pytest.mark.parametrize("text", ["9091", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":9091", "x:y"])
def test_parse_addr_refuses(text):
    with pytest.raises(ValueError, match="WARREN_METRICS_ADDR"):
        metrics.parse_addr(text)


def test_bgp_sessions_by_state(monkeypatch):
    import bgp.settings
    monkeypatch.setattr(bgp.settings, "load_status", lambda store, node: [
        SessionStatus("192.0.2.1", "up", 0), SessionStatus("192.0.2.2", "up", 0),
        SessionStatus("192.0.2.3", "down", 0)])
    monkeypatch.setattr(metrics, "_bgp_routes", lambda: {"ipv4": 7, "ipv6": 2})
    families = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
                for f in metrics.NodeCollector(None, "n1").collect()}
    assert families["warren_bgp_sessions"] == {("up",): 2, ("down",): 1}
    assert families["warren_bgp_routes_installed"] == {("ipv4",): 7, ("ipv6",): 2}


def test_no_session_sample_when_etcd_is_unreachable(monkeypatch):
    import bgp.settings

    def fail(store, node):
        raise OSError("etcd down")
    monkeypatch.setattr(bgp.settings, "load_status", fail)
    monkeypatch.setattr(metrics, "_bgp_routes", lambda: {})
    sessions = next(f for f in metrics.NodeCollector(None, "n1").collect() if f.name == "warren_bgp_sessions")
    assert sessions.samples == []


def test_policy_hook():
    before = metrics.POLICY_FAILURES._value.get()
    metrics.observe_policy(False, 0.01, False)
    assert metrics.POLICY_FAILURES._value.get() == before + 1
    metrics.observe_policy(True, 0.02, True)
    assert metrics.POLICY_APPLY.labels("full")._sum.get() >= 0.02
