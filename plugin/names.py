"""Docker's network names, looked up in the background.

Docker sends only the network id. Asking dockerd for the name from inside a
plugin request deadlocks it (dockerd is waiting for our answer), so the name
is resolved by a background thread with the ``docker`` SDK once CreateNetwork
has returned, and written into the network record with a compare-and-swap.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

import docker
import docker.errors

from datastore import Datastore, ModRevisionIs, Put, codec, keys

from .records import Network

log = logging.getLogger(__name__)


class NameResolver:
    def __init__(self, store: Datastore, client_factory: Callable[[], object] | None = None,
                 timeout: float = 30.0):
        self.store = store
        self.timeout = timeout
        self._factory = client_factory or (lambda: docker.from_env(timeout=5))
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="warren-names")

    def resolve_later(self, network_id: str) -> None:
        self._pool.submit(self._resolve, network_id)

    def _resolve(self, network_id: str) -> str | None:
        deadline = time.monotonic() + self.timeout
        name = None
        while name is None and time.monotonic() < deadline:
            try:
                name = self._factory().networks.get(network_id).name
            except docker.errors.NotFound:
                time.sleep(0.2)  # dockerd records the network after our answer
            except Exception as exc:  # dockerd unreachable: keep trying until the deadline
                log.debug("network name lookup for %s: %s", network_id[:12], exc)
                time.sleep(1)
        if name is None:
            log.warning("could not learn the name of network %s", network_id[:12])
            return None
        for _ in range(10):
            kv = self.store.get(keys.network(network_id))
            if kv is None:
                return name  # deleted meanwhile
            record = replace(codec.loads(Network, kv.value), name=name)
            if self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                              [Put(kv.key, codec.dumps(record))]).succeeded:
                log.info("network %s is named %s", network_id[:12], name)
                return name
        return name
