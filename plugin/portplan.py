"""What ``docker run -p/-P`` asks of the driver and what it becomes, as pure functions.

dockerd sends ``com.docker.network.portmap`` in ProgramExternalConnectivity:
one entry (:class:`Request`) per ``-p``, with ``HostPort`` 0 for ``-p C`` and
for every exposed port of ``-P`` (the driver picks the port), a range as
``HostPort``..``HostPortEnd`` (``-p 8000-8010:80``: the first free one), and
``HostIP`` empty for "every address of the host". Each request becomes one
:class:`Mapping` per host address it is published on, all with one host port
(as Docker's bridge does): an empty ``HostIP`` means ``0.0.0.0`` if the
container has an IPv4 address and ``::`` (IPv6 hosts; proxied to the
container's IPv4 address when it has no IPv6 one, as docker-proxy does,
unless Docker says another endpoint is the IPv6 gateway:
``no_proxy_6to4``). Mappings are what the endpoint record keeps (``ports``)
with the real host ports, and what EndpointOperInfo reports.

How a mapping is served (see :mod:`plugin.ports`):

* traffic to a host address other than loopback is DNATed in the nat table
  (chain ``WARREN-DNAT``, from PREROUTING and OUTPUT) when the container has
  an address of the same family;
* traffic to loopback (``localhost:P``, ``-p 127.0.0.1:P:C``) is never DNATed
  (the chain returns first for 127.0.0.0/8 and ::1, so packets from other
  hosts to a loopback address can never be steered either); it reaches the
  socket that holds the host port and is proxied (:mod:`plugin.portproxy`),
  like IPv6 host traffic to an IPv4-only container.

Port choice for ``HostPort`` 0 walks the ephemeral range round robin from
after the last port handed out (as Docker's port allocator), preferring the
port the endpoint already holds when Docker programs it again (Docker 29).
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Iterator

from .errors import PluginError
from .records import Endpoint

PORTMAP = "com.docker.network.portmap"
EXPOSED_PORTS = "com.docker.network.endpoint.exposedports"
NO_PROXY_6TO4 = "com.docker.network.driver.private.no_proxy_6to4"  # Docker 29: another endpoint has IPv6
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
NUMBERS = {name: number for number, name in PROTOCOLS.items()}
WILDCARD = {4: "0.0.0.0", 6: "::"}
LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range, Docker's fallback too
CHAIN = "WARREN-DNAT"
HAIRPIN = "WARREN-HAIRPIN"  # nat POSTROUTING: a container reaching its own published port


@dataclass(frozen=True)
class Request:
    """One entry of Docker's port map."""
    proto: str
    container_port: int
    host_ip: str = ""        # "" = every address of the host
    host_port: int = 0       # 0 = any free port
    host_port_end: int = 0   # last port of a range; == host_port for a single port

    def allows(self, port: int) -> bool:
        if not self.host_port:
            return True
        return self.host_port <= port <= self.host_port_end


@dataclass(frozen=True)
class Mapping:
    """One published host address and port (kept in ``Endpoint.ports``)."""
    proto: str
    host_port: int
    container_port: int
    host_ip: str = ""   # concrete (0.0.0.0 / :: = every address); "" only in records of older versions

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.host_ip).version

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.proto, self.host_ip, self.host_port)

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host_ip).is_loopback

    def show(self) -> str:
        host = f"[{self.host_ip}]" if self.family == 6 else self.host_ip
        return f"{host}:{self.host_port}/{self.proto}"


def _host_ip(raw: object) -> str:
    if raw in (None, ""):
        return ""
    if not isinstance(raw, str):
        raise PluginError(f"invalid host address {raw!r} in -p")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise PluginError(f"invalid host address {raw!r} in -p") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified:  # -p 0.0.0.0:P:C is "every IPv4 address", not every address
        return WILDCARD[address.version]
    return str(address)


def parse_portmap(raw: object) -> list[Request]:
    """Docker's ``com.docker.network.portmap`` list -> validated requests."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PluginError("the port map must be a list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise PluginError("each port mapping must be an object")
        proto = PROTOCOLS.get(item.get("Proto"))
        if proto is None:
            raise PluginError(f"unsupported protocol number {item.get('Proto')!r} in -p")
        port, start, end = item.get("Port"), item.get("HostPort") or 0, item.get("HostPortEnd") or 0
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise PluginError(f"invalid container port {port!r} in -p")
        for value in (start, end):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536:
                raise PluginError(f"invalid host port {value!r} in -p")
        end = end or start
        if not start and end:
            raise PluginError(f"invalid host port range 0-{end} in -p")
        if end < start:
            raise PluginError(f"invalid host port range {start}-{end} in -p")
        out.append(Request(proto, port, _host_ip(item.get("HostIP")), start, end))
    return out


def host_addresses(request: Request, has_v4: bool, has_v6: bool, host_v6: bool = True,
                   no_v6: bool = False) -> list[str]:
    """The host addresses one request is published on (empty: none applies)."""
    if request.host_ip:
        version = ipaddress.ip_address(request.host_ip).version
        if version == 4 and not has_v4:
            raise PluginError(f"cannot publish on IPv4 address {request.host_ip}: "
                              "the container has no IPv4 address on this network")
        if version == 6 and not host_v6:
            raise PluginError(f"cannot publish on IPv6 address {request.host_ip}: this host has no IPv6")
        if version == 6 and no_v6:
            return []  # Docker 29: another endpoint of the container publishes on IPv6
        return [request.host_ip]
    out = [WILDCARD[4]] if has_v4 else []
    if host_v6 and not no_v6 and (has_v4 or has_v6):
        out.append(WILDCARD[6])
    return out


def port_candidates(request: Request, held: int | None = None, start: int | None = None,
                    ephemeral: tuple[int, int] = EPHEMERAL) -> Iterator[int]:
    """Host ports to try for ``request``, best first.

    ``held``: the port the endpoint already has for it (kept when Docker
    programs the endpoint again). ``start``: where the round robin over the
    ephemeral range resumes for ``HostPort`` 0.
    """
    if held is not None and request.allows(held):
        yield held
    if request.host_port:
        lo, hi, first = request.host_port, request.host_port_end, request.host_port
    else:
        lo, hi = ephemeral
        first = start if start is not None and lo <= start <= hi else lo
    for port in list(range(first, hi + 1)) + list(range(lo, first)):
        if port != held:
            yield port


def conflicts(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    """Whether two (proto, host address, port) reservations exclude each other."""
    if a[0] != b[0] or a[2] != b[2]:
        return False
    if a[1] == b[1]:
        return True
    va, vb = ipaddress.ip_address(a[1]), ipaddress.ip_address(b[1])
    return va.version == vb.version and (va.is_unspecified or vb.is_unspecified)


def stored(endpoint: Endpoint) -> list[Mapping]:
    """An endpoint's mappings; records of older versions ("" = both families) are expanded."""
    out = []
    for raw in endpoint.ports:
        m = Mapping(**raw)
        if m.host_ip:
            out.append(m)
            continue
        for version, addresses in ((4, endpoint.ipv4), (6, endpoint.ipv6)):
            if addresses:
                out.append(Mapping(m.proto, m.host_port, m.container_port, WILDCARD[version]))
    return out


def records(mappings: list[Mapping]) -> list[dict]:
    return [asdict(m) for m in mappings]


def dnat_target(m: Mapping, endpoint: Endpoint) -> str | None:
    """The container address the nat table sends ``m`` to (None: the proxy serves it)."""
    if m.loopback:
        return None
    addresses = endpoint.ipv4 if m.family == 4 else endpoint.ipv6
    return addresses[0] if addresses else None


def proxy_target(m: Mapping, endpoint: Endpoint) -> tuple[str, int] | None:
    """Where the proxy connects for connections that reach the socket holding ``m``."""
    same = endpoint.ipv4 if m.family == 4 else endpoint.ipv6
    other = endpoint.ipv4 if m.family == 6 else []  # 6-to-4, as docker-proxy; never 4-to-6
    addresses = same or other
    return (addresses[0], m.container_port) if addresses else None


def dnat_rules(published: list[tuple[Endpoint, list[Mapping]]], version: int) -> str:
    """iptables-restore text for the nat table of one family (pure).

    ``WARREN-DNAT`` (from PREROUTING and OUTPUT) sends published ports to the
    containers; ``WARREN-HAIRPIN`` (from POSTROUTING) masquerades a container's
    connection to its own published port (through a host address), as Docker's
    bridge does, or the container would see its own address answer itself.
    """
    lines = ["*nat", f":{CHAIN} - [0:0]", f":{HAIRPIN} - [0:0]", f"-F {CHAIN}", f"-F {HAIRPIN}",
             f"-A {CHAIN} -d {LOOPBACK[version]} -j RETURN"]
    hairpins: list[str] = []
    for endpoint, mappings in sorted(published, key=lambda p: p[0].id):
        for m in mappings:
            target = dnat_target(m, endpoint)
            if m.family != version or target is None:
                continue
            to = target if version == 4 else f"[{target}]"
            match = "-m addrtype --dst-type LOCAL" if m.host_ip == WILDCARD[version] else f"-d {m.host_ip}"
            comment = f'-m comment --comment "warren {endpoint.id[:12]}"'
            lines.append(f"-A {CHAIN} -p {m.proto} {match} -m {m.proto} --dport {m.host_port} {comment} "
                         f"-j DNAT --to-destination {to}:{m.container_port}")
            hairpin = (f"-A {HAIRPIN} -s {target} -d {target} -p {m.proto} -m {m.proto} "
                       f"--dport {m.container_port} {comment} -j MASQUERADE")
            if hairpin not in hairpins:
                hairpins.append(hairpin)
    lines += hairpins + ["COMMIT", ""]
    return "\n".join(lines)


def oper_value(endpoint: Endpoint) -> dict:
    """The port map and exposed ports in Docker's EndpointOperInfo shape (real host ports)."""
    if not endpoint.published:
        return {}
    portmap, exposed = [], []
    for m in stored(endpoint):
        target = proxy_target(m, endpoint)
        portmap.append({"Proto": NUMBERS[m.proto], "IP": target[0] if target else "",
                        "Port": m.container_port, "HostIP": m.host_ip,
                        "HostPort": m.host_port, "HostPortEnd": m.host_port})
        port = {"Proto": NUMBERS[m.proto], "Port": m.container_port}
        if port not in exposed:
            exposed.append(port)
    return {PORTMAP: portmap, EXPOSED_PORTS: exposed}


def ports_column(endpoint: Endpoint) -> str:
    """The published ports as ``docker ps`` shows a bridge container's (for warrenctl: dockerd cannot)."""
    if not endpoint.published:
        return ""
    return ", ".join(f"{m.show().rsplit('/', 1)[0]}->{m.container_port}/{m.proto}" for m in stored(endpoint))
