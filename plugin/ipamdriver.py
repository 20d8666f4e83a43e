"""The IpamDriver side: Docker's pools and addresses mapped onto Warren IPAM.

* ``RequestPool`` with ``--subnet`` maps to the Warren pool of that CIDR,
  creating it (with ``--ipam-opt`` options) when absent; without ``--subnet``
  it uses the default pool. The answer carries the real subnet plus
  ``Data: {"com.docker.network.gateway": "169.254.1.1/32"}``, so dockerd asks
  for no gateway address and no pool address is spent on one. Idempotent.
* ``RequestAddress`` assigns one address under a fresh handle (Docker gives
  no endpoint id at that point) with attributes ``purpose=docker`` and, from
  Docker 29 on, ``name`` = the container's name (``com.docker.network.endpoint.name``
  in the options; ``warrenctl ipam info`` shows it); the answer is a /32
  (/128) so the container routes everything through the host.
* ``ReleaseAddress`` releases by address (idempotent); ``ReleasePool`` keeps
  the pool, which other hosts' networks may share - except a pool this
  process's ``RequestPool`` created for a network that never came to be
  (dockerd releases the pools of a ``docker network create`` the driver
  refused): it is removed again if no network record names it and it holds
  no address, so a refused create leaves nothing in etcd.
* A *new* pool (RequestPool of a subnet IPAM does not have yet) must not
  overlap this host's subnets, a node's underlay address or an etcd member
  (:mod:`ipam.underlay`; ``protected`` is wired by :func:`plugin.app.create_app`).
* ``PoolID`` must be a strict CIDR and ``Address`` a plain address, else the
  request is refused before IPAM is touched.
* :meth:`IpamDriver.proof` tells the NetworkDriver which allocation holds an
  address (handle index key and its revision), so CreateEndpoint can store
  its record guarded by it. Its own fresh allocations are remembered (a
  bounded map, :data:`ISSUED_KEPT` entries), so the common case - Docker's
  CreateEndpoint right after our RequestAddress - asks etcd nothing more.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from datastore import codec, keys

from ipam import Allocator, InvalidPool, IpamError, PoolStore, make_pool
from ipam.pools import Pool, parse_cidr
from ipam.underlay import Protected, refuse_overlap
from ipam.workloads import Network

from . import metrics
from .errors import PluginError

log = logging.getLogger(__name__)

PURPOSE = "docker"  # attribute of every address Docker asked for (see ipam check)
GATEWAY_TYPE = "com.docker.network.gateway"
ADDRESS_TYPE = "RequestAddressType"
ENDPOINT_NAME = "com.docker.network.endpoint.name"  # Docker 29+: the container's name
POOL_GATEWAY = {4: "169.254.1.1/32", 6: "fe80::ecee:eeff:feee:eeee/128"}
VALID_POOL_OPTIONS = ("ipip", "vxlan", "nat-outgoing", "block-size")
ISSUED_KEPT = 4096  # fresh allocations remembered for CreateEndpoint's guard
ADDRESS_SPACES = {"LocalDefaultAddressSpace": "WarrenLocal",
                  "GlobalDefaultAddressSpace": "WarrenGlobal"}


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise PluginError(f"--ipam-opt {name}={value}: expected true or false")


def pool_from_options(cidr: str, options: dict[str, str]) -> Pool:
    unknown = sorted(set(options) - set(VALID_POOL_OPTIONS))
    if unknown:
        raise PluginError(f"unknown --ipam-opt {', '.join(unknown)}; valid options: "
                          + ", ".join(f"{o}=" + ("N" if o == "block-size" else "true")
                                      for o in VALID_POOL_OPTIONS))
    block_size = None
    if "block-size" in options:
        try:
            block_size = int(options["block-size"])
        except ValueError:
            raise PluginError("--ipam-opt block-size must be a prefix length such as 26") from None
    return make_pool(cidr, ipip=_flag("ipip", options.get("ipip", "false")),
                     vxlan=_flag("vxlan", options.get("vxlan", "false")),
                     nat_outgoing=_flag("nat-outgoing", options.get("nat-outgoing", "false")),
                     block_size=block_size)


@dataclass
class IpamDriver:
    allocator: Allocator
    default_pools: dict[int, str]
    _fresh: set[str] = field(default_factory=set)  # pools RequestPool made, no network yet
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # address -> (handle index key, its mod revision) of allocations this driver made
    _issued: OrderedDict = field(default_factory=OrderedDict)
    protected: Callable[[], list[Protected]] | None = None  # what a new pool must not overlap

    @property
    def pools(self) -> PoolStore:
        return self.allocator.pool_store

    def request_pool(self, pool: str, sub_pool: str, options: dict[str, str], v6: bool) -> dict:
        if sub_pool:
            raise PluginError("--ip-range is not supported: Warren allocates from the whole subnet")
        version = 6 if v6 else 4
        cidr = pool or self.default_pools[version]
        net = parse_cidr(cidr)
        if net.version != version:
            raise PluginError(f"{cidr} is not an IPv{version} subnet")
        wanted = pool_from_options(str(net), options)
        existing = self.pools.get(wanted.cidr)
        if existing is None:
            if self.protected is not None:
                refuse_overlap(wanted, self.protected())
            try:
                self.pools.add([wanted])
                with self._lock:
                    self._fresh.add(wanted.cidr)
            except InvalidPool as exc:
                if "already exists" not in str(exc):  # lost a race with another host: fine
                    raise
            existing = self.pools.get(wanted.cidr)
        elif options and (existing.encap, existing.nat_outgoing, existing.block_size) != (
                wanted.encap, wanted.nat_outgoing, wanted.block_size):
            raise PluginError(
                f"pool {existing.cidr} already exists with options "
                f"'{','.join(existing.options) or 'none'}' (block /{existing.block_size}); "
                "create the network with the same --ipam-opt or none")
        return {"PoolID": existing.cidr, "Pool": existing.cidr,
                "Data": {GATEWAY_TYPE: POOL_GATEWAY[version]}}

    def adopt(self, cidrs: list[str]) -> None:
        """A network now uses these pools: ReleasePool keeps them from now on."""
        with self._lock:
            self._fresh.difference_update(cidrs)

    def release_pool(self, pool_id: str) -> dict:
        with self._lock:
            fresh = pool_id in self._fresh
            self._fresh.discard(pool_id)
        if not fresh:
            return {}
        named = any(pool_id in n.pools_v4 + n.pools_v6
                    for n in codec.load_all(Network, self.pools.store.get_prefix(keys.NETWORKS)))
        if not named:
            try:
                self.pools.remove(pool_id)
                log.info("removed pool %s: the network it was made for was not created", pool_id)
            except IpamError as exc:  # in use after all (another host): keep it
                log.info("keeping pool %s: %s", pool_id, exc)
        return {}

    def request_address(self, pool_id: str, address: str, options: dict[str, str]) -> dict:
        if options.get(ADDRESS_TYPE) == GATEWAY_TYPE:
            raise PluginError("--gateway is not supported: Warren routes every container "
                              "through its host (gateway 169.254.1.1)")
        try:
            answer = self._request_address(pool_id, address, options.get(ENDPOINT_NAME, ""))
        except Exception:
            metrics.IPAM.labels("assign", "failed").inc()
            raise
        metrics.IPAM.labels("assign", "ok").inc()
        return answer

    def _request_address(self, pool_id: str, address: str, name: str) -> dict:
        net = parse_cidr(pool_id)
        if address:
            address = _plain_address(address)
        handle = f"docker-{uuid.uuid4().hex}"
        attrs = {"purpose": PURPOSE, "pool": pool_id, "since": str(int(time.time()))}
        if name:
            attrs["name"] = name.lstrip("/")
        if address:
            got = self.allocator.assign(handle, address=address, attrs=attrs)
            if got.pool != pool_id:
                self.allocator.release(got.address, handle)
                raise PluginError(f"{address} is not in pool {pool_id}")
        else:
            got = self.allocator.assign(handle, pool=pool_id, version=net.version, attrs=attrs)
        if got.revision:
            with self._lock:
                self._issued[got.address] = (keys.handle(handle, got.address), got.revision)
                self._issued.move_to_end(got.address)
                while len(self._issued) > ISSUED_KEPT:
                    self._issued.popitem(last=False)
        length = ipaddress.ip_address(got.address).max_prefixlen
        return {"Address": f"{got.address}/{length}", "Data": {}}

    def proof(self, address: str, fresh: bool = False) -> tuple[str, int] | None:
        """(handle index key, mod revision) of the allocation holding ``address``, None if IPAM
        does not hold it; from memory unless ``fresh`` (a guard built on it fails if stale)."""
        if not fresh:
            with self._lock:
                known = self._issued.get(address)
            if known is not None:
                return known
        return self.allocator.proof(address)

    def release_address(self, pool_id: str, address: str) -> dict:
        address = _plain_address(address)
        with self._lock:
            self._issued.pop(address, None)
        try:
            self.allocator.release(address)
        except Exception:
            metrics.IPAM.labels("release", "failed").inc()
            raise
        metrics.IPAM.labels("release", "ok").inc()
        return {}


def _plain_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise PluginError(f"{text[:60]!r} is not an IP address") from None
