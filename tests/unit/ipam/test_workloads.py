"""Workload records: effective profiles and calicoctl's profile verbs."""
from __future__ import annotations

import pytest

from ipam import InvalidRequest
from ipam.workloads import Endpoint, Network, effective_profiles, host_ifname, profile_change


def test_host_interface_names():
    assert host_ifname("0123456789abcdef") == "wrn0123456789a"
    assert Endpoint("0123456789abcdef", "", "h").iface == "wrn0123456789a"


def test_effective_profiles():
    nets = {"n": Network("n", name="web"), "m": Network("m", name="db", profile="shared"), "u": Network("u")}
    assert effective_profiles(Endpoint("e", "n", "h"), nets) == ["web"]
    assert effective_profiles(Endpoint("e", "m", "h"), nets) == ["shared"]
    assert effective_profiles(Endpoint("e", "u", "h"), nets) == []
    assert effective_profiles(Endpoint("e", "gone", "h"), nets) == []
    assert effective_profiles(Endpoint("e", "n", "h", profiles=[]), nets) == []
    assert effective_profiles(Endpoint("e", "n", "h", profiles=["a", "b"]), nets) == ["a", "b"]


def test_profile_verbs():
    assert profile_change("append", ["b", "c"])(["a"]) == ["a", "b", "c"]
    assert profile_change("remove", ["a"])(["a", "b"]) == ["b"]
    assert profile_change("set", ["x", "y", "x"])(["a"]) == ["x", "y"]
    assert profile_change("set", [])(["a"]) == []
    with pytest.raises(InvalidRequest, match="already has profile a"):
        profile_change("append", ["a"])(["a"])
    with pytest.raises(InvalidRequest, match="does not have profile z"):
        profile_change("remove", ["z"])(["a"])
    with pytest.raises(InvalidRequest, match="unknown profile verb"):
        profile_change("prepend", ["a"])
