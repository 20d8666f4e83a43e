"""Cluster-wide IPAM settings (one record at ``/warren/v1/ipam/config``).

An invalid record (not JSON, a field of the wrong type) reads as the
defaults, skipped and counted like any invalid record (:mod:`datastore.codec`),
so IPAM keeps working; ``warrenctl records check`` reports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from datastore import Datastore, codec, keys


@dataclass
class IpamConfig:
    # When true a host never borrows addresses from another host's block:
    # a full pool fails instead of adding /32 routes.
    strict_affinity: bool = False


def load_config(store: Datastore) -> IpamConfig:
    return codec.load_one(IpamConfig, store.get(keys.IPAM_CONFIG)) or IpamConfig()


def save_config(store: Datastore, config: IpamConfig) -> None:
    store.put(keys.IPAM_CONFIG, codec.dumps(config))
