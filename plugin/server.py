"""Running the plugin server: gunicorn on the unix socket, and a readiness probe."""
from __future__ import annotations

import http.client
import json
import socket
import sys
import time


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def call(socket_path: str, name: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    """POST to the plugin like dockerd does (no Content-Type)."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request("POST", f"/{name}", body=json.dumps(body) if body is not None else "",
                     headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def gunicorn_argv(socket_path: str, pidfile: str, logfile: str, threads: int = 8) -> list[str]:
    # One worker process (its IPAM cache and etcd channel are shared by its threads);
    # umask 077 makes the socket root-only.
    return [sys.executable, "-m", "gunicorn", "--bind", f"unix:{socket_path}",
            "--workers", "1", "--threads", str(threads), "--umask", "0o077",
            "--timeout", "60", "--graceful-timeout", "5", "--pid", pidfile,
            "--error-logfile", logfile, "--log-level", "info",
            # gunicorn 27 opens a control socket at one per-user path, which would
            # collide between nodes sharing a filesystem (lab hosts); we never use it.
            "--no-control-socket", "plugin.wsgi:create()"]


def wait_ready(socket_path: str, alive, timeout: float = 20.0) -> None:
    """Wait until the socket answers Plugin.Activate; ``alive()`` False aborts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, answer = call(socket_path, "Plugin.Activate", timeout=1.0)
            if status == 200 and "NetworkDriver" in answer.get("Implements", []):
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if not alive():
            raise RuntimeError("the plugin server exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the plugin did not answer on {socket_path} within {timeout:.0f}s")
        time.sleep(0.05)
