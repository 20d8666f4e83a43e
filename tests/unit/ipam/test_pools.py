"""make_pool validation, Pool.options and check_overlap (pure, no etcd)."""
from __future__ import annotations

import ipaddress

import pytest

from datastore import codec
from ipam.errors import InvalidPool, IpamError
from ipam.pools import DEFAULT_BLOCK_SIZE, Pool, check_overlap, make_pool


def test_valid_ipv4_pool_defaults():
    p = make_pool("10.20.0.0/16")
    assert p == Pool(cidr="10.20.0.0/16", encap="none", nat_outgoing=False,
                     disabled=False, block_size=26)
    assert p.version == 4
    assert p.network == ipaddress.ip_network("10.20.0.0/16")
    assert p.options == []


def test_valid_ipv6_pool_defaults():
    p = make_pool("fd00:1::/64")
    assert p.cidr == "fd00:1::/64"
    assert p.block_size == 122
    assert p.version == 6
    assert DEFAULT_BLOCK_SIZE == {4: 26, 6: 122}


def test_cidr_is_normalised():
    assert make_pool("fd00:0000:0001::/64").cidr == "fd00:0:1::/64"


def test_pool_record_default_block_size_follows_family():
    assert Pool(cidr="10.0.0.0/24").block_size == 26
    assert Pool(cidr="fd00::/64").block_size == 122
    assert Pool(cidr="10.0.0.0/24", block_size=28).block_size == 28


def test_pool_round_trips_through_codec():
    p = make_pool("10.1.0.0/16", ipip=True, nat_outgoing=True, block_size=28)
    assert codec.loads(Pool, codec.dumps(p)) == p


def test_contains():
    p = make_pool("10.1.0.0/16")
    assert p.contains("10.1.255.255") and p.contains("10.1.0.0")
    assert not p.contains("10.2.0.0")
    assert not p.contains("fd00::1")


@pytest.mark.parametrize("text, suggestion", [
    ("10.20.10.5/24", "10.20.10.0/24"),
    ("192.168.1.1/16", "192.168.0.0/16"),
    ("fd00::1/64", "fd00::/64"),
])
def test_host_bits_set_suggests_the_network(text, suggestion):
    with pytest.raises(InvalidPool) as exc:
        make_pool(text)
    msg = str(exc.value)
    assert "host bits" in msg
    assert f"did you mean {suggestion}?" in msg


@pytest.mark.parametrize("text", [
    "garbage", "", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/33", "10.0.0.256/24",
    "fd00::/129", "10.0.0.0/24/1", " 10.0.0.0/24",
])
def test_garbage_cidr(text):
    with pytest.raises(InvalidPool) as exc:
        make_pool(text)
    msg = str(exc.value)
    assert "is not a valid CIDR" in msg
    assert repr(text) in msg


def test_invalid_pool_is_an_ipam_error():
    assert issubclass(InvalidPool, IpamError)


def test_ipip_and_vxlan_are_exclusive():
    with pytest.raises(InvalidPool, match="mutually exclusive"):
        make_pool("10.0.0.0/16", ipip=True, vxlan=True)


def test_ipip_on_ipv6_rejected():
    with pytest.raises(InvalidPool) as exc:
        make_pool("fd00::/64", ipip=True)
    assert "IPv6" in str(exc.value) and "--vxlan" in str(exc.value)


def test_vxlan_on_ipv6_accepted():
    p = make_pool("fd00::/64", vxlan=True)
    assert p.encap == "vxlan"


def test_encaps():
    assert make_pool("10.0.0.0/16").encap == "none"
    assert make_pool("10.0.0.0/16", ipip=True).encap == "ipip"
    assert make_pool("10.0.0.0/16", vxlan=True).encap == "vxlan"


@pytest.mark.parametrize("text, why", [
    ("127.0.0.0/8", "loopback"),
    ("127.10.0.0/16", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("169.254.10.0/24", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("239.1.0.0/16", "multicast"),
    ("0.0.0.0/8", "'this network'"),
    ("0.0.0.0/16", "'this network'"),
    ("0.0.0.0/0", None),            # overlaps everything reserved
    ("255.255.255.0/24", "broadcast"),
    ("fe80::/10", "link-local"),
    ("fe80::/64", "link-local"),
    ("ff00::/8", "multicast"),
    ("ff02::/16", "multicast"),
    ("::1/128", "loopback"),
    ("::/0", None),
])
def test_reserved_ranges_rejected(text, why):
    with pytest.raises(InvalidPool) as exc:
        make_pool(text, block_size=max(ipaddress.ip_network(text).prefixlen,
                                       DEFAULT_BLOCK_SIZE[ipaddress.ip_network(text).version]))
    msg = str(exc.value)
    assert "overlaps the" in msg
    if why is not None:
        assert why in msg


@pytest.mark.parametrize("text", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                  "100.64.0.0/10", "fd00::/64", "2001:db8::/64"])
def test_ordinary_ranges_accepted(text):
    assert make_pool(text).cidr == text


def test_pool_smaller_than_one_block_rejected():
    with pytest.raises(InvalidPool) as exc:
        make_pool("10.0.0.0/28")
    msg = str(exc.value)
    assert "smaller than one /26 block" in msg
    assert "--block-size 28" in msg


def test_small_pool_with_matching_block_size_accepted():
    p = make_pool("10.0.0.0/28", block_size=28)
    assert p.block_size == 28
    assert make_pool("10.0.0.0/28", block_size=30).block_size == 30
    assert make_pool("10.0.0.1/32", block_size=32).block_size == 32


def test_small_ipv6_pool_rejected_with_default_block():
    with pytest.raises(InvalidPool, match="smaller than one /122 block"):
        make_pool("fd00::/124")


@pytest.mark.parametrize("text, size, family", [
    ("10.0.0.0/24", 33, "IPv4"), ("fd00::/64", 129, "IPv6"),
])
def test_block_size_longer_than_address(text, size, family):
    with pytest.raises(InvalidPool) as exc:
        make_pool(text, block_size=size)
    assert f"/{size} is longer than an {family} address" in str(exc.value)


def test_block_size_must_be_an_int():
    with pytest.raises(InvalidPool, match="prefix length"):
        make_pool("10.0.0.0/16", block_size=True)
    with pytest.raises(InvalidPool, match="prefix length"):
        make_pool("10.0.0.0/16", block_size="26")  # type: ignore[arg-type]


def test_blocks_bigger_than_65536_addresses_rejected():
    with pytest.raises(InvalidPool, match="at most 65536"):
        make_pool("10.0.0.0/8", block_size=15)
    assert make_pool("10.0.0.0/8", block_size=16).block_size == 16


@pytest.mark.parametrize("text", ["fd00::/48", "fd00:1::/56"])
def test_large_ipv6_pool_with_default_blocks_accepted(text):
    assert make_pool(text).block_size == 122


def test_options_order():
    p = make_pool("10.0.0.0/16", ipip=True, nat_outgoing=True, disabled=True)
    assert p.options == ["ipip", "nat-outgoing", "disabled"]
    assert ",".join(p.options) == "ipip,nat-outgoing,disabled"
    assert make_pool("10.0.0.0/16", vxlan=True, disabled=True).options == ["vxlan", "disabled"]
    assert make_pool("10.0.0.0/16", nat_outgoing=True).options == ["nat-outgoing"]
    assert make_pool("10.0.0.0/16", disabled=True).options == ["disabled"]


# -- overlaps ----------------------------------------------------------------

def test_same_cidr_already_exists():
    with pytest.raises(InvalidPool, match="pool 10.0.0.0/16 already exists"):
        check_overlap(make_pool("10.0.0.0/16"), [make_pool("10.0.0.0/16", ipip=True)])


@pytest.mark.parametrize("new, existing", [
    ("10.0.0.0/16", "10.0.0.0/8"),     # inside
    ("10.0.0.0/8", "10.5.0.0/16"),     # around
    ("fd00::/64", "fd00::/60"),
])
def test_overlapping_rejected(new, existing):
    with pytest.raises(InvalidPool) as exc:
        check_overlap(make_pool(new), [make_pool("192.168.0.0/16"), make_pool(existing)])
    assert str(exc.value) == f"{new} overlaps the existing pool {existing}"


def test_disjoint_ok():
    check_overlap(make_pool("10.1.0.0/16"),
                  [make_pool("10.0.0.0/16"), make_pool("10.2.0.0/16"), make_pool("fd00::/64")])
    check_overlap(make_pool("10.1.0.0/16"), [])


def test_v4_and_v6_never_overlap():
    # ::/96-style IPv6 ranges share integer values with IPv4 but are another family.
    v4 = make_pool("10.0.0.0/8")
    v6 = Pool(cidr="::a00:0/104", block_size=122)  # integer range == 10.0.0.0/8
    assert int(v4.network.network_address) == int(v6.network.network_address)
    check_overlap(v4, [v6])
    check_overlap(v6, [v4])
    check_overlap(make_pool("fd00::/64"), [make_pool("10.0.0.0/8")])
