"""Published host ports held by bound sockets, as Docker's bridge holds its own.

Docker reserves a published port by binding (and, for TCP, listening on) a
socket for each host address, in dockerd or docker-proxy. Warren does the
same, in the plugin process, so the kernel arbitrates between everyone:

* a port Docker's bridge, another Warren endpoint or any host process (the
  node's BGP on 179, its metrics on 9091) holds cannot be bound: the request
  is refused with Docker's words ("port is already allocated" when Warren
  itself holds it, else the kernel's "address already in use");
* a port Warren holds cannot be taken by Docker's bridge or a host process.

A mapping on ``0.0.0.0`` (``::``) conflicts with every address of its
family; IPv6 sockets are ``IPV6_V6ONLY`` so the two families are separate
(as Docker does). TCP sockets set ``SO_REUSEADDR`` (as Docker: a TIME_WAIT
leftover must not block a restart); UDP ones do not. Held sockets are served
by :class:`plugin.portproxy.PortProxy` when one is given. The sockets die
with the plugin process; :class:`plugin.ports.PortPublisher` binds them again
from etcd at start-up.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from dataclasses import dataclass

from .errors import PluginError
from .portplan import Mapping, conflicts
from .portproxy import PortProxy

SOCKET_TYPES = {"tcp": (socket.SOCK_STREAM, socket.IPPROTO_TCP),
                "udp": (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
                "sctp": (socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132))}


class PortTaken(PluginError):
    """The host port is held by someone else (Warren, Docker or a host process)."""


@dataclass(eq=False)
class Held:
    mapping: Mapping
    owner: str                       # endpoint id
    sock: socket.socket
    target: tuple[str, int] | None   # where the proxy relays to (None: not proxied)


def allocated(m: Mapping) -> str:
    """Docker's message for a port its own allocator already handed out."""
    return f"Bind for {m.show().rsplit('/', 1)[0]} failed: port is already allocated"


def open_socket(m: Mapping) -> socket.socket:
    """Bind (and listen on) ``m``'s host address and port; PortTaken/PluginError if impossible."""
    kind, proto = SOCKET_TYPES[m.proto]
    family = socket.AF_INET if m.family == 4 else socket.AF_INET6
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise PluginError(f"cannot publish {m.show()}: {_reason(exc)}") from None
    try:
        if m.proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((m.host_ip, m.host_port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        error = PortTaken if exc.errno == errno.EADDRINUSE else PluginError
        raise error(f"failed to bind host port {m.show()}: {_reason(exc)}") from None
    return sock


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


class HostPorts:
    """The sockets holding this host's published ports, by (proto, host address, port)."""

    def __init__(self, proxy: PortProxy | None = None, opener=open_socket) -> None:
        self.held: dict[tuple[str, str, int], Held] = {}
        self._proxy = proxy
        self._open = opener
        self._lock = threading.RLock()

    def holder(self, m: Mapping, owner: str, also: set[tuple[str, str, int]] = frozenset()) -> Mapping | None:
        """A mapping (another endpoint's, or in ``also``) that excludes ``m``, if any."""
        with self._lock:
            for key, held in self.held.items():
                if conflicts(key, m.key) and not (held.owner == owner and key == m.key):
                    return held.mapping
        for key in also:
            if conflicts(key, m.key):
                return Mapping(key[0], key[2], 0, key[1])
        return None

    def holds(self, m: Mapping, owner: str) -> bool:
        with self._lock:
            held = self.held.get(m.key)
            return held is not None and held.owner == owner

    def bind(self, m: Mapping, owner: str, target: tuple[str, int] | None) -> Held:
        """Hold ``m`` for ``owner`` (or keep holding it, with ``target`` updated)."""
        with self._lock:
            held = self.held.get(m.key)
            if held is not None:
                if held.owner != owner:
                    raise PortTaken(allocated(m))
                if held.target != target and self._proxy is not None and target is not None:
                    self._proxy.retarget(held.sock, target)
                held.target = target
                return held
            if self.holder(m, owner) is not None:
                raise PortTaken(allocated(m))
            sock = self._open(m)
            held = Held(m, owner, sock, target)
            self.held[m.key] = held
            if self._proxy is not None and target is not None:
                self._proxy.add(sock, m.proto, target)
            return held

    def release(self, key: tuple[str, str, int]) -> None:
        with self._lock:
            held = self.held.pop(key, None)
            if held is None:
                return
            if self._proxy is not None:
                self._proxy.remove(held.sock)
            held.sock.close()

    def keys(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self.held)
