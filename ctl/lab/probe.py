"""Requests to a lab's etcd that must run inside a lab namespace (see ``net.in_netns``).

Plain HTTP, or HTTPS with the lab's client certificate when the lab's etcd
uses TLS (``tls`` = (ca, cert, key) file paths). etcd's JSON gateway answers
the few cluster questions the lab asks (who is the leader, move leadership),
so no etcdctl process is needed.
"""
from __future__ import annotations

import http.client
import json
import ssl
from typing import Optional

TlsFiles = Optional[tuple[str, str, str]]


def _connection(host: str, port: int, timeout: float, tls: TlsFiles) -> http.client.HTTPConnection:
    if not tls:
        return http.client.HTTPConnection(host, port, timeout=timeout)
    ca, cert, key = tls
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)


def etcd_healthy(host: str, port: int, timeout: float = 1.0, tls: TlsFiles = None) -> bool:
    """etcd's ``GET /health`` says healthy (call from inside the member's netns)."""
    conn = _connection(host, port, timeout, tls)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status == 200 and json.loads(resp.read()).get("health") == "true"
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


def etcd_post(host: str, port: int, path: str, body: dict, timeout: float = 3.0,
              tls: TlsFiles = None) -> dict:
    """POST to etcd's v3 JSON gateway; raises OSError on any failure."""
    conn = _connection(host, port, timeout, tls)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"{path}: HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(f"{path}: {exc}") from None
    finally:
        conn.close()
