"""Docker's port-publishing calls: ProgramExternalConnectivity,
RevokeExternalConnectivity and EndpointOperInfo.

dockerd sends ``com.docker.network.portmap`` (``-p``/``-P``) in the options of
ProgramExternalConnectivity once the container's sandbox is ready, and
RevokeExternalConnectivity before Leave. The mappings are kept in the
endpoint record (``ports``, ``published``) so the DNAT chains can always be
regenerated from etcd; :class:`plugin.ports.PortPublisher` owns the kernel
side. EndpointOperInfo is how dockerd learns an endpoint's details for
``docker inspect`` (and, with the port map, ``docker port``).

Endpoint records are read and saved through :class:`plugin.networks.NetworkDriver`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import PluginError
from .ports import PortPublisher, parse_portmap

if TYPE_CHECKING:
    from .networks import NetworkDriver

PORTMAP = "com.docker.network.portmap"


@dataclass
class Publishing:
    driver: NetworkDriver
    ports: PortPublisher | None = None  # owner of the -p DNAT rules (None: -p unsupported)

    def program(self, endpoint_id: str, options: dict) -> None:
        mappings = parse_portmap(options.get(PORTMAP))
        if not mappings:
            return
        if self.ports is None:
            raise PluginError("publishing ports (-p) is not available on this node")
        endpoint = self.driver.endpoint(endpoint_id)
        self.driver.save(replace(endpoint, ports=[m.__dict__ for m in mappings], published=True))
        try:
            self.ports.sync(self.driver.local_endpoints())
        except PluginError:
            self.driver.save(endpoint)
            raise

    def revoke(self, endpoint_id: str) -> None:
        try:
            endpoint = self.driver.endpoint(endpoint_id)
        except PluginError:
            return
        if endpoint.published:
            self.driver.save(replace(endpoint, published=False))
            if self.ports:
                self.ports.sync(self.driver.local_endpoints())

    def oper_info(self, endpoint_id: str) -> dict:
        endpoint = self.driver.endpoint(endpoint_id)
        return {"Value": {"host": endpoint.host, "mac": endpoint.mac,
                          "addresses": endpoint.addresses}}
