"""Running the plugin server: its command line, and a readiness probe.

The server itself is :mod:`plugin.wsgi` (one process, no gunicorn master).
The node supervisor (:mod:`ctl.supervisor`) runs it and starts it again,
alone, when it dies or stops answering :func:`wait_ready`'s call
(``Plugin.Activate``); nothing else of the node is stopped for that.
"""
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


def server_argv(socket_path: str, pidfile: str, logfile: str) -> list[str]:
    """The plugin server's command line (its process writes ``pidfile``; its command
    line contains ``plugin.wsgi``, which ``warrenctl node`` checks before signalling it)."""
    return [sys.executable, "-m", "plugin.wsgi", "--socket", socket_path, "--pid", pidfile,
            "--log", logfile]


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
