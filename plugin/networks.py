"""The NetworkDriver side: networks and endpoints in etcd, veths in the kernel.

Call order for ``docker run --net N``: IPAM RequestAddress -> CreateEndpoint
(record the endpoint, pick a MAC unless the user gave one) -> Join (veth pair,
host routes, proxy ARP; answer with the interface for Docker to move and the
gateway) -> ProgramExternalConnectivity (-p). Teardown runs backwards.

Gateways: the first Warren interface of a container routes via
``169.254.1.1``; a container connected to several Warren networks
(``docker network connect``) gets ``169.254.1.2``, ``.3``... on the next
interfaces, each with a connected route and a route to its network's pools, so
no two interfaces ever install the same route and the default route stays on
the gateway endpoint Docker chose.

Port publishing (ProgramExternalConnectivity and friends) is
:mod:`plugin.publishing`; it reads and saves endpoints through this class.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from typing import Callable

from datastore import Datastore, codec, keys

from .dataplane import GATEWAY_V6, Dataplane, DataplaneError, workload_mtu
from .errors import PluginError
from .ipamdriver import POOL_GATEWAY
from .names import NameResolver
from .ports import PortPublisher
from .records import Endpoint, Network

log = logging.getLogger(__name__)

GENERIC = "com.docker.network.generic"
VALID_NETWORK_OPTIONS = ("mtu", "profile")
TOLERATED = {"com.docker.network.enable_ipv6", GENERIC}


def mac_for(endpoint_id: str) -> str:
    """A stable, locally administered unicast MAC derived from the endpoint id."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(digest[:5]))


def _address(cidr: str | None) -> str | None:
    return cidr.split("/")[0] if cidr else None


@dataclass
class NetworkDriver:
    store: Datastore
    host: str
    dataplane: Dataplane
    underlay_mtu: Callable[[], int]
    pool_encap: Callable[[str], str] = lambda cidr: "none"
    ports: PortPublisher | None = None  # owner of the -p DNAT rules (None: -p unsupported)
    names: NameResolver | None = None   # learns Docker's network names in the background
    _networks: dict[str, Network] = field(default_factory=dict)

    # -- networks -----------------------------------------------------------

    def create_network(self, network_id: str, options: dict, ipv4: list[dict], ipv6: list[dict]) -> None:
        generic = options.get(GENERIC) or {}
        if not isinstance(generic, dict):
            raise PluginError("network options must be a map")
        unknown = sorted(set(generic) - set(VALID_NETWORK_OPTIONS))
        if unknown:
            raise PluginError(f"unknown option -o {', '.join(unknown)}; valid options: "
                              "mtu=N, profile=NAME")
        for key in options:
            if key not in TOLERATED:
                flag = key.rsplit(".", 1)[-1]
                raise PluginError(f"the warren driver does not support --{flag}")
        mtu = None
        if "mtu" in generic:
            try:
                mtu = int(generic["mtu"])
            except (TypeError, ValueError):
                raise PluginError("-o mtu must be a number such as 1400") from None
            if not 576 <= mtu <= 65535:
                raise PluginError("-o mtu must be between 576 and 65535")
        pools = {4: [], 6: []}
        for version, data in ((4, ipv4), (6, ipv6)):
            for item in data or []:
                if item.get("Gateway") != POOL_GATEWAY[version]:
                    raise PluginError("warren networks need the warren IPAM driver: "
                                      "use --ipam-driver warren")
                pools[version].append(item["Pool"])
        network = Network(id=network_id, pools_v4=pools[4], pools_v6=pools[6], mtu=mtu,
                          profile=generic.get("profile"))
        self.store.put(keys.network(network_id), codec.dumps(network))
        self._networks[network_id] = network
        if self.names is not None:
            self.names.resolve_later(network_id)

    def delete_network(self, network_id: str) -> None:
        self.store.delete(keys.network(network_id))
        self._networks.pop(network_id, None)

    def network(self, network_id: str) -> Network:
        cached = self._networks.get(network_id)
        if cached is not None:
            return cached
        kv = self.store.get(keys.network(network_id))
        if kv is None:
            raise PluginError(f"network {network_id[:12]} is unknown to warren "
                              "(was it created while etcd was unreachable?)")
        network = codec.loads(Network, kv.value)
        self._networks[network_id] = network
        return network

    # -- endpoints ----------------------------------------------------------

    def create_endpoint(self, network_id: str, endpoint_id: str, interface: dict,
                        options: dict) -> dict:
        network = self.network(network_id)
        v4, v6 = _address(interface.get("Address")), _address(interface.get("AddressIPv6"))
        if not v4 and not v6:
            raise PluginError("the endpoint has no address: use --ipam-driver warren")
        given_mac = interface.get("MacAddress") or ""
        mtu = network.mtu or self._derived_mtu(network)
        endpoint = Endpoint(id=endpoint_id, network=network_id, host=self.host,
                            ipv4=[v4] if v4 else [], ipv6=[v6] if v6 else [],
                            mac=given_mac or mac_for(endpoint_id), mtu=mtu)
        self.save(endpoint)
        return {} if given_mac else {"Interface": {"MacAddress": endpoint.mac}}

    def _derived_mtu(self, network: Network) -> int:
        encaps = [self.pool_encap(p) for p in network.pools_v4 + network.pools_v6]
        worst = max(encaps, key=lambda e: {"none": 0, "ipip": 20, "vxlan": 50}.get(e, 0), default="none")
        return workload_mtu(self.underlay_mtu(), worst)

    def endpoint(self, endpoint_id: str) -> Endpoint:
        kv = self.store.get(keys.endpoint(self.host, endpoint_id))
        if kv is None:
            raise PluginError(f"endpoint {endpoint_id[:12]} does not exist on host {self.host}")
        return codec.loads(Endpoint, kv.value)

    def save(self, endpoint: Endpoint) -> None:
        self.store.put(keys.endpoint(self.host, endpoint.id), codec.dumps(endpoint))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.dataplane.remove_workload(endpoint_id)  # normally gone at Leave already
        try:
            endpoint = self.endpoint(endpoint_id)
        except PluginError:
            return  # already deleted: idempotent
        self._release_slot(endpoint)
        self.store.delete(keys.endpoint(self.host, endpoint_id))
        if endpoint.published and self.ports:
            self.ports.sync(self.local_endpoints())

    def local_endpoints(self) -> list[Endpoint]:
        return [codec.loads(Endpoint, kv.value)
                for kv in self.store.get_prefix(keys.endpoint_prefix(self.host))]

    # -- join / leave ---------------------------------------------------------

    def join(self, network_id: str, endpoint_id: str, sandbox: str) -> dict:
        endpoint = self.endpoint(endpoint_id)
        if endpoint.network != network_id:
            raise PluginError(f"endpoint {endpoint_id[:12]} belongs to another network")
        network = self.network(network_id)
        slot = self._free_slot(sandbox, endpoint_id)
        joined = replace(endpoint, sandbox=sandbox, gateway_slot=slot)
        try:
            _, tmp = self.dataplane.create_workload(endpoint_id, endpoint.addresses,
                                                    endpoint.mac, endpoint.mtu)
        except DataplaneError as exc:
            self._release_slot(joined)
            raise PluginError(str(exc)) from None
        try:
            self.save(joined)
        except Exception:
            self.dataplane.remove_workload(endpoint_id)
            self._release_slot(joined)
            raise
        gateway = f"169.254.1.{slot}"
        routes = [{"Destination": f"{gateway}/32", "RouteType": 1}]
        if slot > 1:  # not the first interface: reach this network's pools through it
            routes += [{"Destination": p, "RouteType": 0, "NextHop": gateway} for p in network.pools_v4]
        response = {"InterfaceName": {"SrcName": tmp, "DstPrefix": "eth"},
                    "DisableGatewayService": True}
        if endpoint.ipv4:
            response["Gateway"] = gateway
        if endpoint.ipv6:
            if slot == 1:
                response["GatewayIPv6"] = GATEWAY_V6
            else:
                routes += [{"Destination": p, "RouteType": 0, "NextHop": GATEWAY_V6}
                           for p in network.pools_v6]
        response["StaticRoutes"] = routes
        return response

    def _free_slot(self, sandbox: str, endpoint_id: str) -> int:
        """Claim the lowest free gateway slot of this container (create-if-absent keys,
        so the cost does not grow with the number of endpoints on the host)."""
        for _ in range(20):
            held = {int(keys.last_segment(kv.key)): kv.value.decode()
                    for kv in self.store.get_prefix(keys.sandbox_prefix(self.host, sandbox))}
            for slot, holder in held.items():
                if holder == endpoint_id:
                    return slot
            slot = next(n for n in range(1, len(held) + 2) if n not in held)
            if slot > 254:
                raise PluginError("too many warren interfaces in one container")
            if self.store.create(keys.sandbox_slot(self.host, sandbox, slot), endpoint_id):
                return slot
        raise PluginError("could not pick a gateway for this container; try again")

    def _release_slot(self, endpoint: Endpoint) -> None:
        if endpoint.sandbox:
            self.store.delete(keys.sandbox_slot(self.host, endpoint.sandbox, endpoint.gateway_slot))

    def leave(self, network_id: str, endpoint_id: str) -> None:
        self.dataplane.remove_workload(endpoint_id)
        try:
            endpoint = self.endpoint(endpoint_id)
        except PluginError:
            return  # already deleted: Leave is idempotent
        self._release_slot(endpoint)
        self.save(replace(endpoint, sandbox=None))
