"""Warren's datastore: the only package that talks to etcd.

* :mod:`datastore.keys`   - the complete key schema
* :mod:`datastore.config` - endpoints, TLS and timeouts from the environment
* :mod:`datastore.client` - :class:`Datastore`: reads, CAS writes, transactions, leases, failover
* :mod:`datastore.watch`  - :class:`Watch`: one watch stream, ended when its member dies or hangs
* :mod:`datastore.wire`   - HTTP/1.1 to etcd's v3 JSON gateway: connection pools, TLS, streams
* :mod:`datastore.gateway` - the gateway's JSON shapes <-> the neutral vocabulary of ops
* :mod:`datastore.ops`    - the neutral vocabulary for transactions
* :mod:`datastore.codec`  - dataclass <-> JSON, every record checked where it is read and written
* :mod:`datastore.fields` - the usual field checks of records' ``validate()``
* :mod:`datastore.metrics` - ``warren_records_skipped_total``: invalid records a process skipped
* :mod:`datastore.localetcd` - run a private etcd server (tests, labs, single-host nodes)
"""
from .client import Datastore
from .config import EtcdConfig
from .errors import ConfigError, DatastoreError, DatastoreUnavailable
from .watch import Watch
from .ops import (KV, Delete, Get, GetPrefix, ModRevisionIs, Put, Range,
                  TxnResult, UnchangedSince, WatchEvent)

__all__ = [
    "Datastore", "Watch", "EtcdConfig", "ConfigError", "DatastoreError",
    "DatastoreUnavailable", "KV", "Delete", "Get", "GetPrefix", "ModRevisionIs",
    "Put", "Range", "TxnResult", "UnchangedSince", "WatchEvent",
]
