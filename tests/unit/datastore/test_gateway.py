"""datastore.gateway: the JSON shapes of etcd's v3 gateway, both ways (pure functions)."""
from __future__ import annotations

import base64

import pytest

from datastore import gateway
from datastore.ops import KV, Delete, Get, GetPrefix, ModRevisionIs, Put, UnchangedSince, WatchEvent


def b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("prefix, end", [
    ("/warren/v1/blocks/", b"/warren/v1/blocks0"),   # '/' + 1 = '0'
    ("a", b"b"),
    (b"a\xff", b"b"),                                 # a trailing 0xff carries over
    (b"\xff\xff", b"\0"),                             # nothing after: every key from there on
    ("", b"\0"),
])
def test_range_end(prefix, end):
    assert gateway.range_end(prefix) == end


def test_compare_encodings():
    assert gateway.compare(ModRevisionIs("/k", 0)) == {
        "target": "MOD", "result": "EQUAL", "key": b("/k"), "mod_revision": "0"}   # 0 is sent: absent key
    assert gateway.compare(UnchangedSince("/p/", 41)) == {
        "target": "MOD", "result": "LESS", "key": b("/p/"), "range_end": b("/p0"), "mod_revision": "42"}
    with pytest.raises(TypeError):
        gateway.compare("nonsense")  # type: ignore[arg-type]


def test_op_encodings():
    assert gateway.request_op(Put("/k", "v")) == {"request_put": {"key": b("/k"), "value": b("v")}}
    assert gateway.request_op(Put("/k", b"\x00\xff", lease=7)) == {
        "request_put": {"key": b("/k"), "value": base64.b64encode(b"\x00\xff").decode(), "lease": "7"}}
    assert gateway.request_op(Delete("/k")) == {"request_delete_range": {"key": b("/k")}}
    assert gateway.request_op(Get("/k")) == {"request_range": {"key": b("/k")}}
    assert gateway.request_op(GetPrefix("/p/")) == {"request_range": {"key": b("/p/"), "range_end": b("/p0")}}
    with pytest.raises(TypeError):
        gateway.request_op(object())  # type: ignore[arg-type]


def test_kv_with_fields_left_out_at_zero():
    full = {"key": b("/a"), "value": b("1"), "create_revision": "2", "mod_revision": "5", "version": "3"}
    assert gateway.kv(full) == KV("/a", b"1", 5, 2, 3)
    assert gateway.kv({"key": b("/a"), "mod_revision": "9"}) == KV("/a", b"", 9, 0, 0)  # empty value


def test_txn_results_per_op_kind():
    kv_a = {"key": b("/a"), "value": b("1"), "mod_revision": "2"}
    ops = [Get("/a"), Get("/missing"), GetPrefix("/p/"), Put("/x", "y"), GetPrefix("/none/")]
    responses = [{"response_range": {"header": {"revision": "2"}, "kvs": [kv_a], "count": "1"}},
                 {"response_range": {"header": {"revision": "2"}}},
                 {"response_range": {"kvs": [kv_a, kv_a]}},
                 {"response_put": {"header": {"revision": "3"}}},
                 {"response_range": {}}]
    a = KV("/a", b"1", 2)
    assert gateway.txn_results(ops, responses) == [a, None, [a, a], None, []]


def test_watch_create_and_events():
    assert gateway.watch_create("/p/", None) == {"create_request": {"key": b("/p/"), "range_end": b("/p0")}}
    assert gateway.watch_create("/p/", 12)["create_request"]["start_revision"] == "12"
    result = {"events": [{"kv": {"key": b("/p/a"), "value": b("1"), "mod_revision": "4"}},
                         {"type": "DELETE", "kv": {"key": b("/p/a"), "mod_revision": "5"}}]}
    assert gateway.watch_events(result) == [WatchEvent("put", "/p/a", b"1", 4),
                                            WatchEvent("delete", "/p/a", b"", 5)]
    assert gateway.watch_events({"created": True}) == []


def test_revision_of_an_answer():
    assert gateway.revision({"header": {"revision": "77", "raft_term": "2"}}) == 77
    assert gateway.revision({}) == 0
