"""Docker's network names, looked up in the background; and just enough of dockerd's API.

Docker sends only the network id. Asking dockerd for the name from inside a
plugin request deadlocks it (dockerd is waiting for our answer), so the name
is resolved by a background thread once CreateNetwork has returned, and
written into the network record with a compare-and-swap.

dockerd is asked with ``http.client`` over its socket (``DOCKER_HOST``:
``unix://PATH``, default ``/var/run/docker.sock``, or ``tcp://HOST:PORT``,
with TLS when ``DOCKER_TLS_VERIFY`` is set, files from ``DOCKER_CERT_PATH``)
at unversioned API paths (dockerd answers them at its own version), instead
of through the docker SDK: the few GETs Warren needs (network names here,
containers for ``container add``, networks and containers for the janitor,
:mod:`plugin.janitor`) are not worth its ~6 MiB (requests, urllib3) in the
plugin's memory. :func:`docker_pid` also reads dockerd's pid from the unix
socket's peer credentials, so the janitor notices a restarted dockerd.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from datastore import Datastore, ModRevisionIs, Put, codec, keys

from .records import Network

log = logging.getLogger(__name__)

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


class DockerError(Exception):
    """dockerd could not be asked, or refused (one line)."""


class DockerNotFound(DockerError):
    """dockerd answered 404: no such object (yet)."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (dockerd's); shared with warren-lab's dockerapi."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(timeout: float) -> http.client.HTTPConnection:
    """A connection to dockerd as ``DOCKER_HOST`` says (as the docker CLI and SDK read it)."""
    host = os.environ.get("DOCKER_HOST", "").strip() or f"unix://{DEFAULT_DOCKER_SOCKET}"
    if host.startswith(("unix://", "http+unix://")):
        return UnixHTTPConnection(host.split("://", 1)[1] or DEFAULT_DOCKER_SOCKET, timeout)
    parts = urlsplit(host if "://" in host else f"tcp://{host}")
    if parts.scheme not in ("tcp", "http", "https") or not parts.hostname:
        raise DockerError(f"unsupported DOCKER_HOST {host!r} (unix://PATH or tcp://HOST:PORT)")
    tls = parts.scheme == "https" or bool(os.environ.get("DOCKER_TLS_VERIFY"))
    if not tls:
        return http.client.HTTPConnection(parts.hostname, parts.port or 2375, timeout=timeout)
    import ssl
    certs = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
    try:
        context = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        context.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
    except (OSError, ValueError) as exc:
        raise DockerError(f"cannot use the docker TLS files in {certs}: {exc}") from None
    return http.client.HTTPSConnection(parts.hostname, parts.port or 2376, timeout=timeout,
                                       context=context)


def _request(path: str, timeout: float) -> tuple[int, bytes, int | None]:
    """``GET path``: (status, body, dockerd's pid when the peer's credentials tell it)."""
    conn = _connection(timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        pid = _peer_pid(conn)  # now: a closing answer takes the socket away
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, pid
    except (OSError, http.client.HTTPException) as exc:
        raise DockerError(f"dockerd does not answer: {exc or type(exc).__name__}") from None
    finally:
        conn.close()


def _peer_pid(conn: http.client.HTTPConnection) -> int | None:
    """The pid of the process at the other end of a unix socket (SO_PEERCRED), else None.

    0 (a peer in another pid namespace) is None too: then only a failed request tells
    that dockerd went away."""
    sock = conn.sock
    if not isinstance(conn, UnixHTTPConnection) or sock is None:
        return None
    try:
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  struct.calcsize("3i")))[0]
    except (OSError, AttributeError):
        return None
    return pid or None


def _decode(path: str, status: int, body: bytes) -> Any:
    if status == 200:
        try:
            return json.loads(body)
        except ValueError:
            raise DockerError(f"GET {path}: not JSON: {body[:100]!r}") from None
    try:
        message = json.loads(body).get("message") or ""
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace").strip()
    message = (message.splitlines() or [""])[0] or f"HTTP {status}"
    if status == 404:
        raise DockerNotFound(message)
    raise DockerError(f"dockerd answered {status}: {message}")


def docker_get(path: str, timeout: float = 5.0) -> Any:
    """``GET path`` from dockerd's API; the decoded JSON answer.

    Raises DockerNotFound on 404 and DockerError on anything else that is not 200."""
    status, body, _ = _request(path, timeout)
    return _decode(path, status, body)


def docker_pid(timeout: float = 5.0) -> int | None:
    """dockerd's process id, asked with ``GET /version`` (DockerError if it does not answer).

    None when the socket cannot tell (TCP, or dockerd in another pid namespace). A new pid
    means dockerd was restarted (:mod:`plugin.janitor` cleans up after that)."""
    status, body, pid = _request("/version", timeout)
    _decode("/version", status, body)
    return pid


def network_name(network_id: str) -> str:
    """Docker's name of a network, by its id."""
    return docker_get(f"/networks/{quote(network_id, safe='')}")["Name"]


class NameResolver:
    def __init__(self, store: Datastore, lookup: Callable[[str], str] = network_name,
                 timeout: float = 30.0):
        self.store = store
        self.timeout = timeout
        self._lookup = lookup
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="warren-names")

    def resolve_later(self, network_id: str) -> None:
        self._pool.submit(self._resolve, network_id)

    def _resolve(self, network_id: str) -> str | None:
        deadline = time.monotonic() + self.timeout
        name = None
        while name is None and time.monotonic() < deadline:
            try:
                name = self._lookup(network_id)
            except DockerNotFound:
                time.sleep(0.2)  # dockerd records the network after our answer
            except Exception as exc:  # dockerd unreachable: keep trying until the deadline
                log.debug("network name lookup for %s: %s", network_id[:12], exc)
                time.sleep(1)
        if name is None:
            log.warning("could not learn the name of network %s", network_id[:12])
            return None
        for _ in range(10):
            kv = self.store.get(keys.network(network_id))
            if kv is None:
                return name  # deleted meanwhile
            record = replace(codec.loads(Network, kv.value, kv.key), name=name)
            if self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                              [Put(kv.key, codec.dumps(record))]).succeeded:
                log.info("network %s is named %s", network_id[:12], name)
                return name
        return name
