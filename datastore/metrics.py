"""The metric of invalid records a process's readers skipped (``warren_records_skipped_total``).

:mod:`datastore.codec` counts every record a reader skips and calls
``codec.on_invalid`` with the record's class. :func:`count_skips` points that
hook at one Prometheus counter labelled by process and record class, the
way ``warren_etcd_errors_total`` is labelled by process. It lives at the
bottom of the dependency order so every node process (plugin, agent, BGP
API) can install it; ``ctl.metrics`` re-exports it, and the node agent's
exporter sums it over the per-node multiprocess directory like the others.

A node process that does not call :func:`count_skips` itself still gets
counted: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``warrenctl node start``
sets it for every node process), the codec's first skip installs the hook
with the process's name guessed from its command line (:func:`process_name`).
"""
from __future__ import annotations

import os
import sys

from prometheus_client import Counter

from . import codec

RECORDS_SKIPPED = Counter("warren_records_skipped_total",
                          "Invalid etcd records this node's readers skipped, by process and record class",
                          ["process", "record"])
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# the module a node process runs (``python -m X``) -> the label ETCD_ERRORS uses for it
_PROCESSES = {"wsgi": "plugin", "gunicorn": "plugin", "agent": "agent", "api": "bgp-api",
              "speaker": "bgp-speaker", "warrenctl": "warrenctl", "main": "warrenctl"}


def count_skips(process: str) -> None:
    """Count this process's skipped records as ``warren_records_skipped_total{process=...}``."""
    codec.on_invalid = lambda record: RECORDS_SKIPPED.labels(process, record).inc()


def process_name(argv: list[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    base = os.path.basename(argv[0]) if argv and argv[0] else "python"
    base = base[:-3] if base.endswith(".py") else base
    return _PROCESSES.get(base, base or "python")


def install_default() -> None:
    """The codec's fallback: count under the guessed process name, in a node process only."""
    if codec.on_invalid is None and os.environ.get(MULTIPROC_ENV):
        count_skips(process_name())
