"""The node's Prometheus exporter, run by the node agent.

One HTTP endpoint per node (``WARREN_METRICS_ADDR``, default
``127.0.0.1:9091``; ``off`` disables it) serves ``/metrics`` with:

* every node process's counters and histograms, summed from the per-node
  multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, set by ``node
  start``): Docker API requests and latency, IPAM results and etcd errors
  of the plugin (:mod:`plugin.metrics`); policy apply durations and
  failures, and etcd errors, of the agent (below); invalid etcd records
  each process's readers skipped, by process and record class
  (``warren_records_skipped_total``, :mod:`datastore.metrics`);
* values read when scraped (:class:`NodeCollector`): BGP sessions by state
  (the API process's status record in etcd) and routes installed from BGP
  (kernel routes of protocol 81), so nothing has to push them.
"""
from __future__ import annotations

import logging
import socket

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

ADDR_ENV = "WARREN_METRICS_ADDR"
DEFAULT_ADDR = "127.0.0.1:9091"

POLICY_APPLY = Histogram("warren_policy_apply_seconds", "Time to write policy changes to the kernel",
                         ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
POLICY_FAILURES = Counter("warren_policy_apply_failures_total", "Policy writes the kernel refused")
# one definition for every process (the label says which): the plugin's module owns it
from plugin.metrics import ETCD_ERRORS  # noqa: E402
# likewise for skipped records: every process's codec counts into it (datastore.metrics.count_skips)
from datastore.metrics import RECORDS_SKIPPED, count_skips  # noqa: E402,F401


def parse_addr(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[v6]:PORT``) -> (host, port); ``off`` -> None. Raises ValueError."""
    if text.strip().lower() in ("off", "none", ""):
        return None
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"invalid {ADDR_ENV} {text!r}: use HOST:PORT such as {DEFAULT_ADDR}, or off")
    return host, int(port)


def observe_policy(full: bool, seconds: float, ok: bool) -> None:
    """The policy agent's apply hook."""
    if ok:
        POLICY_APPLY.labels("full" if full else "incremental").observe(seconds)
    else:
        POLICY_FAILURES.inc()


class NodeCollector:
    """Gauges computed at scrape time: BGP sessions by state, BGP routes installed."""

    def __init__(self, store, node: str):
        self.store, self.node = store, node

    def collect(self):
        sessions = GaugeMetricFamily("warren_bgp_sessions", "BGP sessions of this node by state",
                                     labels=["state"])
        counts = {"up": 0, "down": 0}
        try:
            from bgp.settings import load_status
            for status in load_status(self.store, self.node):
                counts[status.state] = counts.get(status.state, 0) + 1
        except Exception as exc:  # etcd unreachable: no sample rather than a wrong one
            log.debug("bgp status for metrics: %s", exc)
            counts = {}
        for state, value in sorted(counts.items()):
            sessions.add_metric([state], value)
        yield sessions
        routes = GaugeMetricFamily("warren_bgp_routes_installed",
                                   "Kernel routes installed from BGP (protocol 81), by family",
                                   labels=["family"])
        for family, count in _bgp_routes().items():
            routes.add_metric([family], count)
        yield routes


def _bgp_routes() -> dict[str, int]:
    from pyroute2 import IPRoute
    from bgp.fib import RTPROT_WARREN_BGP
    counts = {}
    with IPRoute() as ipr:
        for name, family in (("ipv4", socket.AF_INET), ("ipv6", socket.AF_INET6)):
            counts[name] = sum(1 for r in ipr.get_routes(family=family, proto=RTPROT_WARREN_BGP)
                               if r["type"] == 1)  # unicast: not the blackholes of our own blocks
    return counts


def serve(store, node: str, addr: str, multiproc_dir: str | None) -> None:
    """Start the exporter thread (raises OSError if the address is taken)."""
    parsed = parse_addr(addr)
    if parsed is None:
        return
    registry = CollectorRegistry()
    if multiproc_dir:
        MultiProcessCollector(registry, path=multiproc_dir)
    else:
        from prometheus_client import REGISTRY
        registry = REGISTRY
    registry.register(NodeCollector(store, node))
    start_http_server(parsed[1], addr=parsed[0], registry=registry)
    log.info("metrics on http://%s:%d/metrics", *parsed)
