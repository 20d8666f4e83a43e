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
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from datastore import Datastore, codec, keys

from .errors import Contention, InvalidRequest

HOST_PREFIX = "wrn"        # host side of a workload veth: wrn + 11 characters of the endpoint id
TMP_PREFIX = "tmp"         # the other side until Docker moves and renames it
MAX_RETRIES = 20


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

    @property
    def default_profile(self) -> str | None:
        """The profile its endpoints use unless they name their own."""
        return self.profile or self.name


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
        return {n.id: n for n in (codec.loads(Network, kv.value)
                                  for kv in self.store.get_prefix(keys.NETWORKS))}

    def endpoints(self, host: str | None = None) -> list[Endpoint]:
        prefix = keys.endpoint_prefix(host) if host else keys.ENDPOINTS
        found = [codec.loads(Endpoint, kv.value) for kv in self.store.get_prefix(prefix)]
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
            current = codec.loads(Endpoint, kv.value)
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
