"""The control plane, off limits to workloads: which addresses it is and where the agent finds them.

A workload (a tenant's container, possibly hostile) must not reach what
runs the cluster: etcd (plain http on the underlay unless TLS is set up:
a write to ``/warren/v1/...`` re-tags a container into another network),
the BGP speakers (179), the node agents' metrics (9091) and whatever else
listens on a node. So every host's policy agent keeps one set per IP
version, ``warren-control-v4`` / ``-v6`` (:data:`profiles.names.CONTROL_SET`),
of

* every etcd member's address, from the agent's own ``EtcdConfig``
  endpoints (a host name is resolved once per full refresh; a name that does
  not resolve keeps what it resolved to before). Loopback members need
  nothing: a workload's ``127.0.0.1`` is its own;
* every registered node's underlay IPv4 and IPv6 (``/warren/v1/nodes/``,
  followed by a watch, so a node that joins is covered within moments);
* this host's own addresses (every interface but loopback and workload
  interfaces; link-local ones left out), read from the kernel at every full
  refresh and whenever Docker's bridges change.

Calico's failsafe ports and host endpoints protected the hosts; here the
idea covers the whole cluster and every port: a workload's packet to a
control-plane address is dropped (:mod:`profiles.generator`,
``WARREN-FAILSAFE``) *before* its profiles are consulted, on FORWARD (another
node, an etcd member) and on INPUT (this host), whatever ``host_policy``
says. The only way through is an explicit rule: an outbound ``allow`` rule
of one of the workload's profiles whose ``to cidr`` names that one address
(``/32`` or ``/128``; ``0.0.0.0/0`` or a subnet never opens the control
plane), e.g. ``warrenctl profile ops rule add outbound allow tcp to ports
9091 cidr 198.19.0.2/32`` opens one node's metrics to profile ``ops``. Such
a rule is *necessary, not sufficient*: the profiles still decide in order,
so an earlier deny still wins. Established flows stay up.

A consequence to know: a port another host publishes (``docker run -p``) is
reached at that host's underlay address, so a workload reaches it only
through such a rule (from the host itself and from outside nothing changes).

DNS: when a node runs a resolver for workloads, its port 53 (udp and tcp)
stays open (``resolvers`` of :func:`profiles.generator.chain_rules`). There
is none yet: :data:`DNS_RESOLVERS` is empty.

Everything here is pure but :func:`resolve`, which asks the host's
resolver (``getaddrinfo``) about the configured etcd host names.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import Any, Callable, Iterable, Mapping

from .generator import WORKLOAD_PREFIX  # workload interfaces: their addresses are not the host's

log = logging.getLogger(__name__)

DNS_RESOLVERS: tuple[str, ...] = ()  # control-plane addresses whose port 53 workloads may use (none yet)

Resolver = Callable[[str], list[str]]


def _address(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


def resolve(host: str) -> list[str]:
    """The addresses of ``host`` (an address is itself); raises OSError if it does not resolve."""
    if _address(host) is not None:
        return [str(_address(host))]
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def etcd_addresses(hosts: Iterable[str], previous: Mapping[str, list[str]] | None = None,
                   resolver: Resolver = resolve) -> dict[str, list[str]]:
    """Host name -> addresses of each etcd member; a name that fails keeps ``previous``'s answer."""
    found: dict[str, list[str]] = {}
    for host in dict.fromkeys(hosts):
        try:
            found[host] = sorted(set(resolver(host)))
        except (OSError, UnicodeError, ValueError) as exc:
            kept = list((previous or {}).get(host, []))
            log.warning("etcd member %s does not resolve (%s); the control plane keeps %s", host, exc,
                        " ".join(kept) or "nothing for it")
            found[host] = kept
    return found


def local_addresses(ip_json: str) -> list[str]:
    """This host's own addresses from ``ip -j addr show`` output (loopback, workload interfaces and
    link-local addresses left out); ``[]`` for output that does not parse."""
    try:
        links = json.loads(ip_json or "[]")
    except ValueError:
        return []
    found = set()
    for link in links if isinstance(links, list) else ():
        if not isinstance(link, dict):
            continue
        name = str(link.get("ifname", ""))
        if name == "lo" or name.startswith(WORKLOAD_PREFIX):
            continue
        for info in link.get("addr_info") or ():
            address = _address(info.get("local")) if isinstance(info, dict) else None
            if address is not None:
                found.add(address)
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))
            if not (a.is_loopback or a.is_link_local or a.is_unspecified)]


def members(etcd: Mapping[str, Iterable[str]], nodes: Iterable[tuple[str | None, str | None]],
            local: Iterable[str]) -> list[str]:
    """Every control-plane address: etcd members, nodes' ``(ipv4, ipv6)``, this host's own.

    Whatever is not an address, and loopback or unspecified addresses, are left out."""
    candidates = [a for addresses in etcd.values() for a in addresses]
    candidates += [a for pair in nodes for a in pair if a]
    candidates += list(local)
    found = {a for a in map(_address, candidates) if a is not None}
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))
            if not (a.is_loopback or a.is_unspecified)]
