"""warrenctl end to end: the real CLI as a subprocess against a real etcd."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datastore import codec, keys
from ipam import Allocator, Block, PoolStore
from ipam.inventory import address_info

ROOT = Path(__file__).parents[3]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}


def warrenctl(endpoint: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctl.main", "--etcd-endpoints", endpoint, *args],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ctl(etcd_server, store):
    """Run warrenctl against the session etcd (``store`` wipes it around the test)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return warrenctl(etcd_server.endpoint, *args)
    return run


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Assert the failure contract: exit 1, exactly one stderr line, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warrenctl: error: ")
    return lines[0]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every ``| a | b |`` line (headers included)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def keys_under(store, prefix: str) -> list[str]:
    return [kv.key for kv in store.get_prefix(prefix, keys_only=True)]


# -- pool add / show ----------------------------------------------------------

def test_pool_add_and_show_table(ctl, store):
    out = ok(ctl("pool", "add", "10.10.0.0/16", "10.11.0.0/24",
                 "--ipip", "--nat-outgoing", "--block-size", "28"))
    assert out.splitlines() == ["Added pool 10.10.0.0/16", "Added pool 10.11.0.0/24"]

    stored = PoolStore(store).list()
    assert [(p.cidr, p.encap, p.nat_outgoing, p.block_size) for p in stored] == [
        ("10.10.0.0/16", "ipip", True, 28), ("10.11.0.0/24", "ipip", True, 28)]

    out = ok(ctl("pool", "show"))
    rows = table_rows(out)
    assert ["IPv4 CIDR", "Block size", "Options"] in rows
    assert ["10.10.0.0/16", "/28", "ipip,nat-outgoing"] in rows
    assert ["10.11.0.0/24", "/28", "ipip,nat-outgoing"] in rows
    assert ["IPv6 CIDR", "Block size", "Options"] in rows  # both families listed


def test_pool_show_without_options_and_default_block_size(ctl):
    ok(ctl("pool", "add", "10.12.0.0/16", "fd00:12::/64", "--disabled"))
    rows = table_rows(ok(ctl("pool", "show")))
    assert ["10.12.0.0/16", "/26", "disabled"] in rows
    assert ["fd00:12::/64", "/122", "disabled"] in rows


def test_pool_show_json(ctl):
    ok(ctl("pool", "add", "10.10.0.0/16", "--vxlan", "--nat-outgoing"))
    ok(ctl("pool", "add", "fd00:10::/64"))
    data = json.loads(ok(ctl("pool", "show", "--json")))
    assert data == [
        {"cidr": "10.10.0.0/16", "encap": "vxlan", "nat_outgoing": True,
         "disabled": False, "block_size": 26},
        {"cidr": "fd00:10::/64", "encap": "none", "nat_outgoing": False,
         "disabled": False, "block_size": 122},
    ]


def test_pool_show_family_filters(ctl):
    ok(ctl("pool", "add", "10.10.0.0/16", "fd00:10::/64"))
    out6 = ok(ctl("pool", "show", "--ipv6"))
    assert "fd00:10::/64" in out6
    assert "10.10.0.0/16" not in out6 and "IPv4" not in out6
    out4 = ok(ctl("pool", "show", "--ipv4"))
    assert "10.10.0.0/16" in out4
    assert "fd00:10::/64" not in out4 and "IPv6" not in out4
    data = json.loads(ok(ctl("pool", "show", "--ipv6", "--json")))
    assert [d["cidr"] for d in data] == ["fd00:10::/64"]


def test_pool_show_empty(ctl):
    rows = table_rows(ok(ctl("pool", "show")))
    assert rows == [["IPv4 CIDR", "Block size", "Options"], ["IPv6 CIDR", "Block size", "Options"]]
    assert json.loads(ok(ctl("pool", "show", "--json"))) == []


def test_overlapping_add_fails_cleanly_and_adds_nothing(ctl, store):
    ok(ctl("pool", "add", "10.10.0.0/16"))
    line = one_line_error(ctl("pool", "add", "10.20.0.0/16", "10.10.5.0/24"))
    assert "10.10.5.0/24 overlaps the existing pool 10.10.0.0/16" in line
    # all or nothing: the valid first CIDR was not added either
    assert [p.cidr for p in PoolStore(store).list()] == ["10.10.0.0/16"]


def test_duplicate_add_fails_cleanly(ctl, store):
    ok(ctl("pool", "add", "10.10.0.0/16"))
    line = one_line_error(ctl("pool", "add", "10.10.0.0/16"))
    assert "already exists" in line
    assert len(PoolStore(store).list()) == 1


def test_overlap_within_one_command(ctl, store):
    line = one_line_error(ctl("pool", "add", "10.0.0.0/8", "10.10.0.0/16"))
    assert "overlaps" in line
    assert PoolStore(store).list() == []


@pytest.mark.parametrize("cidr, words", [
    ("10.0.0.300/24", "is not a valid CIDR"),
    ("nonsense", "is not a valid CIDR"),
    ("10.10.0.1/16", "did you mean 10.10.0.0/16?"),
    ("127.0.0.0/8", "loopback"),
])
def test_invalid_cidr_fails_cleanly(ctl, store, cidr, words):
    line = one_line_error(ctl("pool", "add", cidr))
    assert words in line
    assert keys_under(store, keys.POOLS) == []


def test_ipip_with_vxlan_is_a_one_line_error(ctl):
    line = one_line_error(ctl("pool", "add", "10.10.0.0/16", "--ipip", "--vxlan"))
    assert "not allowed" in line


# -- ipam show / info / release ---------------------------------------------

@pytest.fixture
def allocated(ctl, store):
    """Pool 10.30.0.0/16 with 3 addresses for hostA and 1 for hostB."""
    ok(ctl("pool", "add", "10.30.0.0/16"))
    a = Allocator(store, "hostA")
    b = Allocator(store, "hostB")
    ips = {"a1": a.assign("a1", pool="10.30.0.0/16", attrs={"purpose": "web"}).address,
           "a2": a.assign("a2", pool="10.30.0.0/16").address,
           "a3": a.assign("a3", pool="10.30.0.0/16").address,
           "b1": b.assign("b1", pool="10.30.0.0/16").address}
    return ips


def test_ipam_show(ctl, store, allocated):
    out = ok(ctl("ipam", "show"))
    rows = table_rows(out)
    assert rows[0] == ["Host", "Block", "Pool", "Used", "Free", "Borrowed"]
    block_a = keys.cidr_of(keys_under(store, keys.affinity_prefix("hostA"))[0])
    block_b = keys.cidr_of(keys_under(store, keys.affinity_prefix("hostB"))[0])
    assert ["hostA", block_a, "10.30.0.0/16", "3", "61", "0"] in rows
    assert ["hostB", block_b, "10.30.0.0/16", "1", "63", "0"] in rows
    assert "hostA: 3 used, 61 free" in out.splitlines()
    assert "hostB: 1 used, 63 free" in out.splitlines()


def test_ipam_show_json(ctl, allocated):
    data = json.loads(ok(ctl("ipam", "show", "--json")))
    assert sorted((r["host"], r["used"], r["free"], r["borrowed"]) for r in data) == [
        ("hostA", 3, 61, 0), ("hostB", 1, 63, 0)]


def test_ipam_show_host_filter(ctl, allocated):
    out = ok(ctl("ipam", "show", "--host", "hostA"))
    assert "hostA: 3 used, 61 free" in out
    assert "hostB" not in out
    out = ok(ctl("ipam", "show", "--host", "hostB"))
    assert "hostB: 1 used, 63 free" in out
    assert "hostA" not in out
    out = ok(ctl("ipam", "show", "--host", "nobody"))
    assert table_rows(out) == [["Host", "Block", "Pool", "Used", "Free", "Borrowed"]]


def test_ipam_info_assigned(ctl, allocated):
    ip = allocated["a1"]
    out = ok(ctl("ipam", "info", ip))
    lines = out.splitlines()
    assert f"Address:    {ip}" in lines
    assert "Pool:       10.30.0.0/16" in lines
    assert "Handle:     a1" in lines
    assert "Host:       hostA" in lines
    assert "Attribute:  purpose=web" in lines
    assert any(l.startswith("Block:") and "affinity: hostA" in l for l in lines)

    data = json.loads(ok(ctl("ipam", "info", allocated["b1"], "--json")))
    assert data["assigned"] is True
    assert (data["handle"], data["host"], data["block_host"]) == ("b1", "hostB", "hostB")
    assert data["address"] == allocated["b1"]


def test_ipam_info_unassigned(ctl, store, allocated):
    used = set(allocated.values())
    free_ip = next(str(ip) for ip in ipaddress.ip_network("10.30.0.0/16").hosts()
                   if str(ip) not in used)
    out = ok(ctl("ipam", "info", free_ip))
    assert "not assigned" in out and free_ip in out
    assert "Handle" not in out


def test_ipam_info_outside_every_pool(ctl, allocated):
    line = one_line_error(ctl("ipam", "info", "192.0.2.1"))
    assert "192.0.2.1 is not in any pool" in line


def test_ipam_info_not_an_ip(ctl):
    line = one_line_error(ctl("ipam", "info", "banana"))
    assert "not an IP address" in line


def test_ipam_release(ctl, store, allocated):
    ip = allocated["a2"]
    out = ok(ctl("ipam", "release", ip))
    assert out.strip() == f"Released {ip}"
    info = address_info(store, ip)
    assert info.pool == "10.30.0.0/16" and info.allocation is None
    assert Allocator(store, "hostA").addresses("a2") == []
    assert keys_under(store, keys.handle_prefix("a2")) == []
    # the other allocations are untouched
    assert address_info(store, allocated["a1"]).allocation.handle == "a1"

    out = ok(ctl("ipam", "release", ip))
    assert "nothing to release" in out and ip in out


# -- pool remove ---------------------------------------------------------------

def _pool_keys(store, cidr: str) -> list[str]:
    """Every block, affinity and handle key that belongs to pool ``cidr``."""
    net = ipaddress.ip_network(cidr)
    found = []
    for kv in store.get_prefix(keys.BLOCKS):
        block = codec.loads(Block, kv.value)
        if block.pool == cidr or ipaddress.ip_network(block.cidr).subnet_of(net):
            found.append(kv.key)
    for key in keys_under(store, keys.AFFINITY):
        if ipaddress.ip_network(keys.split_affinity_key(key)[1]).subnet_of(net):
            found.append(key)
    for key in keys_under(store, keys.HANDLES):
        if ipaddress.ip_address(keys.split_handle_key(key)[1]) in net:
            found.append(key)
    return found


def test_pool_remove_refuses_with_allocations_then_force(ctl, store, allocated):
    ok(ctl("pool", "add", "10.40.0.0/16"))
    other = Allocator(store, "hostA").assign("o1", pool="10.40.0.0/16").address
    assert len(_pool_keys(store, "10.30.0.0/16")) == 2 + 2 + 4  # blocks, affinities, handles

    line = one_line_error(ctl("pool", "remove", "10.30.0.0/16"))
    assert "--force" in line and "4 allocated addresses" in line
    pool = PoolStore(store).get("10.30.0.0/16")
    assert pool is not None and pool.disabled is False  # left as it was
    assert len(_pool_keys(store, "10.30.0.0/16")) == 8

    out = ok(ctl("pool", "remove", "10.30.0.0/16", "--force"))
    # as Calico did: the pool goes, the addresses containers hold stay allocated (no duplicates later)
    assert "Removed pool 10.30.0.0/16" in out
    assert "4 allocated addresses stay allocated to their containers until released" in out
    assert PoolStore(store).get("10.30.0.0/16") is None
    assert len(_pool_keys(store, "10.30.0.0/16")) == 8
    # the other pool and its allocation are untouched
    assert [p.cidr for p in PoolStore(store).list()] == ["10.40.0.0/16"]
    assert address_info(store, other).allocation.handle == "o1"
    assert len(_pool_keys(store, "10.40.0.0/16")) == 3


def test_pool_remove_unused(ctl, store):
    ok(ctl("pool", "add", "10.50.0.0/16", "fd00:50::/64"))
    out = ok(ctl("pool", "remove", "10.50.0.0/16"))
    assert out.strip() == "Removed pool 10.50.0.0/16"
    assert [p.cidr for p in PoolStore(store).list()] == ["fd00:50::/64"]


def test_pool_remove_missing(ctl):
    line = one_line_error(ctl("pool", "remove", "10.60.0.0/16"))
    assert "10.60.0.0/16 does not exist" in line


def test_pool_remove_small_pool_with_custom_block_size(ctl, store):
    ok(ctl("pool", "add", "10.70.0.0/28", "--block-size", "28"))
    ok(ctl("pool", "remove", "10.70.0.0/28"))
    assert PoolStore(store).list() == []


# -- etcd trouble and --debug -----------------------------------------------

def test_unreachable_etcd():
    endpoint = "http://127.0.0.1:1"
    start = time.monotonic()
    result = warrenctl(endpoint, "pool", "show", timeout=10)
    elapsed = time.monotonic() - start
    assert elapsed < 10
    line = one_line_error(result)
    assert "unreachable" in line
    assert endpoint in line
    assert result.stdout == ""


def test_debug_shows_traceback(ctl):
    result = ctl("--debug", "pool", "add", "10.10.0.1/16")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "InvalidPool" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("warrenctl: error: ")


def test_debug_on_unreachable_etcd_shows_traceback():
    result = warrenctl("http://127.0.0.1:1", "--debug", "pool", "show", timeout=10)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "DatastoreUnavailable" in result.stderr
