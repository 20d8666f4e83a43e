"""datastore.wire and watches: HTTP framing, connection reuse, hung members.

Two kinds of peer, both on 127.0.0.1 only: real etcd (the session's, or a
private one the test may freeze with SIGSTOP), and tiny scripted HTTP servers
(threads of this test) for what etcd does not do on demand: answers split
into single bytes, a connection closed between two requests, a non-etcd
answer.
"""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
from typing import Callable

import pytest

import datastore.watch
from datastore import Datastore, DatastoreError, DatastoreUnavailable, EtcdConfig, Put, keys
from datastore import wire
from datastore.config import parse_endpoint
from tests.support.etcd import datastore_for

K = keys.PREFIX + "wire-test/"


# -- scripted servers ------------------------------------------------------------------

class Scripted:
    """A loopback TCP server; ``serve(conn)`` runs once per accepted connection."""

    def __init__(self, serve: Callable[[socket.socket], None]):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._serve = serve
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request (head + Content-Length body), or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(4096)
    return head


def json_answer(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    for p in parts:
        out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n" + trailer + b"\r\n"


@pytest.fixture
def scripted():
    servers = []

    def make(serve):
        servers.append(Scripted(serve))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def member(endpoint: str, timeout: float = 2.0) -> wire.Member:
    return wire.Member(parse_endpoint(endpoint), None, timeout)


# -- framing ---------------------------------------------------------------------------

def test_chunked_answer_in_single_bytes_with_trailers(scripted):
    answer = chunked(b'{"header":{"revision":', b'"7"}}', trailer=b"Grpc-Trailer-X: y\r\n")

    def serve(conn):
        while read_request(conn):
            for i in range(len(answer)):
                conn.sendall(answer[i:i + 1])

    m = member(scripted(serve).endpoint)
    assert m.post("/v3/kv/range", {}) == {"header": {"revision": "7"}}
    assert m.post("/v3/kv/range", {}) == {"header": {"revision": "7"}}   # framing left nothing behind


@pytest.fixture
def made(monkeypatch) -> list[int]:
    """One entry per wire.Connection dialled while the test runs."""
    dialled: list[int] = []

    class Counting(wire.Connection):
        def __init__(self, *args):
            dialled.append(1)
            super().__init__(*args)
    monkeypatch.setattr(wire, "Connection", Counting)
    return dialled


def test_keep_alive_one_connection_for_many_calls(store, made):
    ds = Datastore(store.config)
    for i in range(30):
        assert ds.txn([], [Put(f"{K}{i}", "x")]).succeeded
        assert ds.get(f"{K}{i}").value == b"x"
    assert len(made) == 1


def test_threads_share_a_bounded_pool(store, made):
    ds = Datastore(store.config)
    errors = []

    def work(n):
        try:
            for i in range(20):
                ds.put(f"{K}t{n}/{i}", "v")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(ds.get_prefix(K)) == 120
    assert 1 <= len(made) <= 6                                   # never more than the callers at once
    assert len(ds._pool()[0]._idle) <= wire.MAX_IDLE


def test_connection_the_member_dropped_between_calls_is_replaced(scripted):
    """The server answers one request per connection and closes only when the second arrives
    (the race an idle check cannot see): the call is retried once on a new connection."""
    def serve(conn):
        read_request(conn)
        conn.sendall(json_answer({"header": {"revision": "5"}}))
        read_request(conn)           # the next request arrives... and the server hangs up

    server = scripted(serve)
    m = member(server.endpoint)
    for _ in range(4):
        assert m.post("/v3/kv/range", {})["header"]["revision"] == "5"
    assert server.accepted == 4


def test_non_etcd_answer_is_unreachable_with_one_line(scripted):
    def serve(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.0 502 Bad Gateway\r\n\r\n<html>proxy\nerror</html>")
    ds = datastore_for(type("S", (), {"endpoint": scripted(serve).endpoint})())
    with pytest.raises(DatastoreUnavailable) as err:
        ds.get("/x")
    assert "HTTP 502: <html>proxy" in str(err.value) and "\n" not in str(err.value)


def test_etcd_error_codes(store):
    refused = []
    store.on_error = refused.append
    with pytest.raises(DatastoreError) as err:       # a lease that does not exist: etcd refuses
        store.txn([], [Put(K + "l", "v", lease=12345)])
    assert not isinstance(err.value, DatastoreUnavailable)
    assert str(err.value) == "etcd refused the request: etcdserver: requested lease not found"
    assert refused == ["refused"]
    assert isinstance(wire.decode_error(503, b'{"error":"etcdserver: no leader","code":14}'), wire.Unreachable)
    assert isinstance(wire.decode_error(404, b'{"error":"x","message":"x","code":5}'), wire.Refused)


# -- streams and watches -----------------------------------------------------------------

def test_stream_read_timeouts_lose_nothing(scripted):
    """A timeout in the middle of a chunk, even of its size line, resumes where it stopped."""
    first = b'{"result":{"created":true}}\n'
    event = b'{"result":{"events":[{"kv":{"key":"L2E=","mod_revision":"3"}}]}}\n'
    go = threading.Event()

    def serve(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        conn.sendall(b"%x" % len(event))                 # a size line without its end
        go.wait(10)
        conn.sendall(b"\r\n" + event[:10])               # part of the data
        go.clear()
        go.wait(10)
        conn.sendall(event[10:] + b"\r\n0\r\n\r\n")

    stream = member(scripted(serve).endpoint).stream("/v3/watch", {})
    try:
        assert stream.next(5) == {"result": {"created": True}}
        assert stream.next(0.2) is None
        go.set()
        while go.is_set():
            time.sleep(0.01)
        assert stream.next(0.2) is None
        go.set()
        assert stream.next(5) == json.loads(event)
        with pytest.raises(wire.Unreachable, match="ended the stream"):
            stream.next(5)
    finally:
        stream.close()


def test_watch_compacted_start_revision(store):
    first = store.put(K + "c", "1")
    store.put(K + "c", "2")
    member = wire.Member(store.config.endpoints[0], None, 5)
    member.post("/v3/kv/compaction", {"revision": str(store.revision())})
    watch = store.watch_prefix(K, start_revision=first)
    with pytest.raises(DatastoreError, match="compacted"):
        list(watch)


def test_watch_on_a_hung_member_ends_and_the_client_moves_on(private_etcd, etcd_server, monkeypatch):
    """SIGSTOP: the watch's connection stays open and silent. After PROBE_AFTER seconds of
    silence the member is probed, the probe times out, the watch ends with
    DatastoreUnavailable, and the next call goes to the other member first."""
    monkeypatch.setattr(datastore.watch, "PROBE_AFTER", 1.0)
    ds = datastore_for(private_etcd, etcd_server, timeout=1.0)
    watch = ds.watch_prefix(K)
    outcome: list[BaseException | None] = []

    def consume():
        try:
            list(watch)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)
    reader = threading.Thread(target=consume, daemon=True)
    private_etcd.proc.send_signal(signal.SIGSTOP)
    try:
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), "the watch on a hung member never ended"
        assert isinstance(outcome[0], DatastoreUnavailable), outcome
        assert private_etcd.endpoint in str(outcome[0]) and "\n" not in str(outcome[0])
        failures = []
        ds.on_error = failures.append
        ds.get(K + "x")                       # answered by the other member, without a timeout first
        assert failures == []
    finally:
        private_etcd.proc.send_signal(signal.SIGCONT)
        watch.cancel()


def test_watch_cancel_from_another_thread_while_reading(store):
    watch = store.watch_prefix(K + "quiet/")
    got = []
    reader = threading.Thread(target=lambda: got.extend(watch), daemon=True)
    reader.start()
    time.sleep(0.3)
    watch.cancel()
    reader.join(10)
    assert not reader.is_alive() and got == []
    watch.cancel()                             # twice: harmless


def test_tls_files_that_do_not_load_are_one_config_error(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    ds = Datastore(EtcdConfig((parse_endpoint("https://127.0.0.1:1"),), ca=str(bad)))
    with pytest.raises(DatastoreError) as err:
        ds.get("/x")
    assert str(err.value).startswith(f"cannot use the etcd TLS files ({bad})")
    assert "\n" not in str(err.value)
