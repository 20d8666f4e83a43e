"""bench/dataplane's verdict statistics: the median's interval and the wording of a verdict."""
import pytest

from bench.dataplane import judge, median_interval


@pytest.mark.parametrize("n, k", [(6, 1), (10, 2), (16, 4), (20, 6), (30, 10)])
def test_interval_is_the_sign_test_order_statistics(n, k):
    # textbook 95 % intervals for the median: x(k)..x(n-k+1), 1-indexed
    low, high, coverage = median_interval([float(i) for i in range(1, n + 1)])
    assert (low, high) == (k, n - k + 1)
    assert coverage >= 0.95


def test_too_few_values_give_the_range_with_its_lower_coverage():
    low, high, coverage = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (low, high) == (1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)


def _res(warren, hand):
    return {"warren": {"tcp1": warren}, "hand": {"tcp1": hand}}


def test_judge_says_when_no_difference_is_resolved():
    # ratios 0.9..1.1: the median passes, the interval holds 1.0
    text = judge(_res([9, 10, 11, 9.5, 10.5, 10, 10.2, 9.8, 10.1, 9.9], [10] * 10), "warren", "hand", "tcp1",
                 0.97, True)
    assert text.endswith("PASS") and "no difference resolved" in text


def test_judge_names_a_slower_warren_for_throughput_and_for_rtt():
    slow = _res([8, 8.5, 8.2, 8.1, 8.3, 8.4, 8.6, 8.0, 8.2, 8.3], [10] * 10)
    assert judge(slow, "warren", "hand", "tcp1", 0.97, True).endswith("warren slower) MISS")
    # the same ratios as RTT: a lower RTT is faster
    assert judge(slow, "warren", "hand", "tcp1", 1.05, False).endswith("warren faster) PASS")
