"""ipam check: leaks after a grace period, index drift, and repair."""
from __future__ import annotations

import time

from datastore import keys
from ipam import Allocator, PoolStore, make_pool
from ipam.check import check, repair

from .helpers import check_consistency


def test_leaks_and_index_drift_are_found_and_repaired(store):
    PoolStore(store).add([make_pool("10.20.10.0/24")])
    a = Allocator(store, "host1")
    old = str(int(time.time()) - 3600)
    live = a.assign("ep-live", pool="10.20.10.0/24", attrs={"purpose": "docker", "since": old}).address
    leaked = a.assign("ep-gone", pool="10.20.10.0/24", attrs={"purpose": "docker", "since": old}).address
    young = a.assign("ep-new", pool="10.20.10.0/24",
                     attrs={"purpose": "docker", "since": str(int(time.time()))}).address
    other = a.assign("tunnel", pool="10.20.10.0/24", attrs={"purpose": "tunnel", "since": old}).address
    store.put(keys.handle("ghost", "10.20.10.250"), b'{"block":"x"}')        # stale index
    store.delete(keys.handle("ep-live", live))                                 # missing index

    findings = check(store, live={live}, purpose="docker", grace=60)
    kinds = {(f.kind, f.address) for f in findings}
    assert kinds == {("leaked", leaked), ("stale-index", "10.20.10.250"), ("missing-index", live)}
    assert young not in {f.address for f in findings} and other not in {f.address for f in findings}

    assert repair(store, "host1", findings) == 3
    assert check(store, live={live}, purpose="docker", grace=60) == []
    assert check_consistency(store) == {live: "ep-live", young: "ep-new", other: "tunnel"}


def test_several_purposes_and_a_bad_block_record(store):
    PoolStore(store).add([make_pool("10.20.10.0/24")])
    a = Allocator(store, "host1")
    old = str(int(time.time()) - 3600)
    docker = a.assign("ep-gone", pool="10.20.10.0/24", attrs={"purpose": "docker", "since": old}).address
    record = a.assign("endpoint-x", pool="10.20.10.0/24", attrs={"purpose": "record", "since": old}).address
    store.put(keys.block("10.20.99.0/26"), b'{"cidr": 7}')          # garbage: skipped, not fatal
    found = {(f.kind, f.address) for f in check(store, live=set(), purpose=("docker", "record"))}
    assert found == {("leaked", docker), ("leaked", record)}
    assert {f.address for f in check(store, live=set(), purpose="docker")} == {docker}
