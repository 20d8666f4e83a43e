"""IP pools: the record stored in etcd and its validation (pure, no I/O).

A pool is a CIDR that Warren hands addresses out of, in blocks of
``block_size`` (default /26 for IPv4, /122 for IPv6 - 64 addresses, as in
Calico). ``encap`` says how traffic to the pool crosses hosts: ``none``
(plain routed), ``ipip`` (IPv4 only) or ``vxlan``. ``nat_outgoing``
masquerades traffic leaving every pool; ``disabled`` stops new allocations.

A stored pool passes the same checks as a new one (``validate``, at every
read and write: a strict CIDR outside the reserved ranges, a known
encapsulation, a block size that fits) and sits at ``pools/<its cidr>``
(``check_key``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from datastore import fields, keys

from .errors import InvalidPool

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
ENCAPS = ("none", "ipip", "vxlan")

# Ranges no pool may touch.
_RESERVED = {
    4: [ipaddress.ip_network(n) for n in
        ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32")],
    6: [ipaddress.ip_network(n) for n in ("::/128", "::1/128", "fe80::/10", "ff00::/8")],
}
_RESERVED_WHY = {"0.0.0.0/8": "'this network'", "127.0.0.0/8": "loopback",
                 "169.254.0.0/16": "link-local", "224.0.0.0/4": "multicast",
                 "255.255.255.255/32": "broadcast", "::/128": "unspecified",
                 "::1/128": "loopback", "fe80::/10": "link-local", "ff00::/8": "multicast"}


@dataclass
class Pool:
    cidr: str
    encap: str = "none"
    nat_outgoing: bool = False
    disabled: bool = False
    block_size: int = 0  # 0: the default for the family

    def __post_init__(self) -> None:
        if not self.block_size:
            self.block_size = DEFAULT_BLOCK_SIZE[self.network.version]

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def options(self) -> list[str]:
        """Human-readable options, as ``pool show`` prints them."""
        opts = [self.encap] if self.encap != "none" else []
        if self.nat_outgoing:
            opts.append("nat-outgoing")
        if self.disabled:
            opts.append("disabled")
        return opts

    def contains(self, address: str) -> bool:
        return ipaddress.ip_address(address) in self.network

    def validate(self) -> None:
        fields.one_of(self.encap, "encap", ENCAPS)
        if fields.cidr(self.cidr, "cidr").with_prefixlen != self.cidr:
            raise ValueError(f"cidr {self.cidr!r} is not written as {self.network} (canonical)")
        try:
            make_pool(self.cidr, ipip=self.encap == "ipip", vxlan=self.encap == "vxlan",
                      block_size=self.block_size)
        except InvalidPool as exc:
            raise ValueError(str(exc)) from None

    def check_key(self, key: str) -> None:
        fields.key_is(key, keys.pool(self.cidr), f"pool {self.cidr}")


def parse_cidr(text: str) -> IPNetwork:
    """Parse a network CIDR strictly, with messages a user can act on."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidPool(f"{text!r} is not a valid CIDR (e.g. 10.20.10.0/24)") from None
    raise InvalidPool(f"{text} has host bits set; did you mean {loose}?")


def make_pool(cidr: str, *, ipip: bool = False, vxlan: bool = False,
              nat_outgoing: bool = False, disabled: bool = False,
              block_size: int | None = None) -> Pool:
    """Build a pool from user options, validating everything but overlaps."""
    net = parse_cidr(cidr)
    if ipip and vxlan:
        raise InvalidPool("--ipip and --vxlan are mutually exclusive: a pool has one encapsulation")
    if ipip and net.version == 6:
        raise InvalidPool("IP-in-IP is not supported for IPv6 pools; use --vxlan")
    for reserved in _RESERVED[net.version]:
        if net.overlaps(reserved):
            raise InvalidPool(
                f"{net} overlaps the {_RESERVED_WHY[str(reserved)]} range {reserved}")
    size = block_size if block_size is not None else DEFAULT_BLOCK_SIZE[net.version]
    if not isinstance(size, int) or isinstance(size, bool):
        raise InvalidPool("block size must be a prefix length such as 26")
    if size > net.max_prefixlen:
        raise InvalidPool(f"block size /{size} is longer than an IPv{net.version} address")
    if size < net.prefixlen:
        raise InvalidPool(
            f"pool {net} is smaller than one /{size} block; use a bigger pool or --block-size {net.prefixlen}")
    if net.max_prefixlen - size > 16:
        raise InvalidPool(
            f"block size /{size} is out of range for {net}: a block must hold at most 65536 "
            f"addresses (/{net.max_prefixlen - 16} or longer)")
    encap = "ipip" if ipip else "vxlan" if vxlan else "none"
    return Pool(cidr=str(net), encap=encap, nat_outgoing=nat_outgoing,
                disabled=disabled, block_size=size)


def check_overlap(pool: Pool, others: Iterable[Pool]) -> None:
    net = pool.network
    for other in others:
        if other.cidr == pool.cidr:
            raise InvalidPool(f"pool {pool.cidr} already exists")
        if other.version == pool.version and net.overlaps(other.network):
            raise InvalidPool(f"{pool.cidr} overlaps the existing pool {other.cidr}")
