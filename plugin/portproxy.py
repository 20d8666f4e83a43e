"""docker-proxy's job inside the plugin: serve what reaches the sockets holding host ports.

Every published host port is held by a bound socket (:mod:`plugin.hostports`).
Traffic the nat table DNATs never reaches it; what does reach it is exactly
what DNAT cannot serve: connections to loopback (``localhost:P`` from the
host, ``-p 127.0.0.1:P:C``) and IPv6 host traffic to an IPv4-only container.
Those are relayed here to the container, as docker-proxy does for Docker's
bridge.

Why a proxy and not route_localnet + SNAT (Docker's ``--userland-proxy=false``):
route_localnet would have to be turned on for every workload interface
(CVE-2020-8558: loopback-addressed packets become routable from the
containers' side), it cannot work for ``::1`` at all, and SNAT would need a
host address on interfaces that have none. The sockets are held anyway.

One thread multiplexes every listening socket and UDP flow (``selectors``);
each TCP connection gets a relay thread (two sockets, ``select``, half-close
passed on). A UDP client (address, port) gets its own connected socket to the
container, dropped after :data:`UDP_IDLE` seconds without traffic. Removing
a listener shuts its connections and flows down with it.
"""
from __future__ import annotations

import logging
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

UDP_IDLE = 90.0          # s, as docker-proxy's UDP connection tracking
CONNECT_TIMEOUT = 5.0    # s to reach the container
BUFFER = 65536


@dataclass(eq=False)
class Listener:
    sock: socket.socket
    proto: str
    target: tuple[str, int]
    conns: set[socket.socket] = field(default_factory=set)            # TCP: both ends of each relay
    flows: dict[tuple, "Flow"] = field(default_factory=dict)           # UDP: client -> flow


@dataclass(eq=False)
class Flow:
    sock: socket.socket
    client: tuple
    listener: Listener
    last: float


class PortProxy:
    def __init__(self, udp_idle: float = UDP_IDLE) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._listeners: dict[socket.socket, Listener] = {}
        self._thread: threading.Thread | None = None
        self._udp_idle = udp_idle

    # -- called by the owner of the sockets ------------------------------------

    def add(self, sock: socket.socket, proto: str, target: tuple[str, int]) -> None:
        if proto not in ("tcp", "udp"):
            return  # sctp: DNAT only
        sock.setblocking(False)
        with self._lock:
            listener = Listener(sock, proto, target)
            self._listeners[sock] = listener
            self._sel.register(sock, selectors.EVENT_READ, listener)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="port-proxy", daemon=True)
                self._thread.start()

    def retarget(self, sock: socket.socket, target: tuple[str, int]) -> None:
        with self._lock:
            if sock in self._listeners:
                self._listeners[sock].target = target

    def remove(self, sock: socket.socket) -> None:
        """Stop serving ``sock`` (the caller closes it) and end its connections."""
        with self._lock:
            listener = self._listeners.pop(sock, None)
            if listener is None:
                return
            self._sel.unregister(sock)
            for flow in list(listener.flows.values()):
                self._drop_flow(flow)
            for conn in list(listener.conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # the relay thread closes it
                except OSError:
                    pass

    def serving(self) -> int:
        with self._lock:
            return len(self._listeners)

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                events = self._sel.select(timeout=1.0)
            except OSError:  # a socket closed under us: the map is current again next round
                events = []
            with self._lock:
                for key, _ in events:
                    current = self._sel.get_map().get(key.fd)
                    if current is None or current.fileobj is not key.fileobj:
                        continue  # removed while we waited
                    try:
                        if isinstance(key.data, Flow):
                            self._flow_reply(key.data)
                        elif key.data.proto == "tcp":
                            self._accept(key.data)
                        else:
                            self._datagram(key.data)
                    except Exception:  # one bad packet or peer must not stop the proxy
                        log.exception("port proxy")
                now = time.monotonic()
                if now - last_sweep > 5:
                    last_sweep = now
                    for listener in self._listeners.values():
                        for flow in [f for f in listener.flows.values() if now - f.last > self._udp_idle]:
                            self._drop_flow(flow)

    def _accept(self, listener: Listener) -> None:
        try:
            conn, _ = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)
        listener.conns.add(conn)
        threading.Thread(target=self._relay, args=(listener, conn), name="port-proxy-tcp",
                         daemon=True).start()

    def _relay(self, listener: Listener, conn: socket.socket) -> None:
        upstream = None
        try:
            upstream = socket.create_connection(listener.target, timeout=CONNECT_TIMEOUT)
            upstream.settimeout(None)
            with self._lock:
                if listener.sock not in self._listeners:
                    return
                listener.conns.add(upstream)
            _pump(conn, upstream)
        except OSError as exc:
            log.debug("port proxy to %s: %s", listener.target, exc)
        finally:
            with self._lock:
                listener.conns.discard(conn)
                if upstream is not None:
                    listener.conns.discard(upstream)
            for s in (conn, upstream):
                if s is not None:
                    s.close()

    def _datagram(self, listener: Listener) -> None:
        try:
            data, client = listener.sock.recvfrom(BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        flow = listener.flows.get(client)
        if flow is None:
            family = socket.AF_INET6 if ":" in listener.target[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.connect(listener.target)
            except OSError:
                sock.close()
                return
            sock.setblocking(False)
            flow = Flow(sock, client, listener, time.monotonic())
            listener.flows[client] = flow
            self._sel.register(sock, selectors.EVENT_READ, flow)
        flow.last = time.monotonic()
        try:
            flow.sock.send(data)
        except OSError:
            pass  # e.g. ECONNREFUSED from an earlier ICMP: UDP is lossy anyway

    def _flow_reply(self, flow: Flow) -> None:
        try:
            data = flow.sock.recv(BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        flow.last = time.monotonic()
        try:
            flow.listener.sock.sendto(data, flow.client)
        except OSError:
            pass

    def _drop_flow(self, flow: Flow) -> None:
        flow.listener.flows.pop(flow.client, None)
        try:
            self._sel.unregister(flow.sock)
        except (KeyError, ValueError):
            pass
        flow.sock.close()


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Relay both ways until both sides closed (a half-close is passed on)."""
    peers = {a.fileno(): (a, b), b.fileno(): (b, a)}
    poller = select.poll()  # not select.select: a busy plugin may hold fds above 1024
    for fd in peers:
        poller.register(fd, select.POLLIN)
    open_ = len(peers)
    while open_:
        for fd, _ in poller.poll():
            src, dst = peers[fd]
            data = src.recv(BUFFER)
            if data:
                dst.sendall(data)
                continue
            poller.unregister(fd)
            open_ -= 1
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                return
