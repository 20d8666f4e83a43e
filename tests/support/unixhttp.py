"""A threaded HTTP server on a unix socket, for tests that fake dockerd or the plugin.

:func:`json_server` serves GET requests from an ``answer(path) -> (status, body)``
function as JSON (what a fake dockerd needs) and records the paths asked.
"""
from __future__ import annotations

import contextlib
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Iterator

Answer = Callable[[str], "tuple[int, Any]"]


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants an address pair


class _JsonHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.paths.append(self.path)
        status, body = self.server.answer(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def json_server(path: str, answer: Answer) -> Iterator[UnixHTTPServer]:
    """Serve ``answer`` on the unix socket ``path`` until the block ends; the server's
    ``paths`` lists what was asked, ``path`` is the socket."""
    server = UnixHTTPServer(path, _JsonHandler)
    server.answer = answer
    server.paths = []
    server.path = path
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
