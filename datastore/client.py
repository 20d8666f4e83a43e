"""The one etcd client of Warren.

Design:

* **One connection per process, made lazily.** A gRPC channel does not
  survive ``fork()``, so the channel is created on first use and re-created
  when the process id changes (gunicorn workers, multiprocessing).
* **Failover.** The configured members are tried in order; a connection
  failure or timeout moves to the next member and retries the call there.
  Only when every member failed does the caller see
  :class:`~datastore.errors.DatastoreUnavailable`, naming each endpoint and
  what went wrong. Every call carries the configured timeout, so nothing
  hangs. (A timed-out write may still have been applied; every write Warren
  makes is a compare-and-swap, so a retry cannot apply it twice.)
* **Neutral operations.** Callers speak :mod:`datastore.ops`; etcd3 types
  never leave this module.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

# gRPC's C core would print every failed TLS handshake to stderr: errors reach users as one line
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import etcd3  # noqa: E402  (after GRPC_VERBOSITY)
import etcd3.exceptions  # noqa: E402
import etcd3.transactions as etx
import etcd3.utils
import grpc
from etcd3 import etcdrpc

from .config import EtcdConfig
from .errors import DatastoreError, DatastoreUnavailable
from .ops import (KV, Compare, Delete, Get, GetPrefix, ModRevisionIs, Op, Put,
                  Range, TxnResult, UnchangedSince, WatchEvent)

log = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP/2 keepalive: a watch on a member that hangs (SIGSTOP, a dead link) ends within ~15 s
# instead of never, so its reader resyncs from another member.
KEEPALIVE = [("grpc.keepalive_time_ms", 10000), ("grpc.keepalive_timeout_ms", 5000),
             ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
             ("grpc.http2.ping_timeout_ms", 5000)]

# etcd refuses transactions with more operations than this (--max-txn-ops).
MAX_TXN_OPS = 128

_UNAVAILABLE = (etcd3.exceptions.ConnectionFailedError,
                etcd3.exceptions.ConnectionTimeoutError)
_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _reason(exc: BaseException) -> str:
    """A one-line reason from an etcd3/gRPC exception (gRPC detail if any)."""
    for candidate in (exc, exc.__context__, exc.__cause__):
        if isinstance(candidate, grpc.RpcError):
            try:
                detail = candidate.details() or str(candidate.code())
            except Exception:  # pragma: no cover - defensive
                detail = str(candidate)
            return detail.splitlines()[0] if detail else "no detail"
    return str(exc) or exc.__class__.__name__


def _range_end(prefix: str) -> bytes:
    return etcd3.utils.increment_last_byte(etcd3.utils.to_bytes(prefix))


def _kv(kv) -> KV:
    """etcd's mvccpb.KeyValue -> KV."""
    return KV(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.version)


class Datastore:
    """Key/value access to etcd with CAS helpers, failover and timeouts."""

    def __init__(self, config: EtcdConfig):
        self.config = config
        self._lock = threading.Lock()
        self._client: etcd3.Etcd3Client | None = None
        self._pid: int | None = None
        self._index = 0
        self.on_error: Callable[[str], None] | None = None  # "unavailable" | "refused" (metrics)

    # -- connection --------------------------------------------------------

    def _connect(self) -> etcd3.Etcd3Client:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                return self._client
            endpoint = self.config.endpoints[self._index]
            kwargs = {}
            if self.config.tls:
                kwargs = dict(ca_cert=self.config.ca, cert_key=self.config.key,
                              cert_cert=self.config.cert)
            host = endpoint.host if ":" not in endpoint.host else f"[{endpoint.host}]"
            self._client = etcd3.Etcd3Client(host=host, port=endpoint.port,
                                             timeout=self.config.timeout, grpc_options=KEEPALIVE,
                                             **kwargs)
            self._pid = os.getpid()
            return self._client

    def _fail_over(self, client: etcd3.Etcd3Client) -> None:
        with self._lock:
            if self._client is client:
                if self._pid == os.getpid():
                    try:
                        client.close()
                    except Exception:  # pragma: no cover - best effort
                        pass
                self._client = None
                self._index = (self._index + 1) % len(self.config.endpoints)

    def _call(self, fn: Callable[[etcd3.Etcd3Client], T]) -> T:
        reasons = []
        start = self._index
        urls = self.config.urls
        for attempt in range(len(urls)):
            url = urls[(start + attempt) % len(urls)]
            client = self._connect()
            try:
                return fn(client)
            except (*_UNAVAILABLE, grpc.RpcError) as exc:
                if isinstance(exc, grpc.RpcError) and exc.code() not in _UNAVAILABLE_CODES:
                    self._count("refused")
                    raise DatastoreError(f"etcd refused the request: {_reason(exc)}") from None
                self._count("unavailable")
                reasons.append(f"{url}: {_reason(exc)}")
                log.warning("etcd member %s failed: %s", url, _reason(exc))
                self._fail_over(client)
            except etcd3.exceptions.Etcd3Exception as exc:
                self._count("refused")
                raise DatastoreError(f"etcd refused the request: {_reason(exc)}") from None
            except ValueError as exc:  # e.g. unreadable TLS material
                raise DatastoreError(f"cannot talk to etcd: {exc}") from None
        raise DatastoreUnavailable(urls, reasons)

    def _count(self, kind: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(kind)
            except Exception:  # pragma: no cover - metrics must never break a call
                log.debug("on_error hook failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> KV | None:
        def do(c):
            resp = c.get_response(key)
            return _kv(resp.kvs[0]) if resp.kvs else None
        return self._call(do)

    def get_prefix(self, prefix: str, keys_only: bool = False) -> Range:
        def do(c):
            resp = c.get_prefix_response(prefix, keys_only=keys_only)
            return Range([_kv(kv) for kv in resp.kvs], resp.header.revision)
        return self._call(do)

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
        return self._call(lambda c: c.get_response("/").header.revision)

    # -- writes --------------------------------------------------------------

    def put(self, key: str, value: bytes | str) -> int:
        return self._call(lambda c: c.put(key, value).header.revision)

    def create(self, key: str, value: bytes | str) -> bool:
        """Create ``key`` only if it does not exist. True if created."""
        return self.txn([ModRevisionIs(key, 0)], [Put(key, value)]).succeeded

    def cas(self, key: str, value: bytes | str, mod_revision: int) -> bool:
        """Write ``key`` only if it is still at ``mod_revision`` (0: absent)."""
        return self.txn([ModRevisionIs(key, mod_revision)], [Put(key, value)]).succeeded

    def delete(self, key: str) -> bool:
        return self._call(lambda c: c.delete(key))

    def delete_if_unchanged(self, key: str, mod_revision: int) -> bool:
        return self.txn([ModRevisionIs(key, mod_revision)], [Delete(key)]).succeeded

    def delete_prefix(self, prefix: str) -> int:
        return self._call(lambda c: c.delete_prefix(prefix).deleted)

    def txn(self, compare: list[Compare], success: list[Op],
            failure: list[Op] | None = None) -> TxnResult:
        """One atomic etcd transaction in the neutral vocabulary."""
        failure = failure or []
        for branch in (compare, success, failure):
            if len(branch) > MAX_TXN_OPS:
                raise DatastoreError(
                    f"transaction too large ({len(branch)} > {MAX_TXN_OPS} operations)")
        e_compare = [self._compare(c) for c in compare]
        e_success = [self._op(o) for o in success]
        e_failure = [self._op(o) for o in failure]

        def do(c):
            request = etcdrpc.TxnRequest(compare=[m.build_message() for m in e_compare],
                                         success=c._ops_to_requests(e_success),
                                         failure=c._ops_to_requests(e_failure))
            return c.kvstub.Txn(request, c.timeout, credentials=c.call_credentials,
                                metadata=c.metadata)
        response = self._call(do)
        ops = success if response.succeeded else failure
        results = []
        for op, resp in zip(ops, response.responses):
            if isinstance(op, Get):
                kvs = resp.response_range.kvs
                results.append(_kv(kvs[0]) if kvs else None)
            elif isinstance(op, GetPrefix):
                results.append([_kv(kv) for kv in resp.response_range.kvs])
            else:
                results.append(None)
        return TxnResult(response.succeeded, results, response.header.revision)

    @staticmethod
    def _compare(c: Compare):
        if isinstance(c, ModRevisionIs):
            return etx.Mod(c.key) == c.revision
        if isinstance(c, UnchangedSince):
            return etx.Mod(c.prefix, _range_end(c.prefix)) < c.revision + 1
        raise TypeError(f"unknown comparison {c!r}")

    @staticmethod
    def _op(o: Op):
        if isinstance(o, Put):
            return etx.Put(o.key, o.value, lease=o.lease)
        if isinstance(o, Delete):
            return etx.Delete(o.key)
        if isinstance(o, Get):
            return etx.Get(o.key)
        if isinstance(o, GetPrefix):
            return etx.Get(o.prefix, _range_end(o.prefix))
        raise TypeError(f"unknown operation {o!r}")

    # -- leases --------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; keys put with it vanish when it expires."""
        return self._call(lambda c: c.lease(ttl).id)

    def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease; returns its remaining TTL in seconds (0: it has expired)."""
        def do(c):
            for response in c.refresh_lease(lease_id):
                return int(response.TTL)
            return 0
        return self._call(do)

    def revoke_lease(self, lease_id: int) -> None:
        """End a lease now, deleting its keys (an unknown lease is not an error)."""
        try:
            self._call(lambda c: c.revoke_lease(lease_id))
        except DatastoreError as exc:
            if "not found" not in str(exc):
                raise

    # -- watches -------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> "Watch":
        """Watch every change under ``prefix`` (after ``start_revision - 1`` if given).

        Iterate the returned :class:`Watch` for :class:`WatchEvent` records;
        call ``cancel()`` to stop. Each watch is its own gRPC stream (no
        background thread). If the member goes away, or the start revision was
        compacted, iteration raises DatastoreUnavailable / DatastoreError:
        re-read the prefix and watch again from the revision of that read + 1.
        """
        create = etcdrpc.WatchCreateRequest(key=prefix.encode(),
                                            range_end=_range_end(prefix),
                                            start_revision=start_revision or 0)
        requests: queue.Queue = queue.Queue()
        requests.put(etcdrpc.WatchRequest(create_request=create))

        def request_iter():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        def do(c):
            stub = etcdrpc.WatchStub(c.channel)
            return stub.Watch(request_iter(), credentials=c.call_credentials,
                              metadata=c.metadata)
        stream = self._call(do)
        return Watch(stream, requests, self.config.urls)


class Watch:
    """An iterator of :class:`WatchEvent` over one etcd watch stream."""

    def __init__(self, stream, requests: queue.Queue, urls: list[str]):
        self._stream = stream
        self._requests = requests
        self._urls = urls
        self._cancelled = False

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            for response in self._stream:
                if response.compact_revision:
                    raise DatastoreError(
                        f"watch start revision was compacted (now {response.compact_revision}); resync")
                if response.canceled:
                    return
                for ev in response.events:
                    kind = "delete" if ev.type == ev.DELETE else "put"
                    yield WatchEvent(kind, ev.kv.key.decode(), ev.kv.value,
                                     ev.kv.mod_revision)
        except grpc.RpcError as exc:
            if self._cancelled:
                return
            raise DatastoreUnavailable(self._urls, [_reason(exc)]) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._requests.put(None)
        self._stream.cancel()

    def until(self, stop: threading.Event) -> "Watch":
        """Cancel this watch when ``stop`` is set (or when the watch ends): one
        short-lived helper thread per watch, never an idle one left behind."""
        def wait() -> None:
            while not stop.wait(0.5):
                if self._stream.done():
                    return
            self.cancel()
        threading.Thread(target=wait, name="watch-stop", daemon=True).start()
        return self
