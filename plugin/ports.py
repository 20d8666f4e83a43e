"""Port publishing (``docker run -p HOSTPORT:PORT``) with iptables DNAT.

Docker hands the port map to ``ProgramExternalConnectivity`` (and takes it
back with ``RevokeExternalConnectivity``). The plugin is the single writer
of one nat chain per family, ``WARREN-DNAT``, jumped to from PREROUTING (traffic
from other hosts) and OUTPUT (from this host itself). The chain is always
regenerated whole from this host's published endpoints in etcd by a pure
function and written atomically with ``iptables-restore --noflush``, so a
restart or a lost update heals by itself. Replies need no rule: conntrack
reverses the DNAT, and the node's WARREN-FORWARD chain lets the routed
packets through.
"""
from __future__ import annotations

import ipaddress
import subprocess
import threading
from dataclasses import dataclass

from .errors import PluginError
from .records import Endpoint

CHAIN = "WARREN-DNAT"
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
TOOLS = {4: "iptables", 6: "ip6tables"}


@dataclass(frozen=True)
class Mapping:
    proto: str
    host_port: int
    container_port: int
    host_ip: str = ""


def parse_portmap(raw: object) -> list[Mapping]:
    """Docker's ``com.docker.network.portmap`` list -> validated mappings."""
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
        port, host_port = item.get("Port"), item.get("HostPort")
        end = item.get("HostPortEnd") or host_port
        if not isinstance(port, int) or not 0 < port < 65536:
            raise PluginError(f"invalid container port {port!r} in -p")
        if not host_port:
            raise PluginError(f"publish container port {port} with an explicit host port "
                              f"(-p HOSTPORT:{port}); warren does not pick one")
        if not isinstance(host_port, int) or not 0 < host_port < 65536 or end != host_port:
            raise PluginError(f"invalid host port {host_port!r} in -p (ranges are not supported)")
        host_ip = item.get("HostIP") or ""
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise PluginError(f"invalid host address {host_ip!r} in -p") from None
        out.append(Mapping(proto, host_port, port, host_ip))
    return out


def dnat_rules(endpoints: list[Endpoint], version: int) -> str:
    """iptables-restore text for the nat table of one family (pure)."""
    lines = ["*nat", f":{CHAIN} - [0:0]", f"-F {CHAIN}"]
    for endpoint in sorted(endpoints, key=lambda e: e.id):
        addresses = endpoint.ipv4 if version == 4 else endpoint.ipv6
        if not addresses:
            continue
        target = addresses[0] if version == 4 else f"[{addresses[0]}]"
        for raw in endpoint.ports:
            m = Mapping(**raw)
            if m.host_ip and ipaddress.ip_address(m.host_ip).version != version:
                continue
            match = f"-d {m.host_ip}" if m.host_ip else "-m addrtype --dst-type LOCAL"
            lines.append(f"-A {CHAIN} -p {m.proto} {match} -m {m.proto} --dport {m.host_port} "
                         f'-m comment --comment "warren {endpoint.id[:12]}" '
                         f"-j DNAT --to-destination {target}:{m.container_port}")
    lines += ["COMMIT", ""]
    return "\n".join(lines)


class PortPublisher:
    """Owner of the WARREN-DNAT chains; ``sync`` rewrites them from endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def sync(self, endpoints: list[Endpoint]) -> None:
        published = [e for e in endpoints if e.published and e.ports]
        with self._lock:
            for version, tool in TOOLS.items():
                try:
                    subprocess.run([f"{tool}-restore", "--noflush"], input=dnat_rules(published, version),
                                   text=True, check=True, capture_output=True, timeout=30)
                    for parent in ("PREROUTING", "OUTPUT"):
                        check = [tool, "-w", "-t", "nat", "-C", parent, "-j", CHAIN]
                        if subprocess.run(check, capture_output=True, timeout=30).returncode:
                            subprocess.run([tool, "-w", "-t", "nat", "-I", parent, "1", "-j", CHAIN],
                                           check=True, capture_output=True, timeout=30)
                except FileNotFoundError:
                    if version == 4:
                        raise PluginError("iptables is not installed; -p needs it") from None
                except subprocess.CalledProcessError as exc:
                    if version == 4 or published:
                        raise PluginError(f"{tool} failed: {(exc.stderr or '').strip()}") from None
