"""The datastore against a real etcd: CAS semantics, guards, watches, failover, outages."""
from __future__ import annotations

import threading
import time

import pytest

from datastore import (Datastore, DatastoreError, DatastoreUnavailable, Get,
                       GetPrefix, ModRevisionIs, Put, UnchangedSince)
from datastore.localetcd import free_port
from tests.support.etcd import datastore_for

K = "/warren/v1/test/"


def test_create_if_absent(store):
    assert store.create(K + "a", "1")
    assert not store.create(K + "a", "2")
    assert store.get(K + "a").value == b"1"


def test_cas_on_mod_revision(store):
    store.put(K + "a", "1")
    kv = store.get(K + "a")
    assert store.cas(K + "a", "2", kv.mod_revision)
    assert not store.cas(K + "a", "3", kv.mod_revision)  # stale revision loses
    assert store.get(K + "a").value == b"2"
    assert store.cas(K + "new", "x", 0)  # 0 means "must be absent"
    assert not store.cas(K + "new", "y", 0)


def test_delete_if_unchanged(store):
    store.put(K + "a", "1")
    kv = store.get(K + "a")
    store.put(K + "a", "2")
    assert not store.delete_if_unchanged(K + "a", kv.mod_revision)
    assert store.get(K + "a") is not None
    assert store.delete_if_unchanged(K + "a", store.get(K + "a").mod_revision)
    assert store.get(K + "a") is None


def test_failed_txn_returns_current_values(store):
    store.put(K + "a", "1")
    store.put(K + "b/1", "x")
    result = store.txn([ModRevisionIs(K + "a", 1)], [Put(K + "a", "no")],
                       [Get(K + "a"), Get(K + "missing"), GetPrefix(K + "b/")])
    assert not result.succeeded
    a, missing, prefix = result.results
    assert a.value == b"1" and missing is None
    assert [kv.key for kv in prefix] == [K + "b/1"]


def test_txn_revision_is_the_new_mod_revision(store):
    result = store.txn([], [Put(K + "a", "1")])
    assert store.get(K + "a").mod_revision == result.revision


def test_unchanged_since_guards_a_prefix(store):
    store.put(K + "p/1", "x")
    seen = store.get_prefix(K + "p/")
    assert store.txn([UnchangedSince(K + "p/", seen.revision)], [Put(K + "other", "1")]).succeeded
    store.put(K + "p/2", "y")  # a concurrent writer adds a key under the prefix
    assert not store.txn([UnchangedSince(K + "p/", seen.revision)], [Put(K + "other", "2")]).succeeded


def test_get_many_reads_in_chunks(store):
    for i in range(300):
        store.put(f"{K}m/{i}", str(i))
    found = store.get_many([f"{K}m/{i}" for i in range(305)])
    assert len(found) == 300
    assert found[f"{K}m/299"].value == b"299"


def test_too_large_txn_is_refused_clearly(store):
    with pytest.raises(DatastoreError, match="too large"):
        store.txn([], [Put(f"{K}{i}", "") for i in range(129)])


def test_watch_prefix_from_revision(store):
    rev = store.put(K + "w/a", "1")
    watch = store.watch_prefix(K + "w/", start_revision=rev)
    store.put(K + "w/b", "2")
    store.delete(K + "w/a")
    store.put(K + "elsewhere", "x")
    events = []
    for ev in watch:
        events.append((ev.kind, ev.key, ev.value))
        if len(events) == 3:
            break
    watch.cancel()
    assert events == [("put", K + "w/a", b"1"), ("put", K + "w/b", b"2"), ("delete", K + "w/a", b"")]


def test_watch_cancel_ends_iteration(store):
    watch = store.watch_prefix(K + "quiet/")
    threading.Timer(0.2, watch.cancel).start()
    assert list(watch) == []


def test_unreachable_etcd_fails_fast_with_one_clear_error():
    port = free_port()
    ds = datastore_for(type("S", (), {"endpoint": f"http://127.0.0.1:{port}"})(), timeout=2.0)
    start = time.monotonic()
    with pytest.raises(DatastoreUnavailable) as err:
        ds.get("/x")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message
    assert "Traceback" not in message and "\n" not in message


def test_failover_to_next_member(private_etcd):
    dead = type("S", (), {"endpoint": f"http://127.0.0.1:{free_port()}"})()
    ds = datastore_for(dead, private_etcd)
    ds.put(K + "f", "1")
    assert ds.get(K + "f").value == b"1"


def test_watch_raises_when_etcd_dies(private_etcd):
    ds = datastore_for(private_etcd)
    watch = ds.watch_prefix(K)
    threading.Timer(0.3, private_etcd.kill).start()
    with pytest.raises(DatastoreUnavailable):
        for _ in watch:
            pass


def test_client_recovers_after_etcd_restart(private_etcd):
    ds = datastore_for(private_etcd)
    ds.put(K + "r", "1")
    private_etcd.stop()
    with pytest.raises(DatastoreUnavailable):
        ds.get(K + "r")
    private_etcd.start()
    assert ds.get(K + "r").value == b"1"


def test_client_survives_fork(store):
    import multiprocessing
    store.put(K + "fork", "parent")
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(store.get(K + "fork").value))
    p.start()
    p.join(20)
    assert p.exitcode == 0
    assert q.get(timeout=5) == b"parent"


def test_watch_until_stop_and_no_helper_left_behind(store, private_etcd):
    stop = threading.Event()
    watch = store.watch_prefix(K + "until/").until(stop)
    threading.Timer(0.2, stop.set).start()
    assert list(watch) == []                      # stop ended the iteration
    ds = datastore_for(private_etcd)
    ended = ds.watch_prefix(K).until(threading.Event())
    private_etcd.kill()
    with pytest.raises(DatastoreUnavailable):
        list(ended)
    time.sleep(1.2)                               # the helper notices the ended stream
    assert not [t for t in threading.enumerate() if t.name == "watch-stop"]


def test_lease_grant_keep_alive_revoke(store):
    lease = store.grant_lease(30)
    assert store.txn([], [Put(K + "leased", "1", lease=lease)]).succeeded
    assert 0 < store.keep_alive(lease) <= 30
    store.revoke_lease(lease)
    assert store.get(K + "leased") is None        # its key went with it
    assert store.keep_alive(lease) == 0           # expired/unknown: 0, not an error
    store.revoke_lease(lease)                     # unknown lease: not an error either
