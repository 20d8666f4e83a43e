"""Start-up reconciliation of this host's workload plumbing with etcd.

Run before the plugin serves (a Join racing the sweep could otherwise lose
its fresh veth). The plan is a pure function of what the kernel has and what
etcd says:

* a ``wrn*`` interface with no joined endpoint behind it is an orphan: removed
  (also the pair of a Leave whose background delete the plugin did not live to
  finish: Leave records the endpoint as left before it deletes);
* a joined endpoint whose interface exists but whose /32 (/128) routes are
  missing or point elsewhere gets its routes back;
* a joined endpoint whose interface is gone cannot be repaired from here (the
  container side went with it): reported, left for Docker's Leave.

This compares the kernel with etcd only. Whether a record still has a
container behind it is for dockerd to say: the plugin's janitor
(:mod:`plugin.janitor`) compares the records with dockerd's view while the
plugin runs, and removes records, addresses, veths and ports no container
owns.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .dataplane import Dataplane, host_ifname
from .records import Endpoint

log = logging.getLogger(__name__)


@dataclass
class Plan:
    remove: list[str] = field(default_factory=list)                # host ifnames
    add_routes: dict[str, list[str]] = field(default_factory=dict)  # endpoint id -> addresses
    lost: list[str] = field(default_factory=list)                   # endpoint ids


def plan(interfaces: dict[str, int], routes: dict[str, int], endpoints: list[Endpoint]) -> Plan:
    result = Plan()
    joined = {host_ifname(e.id): e for e in endpoints if e.sandbox}
    for name in sorted(interfaces):
        if name not in joined:
            result.remove.append(name)
    for name, endpoint in sorted(joined.items()):
        index = interfaces.get(name)
        if index is None:
            result.lost.append(endpoint.id)
            continue
        missing = [a for a in endpoint.addresses if routes.get(a) != index]
        if missing:
            result.add_routes[endpoint.id] = missing
    return result


def reconcile(dataplane: Dataplane, endpoints: list[Endpoint]) -> Plan:
    todo = plan(dataplane.workload_interfaces(), dataplane.workload_routes(), endpoints)
    for name in todo.remove:
        log.info("removing orphan interface %s", name)
        dataplane.remove_workload(name[len("wrn"):])
    for endpoint_id, addresses in todo.add_routes.items():
        log.info("restoring routes %s of endpoint %s", addresses, endpoint_id[:12])
        dataplane.add_routes(endpoint_id, addresses)
    for endpoint_id in todo.lost:
        log.warning("endpoint %s is joined but its interface is gone", endpoint_id[:12])
    return todo
