"""A threaded HTTP server on a unix socket, for tests that fake dockerd or the plugin."""
from __future__ import annotations

import socketserver


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants an address pair
