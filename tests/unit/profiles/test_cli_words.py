"""How ``warrenctl profile`` splits its words (no etcd needed)."""
from __future__ import annotations

import pytest

from ctl.cli import CliError
from ctl.main import build_parser
from ctl.profilecmd import _is_verb, _take_at, profile_command


def test_the_profile_command_takes_every_word():
    args = build_parser().parse_args(["profile", "web", "rule", "add", "inbound", "--at=1", "allow",
                                      "tcp", "to", "ports", "80"])
    assert args.func is profile_command
    assert args.words == ["web", "rule", "add", "inbound", "--at=1", "allow", "tcp", "to", "ports", "80"]
    assert build_parser().parse_args(["profile", "show", "--detailed"]).words == ["show", "--detailed"]


@pytest.mark.parametrize("words, verb", [
    (["add", "web"], True), (["remove", "web", "--no-check"], True), (["show"], True),
    (["show", "--detailed"], True), (["add", "rule"], True), (["remove", "tag", "--no-check"], True),
    (["web", "rule", "show"], False), (["add", "rule", "show"], False), (["show", "tag", "show"], False),
    (["show", "rule"], False),
])
def test_verbs_versus_profile_names(words, verb):
    assert _is_verb(words[0], words[1:]) is verb


@pytest.mark.parametrize("words, position, rest", [
    (["allow"], None, ["allow"]),
    (["--at=3", "deny", "udp"], 3, ["deny", "udp"]),
    (["--at", "2", "allow"], 2, ["allow"]),
    (["allow", "tcp", "--at=1"], 1, ["allow", "tcp"]),
])
def test_take_at(words, position, rest):
    assert _take_at(words) == (position, rest)


@pytest.mark.parametrize("words, message", [
    (["--at"], "--at needs a position"),
    (["--at=-1", "allow"], "invalid position '-1'"),
    (["--at=1", "--at=2"], "--at is given twice"),
    (["--force", "allow"], "unknown option --force"),
])
def test_take_at_errors(words, message):
    with pytest.raises(CliError, match=message):
        _take_at(words)
