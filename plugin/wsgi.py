"""Build the plugin app from the environment: ``gunicorn 'plugin.wsgi:create()'``.

The etcd connection is made lazily on the first request, i.e. after
gunicorn forked the worker (gRPC channels do not survive fork).
"""
from __future__ import annotations

import logging

from flask import Flask

from datastore import Datastore, EtcdConfig
from ipam import Allocator, PoolStore

from .app import create_app
from .config import PluginConfig
from .dataplane import Dataplane
from .ipamdriver import IpamDriver
from .metrics import ETCD_ERRORS
from .names import NameResolver
from .networks import NetworkDriver
from .ports import PortPublisher

log = logging.getLogger(__name__)


def build(config: PluginConfig, store: Datastore, dataplane: Dataplane,
          ports: PortPublisher | None = None, names: NameResolver | None = None) -> Flask:
    pools = PoolStore(store)

    def underlay_mtu() -> int:
        iface = config.underlay_iface or dataplane.default_route_interface()
        return dataplane.interface_mtu(iface) if iface else 1500

    def pool_encap(cidr: str) -> str:
        pool = pools.get(cidr)
        return pool.encap if pool else "none"

    network = NetworkDriver(store=store, host=config.host, dataplane=dataplane,
                            underlay_mtu=underlay_mtu, pool_encap=pool_encap, ports=ports,
                            names=names)
    ipam = IpamDriver(Allocator(store, config.host),
                      {4: config.default_pool_v4, 6: config.default_pool_v6})
    return create_app(network, ipam, scope=config.scope)


def create() -> Flask:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    config = PluginConfig.from_env()
    dataplane = Dataplane()
    dataplane.ensure_forwarding()
    store = Datastore(EtcdConfig.from_env())
    store.on_error = lambda kind: ETCD_ERRORS.labels("plugin", kind).inc()
    return build(config, store, dataplane, PortPublisher(), NameResolver(store))
