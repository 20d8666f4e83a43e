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

Validation (issue 12: nothing Docker - or anyone who can reach the socket -
sends is stored unchecked): CreateNetwork's IPAMData must carry a strict
``Pool`` CIDR of the right family that exists in Warren IPAM; CreateEndpoint's
``Address``/``AddressIPv6`` must parse, be of the field's family, lie in one of
the network's pools and be **held by Warren IPAM** (Docker always asks our
RequestAddress first). The record is written in one transaction guarded by the
allocation's handle index key (``ModRevisionIs``, see
:meth:`ipam.Allocator.proof`; the IPAM driver hands its own fresh allocations
over, so this costs no extra round trip), so an endpoint record never names an
address IPAM does not hold - which is what lets the allocator check records
cheaply (:mod:`ipam.allocator`). A refused request stores nothing. Records are
read through :mod:`datastore.codec`: an invalid network or endpoint record is
refused with its one-line error, listings skip invalid records, and
DeleteEndpoint deletes even an invalid record.

Port publishing (ProgramExternalConnectivity and friends) is
:mod:`plugin.publishing`; it reads and saves endpoints through this class.

etcd round trips: the driver keeps the last record it wrote of each endpoint
with that write's revision (:meth:`NetworkDriver.save`). Join and Leave start
from it and write in **one transaction** guarded by the record's mod revision
(and, for Join, by the sandbox's slots being as last seen: none at first).
``warrenctl endpoint ... profile`` rewrites records behind the plugin's back,
so a kept record is only a guess: a failed guard returns the current record
and the sandbox's slots, and the write is retried from those - never a blind
overwrite of what someone else wrote. A container's first Join is then one
round trip (it was four: read, list, create, put), Leave one (it was three).
Leave deletes the veth pair after answering (:meth:`NetworkDriver.leave` says why
that is safe).
:meth:`NetworkDriver.endpoint` still reads etcd: its callers write what they
read without a guard.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from datastore import Datastore, codec, keys
from datastore.codec import InvalidRecord
from datastore.ops import Delete, Get, GetPrefix, ModRevisionIs, Put, UnchangedSince

from . import netoptions
from .dataplane import Dataplane, DataplaneError, gateway_v4, gateway_v6, workload_mtu
from .errors import PluginError
from .ipamdriver import POOL_GATEWAY
from .names import NameResolver
from .ports import PortPublisher
from .records import Endpoint, Network

log = logging.getLogger(__name__)

UNDERLAY_MTU_TTL = 30.0  # s a read of the underlay interface's MTU is reused (see NetworkDriver._derived_mtu)
WRITE_ATTEMPTS = 20      # guarded writes of an endpoint record retried on a concurrent change

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


def _pool_of_data(item: dict, version: int) -> str:
    """IPAMData's ``Pool``: a strict CIDR of IP version ``version``."""
    pool = item.get("Pool")
    if not pool or not isinstance(pool, str):
        raise PluginError(f"IPv{version}Data has no Pool: create the network with --ipam-driver warren")
    try:
        net = ipaddress.ip_network(pool, strict=True)
    except ValueError:
        raise PluginError(f"IPv{version}Data Pool {pool[:60]!r} is not a subnet") from None
    if net.version != version:
        raise PluginError(f"IPv{version}Data Pool {net} is not an IPv{version} subnet")
    return str(net)


def endpoint_address(value: object, field_name: str, version: int, pools: list[str]) -> str | None:
    """CreateEndpoint's ``Address``/``AddressIPv6`` (``ip/len``) -> the plain address, checked to
    be of IP ``version`` and inside one of the network's ``pools``; None when not given."""
    if not value:
        return None
    if not isinstance(value, str):
        raise PluginError(f"{field_name} must be a string")
    try:
        ip = ipaddress.ip_interface(value).ip
    except ValueError:
        raise PluginError(f"{field_name} {value[:60]!r} is not an address") from None
    if ip.version != version:
        raise PluginError(f"{field_name} {ip} is not an IPv{version} address")
    if not any(ip in ipaddress.ip_network(p) for p in pools):
        raise PluginError(f"{field_name} {ip} is not in the network's pools "
                          f"({', '.join(pools) or 'none'}): use --ipam-driver warren")
    return str(ip)


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
    pool_exists: Callable[[str], bool] | None = None  # IPAM knows the pool (None: not checked)
    # (handle key, mod revision) of the IPAM allocation holding an address, None if none;
    # fresh=True skips the IPAM driver's memory of its own allocations (None: not checked)
    address_proof: Callable[..., tuple[str, int] | None] | None = None
    clock: Callable[[], float] = time.monotonic
    _networks: dict[str, Network] = field(default_factory=dict)
    _encaps: dict[str, str] = field(default_factory=dict)  # network id -> its pools' worst encapsulation
    _underlay: tuple[int, float] | None = None             # (underlay MTU, when it was read)
    _records: dict[str, tuple[Endpoint, int]] = field(default_factory=dict)  # id -> (last written, its revision)
    _removing: dict[str, threading.Thread] = field(default_factory=dict)  # Leave's veth deletes under way
    _removing_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- networks -----------------------------------------------------------

    def create_network(self, network_id: str, options: dict, ipv4: list[dict], ipv6: list[dict]) -> None:
        parsed = netoptions.parse(options)
        if parsed.ignored:
            log.info("network %s: ignoring Docker options %s", network_id[:12], ", ".join(parsed.ignored))
        pools: dict[int, list[str]] = {4: [], 6: []}
        aux: list[str] = []
        for version, data in ((4, ipv4), (6, ipv6)):
            for item in data or []:
                pool = _pool_of_data(item, version)
                if item.get("Gateway") != POOL_GATEWAY[version]:
                    raise PluginError("warren networks need the warren IPAM driver: "
                                      "use --ipam-driver warren")
                if self.pool_exists is not None and not self.pool_exists(pool):
                    raise PluginError(f"pool {pool} is not a warren pool: create the network with "
                                      "--ipam-driver warren")
                pools[version].append(pool)
                aux += aux_addresses(item.get("AuxAddresses"))
        if not pools[4] and not pools[6]:
            raise PluginError("a warren network needs an IPv4 or an IPv6 subnet")
        network = Network(id=network_id, pools_v4=pools[4], pools_v6=pools[6], mtu=parsed.mtu,
                          profile=parsed.profile, internal=parsed.internal, aux_addresses=aux,
                          host=self.host)
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
        network = codec.loads(Network, kv.value, kv.key)  # invalid: refused with its one-line error
        self._networks[network_id] = network
        return network

    # -- endpoints ----------------------------------------------------------

    def create_endpoint(self, network_id: str, endpoint_id: str, interface: dict,
                        options: dict) -> dict:
        network = self.network(network_id)
        v4 = endpoint_address(interface.get("Address"), "Address", 4, network.pools_v4)
        v6 = endpoint_address(interface.get("AddressIPv6"), "AddressIPv6", 6, network.pools_v6)
        if not v4 and not v6:
            raise PluginError("the endpoint has no address: use --ipam-driver warren")
        given_mac = interface.get("MacAddress") or ""
        mtu = network.mtu or self._derived_mtu(network)
        endpoint = Endpoint(id=endpoint_id, network=network_id, host=self.host,
                            ipv4=[v4] if v4 else [], ipv6=[v6] if v6 else [],
                            mac=given_mac or mac_for(endpoint_id), mtu=mtu)
        try:
            endpoint.validate()  # e.g. the MAC Docker passed
        except ValueError as exc:
            raise PluginError(f"invalid endpoint: {exc}") from None
        self._save_held(endpoint)
        return {} if given_mac else {"Interface": {"MacAddress": endpoint.mac}}

    def _save_held(self, endpoint: Endpoint) -> None:
        """Write a new endpoint record only while IPAM holds each of its addresses: one
        transaction guarded by the allocations' handle index keys (see the module docstring)."""
        if self.address_proof is None:
            self.save(endpoint)
            return
        key = keys.endpoint(self.host, endpoint.id)
        for fresh in (False, True):
            guards = []
            for address in endpoint.addresses:
                proof = self.address_proof(address, fresh=fresh)
                if proof is None:
                    raise PluginError(f"{address} is not allocated by warren IPAM (released, or "
                                      "not from --ipam-driver warren)")
                guards.append(ModRevisionIs(*proof))
            result = self.store.txn(guards, [Put(key, codec.dumps(endpoint))])
            if result.succeeded:
                self._records[endpoint.id] = (endpoint, result.revision)
                return
        raise PluginError(f"the addresses of endpoint {endpoint.id[:12]} keep changing in IPAM; try again")

    def _derived_mtu(self, network: Network) -> int:
        """The workload MTU of a network without ``mtu=``: the underlay's minus its pools' worst
        encapsulation overhead, without a netlink session or an etcd read per endpoint.

        Two caches, because the two inputs change differently. A network's pools are fixed at
        CreateNetwork and nothing changes a pool's encapsulation (``warrenctl pool`` adds and
        removes pools; swapping a pool under a live network was never followed: its endpoints
        kept their MTU), so the worst encapsulation is read once per network id and kept for
        the network's life (dropped by DeleteNetwork; a restarted plugin reads it again). The
        underlay MTU belongs to the host: ``warrenctl node start`` sizes the tunnel devices
        from it once, but an operator can change the NIC's MTU
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
        return codec.loads(Endpoint, kv.value, kv.key)  # invalid: refused with its one-line error

    def save(self, endpoint: Endpoint) -> int:
        """Write the record (unguarded: the caller just read it); returns the write's revision."""
        revision = self.store.put(keys.endpoint(self.host, endpoint.id), codec.dumps(endpoint))
        self._records[endpoint.id] = (endpoint, revision)
        return revision

    def _kept(self, endpoint_id: str) -> tuple[Endpoint, int]:
        """The record as this driver last wrote it, with that write's revision (a guess to be
        guarded, see the module docstring); read from etcd if not kept."""
        kept = self._records.get(endpoint_id)
        if kept is not None:
            return kept
        kv = self.store.get(keys.endpoint(self.host, endpoint_id))
        if kv is None:
            raise PluginError(f"endpoint {endpoint_id[:12]} does not exist on host {self.host}")
        return codec.loads(Endpoint, kv.value, kv.key), kv.mod_revision

    def _guarded_update(self, endpoint_id: str, change: Callable[[Endpoint], Endpoint],
                        extra: Callable[[Endpoint], list] = lambda e: []) -> Endpoint | None:
        """Write ``change(record)`` (plus the ops ``extra(record)``) only if the record is still
        the one changed; on a concurrent write start again from the current record. Returns
        the record written, None if the endpoint is gone."""
        key = keys.endpoint(self.host, endpoint_id)
        try:
            endpoint, revision = self._kept(endpoint_id)
        except PluginError:
            return None
        for _ in range(WRITE_ATTEMPTS):
            new = change(endpoint)
            result = self.store.txn([ModRevisionIs(key, revision)],
                                    [Put(key, codec.dumps(new))] + extra(endpoint), [Get(key)])
            if result.succeeded:
                self._records[endpoint_id] = (new, result.revision)
                return new
            kv = result.results[0]
            if kv is None:
                self._records.pop(endpoint_id, None)
                return None
            endpoint, revision = codec.loads(Endpoint, kv.value, kv.key), kv.mod_revision
        raise PluginError(f"endpoint {endpoint_id[:12]} keeps changing; try again")

    def delete_endpoint(self, endpoint_id: str) -> None:
        with self._removing_lock:
            removing = endpoint_id in self._removing
        if not removing:  # normally deleted at Leave already (or being deleted: no need to wait)
            self.dataplane.remove_workload(endpoint_id)
        self._records.pop(endpoint_id, None)
        try:
            endpoint = self.endpoint(endpoint_id)
        except PluginError:
            return  # already deleted: idempotent
        except InvalidRecord as exc:  # unreadable: it goes all the same (its slot cannot be known)
            log.warning("deleting endpoint %s: %s", endpoint_id[:12], exc)
            self.store.delete(keys.endpoint(self.host, endpoint_id))
            return
        self._release_slot(endpoint)
        self.store.delete(keys.endpoint(self.host, endpoint_id))
        self._records.pop(endpoint_id, None)  # a concurrent write may have kept it again
        if endpoint.published and self.ports:
            self.ports.sync(self.local_endpoints())

    def local_endpoints(self) -> list[Endpoint]:
        return codec.load_all(Endpoint, self.store.get_prefix(keys.endpoint_prefix(self.host)))

    # -- join / leave ---------------------------------------------------------

    def join(self, network_id: str, endpoint_id: str, sandbox: str) -> dict:
        endpoint, _ = self._kept(endpoint_id)
        if endpoint.network != network_id:
            raise PluginError(f"endpoint {endpoint_id[:12]} belongs to another network")
        network = self.network(network_id)
        joined, others = self._claim_slot(endpoint_id, sandbox)
        slot = joined.gateway_slot
        try:
            _, tmp = self.dataplane.create_workload(endpoint_id, joined.addresses, joined.mac,
                                                    joined.mtu, gateway6=gateway_v6(slot))
        except DataplaneError as exc:
            self._unjoin(endpoint_id)
            raise PluginError(str(exc)) from None
        try:
            unrouted = self._pools_routed_by(others) | self.shared_pools
        except Exception:
            self.dataplane.remove_workload(endpoint_id)
            self._unjoin(endpoint_id)
            raise
        return join_answer(tmp, slot, joined, network, unrouted)

    def _claim_slot(self, endpoint_id: str, sandbox: str) -> tuple[Endpoint, list[str]]:
        """Claim the lowest free gateway slot of the container and record the endpoint as
        joined to it, in one transaction; returns the joined record and the endpoints
        holding the container's other slots.

        The first attempt assumes what nearly every Join meets: the kept record is current
        and the container holds no slot (its first Warren interface), so slot 1. The guard
        (record's mod revision; nothing under the sandbox's slot keys newer than the listing
        the choice was made from - "no key" at first) makes a wrong guess fail as a whole;
        its answer (the record and the slots) is the next attempt's starting point.
        Create-if-absent keys per sandbox: the cost does not grow with the host's endpoints.
        """
        key, prefix = keys.endpoint(self.host, endpoint_id), keys.sandbox_prefix(self.host, sandbox)
        endpoint, revision = self._kept(endpoint_id)
        held: dict[int, str] = {}
        listed = 0  # the store revision the slots were listed at (0: assumed empty)
        for _ in range(WRITE_ATTEMPTS):
            mine = [slot for slot, holder in held.items() if holder == endpoint_id]
            slot = mine[0] if mine else next(n for n in range(1, len(held) + 2) if n not in held)
            if slot > 254:
                raise PluginError("too many warren interfaces in one container")
            joined = replace(endpoint, sandbox=sandbox, gateway_slot=slot)
            writes = [Put(key, codec.dumps(joined))]
            if not mine:
                writes.append(Put(keys.sandbox_slot(self.host, sandbox, slot), endpoint_id))
            result = self.store.txn([ModRevisionIs(key, revision), UnchangedSince(prefix, listed)],
                                    writes, [Get(key), GetPrefix(prefix)])
            if result.succeeded:
                self._records[endpoint_id] = (joined, result.revision)
                return joined, sorted(holder for holder in held.values() if holder != endpoint_id)
            kv, slots = result.results
            if kv is None:
                self._records.pop(endpoint_id, None)
                raise PluginError(f"endpoint {endpoint_id[:12]} does not exist on host {self.host}")
            endpoint, revision = codec.loads(Endpoint, kv.value, kv.key), kv.mod_revision
            held = {}
            for s in slots:
                try:
                    held[int(keys.last_segment(s.key))] = s.value.decode()
                except (ValueError, UnicodeDecodeError):  # not a slot number: holds no slot
                    continue
            listed = result.revision
        raise PluginError("could not pick a gateway for this container; try again")

    def _unjoin(self, endpoint_id: str) -> None:
        """Record the endpoint as not joined and free its slot (a Join's rollback, Leave)."""
        self._guarded_update(endpoint_id, lambda e: replace(e, sandbox=None), self._slot_release)

    def _slot_release(self, endpoint: Endpoint) -> list:
        if not endpoint.sandbox:
            return []
        return [Delete(keys.sandbox_slot(self.host, endpoint.sandbox, endpoint.gateway_slot))]

    def _pools_routed_by(self, endpoint_ids: list[str]) -> set[str]:
        """The pools of the networks of the container's other warren interfaces."""
        pools: set[str] = set()
        for other in endpoint_ids:
            theirs = codec.load_one(Endpoint, self.store.get(keys.endpoint(self.host, other)))
            if theirs is None:  # gone, or invalid (skipped and counted)
                continue
            try:
                net = self.network(theirs.network) if theirs.network else None
            except PluginError:  # its network is gone: it routes nothing of ours
                continue
            if net is not None:
                pools.update(net.pools_v4 if theirs.ipv4 else [])
                pools.update(net.pools_v6 if theirs.ipv6 else [])
        return pools

    def _release_slot(self, endpoint: Endpoint) -> None:
        if endpoint.sandbox:
            self.store.delete(keys.sandbox_slot(self.host, endpoint.sandbox, endpoint.gateway_slot))

    def leave(self, network_id: str, endpoint_id: str) -> None:
        """Record the endpoint as left, answer, and delete its veth pair in the background.

        Deleting a veth costs the kernel 15-25 ms (RCU grace periods), which dockerd used to
        wait for at every container stop. It need not: in every libnetwork version
        (``Endpoint.sbLeave``) the driver's Leave comes *before* dockerd touches the
        interface again (``Sandbox.clearNetworkResources`` moves the container side back to
        the host and renames it ``tmp...``, or the sandbox's namespace goes), and the next
        calls for this endpoint are DeleteEndpoint and ReleaseAddress - nothing of Docker's
        needs the pair gone. Deleting the host side by its own name removes the pair wherever
        dockerd has moved the container side meanwhile (if a step of dockerd's move meets the
        pair gone, dockerd logs a warning - as it did when the delete came first). Safe for
        what comes after: endpoint ids are random, so no later Join creates the same
        ``wrn...`` name; an address released and handed to a new container here gets its
        route and neighbour *replaced* onto the new interface, which deleting the old one
        does not touch; DeleteEndpoint does not wait for a delete under way. The record is
        written first, so if the plugin dies before the delete, the interface has no joined
        endpoint and start-up reconciliation (:mod:`plugin.reconcile`) removes it; a delete
        that fails is logged, and DeleteEndpoint tries again.
        """
        self._unjoin(endpoint_id)  # gone already: Leave is idempotent
        self._remove_later(endpoint_id)

    def _remove_later(self, endpoint_id: str) -> None:
        def remove() -> None:
            try:
                self.dataplane.remove_workload(endpoint_id)
            except Exception as exc:
                log.warning("could not delete the interface of endpoint %s: %s", endpoint_id[:12], exc)
            finally:
                with self._removing_lock:
                    self._removing.pop(endpoint_id, None)

        # not a daemon: a plugin stopping with SIGTERM finishes the deletes under way
        thread = threading.Thread(target=remove, name=f"warren-leave-{endpoint_id[:12]}")
        with self._removing_lock:
            self._removing[endpoint_id] = thread
        thread.start()

    def wait_removals(self, timeout: float | None = None) -> None:
        """Wait for Leave's background deletes under way (tests, benchmarks)."""
        with self._removing_lock:
            threads = list(self._removing.values())
        for thread in threads:
            thread.join(timeout)


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
