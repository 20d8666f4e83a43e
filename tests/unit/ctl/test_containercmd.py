"""``warrenctl container`` word parsing (no Docker needed)."""
from __future__ import annotations

import pytest

from ctl.cli import CliError
from ctl.containercmd import _interface


@pytest.mark.parametrize("words, expected", [
    (["c1", "10.0.0.1"], (["c1", "10.0.0.1"], None)),
    (["c1", "10.0.0.1", "--interface=eth2"], (["c1", "10.0.0.1"], "eth2")),
    (["c1", "--interface", "eth2", "10.0.0.1"], (["c1", "10.0.0.1"], "eth2")),
])
def test_interface_option(words, expected):
    assert _interface(words) == expected


@pytest.mark.parametrize("words, message", [
    (["c1", "--interface"], "--interface needs a name"),
    (["c1", "--interface="], "--interface needs a name"),
    (["c1", "--interface", "--x"], "--interface needs a name"),
    (["c1", "--bogus"], "unknown option --bogus"),
])
def test_interface_option_errors(words, message):
    with pytest.raises(CliError, match=message):
        _interface(words)
