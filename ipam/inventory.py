"""Read-only views of IPAM state for ``warrenctl ipam show|info``.

Listings skip invalid block records (counted, see :mod:`datastore.codec`);
``ipam info`` of an address in an invalid block refuses with the reason.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datastore import Datastore, codec, keys

from .blocks import Allocation, Block, block_of
from .errors import InvalidRequest
from .poolstore import PoolStore


def list_blocks(store: Datastore, host: str | None = None) -> list[Block]:
    blocks = codec.load_all(Block, store.get_prefix(keys.BLOCKS))
    if host is not None:
        blocks = [b for b in blocks if b.affinity == host
                  or any(a.host == host for a in b.allocations.values())]
    return sorted(blocks, key=lambda b: (b.affinity or "", b.network.version, b.network))


@dataclass(frozen=True)
class AddressInfo:
    address: str
    pool: str | None
    block: Block | None
    allocation: Allocation | None


def address_info(store: Datastore, address: str) -> AddressInfo:
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise InvalidRequest(f"{address!r} is not an IP address") from None
    for pool in PoolStore(store).list():
        if pool.contains(address):
            kv = store.get(keys.block(block_of(pool, address)))
            block = codec.loads(Block, kv.value, kv.key) if kv else None
            return AddressInfo(address, pool.cidr, block, block.holder(address) if block else None)
    return AddressInfo(address, None, None, None)
