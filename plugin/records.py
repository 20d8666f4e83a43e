"""Records the plugin keeps in etcd, keyed by Docker's ids (see datastore.keys).

Docker does not re-send CreateNetwork after a plugin restart, and with
``Scope: local`` other hosts never see it at all, so everything a later call
needs is stored here.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Network:
    id: str
    pools_v4: list[str] = field(default_factory=list)
    pools_v6: list[str] = field(default_factory=list)
    mtu: int | None = None           # -o mtu=N, else derived from the underlay
    profile: str | None = None       # -o profile=NAME (enforced by profiles/)
    name: str | None = None          # Docker's network name, resolved in the background


@dataclass
class Endpoint:
    id: str
    network: str
    host: str
    ipv4: list[str] = field(default_factory=list)   # plain addresses, routed as /32
    ipv6: list[str] = field(default_factory=list)   # routed as /128
    mac: str = ""
    mtu: int = 1500
    sandbox: str | None = None      # set between Join and Leave
    gateway_slot: int = 1           # 169.254.1.<slot>: one per warren interface of a sandbox
    ports: list[dict] = field(default_factory=list)  # plugin.ports.Mapping fields, for -p
    published: bool = False         # between Program- and RevokeExternalConnectivity

    @property
    def addresses(self) -> list[str]:
        return self.ipv4 + self.ipv6
