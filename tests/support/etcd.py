"""Real etcd servers for tests: each on free loopback ports with a temp data dir."""
from __future__ import annotations

import os
import tempfile

from datastore import Datastore, EtcdConfig
from datastore.config import parse_endpoint
from datastore.localetcd import LocalEtcd


def tmpfs_dir(prefix: str) -> str:
    """A temp dir on tmpfs when there is one (etcd's fsyncs are then cheap)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def start_etcd(name: str = "test") -> LocalEtcd:
    return LocalEtcd(tmpfs_dir(f"warren-etcd-{name}-"), die_with_parent=True).start()


def datastore_for(*servers: LocalEtcd, timeout: float = 2.0) -> Datastore:
    endpoints = tuple(parse_endpoint(s.endpoint) for s in servers)
    return Datastore(EtcdConfig(endpoints=endpoints, timeout=timeout))
