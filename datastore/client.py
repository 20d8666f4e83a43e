"""The one etcd client of Warren.

Design:

* **HTTP/JSON, not gRPC.** etcd's v3 gateway (:mod:`datastore.wire` for the
  connections, :mod:`datastore.gateway` for the JSON shapes) gives the same
  operations, transactions, leases and watches without grpcio and protobuf
  in every process (the node's memory, see bench/memory.py).
* **Connections per process, made lazily.** Each member has a small pool of
  keep-alive connections, created on first use and dropped when the process
  id changes (a forked child never shares its parent's sockets). The hot
  path (one IPAM transaction) is one HTTP round trip.
* **Failover.** The configured members are tried in order; a connection
  failure or timeout moves to the next member and retries the call there.
  Only when every member failed does the caller see
  :class:`~datastore.errors.DatastoreUnavailable`, naming each endpoint and
  what went wrong. Every call carries the configured timeout, so nothing
  hangs. (A timed-out write may still have been applied; every write Warren
  makes is a compare-and-swap, so a retry cannot apply it twice.)
* **Neutral operations.** Callers speak :mod:`datastore.ops`; the wire's
  JSON never leaves this package.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Callable, Iterable, TypeVar

from . import gateway
from .config import EtcdConfig
from .errors import DatastoreError, DatastoreUnavailable
from .ops import KV, Compare, Delete, Get, ModRevisionIs, Op, Put, Range, TxnResult
from .watch import Watch
from .wire import Member, Refused, Unreachable, decode_error, tls_context

log = logging.getLogger(__name__)

T = TypeVar("T")

# etcd refuses transactions with more operations than this (--max-txn-ops).
MAX_TXN_OPS = 128


class Datastore:
    """Key/value access to etcd with CAS helpers, failover and timeouts."""

    def __init__(self, config: EtcdConfig):
        self.config = config
        self._lock = threading.Lock()
        self._members: list[Member] | None = None
        self._pid: int | None = None
        self._context = None
        self._index = 0
        self.on_error: Callable[[str], None] | None = None  # "unavailable" | "refused" (metrics)

    # -- connection --------------------------------------------------------

    def _pool(self) -> list[Member]:
        members, pid = self._members, os.getpid()
        if members is not None and self._pid == pid:
            return members
        with self._lock:
            if self._members is None or self._pid != pid:
                if self._context is None:
                    self._context = tls_context(self.config)  # ConfigError: one line
                self._members = [Member(e, self._context, self.config.timeout)
                                 for e in self.config.endpoints]
                self._pid = pid
            return self._members

    def _fail_over(self, index: int) -> None:
        members = self._pool()
        members[index].drop_idle()
        with self._lock:
            if self._index == index:
                self._index = (index + 1) % len(members)

    def _call(self, fn: Callable[[Member], T]) -> T:
        members = self._pool()
        reasons = []
        start = self._index
        for attempt in range(len(members)):
            index = (start + attempt) % len(members)
            member = members[index]
            try:
                return fn(member)
            except Refused as exc:
                self._count("refused")
                raise DatastoreError(f"etcd refused the request: {exc.reason}") from None
            except Unreachable as exc:
                self._count("unavailable")
                reasons.append(f"{member.url}: {exc.reason}")
                log.warning("etcd member %s failed: %s", member.url, exc.reason)
                self._fail_over(index)
        raise DatastoreUnavailable(self.config.urls, reasons)

    def _count(self, kind: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(kind)
            except Exception:  # pragma: no cover - metrics must never break a call
                log.debug("on_error hook failed", exc_info=True)

    def _post(self, path: str, payload: dict, streamed: bool = False) -> dict:
        return self._call(lambda m: m.post(path, payload, streamed))

    def close(self) -> None:
        with self._lock:
            members, self._members = self._members, None
            mine = self._pid == os.getpid()
        if members and mine:
            for member in members:
                member.drop_idle()

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> KV | None:
        kvs = self._post("/v3/kv/range", gateway.key_range(key)).get("kvs")
        return gateway.kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, keys_only: bool = False) -> Range:
        request = gateway.key_range(prefix, prefix=True)
        if keys_only:
            request["keys_only"] = True
        answer = self._post("/v3/kv/range", request)
        return Range([gateway.kv(kv) for kv in answer.get("kvs") or []], gateway.revision(answer))

    def get_many(self, keys: Iterable[str]) -> dict[str, KV]:
        """Read several keys at one revision per chunk; absent keys are left out."""
        keys = list(keys)
        found: dict[str, KV] = {}
        for i in range(0, len(keys), MAX_TXN_OPS):
            chunk = keys[i:i + MAX_TXN_OPS]
            result = self.txn([], [Get(k) for k in chunk])
            for kv in result.results:
                if kv is not None:
                    found[kv.key] = kv
        return found

    def revision(self) -> int:
        """The store's current revision (also a cheap health check)."""
        return gateway.revision(self._post("/v3/kv/range", gateway.key_range("/")))

    # -- writes --------------------------------------------------------------

    def put(self, key: str, value: bytes | str) -> int:
        return gateway.revision(self._post("/v3/kv/put", {"key": gateway.b64(key),
                                                         "value": gateway.b64(value)}))

    def create(self, key: str, value: bytes | str) -> bool:
        """Create ``key`` only if it does not exist. True if created."""
        return self.txn([ModRevisionIs(key, 0)], [Put(key, value)]).succeeded

    def cas(self, key: str, value: bytes | str, mod_revision: int) -> bool:
        """Write ``key`` only if it is still at ``mod_revision`` (0: absent)."""
        return self.txn([ModRevisionIs(key, mod_revision)], [Put(key, value)]).succeeded

    def delete(self, key: str) -> bool:
        return int(self._post("/v3/kv/deleterange", gateway.key_range(key)).get("deleted", 0)) > 0

    def delete_if_unchanged(self, key: str, mod_revision: int) -> bool:
        return self.txn([ModRevisionIs(key, mod_revision)], [Delete(key)]).succeeded

    def delete_prefix(self, prefix: str) -> int:
        answer = self._post("/v3/kv/deleterange", gateway.key_range(prefix, prefix=True))
        return int(answer.get("deleted", 0))

    def txn(self, compare: list[Compare], success: list[Op],
            failure: list[Op] | None = None) -> TxnResult:
        """One atomic etcd transaction in the neutral vocabulary."""
        failure = failure or []
        for branch in (compare, success, failure):
            if len(branch) > MAX_TXN_OPS:
                raise DatastoreError(
                    f"transaction too large ({len(branch)} > {MAX_TXN_OPS} operations)")
        answer = self._post("/v3/kv/txn", gateway.txn_request(compare, success, failure))
        succeeded = bool(answer.get("succeeded", False))
        results = gateway.txn_results(success if succeeded else failure, answer.get("responses") or [])
        return TxnResult(succeeded, results, gateway.revision(answer))

    # -- leases --------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; keys put with it vanish when it expires."""
        return int(self._post("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease; returns its remaining TTL in seconds (0: it has expired)."""
        answer = self._post("/v3/lease/keepalive", {"ID": str(lease_id)}, streamed=True)
        return max(int(answer.get("TTL", 0)), 0)

    def revoke_lease(self, lease_id: int) -> None:
        """End a lease now, deleting its keys (an unknown lease is not an error)."""
        try:
            self._post("/v3/lease/revoke", {"ID": str(lease_id)})
        except DatastoreError as exc:
            if "not found" not in str(exc):
                raise

    # -- watches -------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> Watch:
        """Watch every change under ``prefix`` (after ``start_revision - 1`` if given).

        Iterate the returned :class:`Watch` for :class:`WatchEvent` records;
        call ``cancel()`` to stop. Each watch is its own HTTP stream (no
        background thread); it is established when this returns. If the
        member goes away or hangs, or the start revision was compacted,
        iteration raises DatastoreUnavailable / DatastoreError: re-read the
        prefix and watch again from the revision of that read + 1.
        """
        request = gateway.watch_create(prefix, start_revision)

        def do(member: Member) -> Watch:
            stream = member.stream("/v3/watch", request)
            try:
                first = stream.next(self.config.timeout)
                if first is None:
                    raise Unreachable(f"no answer within {self.config.timeout:g} s")
                if "error" in first:
                    raise decode_error(200, json.dumps(first).encode())
                if not (first.get("result") or {}).get("created"):
                    raise Refused(f"the watch was not created: {str(first)[:200]}")
            except BaseException:
                stream.close()
                raise
            index = self._pool().index(member)
            return Watch(stream, member, self.config.urls, lambda: self._fail_over(index))
        return self._call(do)
