"""Port publishing's kernel side: host ports held by sockets, DNAT rules, the proxy.

:class:`PortPublisher` is the single writer of one nat chain per family,
``WARREN-DNAT``, jumped to from PREROUTING (traffic from other hosts and
containers) and OUTPUT (from this host itself). The chain is always
regenerated whole from this host's published endpoints in etcd by a pure
function (:func:`plugin.portplan.dnat_rules`, which also writes the
POSTROUTING chain ``WARREN-HAIRPIN`` for a container reaching its own
published port) and written atomically with
``iptables-restore --noflush``, so a restart or a lost update heals by
itself. Replies need no rule: conntrack reverses the DNAT, and the node's
forward chains let the routed packets through.

With ``reserve=True`` (the plugin server) it also holds every published host
port with a bound socket (:mod:`plugin.hostports`, so Warren, Docker's bridge
and host services can never take each other's ports) and serves those
sockets with a userland proxy (:mod:`plugin.portproxy`, for loopback and
IPv6-to-IPv4). :meth:`PortPublisher.claim` chooses and binds the ports of one
endpoint before anything is recorded (a refusal leaves nothing behind);
:meth:`PortPublisher.sync` makes sockets and rules match the records: it
closes what no record wants and binds what records want but the process does
not hold - after a plugin restart, every reservation comes back from etcd. A
mapping whose port someone else took meanwhile is left out of the rules (so
it cannot steal their traffic) and logged, and retried at every later sync.

Whenever the target of a published UDP host port changes (published,
unpublished, handed to another container; and at start-up), the UDP
conntrack entries to that port are deleted (:mod:`plugin.conntrack`), so a
client that keeps its source port reaches the new target.

Without ``reserve`` (``warrenctl node start``, before the server runs) only
the rules are written, from the records.

``claim`` and ``sync`` run under :attr:`PortPublisher.lock` (re-entrant); a
caller that claims, saves and syncs holds it throughout, and ``sync``
re-reads the records through ``load`` inside the lock when it is set, so a
concurrent sync can never drop a reservation that is being recorded.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import threading
from typing import Callable

from .conntrack import forget_udp
from .errors import PluginError
from .hostports import HostPorts, PortTaken, allocated
from .portplan import (CHAIN, EPHEMERAL, HAIRPIN, Mapping, Request, dnat_rules, dnat_target, host_addresses,
                       port_candidates, proxy_target, stored)
from .portproxy import PortProxy
from .records import Endpoint

log = logging.getLogger(__name__)

TOOLS = {4: "iptables", 6: "ip6tables"}
JUMPS = (("PREROUTING", CHAIN), ("OUTPUT", CHAIN), ("POSTROUTING", HAIRPIN))
MAX_BIND_FAILURES = 20   # -p C: ports the kernel refused before giving up (Docker: 10)

Published = list[tuple[Endpoint, list[Mapping]]]


def apply_rules(published: Published) -> None:
    """Write both families' WARREN-DNAT and WARREN-HAIRPIN chains and make sure they are jumped to."""
    for version, tool in TOOLS.items():
        try:
            subprocess.run([f"{tool}-restore", "--noflush"], input=dnat_rules(published, version),
                           text=True, check=True, capture_output=True, timeout=30)
            for parent, chain in JUMPS:
                check = [tool, "-w", "-t", "nat", "-C", parent, "-j", chain]
                if subprocess.run(check, capture_output=True, timeout=30).returncode:
                    subprocess.run([tool, "-w", "-t", "nat", "-I", parent, "1", "-j", chain],
                                   check=True, capture_output=True, timeout=30)
        except FileNotFoundError:
            if version == 4:
                raise PluginError("iptables is not installed; -p needs it") from None
        except subprocess.CalledProcessError as exc:
            if version == 4 or any(m.family == 6 for _, ms in published for m in ms):
                raise PluginError(f"{tool} failed: {(exc.stderr or '').strip()}") from None


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in open(path).read().split())
        return (lo, hi) if 0 < lo <= hi < 65536 else EPHEMERAL
    except (OSError, ValueError):
        return EPHEMERAL


def host_has_ipv6() -> bool:
    return socket.has_ipv6 and os.path.exists("/proc/net/if_inet6")


class PortPublisher:
    """Owner of the WARREN-DNAT and WARREN-HAIRPIN chains and, with ``reserve``, of the host port sockets."""

    def __init__(self, reserve: bool = False, load: Callable[[], list[Endpoint]] | None = None,
                 hostports: HostPorts | None = None, apply: Callable[[Published], None] = apply_rules,
                 host_v6: bool | None = None, ephemeral: tuple[int, int] | None = None,
                 forget: Callable[[set[tuple[int, int]]], int] = forget_udp) -> None:
        self.lock = threading.RLock()
        self.load = load   # fresh records of this host's endpoints (sync re-reads them under the lock)
        self.hostports = hostports if hostports is not None else (HostPorts(PortProxy()) if reserve else None)
        self._apply = apply
        self._host_v6 = host_has_ipv6() if host_v6 is None else host_v6
        self._ephemeral = ephemeral or ephemeral_range()
        self._next: int | None = None   # round robin over the ephemeral range
        self._lost: set[tuple[str, tuple]] = set()
        self._forget = forget
        self._udp: dict[tuple, tuple] | None = None  # UDP mapping -> (endpoint, DNAT target) last applied
        self._published: set[str] | None = None       # endpoint ids published at the last sync (None: unknown)

    # -- one endpoint ------------------------------------------------------------------

    def claim(self, endpoint: Endpoint, requests: list[Request],
              no_v6: bool = False) -> tuple[list[Mapping], Callable[[], None]]:
        """Choose and hold host ports for ``requests``; returns the mappings and an undo.

        All or nothing: on a refusal every socket bound here is closed again.
        Ports the endpoint already holds (Docker programming it again) are kept.
        """
        if self.hostports is None:
            raise PluginError("publishing ports (-p) is not available on this node")
        with self.lock:
            previous = stored(endpoint) if endpoint.published else []
            taken: set[tuple[str, str, int]] = set()
            new: list[tuple[str, str, int]] = []
            out: list[Mapping] = []

            def undo() -> None:
                for key in new:
                    self.hostports.release(key)

            try:
                for request in requests:
                    ips = host_addresses(request, bool(endpoint.ipv4), bool(endpoint.ipv6),
                                         self._host_v6, no_v6)
                    if not ips:
                        continue
                    held = next((m.host_port for m in previous
                                 if (m.proto, m.container_port) == (request.proto, request.container_port)
                                 and m.host_ip in ips and m.key not in taken), None)
                    port = self._reserve(endpoint, request, ips, held, taken, new)
                    out += [Mapping(request.proto, port, request.container_port, ip) for ip in ips]
            except BaseException:
                undo()
                raise
            return out, undo

    def _reserve(self, endpoint: Endpoint, request: Request, ips: list[str], held: int | None,
                 taken: set, new: list) -> int:
        single = request.host_port and request.host_port == request.host_port_end
        failures, error = 0, None
        for port in port_candidates(request, held, self._next, self._ephemeral):
            mappings = [Mapping(request.proto, port, request.container_port, ip) for ip in ips]
            blocked = next((m for m in mappings if self.hostports.holder(m, endpoint.id, taken)), None)
            if blocked is not None:
                error = PortTaken(allocated(blocked))
                if single:
                    raise error
                continue
            bound: list[tuple[str, str, int]] = []
            try:
                for m in mappings:
                    fresh = not self.hostports.holds(m, endpoint.id)
                    self.hostports.bind(m, endpoint.id, proxy_target(m, endpoint))
                    if fresh:
                        bound.append(m.key)
            except PluginError as exc:
                for key in bound:
                    self.hostports.release(key)
                if single or not isinstance(exc, PortTaken):
                    raise
                error, failures = exc, failures + 1
                if not request.host_port and failures >= MAX_BIND_FAILURES:
                    break
                continue
            new += bound
            taken.update(m.key for m in mappings)
            if not request.host_port:
                self._next = port + 1
            return port
        lo, hi = ((request.host_port, request.host_port_end) if request.host_port else self._ephemeral)
        raise PluginError(f"cannot publish container port {request.container_port}/{request.proto}: "
                          f"all ports are allocated (host ports {lo}-{hi}; last: {error})")

    # -- the whole host --------------------------------------------------------------

    def sync(self, endpoints: list[Endpoint] | None = None) -> None:
        """Make sockets and rules match the records (``load()`` if set, else ``endpoints``)."""
        with self.lock:
            if self.load is not None:
                endpoints = self.load()
            published = [(e, stored(e)) for e in endpoints or [] if e.published and e.ports]
            self._published = {e.id for e, _ in published}
            if self.hostports is not None:
                published = self._hold(published)
            self._apply(published)
            self._forget_changed_udp(published)

    def may_publish(self, endpoint_id: str) -> bool:
        """False only if the records said at the last sync that the endpoint publishes nothing."""
        with self.lock:
            return self._published is None or endpoint_id in self._published

    def _forget_changed_udp(self, published: Published) -> None:
        """UDP flows to a host port whose target changed must not keep the old one (conntrack)."""
        udp = {m.key: (e.id, dnat_target(m, e)) for e, ms in published for m in ms if m.proto == "udp"}
        before = self._udp
        self._udp = udp
        changed = set(udp) if before is None else {k for k in udp.keys() | before.keys()
                                                   if udp.get(k) != before.get(k)}
        ports = {(ipaddress.ip_address(host_ip).version, port) for _, host_ip, port in changed}
        if ports:
            try:
                self._forget(ports)
            except Exception as exc:  # never fail a publish over stale flows
                log.warning("could not clear UDP flows to %s: %s", sorted(ports), exc)

    def _hold(self, published: Published) -> Published:
        owners: dict[tuple, set[str]] = {}
        for endpoint, mappings in published:
            for m in mappings:
                owners.setdefault(m.key, set()).add(endpoint.id)
        for key in self.hostports.keys():
            held = self.hostports.held.get(key)
            if held is not None and held.owner not in owners.get(key, ()):
                self.hostports.release(key)
        active: Published = []
        for endpoint, mappings in published:
            keep = []
            for m in mappings:
                lost = (endpoint.id, m.key)
                try:
                    self.hostports.bind(m, endpoint.id, proxy_target(m, endpoint))
                except PluginError as exc:
                    if lost not in self._lost:
                        log.error("endpoint %s: cannot hold %s (%s); it stays unpublished until the port "
                                  "is free", endpoint.id[:12], m.show(), exc)
                    self._lost.add(lost)
                    continue
                if lost in self._lost:
                    log.info("endpoint %s: %s is published again", endpoint.id[:12], m.show())
                    self._lost.discard(lost)
                keep.append(m)
            active.append((endpoint, keep))
        return active
