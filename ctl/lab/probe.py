"""Health probes that must run inside a lab namespace (see ``net.in_netns``)."""
from __future__ import annotations

import http.client
import json


def etcd_healthy(host: str, port: int, timeout: float = 1.0) -> bool:
    """etcd's ``GET /health`` says healthy (call from inside the underlay netns)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status == 200 and json.loads(resp.read()).get("health") == "true"
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()
