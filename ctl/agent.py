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

SIGTERM stops all three: the speaker first withdraws this host's routes.
Killing the agent leaves every rule and route in the kernel; the next
start resyncs them atomically (see profiles.agent).
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="warren-node-agent")
    ap.add_argument("--node", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--no-bgp", action="store_true", help="no BGP speaker (single host)")
    ap.add_argument("--lease", type=int, help="the liveness lease `node start` claimed: kept alive here")
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
    from . import metrics
    store = Datastore(EtcdConfig.from_env())
    store.on_error = lambda kind: metrics.ETCD_ERRORS.labels("agent", kind).inc()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    policy = PolicyAgent(store, args.node, host_policy=os.environ.get(HOST_POLICY_ENV, "drop"),
                         observe=metrics.observe_policy)
    bridges = DockerBridges(lambda: docker_get(NETWORKS_PATH, timeout=2.0), policy.docker_changed)
    policy.docker_bridges = bridges.current  # the kernel's view already: before the first write
    try:
        metrics.serve(store, args.node, os.environ.get(metrics.ADDR_ENV, metrics.DEFAULT_ADDR),
                      os.environ.get(MULTIPROC_ENV))
    except (OSError, ValueError) as exc:  # the node works without its metrics
        log.error("metrics exporter not started: %s", exc)
    threads = [threading.Thread(target=policy.run, args=(stop,), name="policy", daemon=True),
               threading.Thread(target=NatOutgoing().follow, args=(store, stop), name="nat-outgoing",
                                daemon=True),
               threading.Thread(target=bridges.run, args=(stop,), name="docker-bridges", daemon=True)]
    if args.lease:
        threads.append(threading.Thread(target=keep_node_alive, args=(store, args, stop),
                                        name="liveness", daemon=True))
    for thread in threads:
        thread.start()
    log.info("node agent for %s started (bgp %s)", args.node, "off" if args.no_bgp else "on")
    if args.no_bgp:
        stop.wait()
    else:
        speaker = Speaker(args.node, store, args.run_dir, args.log_dir)
        speaker.stop = stop
        speaker.run()
    for thread in threads:
        thread.join(5)
    log.info("node agent for %s stopped", args.node)
    return 0


def keep_node_alive(store, args, stop: threading.Event) -> None:
    """Refresh this node's liveness lease until ``stop``; then revoke it (the node is down)."""
    from datastore import DatastoreError
    from ipam import IpamError
    from ipam.nodes import LIVENESS_TTL, Node, keep_alive, release
    node, lease = Node(name=args.node, ipv4=args.ip), args.lease
    while not stop.wait(LIVENESS_TTL / 4):
        try:
            renewed = keep_alive(store, node, lease)
            if renewed != lease:
                log.warning("liveness lease had expired; claimed the node name again")
            lease = renewed
        except (DatastoreError, IpamError) as exc:
            log.warning("liveness: %s; retrying", exc)
    try:
        release(store, args.node, lease)
    except DatastoreError as exc:
        log.warning("liveness: cannot revoke the lease (it expires by itself): %s", exc)


if __name__ == "__main__":
    sys.exit(main())
