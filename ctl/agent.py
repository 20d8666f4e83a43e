"""The node agent: one long-running process per host beside the plugin server.

``python -m ctl.agent --node NAME ...`` (started by ``warrenctl node start``)
runs, as threads of one process (one Python interpreter instead of three,
which matters for the node's memory):

* the **policy agent** (:mod:`profiles.agent`), single writer of warren's
  filter chains and tag ipsets, and beside it the poller of Docker's bridges
  (:mod:`profiles.dockerbridges`, asking dockerd through ``DOCKER_HOST``)
  that tells it which interfaces only published ports may cross;
* **nat-outgoing** (:mod:`bgp.natout`), single writer of the MASQUERADE
  chain and pool ipsets - also on a single host without BGP;
* unless ``--no-bgp``, the **BGP speaker supervisor** (:mod:`bgp.speaker`),
  which runs ExaBGP and its API process as children and restarts them.

* the **liveness lease** keep-alive (``node show``'s up/down) and the
  Prometheus exporter (:mod:`ctl.metrics`).

Every one of these loops runs through :mod:`ctl.guard`: an unexpected
exception (or a loop returning early) is logged with its traceback to
``agent.log``, counted (``warren_agent_loop_crashes_total{loop}``) and the loop
is called again with backoff - each loop resyncs from etcd and the kernel when
it starts. The speaker is the exception: it owns ExaBGP, so a failure of its
loop ends the agent process (status 70, without withdrawing anything) and the
node's supervisor (:mod:`ctl.supervisor`) starts a fresh agent. Uncaught
exceptions of any other thread are logged too (:func:`ctl.guard.install_excepthooks`).

SIGTERM stops them all: the speaker first withdraws this host's routes.
Killing the agent (kill -9, a crash) leaves every rule and route in the
kernel and, thanks to graceful restart, this host's routes on its peers; the
supervisor starts a new agent, which resyncs atomically (see profiles.agent)
and adopts the routes it finds (see bgp.api). The agent is a process-group
leader; its ExaBGP and API process inherit the group, which the supervisor
records so ``node stop`` can end what a killed agent left behind.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("warren.agent")

HOST_POLICY_ENV = "WARREN_WORKLOAD_TO_HOST"  # drop (default) | accept
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # every node process writes its metric samples there
LOOPS = ("metrics", "policy", "nat-outgoing", "docker-bridges", "liveness")  # joined on stop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="warren-node-agent")
    ap.add_argument("--node", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--no-bgp", action="store_true", help="no BGP speaker (single host)")
    ap.add_argument("--lease", type=int, help="the liveness lease `node start` claimed: kept alive here "
                                               "(0: claim one; an expired one is claimed again)")
    ap.add_argument("--ip", help="this node's underlay IPv4 (its identity when the lease is claimed again)")
    args = ap.parse_args(argv)
    from bgp.natout import NatOutgoing  # here, so `warrenctl` need not import them
    from bgp.speaker import Speaker
    from datastore import Datastore, EtcdConfig
    from profiles.agent import PolicyAgent
    from profiles.dockerbridges import NETWORKS_PATH, DockerBridges
    from plugin.config import setup_logging
    from plugin.names import docker_get
    setup_logging(os.path.join(args.log_dir, "agent.log"))
    from prometheus_client import Counter

    from . import guard, metrics
    guard.install_excepthooks()  # also for a failure while starting up (the supervisor retries)
    store = Datastore(EtcdConfig.from_env())
    store.on_error = lambda kind: metrics.ETCD_ERRORS.labels("agent", kind).inc()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    policy = PolicyAgent(store, args.node, host_policy=os.environ.get(HOST_POLICY_ENV, "drop"),
                         observe=metrics.observe_policy)
    bridges = DockerBridges(lambda: docker_get(NETWORKS_PATH, timeout=2.0), policy.docker_changed)
    policy.docker_bridges = bridges.current  # the kernel's view already: before the first write
    crashes = Counter("warren_agent_loop_crashes_total", "Node agent loops that failed and were restarted",
                      ["loop"])
    options = {"on_crash": lambda name: crashes.labels(name).inc()}
    metrics_addr = os.environ.get(metrics.ADDR_ENV, metrics.DEFAULT_ADDR)
    guard.start_guarded("metrics", lambda ev: serve_metrics(store, args.node, metrics_addr, ev), stop,
                        max_backoff=60.0, **options)
    guard.start_guarded("policy", policy.run, stop, **options)
    guard.start_guarded("nat-outgoing", lambda ev: NatOutgoing().follow(store, ev), stop, **options)
    guard.start_guarded("docker-bridges", bridges.run, stop, **options)
    if args.lease is not None:
        guard.start_guarded("liveness", lambda ev: keep_node_alive(store, args, ev), stop, **options)
    log.info("node agent for %s started (bgp %s)", args.node, "off" if args.no_bgp else "on")
    if args.no_bgp:
        stop.wait()
    else:
        speaker = Speaker(args.node, store, args.run_dir, args.log_dir)
        speaker.stop = stop
        guard.run_guarded("speaker", lambda ev: speaker.run(), stop, policy=guard.Policy.EXIT, **options)
    for thread in threading.enumerate():
        if thread.name in LOOPS:
            thread.join(5)
    log.info("node agent for %s stopped", args.node)
    return 0


def serve_metrics(store, node: str, addr: str, stop: threading.Event) -> None:
    """Start the exporter, then wait for ``stop`` (an address in use raises: retried with backoff)."""
    from . import metrics
    try:
        metrics.serve(store, node, addr, os.environ.get(MULTIPROC_ENV))
    except ValueError as exc:  # a bad WARREN_METRICS_ADDR: the node works without its metrics
        log.error("metrics exporter not started: %s", exc)
    stop.wait()


def keep_node_alive(store, args, stop: threading.Event) -> None:
    """Refresh this node's liveness lease at once, then every LIVENESS_TTL/4 s, until ``stop``;
    then revoke it (the node is down). At once: a restarted agent may hold a lease that expired
    while it was down; keep_alive claims the name again."""
    from datastore import DatastoreError
    from ipam import IpamError
    from ipam.nodes import LIVENESS_TTL, Node, claim, keep_alive, release
    node, lease = Node(name=args.node, ipv4=args.ip), args.lease
    while True:
        try:
            # lease 0: a supervisor adopted by a later `node start` restarts us without one
            renewed = keep_alive(store, node, lease) if lease else claim(store, node)
            if renewed != lease:
                log.warning("liveness lease had expired; claimed the node name again")
            lease = args.lease = renewed  # a restarted loop goes on with the new lease
        except (DatastoreError, IpamError) as exc:
            log.warning("liveness: %s; retrying", exc)
        if stop.wait(LIVENESS_TTL / 4):
            break
    try:
        release(store, args.node, lease)
    except DatastoreError as exc:
        log.warning("liveness: cannot revoke the lease (it expires by itself): %s", exc)


if __name__ == "__main__":
    sys.exit(main())
