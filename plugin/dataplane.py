"""Workload plumbing in the host's network namespace (pyroute2, no `ip` subprocesses).

One workload interface = one veth pair:

* the **host side** ``wrn<11 chars of the endpoint id>`` stays in the host: MAC
  ``ee:ee:ee:ee:ee:ee`` (so its IPv6 link-local address, the container's IPv6
  gateway, is known in advance: ``fe80::ecee:eeff:feee:eeee``), proxy ARP on
  with ``proxy_delay=0`` (without it the first packet waits up to 1.5 s),
  forwarding on for v4 and v6, and a /32 (/128) route to each container address
  through it, tagged with :data:`RTPROT_WARREN` so reconciliation can find
  exactly Warren's routes, and a permanent neighbour entry (address -> the
  container's MAC) so early packets never meet a failed ARP lookup;
* the **other side** ``tmp<11 chars>`` is handed to Docker, which moves it into
  the container and renames it ``ethN``.

The container routes everything via ``169.254.1.1`` (IPv4) or the host side's
link-local address (IPv6); the host side answers ARP for any address, so all
traffic is routed by the host. A container with several Warren interfaces
(gateway *slots*, see :mod:`plugin.networks`) uses ``169.254.1.N`` and
:func:`gateway_v6` ``(N)`` on its N-th: from slot 2 on, that IPv6 gateway is
an extra link-local address of the host side (``fe80::1:N``), because every
host side has the same EUI-64 address and a container must be able to tell
its interfaces' gateways apart. Nothing here depends on a process staying
alive: the kernel keeps the veths and routes.

Docker 26+ sets ``disable_ipv6=1`` on a container's interfaces that got no
IPv6 address from Docker (CVE-2024-32473), and new interfaces inherit it;
:meth:`Dataplane.configure_peer` re-enables IPv6 on the interface it gives an
IPv6 address (``warrenctl container add NAME <IPv6>``), writing the sysctl
from a thread that entered the container's network namespace.

This module is the single owner of veths, workload routes and per-interface
sysctls; ``warrenctl container add`` reuses it.

Netlink cost (bench/RESULTS.md, "Container start"): a pyroute2 request costs
~0.5-1 ms of Python, opening an ``IPRoute`` ~1 ms more (pyroute2 0.9 builds an
event loop per instance). So a :class:`Dataplane` keeps **one** ``IPRoute`` of
the namespace it is first used in, opened lazily (again after a fork or after
an error other than the kernel's answer, when the socket's state is unknown)
and shared by the plugin's request threads under a lock (a netlink socket
carries one conversation at a time; the kernel's rtnl lock serialises these
changes anyway). It joins no multicast group (``/proc/net/netlink``: Groups
0), so no notification of the host's other changes queues up between requests. Requests are not spent on what the next request's own answer
tells: a veth is added without looking for a leftover first (EEXIST: delete the
leftover and add again), deleted by name (ENODEV: already gone), created with
``IFF_UP`` set (safe before the sysctls below: the peer is down, so the host
side has no carrier, no IPv6 link-local address and no DAD until Docker brings
the container side up) and its index taken from the kernel's echo of the add
(``NLM_F_ECHO``, Linux 6.3+; older kernels cost one lookup). Join's plumbing is
thus an add, the sysctls, a route and a neighbour per address.
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from pyroute2 import IPRoute, NetlinkError

from ipam.workloads import HOST_PREFIX, TMP_PREFIX, host_ifname, tmp_ifname

log = logging.getLogger(__name__)

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"  # EUI-64 link-local of HOST_MAC
RTPROT_WARREN = 80  # route protocol number of workload routes (ip route ... proto 80)

ENCAP_OVERHEAD = {"none": 0, "ipip": 20, "vxlan": 50}
IFA_F_NODAD, IFA_F_NOPREFIXROUTE = 0x02, 0x200
CLONE_NEWNET = 0x40000000
EEXIST, ENODEV = 17, 19
# Warren's own interfaces (workload veths, the tunnel devices): never the underlay
NOT_UNDERLAY = (HOST_PREFIX, TMP_PREFIX, "tunl0", "warren-")


def gateway_v4(slot: int) -> str:
    """The IPv4 gateway of a container's ``slot``-th warren interface."""
    return f"169.254.1.{slot}"


def gateway_v6(slot: int) -> str:
    """The IPv6 gateway of a container's ``slot``-th warren interface: the host side's
    own link-local address for the first, ``fe80::1:<slot>`` (added to the host side) after."""
    return GATEWAY_V6 if slot == 1 else f"fe80::1:{slot:x}"


class DataplaneError(Exception):
    pass


def workload_mtu(underlay_mtu: int, encap: str) -> int:
    return underlay_mtu - ENCAP_OVERHEAD.get(encap, 0)


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _prefixlen(address: str) -> int:
    return 32 if ipaddress.ip_address(address).version == 4 else 128


@dataclass
class Dataplane:
    """Veth pairs, routes and sysctls in the namespace this process runs in."""

    # procfs root for sysctl writes: a managed plugin gets the host's /proc/sys/net bind-mounted
    # outside /proc (Docker keeps /proc/sys read-only there), see docs/packaging.md
    proc: str = field(default_factory=lambda: os.environ.get("WARREN_PROC_ROOT") or "/proc")
    _ipr: IPRoute | None = field(default=None, init=False, repr=False, compare=False)
    _ipr_pid: int = field(default=0, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @contextmanager
    def _netlink(self) -> Iterator[IPRoute]:
        """The kept ``IPRoute`` (see the module docstring), held for the block.

        A kernel error (``NetlinkError``) leaves the socket usable; anything else
        (a timeout, a decoding error, a failure the caller wrapped) drops it, so
        the next call starts on a fresh socket rather than on a half-read answer.
        """
        with self._lock:
            if self._ipr is None or self._ipr_pid != os.getpid():
                self._ipr = IPRoute(nlm_echo=True)  # echo: a link add answers with the new index
                self._ipr_pid = os.getpid()
            try:
                yield self._ipr
            except NetlinkError:
                raise
            except BaseException:
                self._drop()
                raise

    def _drop(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None and self._ipr_pid == os.getpid():
            try:
                ipr.close()
            except Exception:  # already broken: nothing more to release
                pass

    def close(self) -> None:
        """Close the kept netlink socket (a later call opens a new one)."""
        with self._lock:
            self._drop()

    def ensure_forwarding(self) -> None:
        _write_sysctl(f"{self.proc}/sys/net/ipv4/ip_forward", "1")
        try:
            _write_sysctl(f"{self.proc}/sys/net/ipv6/conf/all/forwarding", "1")
        except OSError:  # IPv6 disabled on this host
            log.warning("cannot enable IPv6 forwarding; IPv6 workloads will not be routed")

    def create_workload(self, endpoint_id: str, addresses: list[str], mac: str, mtu: int,
                        peer_netns: str | None = None, peer_name: str | None = None,
                        gateway6: str = GATEWAY_V6) -> tuple[str, str]:
        """Create the veth pair and host routes; returns (host ifname, peer ifname).

        ``peer_netns`` creates the peer directly inside that namespace (a path
        or a name), which is much cheaper than moving it afterwards, and
        ``peer_name`` names it there (default ``tmp<id>``). ``gateway6`` is
        the container's IPv6 gateway on this interface; one other than the
        host side's own link-local address is added to the host side. A
        leftover host side of the same name (a crash) is replaced. On any
        failure everything created so far is removed again.
        """
        host, tmp = host_ifname(endpoint_id), peer_name or tmp_ifname(endpoint_id)
        peer: dict = {"ifname": tmp, "address": mac, "mtu": mtu}
        if peer_netns is not None:
            peer["net_ns_fd"] = peer_netns
        ipv6 = any(_prefixlen(a) == 128 for a in addresses)
        with self._netlink() as ipr:
            try:
                index = self._add_veth(ipr, host, mtu, peer)
                self._configure_host_side(host, ipv6)
                if gateway6 != GATEWAY_V6 and ipv6:
                    ipr.addr("add", index=index, address=gateway6, prefixlen=128,
                             flags=IFA_F_NODAD | IFA_F_NOPREFIXROUTE, family=socket.AF_INET6)
                for address in addresses:
                    self._add_route(ipr, index, address)
                    # Permanent neighbour (Calico's `arp -s`): a packet that arrives before the
                    # container's side is up must not leave a FAILED entry behind (~0.6 s of loss).
                    ipr.neigh("replace", dst=address, lladdr=mac, ifindex=index, state="permanent",
                              family=socket.AF_INET if _prefixlen(address) == 32 else socket.AF_INET6)
            except Exception as exc:  # roll back whatever failed, then say what it was
                self._remove(ipr, host)
                if isinstance(exc, DataplaneError):
                    raise
                raise DataplaneError(f"could not create interface {host}: {exc}") from None
        return host, tmp

    @classmethod
    def _add_veth(cls, ipr: IPRoute, host: str, mtu: int, peer: dict) -> int:
        """Add the pair with the host side up; returns the host side's index."""
        for attempt in (1, 2):
            try:
                answer = ipr.link("add", ifname=host, kind="veth", address=HOST_MAC, mtu=mtu,
                                  state="up", peer=peer)
                break
            except NetlinkError as exc:
                if exc.code != EEXIST or attempt == 2 or not cls._remove(ipr, host):
                    raise  # the peer's name is taken, or the leftover came back
                log.info("replaced leftover interface %s", host)
        for msg in answer or ():
            if msg.get("event") == "RTM_NEWLINK" and msg.get_attr("IFLA_IFNAME") == host:
                return msg["index"]
        return ipr.link("get", ifname=host)[0]["index"]  # a kernel without NEWLINK echo (< 6.3)

    def _configure_host_side(self, host: str, ipv6: bool) -> None:
        base = f"{self.proc}/sys/net"
        _write_sysctl(f"{base}/ipv4/conf/{host}/proxy_arp", "1")
        _write_sysctl(f"{base}/ipv4/neigh/{host}/proxy_delay", "0")
        _write_sysctl(f"{base}/ipv4/conf/{host}/forwarding", "1")
        if os.path.exists(f"{base}/ipv6/conf/{host}"):
            _write_sysctl(f"{base}/ipv6/conf/{host}/accept_dad", "0")
            _write_sysctl(f"{base}/ipv6/conf/{host}/forwarding", "1")
        elif ipv6:
            raise DataplaneError("IPv6 is disabled on this host")

    @staticmethod
    def _add_route(ipr: IPRoute, index: int, address: str) -> None:
        length = _prefixlen(address)
        ipr.route("replace", dst=f"{address}/{length}", oif=index, scope="link" if length == 32 else 0,
                  proto=RTPROT_WARREN, family=socket.AF_INET if length == 32 else socket.AF_INET6)

    def add_routes(self, endpoint_id: str, addresses: list[str], mac: str | None = None) -> None:
        """(Re)install the host routes (and, given the MAC, neighbours) of a workload interface."""
        with self._netlink() as ipr:
            found = ipr.link_lookup(ifname=host_ifname(endpoint_id))
            if not found:
                raise DataplaneError(f"interface {host_ifname(endpoint_id)} does not exist")
            if any(_prefixlen(a) == 128 for a in addresses):
                self._configure_host_side(host_ifname(endpoint_id), True)
            for address in addresses:
                self._add_route(ipr, found[0], address)
                if mac:
                    ipr.neigh("replace", dst=address, lladdr=mac, ifindex=found[0], state="permanent",
                              family=socket.AF_INET if _prefixlen(address) == 32 else socket.AF_INET6)

    def remove_routes(self, endpoint_id: str, addresses: list[str]) -> None:
        """Remove host routes of a workload interface (idempotent)."""
        with self._netlink() as ipr:
            found = ipr.link_lookup(ifname=host_ifname(endpoint_id))
            for address in addresses if found else ():
                length = _prefixlen(address)
                try:
                    ipr.route("del", dst=f"{address}/{length}", oif=found[0],
                              family=socket.AF_INET if length == 32 else socket.AF_INET6)
                except NetlinkError as exc:
                    if exc.code != 3:  # ESRCH: no such route
                        raise

    # -- inside a container (``warrenctl container add``) ----------------------

    def configure_peer(self, netns: str, ifname: str, addresses: list[str],
                       gateway_v4: str = GATEWAY_V4, default_route: bool = True) -> None:
        """Do inside ``netns`` what Docker does with the plugin's Join answer.

        Addresses as /32 and /128, the interface up, a connected route to the
        IPv4 gateway and default routes via it and via the host side's
        link-local address (unless the container already has a default route).
        """
        if any(_prefixlen(a) == 128 for a in addresses):
            enable_ipv6_inside(netns, ifname)
        with IPRoute(netns=netns) as ns:
            found = ns.link_lookup(ifname=ifname)
            if not found:
                raise DataplaneError(f"interface {ifname} is not in the container")
            index = found[0]
            ns.link("set", index=index, state="up")
            for address in addresses:
                self._add_inside(ns, index, address)
            if any(_prefixlen(a) == 32 for a in addresses):
                ns.route("replace", dst=f"{gateway_v4}/32", oif=index, scope="link")
                if default_route and not ns.get_default_routes(family=socket.AF_INET):
                    ns.route("add", dst="0.0.0.0/0", gateway=gateway_v4, oif=index)
            if any(_prefixlen(a) == 128 for a in addresses):
                if default_route and not ns.get_default_routes(family=socket.AF_INET6):
                    ns.route("add", dst="::/0", gateway=GATEWAY_V6, oif=index, family=socket.AF_INET6)

    @staticmethod
    def _add_inside(ns: IPRoute, index: int, address: str) -> None:
        length = _prefixlen(address)
        flags = {"flags": 0x80} if length == 128 else {}  # IFA_F_NODAD: usable at once
        try:
            ns.addr("add", index=index, address=address, prefixlen=length, **flags)
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: already there
                raise

    def remove_peer_addresses(self, netns: str, ifname: str, addresses: list[str]) -> None:
        with IPRoute(netns=netns) as ns:
            found = ns.link_lookup(ifname=ifname)
            for address in addresses if found else ():
                try:
                    ns.addr("del", index=found[0], address=address, prefixlen=_prefixlen(address))
                except NetlinkError as exc:
                    if exc.code not in (99, 19):  # EADDRNOTAVAIL, ENODEV: already gone
                        raise

    def remove_workload(self, endpoint_id: str) -> bool:
        """Delete the veth pair (its routes go with it). Idempotent."""
        with self._netlink() as ipr:
            return self._remove(ipr, host_ifname(endpoint_id))

    @staticmethod
    def _remove(ipr: IPRoute, ifname: str) -> bool:
        """Delete ``ifname`` by name (one request); False if it did not exist."""
        try:
            ipr.link("del", ifname=ifname)
        except NetlinkError as exc:
            if exc.code != ENODEV:
                raise
            return False
        return True

    def workload_interfaces(self) -> dict[str, int]:
        """Host-side workload interfaces present in the kernel: name -> index."""
        with self._netlink() as ipr:
            out = {}
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if name and name.startswith(HOST_PREFIX):
                    out[name] = link["index"]
            return out

    def workload_routes(self) -> dict[str, int]:
        """Warren's workload routes in the kernel: address -> interface index."""
        with self._netlink() as ipr:
            routes = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                for r in ipr.get_routes(family=family, proto=RTPROT_WARREN):
                    routes[r.get_attr("RTA_DST")] = r.get_attr("RTA_OIF")
            return routes

    def host_subnets(self) -> list[tuple[str, str]]:
        """(interface, CIDR) of every global address on an interface that is not Warren's own
        (workload veths, tunl0, the VXLAN device) nor loopback: what no pool may overlap
        (:mod:`ipam.underlay`)."""
        with self._netlink() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") or "" for link in ipr.get_links()}
            out = []
            for addr in ipr.get_addr():
                name = names.get(addr["index"], "")
                if addr["scope"] != 0 or name == "lo" or name.startswith(NOT_UNDERLAY):
                    continue
                address = addr.get_attr("IFA_ADDRESS")
                if address:
                    net = ipaddress.ip_network(f"{address}/{addr['prefixlen']}", strict=False)
                    out.append((name, str(net)))
            return out

    def interface_mtu(self, ifname: str) -> int:
        with self._netlink() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise DataplaneError(f"underlay interface {ifname} does not exist")
            return ipr.get_links(found[0])[0].get_attr("IFLA_MTU")

    def default_route_interface(self) -> str | None:
        with self._netlink() as ipr:
            for r in ipr.get_default_routes(family=socket.AF_INET):
                index = r.get_attr("RTA_OIF")
                if index:
                    return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
        return None


def enable_ipv6_inside(netns: str, ifname: str) -> None:
    """``disable_ipv6=0`` on ``ifname`` inside ``netns`` (a path such as /proc/PID/ns/net).

    /proc/sys/net shows the network namespace of the thread that opens it, so a
    short-lived thread enters the container's namespace (setns affects only the
    calling thread), writes, and ends. Docker 26+ leaves ``disable_ipv6=1`` on
    interfaces it gave no IPv6 address, and a new interface inherits it from
    ``default``; adding an IPv6 address then fails with EACCES.
    """
    errors: list[str] = []

    def enter_and_write() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            finally:
                os.close(fd)
            path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
            if not os.path.exists(path):
                raise OSError(f"IPv6 is not available in the container ({path} is missing)")
            with open(path) as f:
                if f.read().strip() == "0":
                    return
            _write_sysctl(path, "0")
        except OSError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=enter_and_write, name="warren-setns")
    thread.start()
    thread.join()
    if errors:
        raise DataplaneError(f"could not enable IPv6 on {ifname} in the container: {errors[0]}")
