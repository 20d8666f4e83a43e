"""The etcd key schema: CIDR encoding, segment validation, key splitting."""
from __future__ import annotations

import pytest

from datastore import keys


@pytest.mark.parametrize("cidr, encoded", [
    ("10.20.10.0/26", "10.20.10.0-26"),
    ("0.0.0.0/0", "0.0.0.0-0"),
    ("192.168.1.7/32", "192.168.1.7-32"),
    ("fd00::/122", "fd00::-122"),
    ("fd00:1:2:3::40/122", "fd00:1:2:3::40-122"),
    ("::ffff:10.0.0.0/120", "::ffff:10.0.0.0-120"),
])
def test_encode_decode_cidr_round_trip(cidr, encoded):
    assert keys.encode_cidr(cidr) == encoded
    assert "/" not in keys.encode_cidr(cidr)
    assert keys.decode_cidr(encoded) == cidr


@pytest.mark.parametrize("cidr", ["10.20.10.0/26", "fd00::40/122"])
def test_cidr_is_one_segment_of_pool_block_and_affinity_keys(cidr):
    for key in (keys.pool(cidr), keys.block(cidr), keys.affinity("host-1", cidr)):
        assert keys.last_segment(key) == keys.encode_cidr(cidr)
        assert keys.cidr_of(key) == cidr
    assert keys.pool(cidr).startswith(keys.POOLS)
    assert keys.block(cidr).startswith(keys.BLOCKS)
    assert keys.affinity("host-1", cidr).startswith(keys.AFFINITY + "host-1/")


def test_every_key_lives_under_the_prefix():
    for key in (keys.POOLS, keys.IPAM_CONFIG, keys.BLOCKS, keys.AFFINITY, keys.HANDLES):
        assert key.startswith("/warren/v1/")


@pytest.mark.parametrize("value", [
    "host-1", "node_2.example.com", "a", "abc:def@x", "0123456789", "x" * 253,
])
def test_segment_accepts_safe_names(value):
    assert keys.segment(value) == value


@pytest.mark.parametrize("value", [
    "", "a/b", "/", "has space", " lead", "trail ", "tab\tx", "new\nline",
    "x" * 254, "ünïcode", "a*b",
])
def test_segment_rejects_unsafe_names(value):
    with pytest.raises(ValueError) as exc:
        keys.segment(value, "host name")
    assert "invalid host name" in str(exc.value)


def test_segment_rejects_non_strings():
    with pytest.raises(ValueError):
        keys.segment(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        keys.segment(42)  # type: ignore[arg-type]


def test_host_and_handle_keys_validate_their_segment():
    with pytest.raises(ValueError):
        keys.affinity("bad/host", "10.0.0.0/26")
    with pytest.raises(ValueError):
        keys.affinity_prefix("")
    with pytest.raises(ValueError):
        keys.handle("bad handle", "10.0.0.1")
    with pytest.raises(ValueError):
        keys.handle_prefix("a/b")


@pytest.mark.parametrize("handle, address", [
    ("endpoint-0123abcd", "10.20.10.7"),
    ("h1", "fd00::1"),
    ("ctr:abc@x", "fd00:1:2:3::ff"),
])
def test_split_handle_key_round_trip(handle, address):
    key = keys.handle(handle, address)
    assert key == keys.HANDLES + handle + "/" + address
    assert key.startswith(keys.handle_prefix(handle))
    assert keys.split_handle_key(key) == (handle, address)


@pytest.mark.parametrize("host, cidr", [
    ("hostA", "10.20.10.0/26"),
    ("node-2.example.com", "10.0.0.64/26"),
    ("h", "fd00::40/122"),
])
def test_split_affinity_key_round_trip(host, cidr):
    key = keys.affinity(host, cidr)
    assert key.startswith(keys.affinity_prefix(host))
    assert keys.split_affinity_key(key) == (host, cidr)


def test_handle_prefix_of_one_handle_does_not_match_another():
    # "h1/" must not be a prefix of "h10/...": the trailing slash matters.
    assert not keys.handle("h10", "10.0.0.1").startswith(keys.handle_prefix("h1"))
    assert not keys.affinity("hostA2", "10.0.0.0/26").startswith(keys.affinity_prefix("hostA"))
