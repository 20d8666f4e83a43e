"""Process and dependency faults on a 2-host lab: traffic keeps flowing, nothing is left behind (issue 12).

One lab (2 hosts, the engine of ``$WARREN_LAB_ENGINE``) for the module; one
test per fault kind, each driven by :func:`tests.e2e.faults.harness.run_fault`:
while a 10/s ping crosses from ``host2`` to a container on ``host1`` and a
``docker run`` / ``docker rm -f`` loop churns containers on ``host1``, one
fault hits ``host1`` - ``kill -9`` of the plugin server, the node supervisor,
the node agent, ExaBGP or its API process (found by the node's pid files),
etcd stopped 30 s while containers are removed, dockerd restarted with and
without live-restore - and the node recovers (by itself where the issue says
so, else ``warrenctl node start``). Each test asserts the issue's goals for
its fault at once, so a failure lists every miss:

* no ping lost (except across a dockerd restart without live-restore, which
  stops the target container by design; it must come back);
* the node healthy again: plugin answering, agent and ExaBGP running, BGP up;
* a ``docker run`` succeeds after the fault;
* no leak of any kind compared with dockerd's containers (endpoint records,
  IPAM allocations and handles, veths, routes, per-endpoint chains, tag ipset
  members), waited for up to ``SETTLE`` s (background deletes, the janitor,
  whose rounds are made frequent here by ``JANITOR``).

The churn is kept short here (``CONTAINERS`` runs per fault) to keep the
module within minutes; ``bench/faults.py`` runs 50 and reports the figures.
Timings are measured, never asserted.
"""
from __future__ import annotations

import os
import secrets

import pytest

from ctl.lab import Lab
from tests.e2e.faults.harness import Fabric, describe, run_fault
from tests.e2e.helpers import E2E

pytestmark = E2E

CONTAINERS = 8   # successful docker runs per fault (the benchmark: 50)
SETTLE = 45.0    # s for leaks to disappear (Leave's background delete, the janitor's rounds)
# The janitor's rounds every 5 s and orphans older than 20 s (defaults 60 s and 60 s, which the
# benchmark keeps): the nodes inherit this environment, also when the harness runs `node start`.
JANITOR = {"WARREN_JANITOR_INTERVAL": "5", "WARREN_JANITOR_GRACE": "20"}


@pytest.fixture(scope="module")
def lab():
    saved = {k: os.environ.get(k) for k in JANITOR}
    os.environ.update(JANITOR)
    lab = Lab("flt" + secrets.token_hex(3))
    try:
        lab.up(2, node=True)
        yield lab
    finally:
        lab.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def fabric(lab):
    fab = Fabric(lab).setup()
    try:
        yield fab
    finally:
        fab.teardown()


def check(fabric: Fabric, fault: str) -> None:
    result = run_fault(fabric, fault, CONTAINERS, SETTLE)
    problems = result.problems()
    assert problems == [], f"{fault}: " + "; ".join(problems) + "\n" + describe(result)


def test_kill_plugin_server(fabric):
    """The plugin server comes back by itself (restarted alone); the agent and its routes stay."""
    check(fabric, "plugin")


def test_kill_supervisor(fabric):
    check(fabric, "supervisor")


def test_kill_agent(fabric):
    """ExaBGP dies with its agent (or is adopted); the restarted agent's speaker takes over."""
    check(fabric, "agent")


def test_kill_exabgp(fabric):
    check(fabric, "exabgp")


def test_kill_bgp_api(fabric):
    check(fabric, "bgp-api")


def test_etcd_down_during_rm(fabric):
    """Containers removed while etcd is down leave no record, address or kernel state behind."""
    check(fabric, "etcd")


def test_dockerd_restart_live_restore(fabric):
    check(fabric, "dockerd-live-restore")


def test_dockerd_restart_without_live_restore(fabric):
    """Last: it stops every container on host1 (the target comes back by its restart policy)."""
    check(fabric, "dockerd")
