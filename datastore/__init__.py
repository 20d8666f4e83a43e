"""Warren's datastore: the only package that talks to etcd.

* :mod:`datastore.keys`   - the complete key schema
* :mod:`datastore.config` - endpoints, TLS and timeouts from the environment
* :mod:`datastore.client` - :class:`Datastore`: reads, CAS writes, transactions, watches
* :mod:`datastore.ops`    - the neutral vocabulary for transactions
* :mod:`datastore.codec`  - dataclass <-> JSON
* :mod:`datastore.localetcd` - run a private etcd server (tests, labs, single-host nodes)
"""
from .client import Datastore, Watch
from .config import EtcdConfig
from .errors import ConfigError, DatastoreError, DatastoreUnavailable
from .ops import (KV, Delete, Get, GetPrefix, ModRevisionIs, Put, Range,
                  TxnResult, UnchangedSince, WatchEvent)

__all__ = [
    "Datastore", "Watch", "EtcdConfig", "ConfigError", "DatastoreError",
    "DatastoreUnavailable", "KV", "Delete", "Get", "GetPrefix", "ModRevisionIs",
    "Put", "Range", "TxnResult", "UnchangedSince", "WatchEvent",
]
