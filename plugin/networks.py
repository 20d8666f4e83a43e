"""The NetworkDriver side: networks and endpoints in etcd, veths in the kernel.

Call order for ``docker run --net N``: IPAM RequestAddress -> CreateEndpoint
(record the endpoint, pick a MAC unless the user gave one) -> Join (veth pair,
host routes, proxy ARP; answer with the interface for Docker to move and the
gateway) -> ProgramExternalConnectivity (-p). Teardown runs backwards.

Gateways: each Warren interface of a container holds a gateway *slot* N
(create-if-absent keys per sandbox, the lowest free one): ``169.254.1.N`` and
:func:`plugin.dataplane.gateway_v6` ``(N)``. Join answers with connected
routes to those gateways (``RouteType 1``: libnetwork adds them on the
interface as soon as it is up, before it resolves any gateway or next hop -
Docker 26 looks the IPv6 gateway up right after link-up, when the kernel's
``fe80::/64`` route may not exist yet, which failed 41 % of dual-stack starts),
routes to the network's pools via the gateway (so traffic to a network
always leaves through that network's interface, whichever interface has the
default route), and ``Gateway`` /
``GatewayIPv6`` on *every* interface, so Docker's choice of gateway endpoint
(``gw-priority`` on 28+, else its own order) decides the default route.
Endpoints of ``--internal`` networks get no ``Gateway``: only their pools are
routed. A pool is not routed when it cannot tell networks apart or a route
would break the next interface: the default pools (shared by every network
made without ``--subnet``) and the pools of the container's other Warren
networks (libnetwork refuses an interface address that an existing route
contains, and the same route twice). So two networks of one container that
share a pool cannot be told apart: that pool follows the default route, and
only the network of Docker's gateway endpoint reaches it. ``DisableGatewayService`` is always set, so Docker never adds
``docker_gwbridge`` (also not for IPv6-only networks).

CreateNetwork's options are read by :mod:`plugin.netoptions`.

Port publishing (ProgramExternalConnectivity and friends) is
:mod:`plugin.publishing`; it reads and saves endpoints through this class.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from datastore import Datastore, codec, keys

from . import netoptions
from .dataplane import Dataplane, DataplaneError, gateway_v4, gateway_v6, workload_mtu
from .errors import PluginError
from .ipamdriver import POOL_GATEWAY
from .names import NameResolver
from .ports import PortPublisher
from .records import Endpoint, Network

log = logging.getLogger(__name__)

UNDERLAY_MTU_TTL = 30.0  # s a read of the underlay interface's MTU is reused (see NetworkDriver._derived_mtu)

def mac_for(endpoint_id: str) -> str:
    """A stable, locally administered unicast MAC derived from the endpoint id."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(digest[:5]))


def aux_addresses(raw: object) -> list[str]:
    """IPAMData's ``AuxAddresses`` (``--aux-address NAME=IP``: ``{"NAME": "IP/LEN"}``) -> addresses.

    dockerd has already reserved them through RequestAddress (and releases them with the
    network); they are kept in the network record so ``warrenctl ipam check`` knows who holds them.
    """
    if not raw:
        return []
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise PluginError("AuxAddresses must map names to addresses")
    try:
        return sorted(str(ipaddress.ip_interface(v).ip) for v in raw.values())
    except ValueError as exc:
        raise PluginError(f"invalid auxiliary address: {exc}") from None


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
    shared_pools: frozenset[str] = frozenset()  # never routed per interface (the default pools)
    clock: Callable[[], float] = time.monotonic
    _networks: dict[str, Network] = field(default_factory=dict)
    _encaps: dict[str, str] = field(default_factory=dict)  # network id -> its pools' worst encapsulation
    _underlay: tuple[int, float] | None = None             # (underlay MTU, when it was read)

    # -- networks -----------------------------------------------------------

    def create_network(self, network_id: str, options: dict, ipv4: list[dict], ipv6: list[dict]) -> None:
        parsed = netoptions.parse(options)
        if parsed.ignored:
            log.info("network %s: ignoring Docker options %s", network_id[:12], ", ".join(parsed.ignored))
        pools: dict[int, list[str]] = {4: [], 6: []}
        aux: list[str] = []
        for version, data in ((4, ipv4), (6, ipv6)):
            for item in data or []:
                if item.get("Gateway") != POOL_GATEWAY[version]:
                    raise PluginError("warren networks need the warren IPAM driver: "
                                      "use --ipam-driver warren")
                pools[version].append(item["Pool"])
                aux += aux_addresses(item.get("AuxAddresses"))
        if not pools[4] and not pools[6]:
            raise PluginError("a warren network needs an IPv4 or an IPv6 subnet")
        network = Network(id=network_id, pools_v4=pools[4], pools_v6=pools[6], mtu=parsed.mtu,
                          profile=parsed.profile, internal=parsed.internal, aux_addresses=aux)
        self.store.put(keys.network(network_id), codec.dumps(network))
        self._networks[network_id] = network
        if self.names is not None:
            self.names.resolve_later(network_id)

    @staticmethod
    def check_options(options: dict) -> None:
        """GwAllocCheck (28+): refuse bad options before Docker requests any pool."""
        netoptions.parse(options)

    def refuse_publishing_if_internal(self, network_id: str, options: dict) -> None:
        """dockerd does not ask to publish ports on --internal networks; refuse if one does."""
        if options.get(netoptions.PORTMAP) and self.network(network_id).internal:
            name = self.network(network_id).name or network_id[:12]
            raise PluginError(f"network {name} is --internal: its containers cannot publish ports (-p)")

    def delete_network(self, network_id: str) -> None:
        self.store.delete(keys.network(network_id))
        self._networks.pop(network_id, None)
        self._encaps.pop(network_id, None)

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
        """The workload MTU of a network without ``mtu=``: the underlay's minus its pools' worst
        encapsulation overhead, without a netlink session or an etcd read per endpoint.

        Two caches, because the two inputs change differently. A network's pools are fixed at
        CreateNetwork and nothing changes a pool's encapsulation (``warrenctl pool`` adds and
        removes pools; swapping a pool under a live network was never followed: its endpoints
        kept their MTU), so the worst encapsulation is read once per network id and kept for
        the network's life (dropped by DeleteNetwork; a restarted plugin reads it again). The underlay MTU belongs to the host: ``warrenctl node
        start`` sizes the tunnel devices from it once, but an operator can change the NIC's MTU
        (or the default route can move to another interface) while the plugin runs, so a read
        is reused for :data:`UNDERLAY_MTU_TTL` seconds only: a burst of container starts pays
        for one read, and a change is seen by endpoints created half a minute later at most
        (existing endpoints keep their MTU either way, as before).
        """
        encap = self._encaps.get(network.id)
        if encap is None:
            encaps = [self.pool_encap(p) for p in network.pools_v4 + network.pools_v6]
            encap = max(encaps, key=lambda e: {"none": 0, "ipip": 20, "vxlan": 50}.get(e, 0), default="none")
            self._encaps[network.id] = encap
        now = self.clock()
        cached = self._underlay  # one read of the attribute: other threads may replace it
        if cached is None or now - cached[1] >= UNDERLAY_MTU_TTL:
            cached = (self.underlay_mtu(), now)
            self._underlay = cached
        return workload_mtu(cached[0], encap)

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
        slot, others = self._free_slot(sandbox, endpoint_id)
        joined = replace(endpoint, sandbox=sandbox, gateway_slot=slot)
        try:
            _, tmp = self.dataplane.create_workload(endpoint_id, endpoint.addresses, endpoint.mac,
                                                    endpoint.mtu, gateway6=gateway_v6(slot))
        except DataplaneError as exc:
            self._release_slot(joined)
            raise PluginError(str(exc)) from None
        try:
            unrouted = self._pools_routed_by(others) | self.shared_pools
            self.save(joined)
        except Exception:
            self.dataplane.remove_workload(endpoint_id)
            self._release_slot(joined)
            raise
        return join_answer(tmp, slot, endpoint, network, unrouted)

    def _pools_routed_by(self, endpoint_ids: list[str]) -> set[str]:
        """The pools of the networks of the container's other warren interfaces."""
        pools: set[str] = set()
        for other in endpoint_ids:
            kv = self.store.get(keys.endpoint(self.host, other))
            if kv is None:
                continue
            theirs = codec.loads(Endpoint, kv.value)
            try:
                net = self.network(theirs.network) if theirs.network else None
            except PluginError:  # its network is gone: it routes nothing of ours
                continue
            if net is not None:
                pools.update(net.pools_v4 if theirs.ipv4 else [])
                pools.update(net.pools_v6 if theirs.ipv6 else [])
        return pools

    def _free_slot(self, sandbox: str, endpoint_id: str) -> tuple[int, list[str]]:
        """Claim the lowest free gateway slot of this container (create-if-absent keys,
        so the cost does not grow with the number of endpoints on the host); returns it
        and the endpoints holding the container's other slots."""
        for _ in range(20):
            held = {int(keys.last_segment(kv.key)): kv.value.decode()
                    for kv in self.store.get_prefix(keys.sandbox_prefix(self.host, sandbox))}
            others = sorted(holder for holder in held.values() if holder != endpoint_id)
            for slot, holder in held.items():
                if holder == endpoint_id:
                    return slot, others
            slot = next(n for n in range(1, len(held) + 2) if n not in held)
            if slot > 254:
                raise PluginError("too many warren interfaces in one container")
            if self.store.create(keys.sandbox_slot(self.host, sandbox, slot), endpoint_id):
                return slot, others
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


def join_answer(src_name: str, slot: int, endpoint: Endpoint, network: Network,
                unrouted: set[str] | frozenset[str] = frozenset()) -> dict:
    """Join's answer for an endpoint holding gateway ``slot`` (see the module docstring)."""
    routes: list[dict] = []
    answer: dict = {"InterfaceName": {"SrcName": src_name, "DstPrefix": "eth"},
                    "DisableGatewayService": True}
    for present, gateway, length, pools, key in (
            (endpoint.ipv4, gateway_v4(slot), 32, network.pools_v4, "Gateway"),
            (endpoint.ipv6, gateway_v6(slot), 128, network.pools_v6, "GatewayIPv6")):
        if not present:
            continue
        routes.append({"Destination": f"{gateway}/{length}", "RouteType": 1})
        routes += [{"Destination": p, "RouteType": 0, "NextHop": gateway}
                   for p in pools if p not in unrouted]
        if not network.internal:
            answer[key] = gateway
    answer["StaticRoutes"] = routes
    return answer
