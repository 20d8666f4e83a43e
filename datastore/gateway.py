"""The JSON shapes of etcd's v3 gateway <-> Warren's neutral vocabulary.

etcd's gateway writes protobuf messages as JSON with the proto field names
(``mod_revision``, ``range_end``; ``ID`` and ``TTL`` in leases), keys and
values in base64, 64-bit integers as strings, enum values by name, and
leaves out every field at its zero value (an absent ``value`` is empty, an
absent ``succeeded`` is false, an event without ``type`` is a PUT). These
pure functions are all the client needs; they never touch the network.
"""
from __future__ import annotations

import binascii
from typing import Any

from .ops import KV, Compare, Delete, Get, GetPrefix, ModRevisionIs, Op, Put, UnchangedSince, WatchEvent


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def unb64(text: str | None) -> bytes:
    return binascii.a2b_base64(text) if text else b""


def range_end(prefix: str | bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's prefix range)."""
    end = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # every key
    end[-1] += 1
    return bytes(end)


def key_range(key: str, prefix: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"key": b64(key)}
    if prefix:
        out["range_end"] = b64(range_end(key))
    return out


def kv(data: dict[str, Any]) -> KV:
    """etcd's mvccpb.KeyValue -> KV."""
    return KV(unb64(data.get("key")).decode(), unb64(data.get("value")),
              int(data.get("mod_revision", 0)), int(data.get("create_revision", 0)),
              int(data.get("version", 0)))


def revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


def compare(c: Compare) -> dict[str, Any]:
    if isinstance(c, ModRevisionIs):
        return {"target": "MOD", "result": "EQUAL", "key": b64(c.key), "mod_revision": str(c.revision)}
    if isinstance(c, UnchangedSince):
        return {"target": "MOD", "result": "LESS", **key_range(c.prefix, prefix=True),
                "mod_revision": str(c.revision + 1)}
    raise TypeError(f"unknown comparison {c!r}")


def request_op(o: Op) -> dict[str, Any]:
    if isinstance(o, Put):
        put: dict[str, Any] = {"key": b64(o.key), "value": b64(o.value)}
        if o.lease:
            put["lease"] = str(o.lease)
        return {"request_put": put}
    if isinstance(o, Delete):
        return {"request_delete_range": key_range(o.key)}
    if isinstance(o, Get):
        return {"request_range": key_range(o.key)}
    if isinstance(o, GetPrefix):
        return {"request_range": key_range(o.prefix, prefix=True)}
    raise TypeError(f"unknown operation {o!r}")


def txn_request(compares: list[Compare], success: list[Op], failure: list[Op]) -> dict[str, Any]:
    return {"compare": [compare(c) for c in compares],
            "success": [request_op(o) for o in success],
            "failure": [request_op(o) for o in failure]}


def txn_results(ops: list[Op], responses: list[dict[str, Any]]) -> list:
    """One entry per op of the branch that ran: KV | None, list[KV], or None."""
    results: list = []
    for op, resp in zip(ops, responses):
        if isinstance(op, Get):
            kvs = resp.get("response_range", {}).get("kvs") or []
            results.append(kv(kvs[0]) if kvs else None)
        elif isinstance(op, GetPrefix):
            results.append([kv(k) for k in resp.get("response_range", {}).get("kvs") or []])
        else:
            results.append(None)
    return results


def watch_create(prefix: str, start_revision: int | None) -> dict[str, Any]:
    create = key_range(prefix, prefix=True)
    if start_revision:
        create["start_revision"] = str(start_revision)
    return {"create_request": create}


def watch_events(result: dict[str, Any]) -> list[WatchEvent]:
    events = []
    for ev in result.get("events") or []:
        data = ev.get("kv", {})
        events.append(WatchEvent("delete" if ev.get("type") == "DELETE" else "put",
                                 unb64(data.get("key")).decode(), unb64(data.get("value")),
                                 int(data.get("mod_revision", 0))))
    return events
