"""ipam.underlay: what no pool may overlap (pure part)."""
from __future__ import annotations

import pytest

from ipam import InvalidPool, make_pool
from ipam.underlay import host_protected, refuse_overlap, Protected

import ipaddress


def protected() -> list[Protected]:
    return host_protected([("eth0", "192.0.2.0/24"), ("eth0", "fd00::/64"), ("docker0", "172.17.0.0/16")]) + [
        Protected(ipaddress.ip_network("198.51.100.7/32"), "the etcd member 198.51.100.7")]


@pytest.mark.parametrize("cidr, words", [
    ("192.0.2.0/26", "this host's subnet 192.0.2.0/24 (eth0)"),
    ("192.0.0.0/16", "this host's subnet 192.0.2.0/24 (eth0)"),   # a pool containing the subnet
    ("fd00::/122", "this host's subnet fd00::/64 (eth0)"),
    ("172.17.128.0/24", "(docker0)"),
    ("198.51.100.0/24", "the etcd member 198.51.100.7"),
])
def test_overlaps_are_refused_in_one_line(cidr, words):
    with pytest.raises(InvalidPool) as caught:
        refuse_overlap(make_pool(cidr), protected())
    message = str(caught.value)
    assert words in message and cidr in message and "\n" not in message


@pytest.mark.parametrize("cidr", ["10.20.10.0/24", "192.0.3.0/24", "fd00:1::/64", "198.51.101.0/24"])
def test_other_pools_pass(cidr):
    refuse_overlap(make_pool(cidr), protected())


def test_host_protected_accepts_addresses_with_host_bits():
    assert [str(p.network) for p in host_protected([("eth0", "192.0.2.11/24")])] == ["192.0.2.0/24"]
