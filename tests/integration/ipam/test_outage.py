"""etcd stopped in the middle: clear errors, nothing half-written when it comes back."""
from __future__ import annotations

import threading
import time

import pytest

from datastore import DatastoreUnavailable
from ipam import Allocator, PoolStore, make_pool
from tests.support.etcd import datastore_for

from .helpers import check_consistency

POOL = "10.70.0.0/22"


def test_allocations_across_an_etcd_crash(private_etcd):
    store = datastore_for(private_etcd, timeout=1.0)
    PoolStore(store).add([make_pool(POOL, block_size=28)])
    allocator = Allocator(store, "host1")
    succeeded: dict[str, str] = {}
    failed: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            handle = f"ep{i}"
            i += 1
            try:
                succeeded[allocator.assign(handle, pool=POOL).address] = handle
            except DatastoreUnavailable as exc:
                failed.append(handle)
                errors.append(str(exc))
                time.sleep(0.01)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        time.sleep(0.5)
        private_etcd.kill()          # SIGKILL mid-stream: no graceful shutdown
        time.sleep(0.5)
        private_etcd.start()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
    assert failed, "some allocations must have failed while etcd was down"
    assert all("unreachable" in e and private_etcd.endpoint in e for e in errors)
    held = check_consistency(store)
    for address, handle in succeeded.items():
        assert held.get(address) == handle
    # A transaction that committed just before the crash may have lost its reply: the
    # handle then holds its address, and releasing the handle (what callers do on error)
    # cleans it up. Nothing else may exist.
    ambiguous = {a: h for a, h in held.items() if a not in succeeded}
    assert set(ambiguous.values()) <= set(failed)
    assert len(ambiguous) <= 1
    for handle in set(ambiguous.values()):
        allocator.release_handle(handle)
    assert check_consistency(store) == succeeded


def test_operations_fail_clearly_while_etcd_is_down(private_etcd):
    store = datastore_for(private_etcd, timeout=1.0)
    PoolStore(store).add([make_pool(POOL)])
    allocator = Allocator(store, "host1")
    allocator.assign("warm", pool=POOL)
    private_etcd.stop()
    for call in (lambda: allocator.assign("x", pool=POOL),
                 lambda: allocator.release_handle("warm"),
                 lambda: PoolStore(store).list()):
        start = time.monotonic()
        with pytest.raises(DatastoreUnavailable, match="unreachable"):
            call()
        assert time.monotonic() - start < 5
    private_etcd.start()
    assert allocator.assign("x", pool=POOL).address
    assert sorted(check_consistency(store).values()) == ["warm", "x"]
