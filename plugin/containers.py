"""``warrenctl container add|remove|ip``: endpoints for containers Docker did not wire.

The seed's flow (Calico v0.x ``calicoctl container add``): a container runs
with ``--net=none`` and is given a Warren interface afterwards. It gets
exactly what a plugin endpoint gets, from the same code
(:class:`plugin.dataplane.Dataplane`): a veth whose host side ``wrn...``
has proxy ARP, /32 (/128) routes and permanent neighbours, the container
side created *directly inside* the container's network namespace (found
by asking dockerd for its pid: ``/proc/<pid>/ns/net``) under its final name,
then addresses, the ``169.254.1.1`` gateway and default routes inside. An
IPv6 address first turns IPv6 back on for that interface: Docker 26+ sets
``disable_ipv6=1`` in containers it gave no IPv6 address, and new interfaces
inherit it (``Dataplane.configure_peer``).

Records: one endpoint record per container interface, like the plugin's
(``network`` is empty, ``container`` and ``ifname`` say where it lives),
so the policy agent polices it and ``endpoint`` commands show it; its
addresses are held under the handle ``container-<endpoint id>`` in this
host's block, so BGP announces them like any other (a borrowed address as
a /32). A new container endpoint has no profile: its traffic is dropped
until ``container ... profile append`` (as in Calico v0.x).

Every step is undone when a later one fails: no half-made veth, no leaked
address, no stale record.

A container reference (name or id) is checked before it reaches dockerd's
URL: Docker's names match ``[a-zA-Z0-9][a-zA-Z0-9_.-]*`` and ids are hex, so
anything else (``../../../etc``, ``a/b``, ``%2e``) is refused with one line
(:func:`check_reference`); what passes is still URL-escaped.

Removing an endpoint releases its handle and then each address its record
names (by address): an address the allocator re-imported for a leftover
record (handle ``endpoint-<id>``, :mod:`ipam.allocator`) goes with it too.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass, replace
from typing import Callable
from urllib.parse import quote

from datastore import Datastore, codec, keys
from ipam import Allocator, IpamError, PoolStore
from ipam.allocator import record_handle
from ipam.workloads import Endpoint, WorkloadStore

from .dataplane import Dataplane, DataplaneError, workload_mtu
from .errors import PluginError
from .names import DockerError, DockerNotFound, docker_get
from .networks import mac_for

log = logging.getLogger(__name__)

DEFAULT_INTERFACE = "eth1"
PURPOSE = "container"
REFERENCE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")  # a Docker name, or an id (hex)


def check_reference(reference: str) -> str:
    """A container name or id as Docker spells them, else PluginError (before any URL is built)."""
    if not isinstance(reference, str) or not REFERENCE.match(reference):
        raise PluginError(f"invalid container name or id {reference[:60]!r}: Docker names match "
                          "[a-zA-Z0-9][a-zA-Z0-9_.-]* and ids are hexadecimal")
    return reference


def endpoint_id(container_id: str, interface: str) -> str:
    return hashlib.sha256(f"{container_id}/{interface}".encode()).hexdigest()


def handle_of(endpoint: str) -> str:
    return f"container-{endpoint}"


def parse_request(request: str) -> dict:
    """``IP`` | ``POOL-CIDR`` | ``ipv4`` | ``ipv6`` -> Allocator.assign keyword arguments."""
    if request in ("ipv4", "ipv6"):
        return {"version": int(request[-1])}
    try:
        return {"address": str(ipaddress.ip_address(request))}
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(request, strict=False)
    except ValueError:
        raise PluginError(f"invalid address request {request!r}: give an IP, a pool CIDR, "
                          "ipv4 or ipv6") from None
    return {"pool": str(net), "version": net.version}


@dataclass
class Container:
    id: str
    name: str
    pid: int

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"


def docker_lookup(reference: str) -> Container:
    """A running container by name or id, asked of dockerd (``plugin.names.docker_get``)."""
    check_reference(reference)
    try:
        attrs = docker_get(f"/containers/{quote(reference, safe='')}/json", timeout=10)
    except DockerNotFound:
        raise PluginError(f"container {reference} does not exist") from None
    except DockerError as exc:
        raise PluginError(f"cannot ask dockerd about {reference}: {exc}") from None
    pid = (attrs.get("State") or {}).get("Pid") or 0
    if not pid:
        raise PluginError(f"container {reference} is not running")
    return Container(attrs["Id"], attrs.get("Name", "").lstrip("/"), pid)


@dataclass
class ContainerEndpoints:
    store: Datastore
    host: str
    dataplane: Dataplane
    lookup: Callable[[str], Container] = docker_lookup
    underlay_mtu: Callable[[], int] | None = None

    @property
    def allocator(self) -> Allocator:
        return Allocator(self.store, self.host)

    # -- queries ------------------------------------------------------------------

    def endpoints(self, container_id: str) -> list[Endpoint]:
        return [e for e in WorkloadStore(self.store).endpoints(self.host) if e.container == container_id]

    def endpoint(self, reference: str, interface: str | None = None) -> tuple[Container, Endpoint]:
        container = self.lookup(reference)
        found = self.endpoints(container.id)
        if interface:
            found = [e for e in found if e.ifname == interface]
        if not found:
            raise PluginError(f"container {reference} has no warren interface"
                              + (f" {interface}" if interface else "") + " on this host")
        if len(found) > 1:
            raise PluginError(f"container {reference} has several warren interfaces: "
                              "choose one with --interface")
        return container, found[0]

    # -- add / remove -------------------------------------------------------------

    def add(self, reference: str, request: str, interface: str = DEFAULT_INTERFACE) -> Endpoint:
        container = self.lookup(reference)
        if self.endpoints(container.id):
            raise PluginError(f"container {reference} already has a warren interface; "
                              f"use 'container {reference} ip add' for more addresses")
        eid = endpoint_id(container.id, interface)
        handle = handle_of(eid)
        kwargs = parse_request(request)
        try:
            got = self.allocator.assign(handle, attrs={"purpose": PURPOSE, "container": container.id[:12]},
                                        **kwargs)
        except IpamError as exc:
            raise PluginError(str(exc)) from None
        address = got.address
        v6 = ipaddress.ip_address(address).version == 6
        endpoint = Endpoint(id=eid, network="", host=self.host, ipv4=[] if v6 else [address],
                            ipv6=[address] if v6 else [], mac=mac_for(eid), mtu=self._mtu(got.pool),
                            sandbox=container.netns, container=container.id, ifname=interface,
                            profiles=[])
        try:
            self.dataplane.create_workload(eid, endpoint.addresses, endpoint.mac, endpoint.mtu,
                                           peer_netns=container.netns, peer_name=interface)
        except DataplaneError as exc:
            self.allocator.release_handle(handle)
            raise PluginError(str(exc)) from None
        try:
            self.dataplane.configure_peer(container.netns, interface, endpoint.addresses)
            self._save(endpoint)
        except Exception as exc:
            self.dataplane.remove_workload(eid)
            self.allocator.release_handle(handle)
            if isinstance(exc, PluginError):
                raise
            raise PluginError(f"could not set up {interface} in container {reference}: {exc}") from None
        log.info("container %s: %s %s", container.name, interface, address)
        return endpoint

    def remove(self, reference: str) -> list[Endpoint]:
        """Remove every warren interface of the container on this host (its addresses too)."""
        container = self.lookup(reference)
        found = self.endpoints(container.id)
        if not found:
            raise PluginError(f"container {reference} has no warren interface on this host")
        for endpoint in found:
            self._remove(endpoint)
        return found

    def remove_by_id(self, container_id: str) -> list[Endpoint]:
        """The same for a container that is gone (its record is all that is left)."""
        found = self.endpoints(container_id)
        for endpoint in found:
            self._remove(endpoint)
        return found

    def _remove(self, endpoint: Endpoint) -> None:
        self.dataplane.remove_workload(endpoint.id)  # its routes go with it
        self.store.delete(keys.endpoint(self.host, endpoint.id))
        allocator = self.allocator
        allocator.release_handle(handle_of(endpoint.id))
        for address in endpoint.addresses:  # e.g. re-imported for this record: see the docstring
            allocator.release(address, record_handle(endpoint.id))

    # -- addresses ----------------------------------------------------------------

    def add_address(self, reference: str, request: str, interface: str | None = None) -> str:
        container, endpoint = self.endpoint(reference, interface)
        try:
            got = self.allocator.assign(handle_of(endpoint.id),
                                        attrs={"purpose": PURPOSE, "container": container.id[:12]},
                                        **parse_request(request))
        except IpamError as exc:
            raise PluginError(str(exc)) from None
        address = got.address
        v6 = ipaddress.ip_address(address).version == 6
        updated = replace(endpoint, ipv4=endpoint.ipv4 + ([] if v6 else [address]),
                          ipv6=endpoint.ipv6 + ([address] if v6 else []))
        try:
            self.dataplane.configure_peer(container.netns, endpoint.ifname or DEFAULT_INTERFACE,
                                          [address])
            self.dataplane.add_routes(endpoint.id, [address], endpoint.mac)
            self._save(updated)
        except Exception as exc:
            self.dataplane.remove_routes(endpoint.id, [address])
            self.dataplane.remove_peer_addresses(container.netns, endpoint.ifname or DEFAULT_INTERFACE,
                                                 [address])
            self.allocator.release(address, handle_of(endpoint.id))
            if isinstance(exc, PluginError):
                raise
            raise PluginError(f"could not add {address} to container {reference}: {exc}") from None
        return address

    def remove_address(self, reference: str, address: str, interface: str | None = None) -> None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise PluginError(f"{address!r} is not an IP address") from None
        container, endpoint = self.endpoint(reference, interface)
        if address not in endpoint.addresses:
            raise PluginError(f"container {reference} does not have address {address}")
        self._save(replace(endpoint, ipv4=[a for a in endpoint.ipv4 if a != address],
                           ipv6=[a for a in endpoint.ipv6 if a != address]))
        self.dataplane.remove_routes(endpoint.id, [address])
        self.dataplane.remove_peer_addresses(container.netns, endpoint.ifname or DEFAULT_INTERFACE,
                                             [address])
        self.allocator.release(address, handle_of(endpoint.id))

    # -- helpers ------------------------------------------------------------------

    def _save(self, endpoint: Endpoint) -> None:
        self.store.put(keys.endpoint(self.host, endpoint.id), codec.dumps(endpoint))

    def _mtu(self, pool_cidr: str) -> int:
        pool = PoolStore(self.store).get(pool_cidr)
        underlay = self.underlay_mtu() if self.underlay_mtu else self._default_underlay_mtu()
        return workload_mtu(underlay, pool.encap if pool else "none")

    def _default_underlay_mtu(self) -> int:
        iface = self.dataplane.default_route_interface()
        try:
            return self.dataplane.interface_mtu(iface) if iface else 1500
        except DataplaneError:
            return 1500
