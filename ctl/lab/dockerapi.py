"""Just enough of the Docker Engine API, over a host's unix socket.

Used for readiness (``/_ping``) and for ``docker rm -f`` of every container
at teardown. A unix socket path is not network-namespaced, so this never
touches any network.
"""
from __future__ import annotations

import http.client
import json
from urllib.parse import quote

from plugin.names import UnixHTTPConnection


def request(sock_path: str, method: str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request(method, url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ping(sock_path: str, timeout: float = 1.0) -> bool:
    try:
        status, body = request(sock_path, "GET", "/_ping", timeout)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200 and body.strip() == b"OK"


def container_ids(sock_path: str, timeout: float = 5.0) -> list[str]:
    status, body = request(sock_path, "GET", "/containers/json?all=1", timeout)
    if status != 200:
        raise OSError(f"docker list containers: HTTP {status}")
    return [c["Id"] for c in json.loads(body)]


def remove_container(sock_path: str, cid: str, timeout: float = 10.0) -> None:
    status, body = request(sock_path, "DELETE", f"/containers/{quote(cid)}?force=1&v=1", timeout)
    if status not in (204, 404):
        raise OSError(f"docker rm -f {cid[:12]}: HTTP {status} {body[:200]!r}")
