"""The pure parts of bench/container_start and bench/plugin_profile: reading the plugin's
latency histogram from the exporter's text, and attributing time to calls and stages."""
import pytest

from bench.container_start import latency_delta, parse_latency
from bench.plugin_profile import PYTHON, Recorder, Sample, by_kind, caller, stage_table

EXPOSITION = """\
# HELP warren_plugin_request_seconds Docker plugin API request latency, by endpoint
# TYPE warren_plugin_request_seconds histogram
warren_plugin_request_seconds_bucket{endpoint="NetworkDriver.Join",le="0.005"} 0.0
warren_plugin_request_seconds_sum{endpoint="NetworkDriver.Join"} 0.25
warren_plugin_request_seconds_count{endpoint="NetworkDriver.Join"} 10.0
warren_plugin_request_seconds_sum{endpoint="IpamDriver.RequestAddress"} 0.04
warren_plugin_request_seconds_count{endpoint="IpamDriver.RequestAddress"} 10.0
warren_plugin_requests_total{code="200",endpoint="NetworkDriver.Join"} 10.0
warren_policy_apply_seconds_sum{kind="full"} 3.0
"""


def test_parse_latency_reads_sum_and_count_per_call_only_of_the_plugin_histogram():
    got = parse_latency(EXPOSITION)
    assert got == {"NetworkDriver.Join": (0.25, 10.0), "IpamDriver.RequestAddress": (0.04, 10.0)}


def test_parse_latency_adds_up_series_that_differ_in_other_labels():
    text = ('warren_plugin_request_seconds_sum{endpoint="NetworkDriver.Join",pid="1"} 1.5\n'
            'warren_plugin_request_seconds_sum{endpoint="NetworkDriver.Join",pid="2"} 0.5\n')
    assert parse_latency(text)["NetworkDriver.Join"] == (2.0, 0.0)


def test_latency_delta_keeps_only_calls_that_happened_between_scrapes():
    before = {"NetworkDriver.Join": (0.25, 10.0), "IpamDriver.RequestAddress": (0.04, 10.0)}
    after = {"NetworkDriver.Join": (0.27, 11.0), "IpamDriver.RequestAddress": (0.04, 10.0),
             "NetworkDriver.Leave": (0.03, 1.0)}
    got = latency_delta(before, after)
    assert set(got) == {"NetworkDriver.Join", "NetworkDriver.Leave"}
    assert got["NetworkDriver.Join"][0] == pytest.approx(0.02) and got["NetworkDriver.Join"][1] == 1
    assert got["NetworkDriver.Leave"] == (0.03, 1.0)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_recorder_splits_a_call_into_leaves_and_python_and_ignores_nested_leaves():
    clock = Clock()
    rec = Recorder(clock)
    rec.begin()
    with rec.call("NetworkDriver.Join"):
        clock.now += 1.0           # python
        with rec.leaf("etcd put"):
            clock.now += 2.0
            with rec.leaf("netlink inner"):  # inside a leaf: part of it, not its own stage
                clock.now += 0.5
        with rec.leaf(lambda: "sysctl write"):
            clock.now += 0.25
    with rec.leaf("outside any call"):
        clock.now += 9.0
    sample = rec.end()
    assert sample.calls == {"NetworkDriver.Join": 3.75}
    stages = sample.stages["NetworkDriver.Join"]
    assert stages["etcd put"] == [2.5, 1] and stages["sysctl write"] == [0.25, 1]
    assert stages[PYTHON][0] == pytest.approx(1.0)
    assert "netlink inner" not in stages and len(sample.stages) == 1
    assert rec.samples == [sample]


def test_recorder_keeps_nothing_outside_begin_end():
    clock = Clock()
    rec = Recorder(clock)
    with rec.call("IpamDriver.RequestPool"):
        with rec.leaf("etcd txn"):
            clock.now += 1
    assert rec.end() is None and rec.samples == []


def _sample(join_etcd, join_python, addr_etcd):
    s = Sample()
    s.calls = {"NetworkDriver.Join": join_etcd + join_python, "IpamDriver.RequestAddress": addr_etcd}
    s.add("NetworkDriver.Join", "etcd put <- a.b", join_etcd)
    s.add("NetworkDriver.Join", PYTHON, join_python, 0)
    s.add("IpamDriver.RequestAddress", "etcd txn <- c.d", addr_etcd)
    return s


def test_stage_table_gives_per_container_means_and_medians_in_call_order():
    samples = [_sample(0.001, 0.002, 0.001), _sample(0.003, 0.002, 0.001), _sample(0.002, 0.008, 0.001)]
    rows = stage_table(samples, ("IpamDriver.RequestAddress", "NetworkDriver.Join"))
    assert [r[:2] for r in rows] == [("IpamDriver.RequestAddress", "total"),
                                     ("IpamDriver.RequestAddress", "etcd txn <- c.d"),
                                     ("NetworkDriver.Join", "total"),
                                     ("NetworkDriver.Join", PYTHON),
                                     ("NetworkDriver.Join", "etcd put <- a.b")]
    join_total = rows[2]
    assert join_total[2] == pytest.approx(6.0) and join_total[3] == pytest.approx(5.0)
    python = rows[3]
    assert python[2] == pytest.approx(4.0) and python[3] == pytest.approx(2.0) and python[4] == 0
    assert rows[4][4] == 1


def test_by_kind_sums_stages_over_calls_by_their_first_word():
    samples = [_sample(0.001, 0.002, 0.003), _sample(0.001, 0.004, 0.003)]
    kinds = by_kind(samples, ("IpamDriver.RequestAddress", "NetworkDriver.Join"))
    assert list(kinds) == ["etcd", PYTHON]
    assert kinds["etcd"] == (pytest.approx(4.0), pytest.approx(2.0))
    assert kinds[PYTHON][0] == pytest.approx(3.0)


def test_sample_round_trips_through_plain_data():
    s = _sample(0.001, 0.002, 0.003)
    assert Sample.from_dict(s.to_dict()) == s


def test_caller_names_the_nearest_frame_outside_the_skipped_files():
    def inner():
        return caller(skip=("nothing-matches",), depth=1)
    assert caller(skip=("nothing-matches",), depth=1).endswith(
        "test_caller_names_the_nearest_frame_outside_the_skipped_files")
    assert inner().endswith("inner")


def test_parse_latency_reads_another_histogram_by_another_label():
    assert parse_latency(EXPOSITION, "warren_policy_apply_seconds", "kind") == {"full": (3.0, 0.0)}


def test_whatif_variants_parse_and_refuse_unknown_changes():
    from bench.plugin_whatif import parse_variants
    assert parse_variants("mtu, rtnl+etcd") == [("mtu",), ("rtnl", "etcd")]
    with pytest.raises(ValueError, match="unknown change nope"):
        parse_variants("mtu+nope")
