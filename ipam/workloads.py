"""Workload records: Docker networks and endpoints, as every package reads them.

The plugin writes them (``CreateNetwork``, ``CreateEndpoint``...), so does
``warrenctl container add``; the policy agent and the CLI read them. They
live here, below every writer and reader, so no package reaches into the
plugin's internals to learn what an endpoint is.

An endpoint's *effective* profiles (what policy enforces) are its own list
when it has one (``endpoint ID profile set``, ``container ... profile``),
else the profile of its Docker network: ``-o profile=NAME`` or, by default,
the network's Docker name (resolved in the background, so it may not be
known yet; until it is, the endpoint has no profile and policy drops its
traffic: fail closed).

The host-side interface name is a pure function of the endpoint id
(:func:`host_ifname`), so the policy agent can name per-endpoint chains
without asking the kernel.

A network created with ``--internal`` has ``internal=True``: the policy
agent gives its endpoints no path to anything outside Warren's pools (and
so no nat-outgoing), and the plugin refuses ``-p`` for them.

Both records check themselves (``validate()``: ids and names usable as key
segments and profile names, addresses of the right family, strict pool
CIDRs, MTU, gateway slot and published-port ranges) and the key they sit
under (``check_key``), at every read and write (:mod:`datastore.codec`).
The store's listings skip invalid records and count them; a read of one
endpoint refuses an invalid one with the reason.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from datastore import Datastore, codec, fields, keys

from .errors import Contention, InvalidRequest

HOST_PREFIX = "wrn"        # host side of a workload veth: wrn + 11 characters of the endpoint id
TMP_PREFIX = "tmp"         # the other side until Docker moves and renames it
MAX_RETRIES = 20
MTU_RANGE = (68, 65535)    # IPv4's minimum to the largest a link can have
MAX_GATEWAY_SLOT = 254     # 169.254.1.<slot>
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
PORT_FIELDS = {"proto", "host_port", "container_port", "host_ip"}  # plugin.portplan.Mapping


def host_ifname(endpoint_id: str) -> str:
    return HOST_PREFIX + endpoint_id[:11]


def tmp_ifname(endpoint_id: str) -> str:
    return TMP_PREFIX + endpoint_id[:11]


@dataclass
class Network:
    id: str
    pools_v4: list[str] = field(default_factory=list)
    pools_v6: list[str] = field(default_factory=list)
    mtu: int | None = None           # -o mtu=N, else derived from the underlay
    profile: str | None = None       # -o profile=NAME
    name: str | None = None          # Docker's network name, resolved in the background
    profile_created: bool = False    # the policy agent made its default profile once
    internal: bool = False           # --internal: no path outside the pools, no nat-outgoing, no -p
    aux_addresses: list[str] = field(default_factory=list)  # --aux-address: held for the user, no endpoint
    host: str | None = None          # the node whose dockerd made it (a network is local to a dockerd)

    @property
    def default_profile(self) -> str | None:
        """The profile its endpoints use unless they name their own."""
        return self.profile or self.name

    def validate(self) -> None:
        fields.name(self.id, "network id")
        for pool in self.pools_v4:
            fields.cidr(pool, "IPv4 pool", 4)
        for pool in self.pools_v6:
            fields.cidr(pool, "IPv6 pool", 6)
        if self.mtu is not None:
            fields.integer(self.mtu, "mtu", *MTU_RANGE)
        if self.profile is not None:
            fields.name(self.profile, "profile")
        if self.name is not None:
            fields.name(self.name, "network name")  # the default profile's name
        fields.addresses(self.aux_addresses, "aux address")
        if self.host is not None:
            fields.name(self.host, "host name")

    def check_key(self, key: str) -> None:
        fields.key_is(key, keys.network(self.id), f"network {self.id}")


@dataclass
class Endpoint:
    id: str
    network: str                    # Docker network id ("" for `warrenctl container add`)
    host: str
    ipv4: list[str] = field(default_factory=list)   # plain addresses, routed as /32
    ipv6: list[str] = field(default_factory=list)   # routed as /128
    mac: str = ""
    mtu: int = 1500
    sandbox: str | None = None      # set between Join and Leave (container add: the netns path)
    gateway_slot: int = 1           # 169.254.1.<slot>: one per warren interface of a sandbox
    ports: list[dict] = field(default_factory=list)  # plugin.ports.Mapping fields, for -p
    published: bool = False         # between Program- and RevokeExternalConnectivity
    profiles: list[str] | None = None  # own profile list; None: the network's profile
    container: str | None = None    # container add: the Docker container id
    ifname: str | None = None       # container add: the interface name inside the container

    @property
    def addresses(self) -> list[str]:
        return self.ipv4 + self.ipv6

    @property
    def iface(self) -> str:
        return host_ifname(self.id)

    def validate(self) -> None:
        fields.name(self.id, "endpoint id")
        if self.network:
            fields.name(self.network, "network id")
        fields.name(self.host, "host")
        fields.addresses(self.ipv4, "ipv4 address", 4)
        fields.addresses(self.ipv6, "ipv6 address", 6)
        if self.mac:
            fields.mac(self.mac, "mac")
        fields.integer(self.mtu, "mtu", *MTU_RANGE)
        if self.sandbox is not None:
            fields.text(self.sandbox, "sandbox")
        fields.integer(self.gateway_slot, "gateway_slot", 1, MAX_GATEWAY_SLOT)
        for port in self.ports:
            _check_port(port)
        for profile in self.profiles or ():
            fields.name(profile, "profile")
        if self.container is not None:
            fields.text(self.container, "container", 256)
        if self.ifname is not None:
            fields.ifname(self.ifname, "ifname")

    def check_key(self, key: str) -> None:
        fields.key_is(key, keys.endpoint(self.host, self.id), f"endpoint {self.id[:12]} of {self.host}")


def _check_port(port: dict) -> None:
    """One published port (plugin.portplan.Mapping's fields)."""
    if not isinstance(port, dict):
        raise ValueError(f"ports entry {port!r:.40} is not an object")
    unknown = set(port) - PORT_FIELDS
    if unknown:
        raise ValueError(f"ports entry has unknown field {sorted(unknown)[0]!r:.40}")
    fields.one_of(port.get("proto"), "ports proto", PORT_PROTOCOLS)
    fields.integer(port.get("host_port"), "ports host_port", 1, 65535)
    fields.integer(port.get("container_port"), "ports container_port", 0, 65535)
    host_ip = port.get("host_ip", "")
    if host_ip != "":
        fields.address(host_ip, "ports host_ip")


def effective_profiles(endpoint: Endpoint, networks: dict[str, Network]) -> list[str]:
    if endpoint.profiles is not None:
        return list(endpoint.profiles)
    network = networks.get(endpoint.network)
    default = network.default_profile if network else None
    return [default] if default else []


class EndpointNotFound(InvalidRequest):
    pass


class WorkloadStore:
    """Reads of networks and endpoints, and CAS updates of an endpoint's profiles."""

    def __init__(self, store: Datastore):
        self.store = store

    def networks(self) -> dict[str, Network]:
        """Every valid network record by id (invalid ones skipped and counted)."""
        return {n.id: n for n in codec.load_all(Network, self.store.get_prefix(keys.NETWORKS))}

    def endpoints(self, host: str | None = None) -> list[Endpoint]:
        """Valid endpoint records (of ``host``), by host and id; invalid ones skipped and counted."""
        prefix = keys.endpoint_prefix(host) if host else keys.ENDPOINTS
        found = codec.load_all(Endpoint, self.store.get_prefix(prefix))
        return sorted(found, key=lambda e: (e.host, e.id))

    def find(self, endpoint_id: str) -> Endpoint:
        """An endpoint by its id or a unique prefix of it (at least 4 characters), on any host."""
        if len(endpoint_id) < 4:
            raise InvalidRequest(f"endpoint id {endpoint_id!r} is too short: give at least 4 characters")
        found = [e for e in self.endpoints() if e.id.startswith(endpoint_id)]
        if not found:
            raise EndpointNotFound(f"endpoint {endpoint_id} does not exist")
        if len(found) > 1 and not any(e.id == endpoint_id for e in found):
            raise InvalidRequest(f"endpoint id {endpoint_id} is ambiguous: "
                                 f"{', '.join(e.id[:12] for e in found)}")
        return next((e for e in found if e.id == endpoint_id), found[0])

    def profiles_of(self, endpoint: Endpoint) -> list[str]:
        return effective_profiles(endpoint, self.networks())

    def update_profiles(self, endpoint: Endpoint,
                        change: Callable[[list[str]], list[str]]) -> list[str]:
        """Set an endpoint's own profile list to ``change(current effective list)`` (CAS)."""
        key = keys.endpoint(endpoint.host, endpoint.id)
        for attempt in range(MAX_RETRIES):
            kv = self.store.get(key)
            if kv is None:
                raise EndpointNotFound(f"endpoint {endpoint.id[:12]} does not exist")
            current = codec.loads(Endpoint, kv.value, kv.key)  # invalid: refused with the reason
            wanted = change(self.profiles_of(current))
            if self.store.cas(key, codec.dumps(replace(current, profiles=wanted)), kv.mod_revision):
                return wanted
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise Contention(f"endpoint {endpoint.id[:12]} is changing too fast; try again")


def profile_change(verb: str, names: Iterable[str]) -> Callable[[list[str]], list[str]]:
    """calicoctl's ``profile append|remove|set`` on an ordered profile list."""
    given = list(names)
    if verb == "set":
        return lambda current: list(dict.fromkeys(given))
    if verb == "append":
        def append(current: list[str]) -> list[str]:
            present = [n for n in given if n in current]
            if present:
                raise InvalidRequest(f"the endpoint already has profile {present[0]}")
            return current + list(dict.fromkeys(given))
        return append
    if verb == "remove":
        def remove(current: list[str]) -> list[str]:
            missing = [n for n in given if n not in current]
            if missing:
                raise InvalidRequest(f"the endpoint does not have profile {missing[0]}")
            return [n for n in current if n not in given]
        return remove
    raise InvalidRequest(f"unknown profile verb {verb!r}: use append, remove or set")
