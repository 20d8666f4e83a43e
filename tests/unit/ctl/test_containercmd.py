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


# -- container references never reach dockerd's URL unchecked (issue 12) -------------

from types import SimpleNamespace  # noqa: E402

import plugin.containers  # noqa: E402
from ctl.containercmd import container_command  # noqa: E402
from plugin.containers import check_reference, docker_lookup  # noqa: E402
from plugin.errors import PluginError  # noqa: E402

BAD = ["../../../etc", "..", ".hidden", "a/b", "web%2f..", "-rm", "_x", "a b", "x" * 300, "", "na\u00efve"]


@pytest.mark.parametrize("reference", ["web", "web-1.prod_2", "3f2a9c", "a" * 64, "W"])
def test_docker_names_and_ids_pass(reference):
    assert check_reference(reference) == reference


@pytest.mark.parametrize("reference", BAD)
def test_anything_else_is_refused_before_dockerd_is_asked(reference, monkeypatch):
    asked = []
    monkeypatch.setattr(plugin.containers, "docker_get", lambda path, timeout: asked.append(path))
    with pytest.raises(PluginError, match="invalid container name or id"):
        docker_lookup(reference)
    assert asked == []


@pytest.mark.parametrize("words", [
    ["add", "../../../etc", "ipv4"], ["remove", "../../../etc"], ["../../../etc", "ip", "add", "10.0.0.1"],
    ["a/b", "profile", "show"], ["..", "endpoint", "show"]])
def test_the_cli_refuses_with_one_line_before_touching_etcd_or_dockerd(words):
    ctx = SimpleNamespace()  # no store, no host: the command must not get that far
    with pytest.raises(CliError, match="invalid container name or id") as caught:
        container_command(SimpleNamespace(words=words), ctx)
    assert "\n" not in str(caught.value)
