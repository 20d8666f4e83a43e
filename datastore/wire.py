"""The wire to etcd: HTTP/1.1 + JSON to etcd's v3 gateway, on plain sockets.

etcd (3.4) serves its v3 API as JSON on the client port too (the "gRPC
gateway": ``POST /v3/kv/range`` etc., keys and values base64, 64-bit integers
as strings, streaming answers as one JSON object per line). Speaking that
instead of gRPC keeps grpcio, protobuf and the etcd3 package (~26 MiB per
process) out of every Warren process.

Design:

* **Plain sockets, our own HTTP/1.1 framing** (request line, headers,
  Content-Length or chunked answers). ``http.client`` would pull in ``ssl``
  and ``email`` (~5 MiB) and cannot resume a read after a timeout; here a
  timeout never loses a byte, so a watch can wait with a short timeout,
  probe its member and go on reading. ``ssl`` is imported only for
  ``https://`` endpoints.
* **One pool per member.** :class:`Member` keeps a few idle keep-alive
  connections behind a lock; a call takes one (or dials), uses it for one
  request/answer and puts it back, so the hot path is one round trip. An idle
  connection the member closed is noticed before use (readable while idle) or
  on the first byte (it is then retried once on a fresh connection). Streams
  (watches) get a connection of their own.
* **Two kinds of failure.** :class:`Unreachable`: the member did not answer
  in time, refused the connection, broke it, failed the TLS handshake, or
  said it is unavailable (gRPC codes UNAVAILABLE, DEADLINE_EXCEEDED) - the
  caller may try another member. :class:`Refused`: etcd answered with an
  error. Both carry a one-line ``reason``.
* Every call has a deadline (the configured timeout) covering connect, TLS,
  send and the whole answer.
"""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import Any

from .config import Endpoint, EtcdConfig
from .errors import ConfigError

RECV_BYTES = 65536
MAX_HEAD = 65536
MAX_IDLE = 8           # idle connections kept per member
UNAVAILABLE_CODES = (4, 14)   # gRPC DEADLINE_EXCEEDED, UNAVAILABLE


class WireError(Exception):
    """Base of the wire's errors; ``reason`` is one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Unreachable(WireError):
    """The member did not answer usefully: try another one."""


class Refused(WireError):
    """etcd answered with an error (``code``: its gRPC status code)."""

    def __init__(self, reason: str, code: int = 0):
        super().__init__(reason)
        self.code = code


class _Closed(Exception):
    """The peer closed the connection."""


class _Protocol(Exception):
    """The answer is not HTTP/1.x as expected."""


class _Handshake(Exception):
    """The TLS handshake failed (the member may not speak TLS at all)."""


def tls_context(config: EtcdConfig):
    """An ``ssl.SSLContext`` for the configured CA and client certificate (None without TLS)."""
    if not config.tls:
        return None
    import ssl  # only TLS deployments pay for OpenSSL
    try:
        context = ssl.create_default_context(cafile=config.ca)
        if config.cert:
            context.load_cert_chain(config.cert, config.key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        detail = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        files = ", ".join(f for f in (config.ca, config.cert, config.key) if f)
        raise ConfigError(f"cannot use the etcd TLS files ({files}): {detail}") from None
    return context


def describe(exc: BaseException, timeout: float) -> str:
    """A one-line reason for a socket, TLS or framing failure."""
    name = type(exc).__name__
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror}"
    if name == "SSLCertVerificationError":
        return (f"TLS: CERTIFICATE_VERIFY_FAILED, the member's certificate is not trusted "
                f"({exc.verify_message}): is WARREN_ETCD_CA the CA that signed it?")  # type: ignore[attr-defined]
    if name.startswith("SSL"):
        if "EOF" in name or "ZeroReturn" in name:
            return "the member closed the connection"
        text = str(exc).splitlines()[0] if str(exc) else name
        reason = getattr(exc, "reason", None) or text.split(" (_ssl.c")[0]
        if "ALERT" in reason:
            return (f"the member refused the TLS connection ({reason}): is a client certificate "
                    "it trusts configured (WARREN_ETCD_CERT, WARREN_ETCD_KEY)?")
        return f"TLS: {reason}"
    if isinstance(exc, _Handshake):
        return (f"TLS handshake failed ({exc}): does this member serve plain http://, "
                "or refuse our client certificate?")
    if isinstance(exc, _Closed):
        return str(exc) or "the member closed the connection"
    if isinstance(exc, _Protocol):
        return f"not an etcd answer: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else name


def _peer_closed(exc: BaseException) -> bool:
    """The other side closed or reset the connection (plain or TLS)."""
    name = type(exc).__name__
    return (isinstance(exc, (_Closed, ConnectionResetError, BrokenPipeError))
            or "EOF" in name or "ZeroReturn" in name)


class Connection:
    """One HTTP/1.1 connection to one member. Not thread-safe: one user at a time
    (:meth:`shutdown` excepted, which any thread may call to wake a reader)."""

    def __init__(self, endpoint: Endpoint, context, deadline: float):
        self.endpoint = endpoint
        self.buf = bytearray()
        self.reused = False
        self._chunk_left = 0
        self._crlf_due = False
        left = max(deadline - time.monotonic(), 0.001)
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=left)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
        except (socket.timeout, TimeoutError):
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            if context is None or type(exc).__name__ == "SSLCertVerificationError":
                raise
            raise _Handshake(describe(exc, 0)) from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self._host = f"{host}:{endpoint.port}"

    # -- low-level reading: a timeout never loses buffered bytes -------------------

    def _recv(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        data = self.sock.recv(RECV_BYTES)
        if not data:
            raise _Closed()
        self.buf += data

    def _until(self, sep: bytes, deadline: float, limit: int) -> bytes:
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise _Protocol("header too long")
            start = max(0, len(self.buf) - len(sep) + 1)
            self._recv(deadline)

    def _exactly(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._recv(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    # -- HTTP ------------------------------------------------------------------------

    def send(self, path: str, body: bytes, deadline: float) -> None:
        head = (f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        self.sock.sendall(head + body)

    def read_head(self, deadline: float) -> tuple[int, dict[str, str]]:
        """Status and headers (names in lower case) of the next answer."""
        head = self._until(b"\r\n\r\n", deadline, MAX_HEAD).decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _Protocol(repr(head[0][:60]))
        headers = {"_version": parts[0]}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def read_body(self, headers: dict[str, str], deadline: float) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                data = self.read_chunk(deadline)
                if not data:
                    return b"".join(parts)
                parts.append(data)
        if "content-length" in headers:
            return self._exactly(int(headers["content-length"]), deadline)
        try:  # delimited by the end of the connection (HTTP/1.0 style)
            while len(self.buf) < MAX_HEAD:
                self._recv(deadline)
        except _Closed:
            pass
        headers["connection"] = "close"
        return bytes(self.buf)

    def read_chunk(self, deadline: float) -> bytes:
        """The next piece of a chunked body; b"" at its end (trailers consumed)."""
        while True:
            if self._crlf_due:
                if self._exactly(2, deadline) != b"\r\n":
                    raise _Protocol("bad chunk framing")
                self._crlf_due = False
            if self._chunk_left == 0:
                line = self._until(b"\r\n", deadline, 1024)
                try:
                    size = int(line.split(b";")[0], 16)
                except ValueError:
                    raise _Protocol("bad chunk size") from None
                if size == 0:
                    while self._until(b"\r\n", deadline, MAX_HEAD):
                        pass  # trailers, up to the empty line
                    return b""
                self._chunk_left = size
            if not self.buf:
                self._recv(deadline)
            n = min(len(self.buf), self._chunk_left)
            data = bytes(self.buf[:n])
            del self.buf[:n]
            self._chunk_left -= n
            self._crlf_due = self._chunk_left == 0
            return data

    def idle_ok(self) -> bool:
        """An idle connection is usable if the member sent nothing (no EOF) meanwhile."""
        if self.buf:
            return False
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def shutdown(self) -> None:
        """Wake a thread blocked reading this connection (any thread may call it)."""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # below TLS, on purpose
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def decode_error(status: int, body: bytes) -> WireError:
    """etcd's JSON error answer (or something else entirely) -> the wire's error."""
    try:
        data = json.loads(body)
        if isinstance(data.get("error"), dict):  # an error inside a stream
            data = data["error"]
            data.setdefault("code", data.get("grpc_code", 0))
        message = str(data.get("message") or data.get("error") or f"HTTP {status}")
        code = int(data.get("code") or 0)
    except (ValueError, AttributeError, TypeError):
        text = body.decode("utf-8", "replace").strip().splitlines()
        return Unreachable(f"HTTP {status}" + (f": {text[0][:200]}" if text else "")
                           + " (not etcd's v3 API?)")
    message = message.splitlines()[0] if message else f"HTTP {status}"
    if code in UNAVAILABLE_CODES:
        return Unreachable(message)
    return Refused(message, code)


class Stream:
    """A streaming answer (watch): one JSON object per line, read with timeouts."""

    def __init__(self, conn: Connection, member: "Member"):
        self.conn = conn
        self.member = member
        self._lines = bytearray()
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False

    def next(self, timeout: float) -> dict | None:
        """The next object, or None if nothing came within ``timeout`` seconds.
        Raises Unreachable when the stream breaks or ends (or was closed)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                raise Unreachable("the stream was closed")
            self._reading = True
        try:
            while True:
                i = self._lines.find(b"\n")
                if i >= 0:
                    line = bytes(self._lines[:i])
                    del self._lines[:i + 1]
                    if not line.strip():
                        continue
                    try:
                        return json.loads(line)
                    except ValueError:
                        raise Unreachable(f"not an etcd answer: {line[:60]!r}") from None
                try:
                    data = self.conn.read_chunk(deadline)
                except (socket.timeout, TimeoutError):
                    if self._closed:
                        raise Unreachable("the stream was closed") from None
                    return None
                except (OSError, _Closed, _Protocol, _Handshake) as exc:
                    raise Unreachable(describe(exc, timeout)) from None
                if not data:
                    raise Unreachable("the member ended the stream")
                self._lines += data
        finally:
            with self._lock:
                self._reading = False
                if self._closed:
                    self.conn.close()

    def close(self) -> None:
        """End the stream from any thread; a blocked :meth:`next` raises at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.conn.shutdown()
            if not self._reading:
                self.conn.close()


class Member:
    """One etcd member: a small pool of keep-alive connections, JSON calls, streams."""

    def __init__(self, endpoint: Endpoint, context, timeout: float):
        self.endpoint = endpoint
        self.url = endpoint.url
        self.context = context
        self.timeout = timeout
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def _take(self, deadline: float) -> Connection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if conn.idle_ok():
                    conn.reused = True
                    return conn
                conn.close()
        return Connection(self.endpoint, self.context, deadline)

    def _give(self, conn: Connection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def drop_idle(self) -> None:
        """Close every idle connection (after a failure: they are likely dead too)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _exchange(self, path: str, body: bytes, deadline: float) -> tuple[Connection, int, dict]:
        """Send one request and read the answer's head, on a pooled connection."""
        conn = self._take(deadline)
        try:
            try:
                conn.send(path, body, deadline)
                status, headers = conn.read_head(deadline)
            except (_Closed, OSError) as exc:
                if not _peer_closed(exc):
                    raise
                if not conn.reused or conn.buf:
                    if self.context is None and not conn.reused and not conn.buf:
                        raise _Closed("the member closed the connection without answering "
                                      "(does it serve https:// only?)") from None
                    raise
                conn.close()  # the member closed it while it sat idle: once more on a new one
                conn = Connection(self.endpoint, self.context, deadline)
                conn.send(path, body, deadline)
                status, headers = conn.read_head(deadline)
            return conn, status, headers
        except BaseException:
            conn.close()
            raise

    def post(self, path: str, payload: dict[str, Any], streamed: bool = False) -> dict[str, Any]:
        """One call; the decoded answer. ``streamed``: the answer is a stream that ends by
        itself (lease keep-alive): its first object's ``result``."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        deadline = time.monotonic() + self.timeout
        try:
            conn, status, headers = self._exchange(path, body, deadline)
            try:
                data = conn.read_body(headers, deadline)
            except BaseException:
                conn.close()
                raise
        except (OSError, _Closed, _Protocol, _Handshake) as exc:
            self.drop_idle()
            raise Unreachable(describe(exc, self.timeout)) from None
        if headers.get("connection", "").lower() == "close" or headers["_version"] == "HTTP/1.0":
            conn.close()
        else:
            self._give(conn)
        if status != 200:
            raise decode_error(status, data)
        if streamed:
            first = next((line for line in data.split(b"\n") if line.strip()), b"{}")
            try:
                obj = json.loads(first)
            except ValueError:
                raise Unreachable(f"not an etcd answer: {first[:60]!r}") from None
            if "error" in obj:
                raise decode_error(status, first)
            return obj.get("result") or {}
        try:
            return json.loads(data)
        except ValueError:
            raise Unreachable(f"not an etcd answer: {data[:60]!r}") from None

    def stream(self, path: str, payload: dict[str, Any]) -> Stream:
        """Open a streaming call on a connection of its own (the answer's head is read)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        deadline = time.monotonic() + self.timeout
        try:
            conn = Connection(self.endpoint, self.context, deadline)
            try:
                conn.send(path, body, deadline)
                status, headers = conn.read_head(deadline)
                if status != 200:
                    error = decode_error(status, conn.read_body(headers, deadline))
                    conn.close()
                    raise error
                if "chunked" not in headers.get("transfer-encoding", "").lower():
                    raise _Protocol("a stream must be chunked")
            except BaseException:
                conn.close()
                raise
        except (OSError, _Closed, _Protocol, _Handshake) as exc:
            raise Unreachable(describe(exc, self.timeout)) from None
        return Stream(conn, self)
