"""Cluster-wide IPAM settings (one record at ``/warren/v1/ipam/config``)."""
from __future__ import annotations

from dataclasses import dataclass

from datastore import Datastore, codec, keys


@dataclass
class IpamConfig:
    # When true a host never borrows addresses from another host's block:
    # a full pool fails instead of adding /32 routes.
    strict_affinity: bool = False


def load_config(store: Datastore) -> IpamConfig:
    kv = store.get(keys.IPAM_CONFIG)
    return codec.loads(IpamConfig, kv.value) if kv else IpamConfig()


def save_config(store: Datastore, config: IpamConfig) -> None:
    store.put(keys.IPAM_CONFIG, codec.dumps(config))
