"""Docker's port-publishing calls: ProgramExternalConnectivity,
RevokeExternalConnectivity and EndpointOperInfo.

dockerd sends ``com.docker.network.portmap`` (``-p``/``-P``) in the options of
ProgramExternalConnectivity for the container's gateway endpoint once its
sandbox is ready, and RevokeExternalConnectivity before Leave. Docker 29
(moby#50283) sends Program when an endpoint *becomes* the gateway for IPv4 or
IPv6 and Revoke when it stops being either, so Program may come again for an
endpoint that is already published (another role, same port map): the
endpoint keeps the host ports it holds and only the difference changes.
When another endpoint is the IPv6 gateway, Docker 29 adds
``no_proxy_6to4``: this endpoint then publishes on IPv4 host addresses only.

Order, so that a refusal leaves nothing behind: choose and hold the host ports
(:meth:`plugin.ports.PortPublisher.claim`, all or nothing), then record them
in the endpoint (``ports`` with the real host ports, ``published``), then
rewrite the rules from the records. A failure after the claim puts the old
record back and closes the new sockets. The whole sequence holds the
publisher's lock, so a concurrent sync cannot drop what is being recorded.

Cost for the many containers that publish nothing: Program without a port
map returns at once (a sandbox's port map never changes, so there is nothing
to undo either), and Revoke of an endpoint the last sync saw unpublished
does not read etcd.

EndpointOperInfo answers with the endpoint's details and, in Docker's shape,
``com.docker.network.portmap`` (real host ports) and the exposed ports.
Note that dockerd 20.10-29 read that port map only from built-in drivers: for
a remote driver the JSON decodes to a generic list, which its
``[]PortBinding`` type assertion drops (moby/libnetwork#2451), so ``docker
port``/``ps``/``inspect`` cannot show a remote driver's mappings whatever the
driver answers.

Endpoint records are read and saved through :class:`plugin.networks.NetworkDriver`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import PluginError
from .portplan import NO_PROXY_6TO4, PORTMAP, oper_value, parse_portmap, records
from .ports import PortPublisher
from .records import Endpoint

if TYPE_CHECKING:
    from .networks import NetworkDriver

log = logging.getLogger(__name__)

__all__ = ["PORTMAP", "Publishing"]


@dataclass
class Publishing:
    driver: NetworkDriver
    ports: PortPublisher | None = None  # owner of host ports and DNAT rules (None: -p unsupported)

    def program(self, endpoint_id: str, options: dict) -> None:
        requests = parse_portmap(options.get(PORTMAP))
        no_v6 = options.get(NO_PROXY_6TO4) in (True, "true")
        if self.ports is None:
            if requests:
                raise PluginError("publishing ports (-p) is not available on this node")
            return
        if not requests:  # most containers: no etcd read (a sandbox's port map never changes)
            return
        with self.ports.lock:
            endpoint = self.driver.endpoint(endpoint_id)
            mappings, undo = self.ports.claim(endpoint, requests, no_v6)
            try:
                self.driver.save(replace(endpoint, ports=records(mappings), published=True))
            except BaseException:
                undo()
                raise
            try:
                self.ports.sync(self.driver.local_endpoints())
            except BaseException:
                self._restore(endpoint, undo)
                raise
        log.info("endpoint %s publishes %s", endpoint_id[:12],
                 ", ".join(f"{m.show()}->{m.container_port}" for m in mappings) or "nothing")

    def _restore(self, endpoint: Endpoint, undo) -> None:
        try:
            self.driver.save(endpoint)
        except Exception as exc:  # etcd gone: the next sync settles it
            log.warning("endpoint %s: could not restore its record: %s", endpoint.id[:12], exc)
        undo()
        try:
            self.ports.sync(self.driver.local_endpoints())
        except Exception as exc:
            log.warning("after a failed publish: %s", exc)

    def revoke(self, endpoint_id: str) -> None:
        if self.ports is None or not self.ports.may_publish(endpoint_id):
            return  # known unpublished: no etcd read on every container stop
        with self.ports.lock:
            try:
                endpoint = self.driver.endpoint(endpoint_id)
            except PluginError:
                return
            if endpoint.published:
                self._unpublish(endpoint)

    def _unpublish(self, endpoint: Endpoint) -> None:
        self.driver.save(replace(endpoint, published=False))
        self.ports.sync(self.driver.local_endpoints())

    def oper_info(self, endpoint_id: str) -> dict:
        endpoint = self.driver.endpoint(endpoint_id)
        return {"Value": {"host": endpoint.host, "mac": endpoint.mac,
                          "addresses": endpoint.addresses, **oper_value(endpoint)}}
