"""Warren IPAM: pools, host-affine blocks and race-free allocation by handle.

* :mod:`ipam.pools`     - the Pool record and its validation (pure)
* :mod:`ipam.blocks`    - the Block record and block arithmetic (pure)
* :mod:`ipam.poolstore` - pools in etcd: add without overlap races, remove safely
* :mod:`ipam.allocator` - assign/release by handle, one etcd transaction each
* :mod:`ipam.inventory` - read-only views for the CLI
"""
from .allocator import Allocator, Assignment
from .blocks import Allocation, Block
from .config import IpamConfig, load_config, save_config
from .errors import (AddressInUse, AddressNotInPool, Contention, InvalidPool,
                     InvalidRequest, IpamError, PoolExhausted, PoolInUse,
                     PoolNotFound)
from .pools import Pool, make_pool
from .poolstore import PoolStore

__all__ = [
    "Allocator", "Assignment", "Allocation", "Block", "IpamConfig", "load_config",
    "save_config", "AddressInUse", "AddressNotInPool", "Contention", "InvalidPool",
    "InvalidRequest", "IpamError", "PoolExhausted", "PoolInUse", "PoolNotFound",
    "Pool", "make_pool", "PoolStore",
]
