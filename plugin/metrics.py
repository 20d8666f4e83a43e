"""Prometheus metrics of the plugin process (served by the node agent's exporter).

The plugin server is its own process, so its metrics use prometheus_client's
multiprocess mode: ``warrenctl node start`` sets ``PROMETHEUS_MULTIPROC_DIR``
to a per-node directory before any node process starts, each process writes
its samples there, and the node agent's exporter (``ctl.metrics``) sums
them. Without that variable (tests, a plugin run by hand) the metrics live
in this process's default registry and cost nothing to keep.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("warren_plugin_requests_total", "Docker plugin API requests, by endpoint and HTTP status",
                   ["endpoint", "code"])
LATENCY = Histogram("warren_plugin_request_seconds", "Docker plugin API request latency, by endpoint",
                    ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
IPAM = Counter("warren_ipam_operations_total", "IPAM address assignments and releases, by result",
               ["operation", "result"])
ETCD_ERRORS = Counter("warren_etcd_errors_total", "etcd calls that failed, by process and kind",
                      ["process", "kind"])
