"""plugin.forward: the backstop drops workload traffic that no policy judged (fail closed)."""
from __future__ import annotations

from plugin import forward


def test_the_backstop_drops_both_directions_and_accepts_nothing():
    lines = forward.rules().splitlines()
    assert lines[:3] == ["*filter", ":WARREN-FORWARD - [0:0]", "-F WARREN-FORWARD"]
    rules = [line for line in lines if line.startswith("-A ")]
    assert [r.split()[2:4] for r in rules] == [["-i", "wrn+"], ["-o", "wrn+"]]
    assert all(r.endswith("-j DROP") for r in rules)
    assert "ACCEPT" not in forward.rules()
