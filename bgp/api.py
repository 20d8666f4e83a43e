"""The ExaBGP API process: announces this node's routes, installs its peers'.

ExaBGP starts it (``process warren-api``) and talks to it over stdio: its
stdout carries commands to ExaBGP, one per line; its stdin carries JSON
events, the text of ``show`` commands and one ``done``/``error`` ack per
command. Three threads:

* **reader**: parses stdin; updates the RIB (:class:`bgp.rib.Rib`) and applies
  the resulting FIB diff right away (one netlink socket per update message);
* **announcer** (main thread): reads this node's blocks from etcd, announces
  them (a peer that comes up later gets them replayed), then follows a watch
  and announces/withdraws the difference; sends End-of-RIB once everything is
  announced (``manual-eor``). If etcd is unreachable it keeps what it has
  and retries - routes and sessions are never torn down for that;
* **sweeper**: expires stale routes of peers in graceful restart.

On SIGTERM (sent by the speaker when the node stops) it withdraws every route
it announced before exiting. At start it adopts the routes a previous incarnation left in the kernel as
stale (owner = next hop), asks ExaBGP for ``show adj-rib in`` (ExaBGP does
not replay to a respawned API process) and sweeps whatever nobody
re-announces.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import signal
import sys
import threading
import time
from queue import Queue

from datastore import Datastore, DatastoreError, EtcdConfig, codec, keys
from ipam import Block, PoolStore
from ipam.nodes import Node, get_node, list_nodes
from ipam.pools import Pool

from . import rib as ribmod
from .fabric import IPIP_DEV, VXLAN_DEV, Vteps, link_local
from .fib import Fib
from .settings import SessionStatus, save_status

log = logging.getLogger("warren.bgp.api")

DEVICE = {"vxlan": VXLAN_DEV, "ipip": IPIP_DEV}  # encapsulation -> device of its routes


class ApiProcess:
    def __init__(self, node: str, store: Datastore, fib: Fib, out=sys.stdout,
                 stale_time: float = 120.0):
        self.node = node
        self.store = store
        self.fib = fib
        self.out = out
        self.stale_time = stale_time
        self.rib = ribmod.Rib()
        self.lock = threading.RLock()
        self.write_lock = threading.Lock()
        self.announced: set[str] = set()
        self.ipv6: str | None = None
        self.ready = False
        self.up: set[str] = set()
        self._show: Queue = Queue()      # text lines of a pending "show" command
        self._collecting = False
        self._kernel: dict[str, str] = {}
        self.sessions: dict[str, SessionStatus] = {}
        self.pools: list[Pool] = []                    # for the encapsulation of a prefix
        self.nodes: dict[str, Node] = {}               # underlay address -> node (VTEPs)
        self.vteps = Vteps()
        self._fib_dirty = threading.Event()
        self._status_dirty = threading.Event()

    # -- output ---------------------------------------------------------------

    def send(self, command: str) -> None:
        with self.write_lock:
            self.out.write(command + "\n")
            self.out.flush()

    # -- events from ExaBGP -------------------------------------------------------

    def on_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line in ("done", "error"):
            if line == "error":
                log.warning("ExaBGP refused a command")
            if self._collecting:
                self._collecting = False
                self._show.put(None)
            return
        if not line.startswith("{"):
            if self._collecting:
                self._show.put(line)
            return
        try:
            event = ribmod.parse_event(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable event from ExaBGP (%s): %.200s", exc, line)
            return
        with self.lock:
            try:
                self.handle(event)
            except Exception:  # never let one event kill the reader: ExaBGP would
                log.exception("failed to handle %s from %s", event.kind, event.peer)  # respawn us 5x and die

    def handle(self, event: ribmod.Event) -> None:
        if event.kind in ("up", "down"):
            self.sessions[event.peer] = SessionStatus(event.peer, event.kind, time.time(), event.reason)
            self._status_dirty.set()
        if event.kind == "up":
            log.info("peer %s up", event.peer)
            self.up.add(event.peer)
            if self.ready:
                self.replay(event.peer)
        elif event.kind == "down":
            graceful = ribmod.keeps_routes(event.reason)
            log.info("peer %s down (%s)%s", event.peer, event.reason or "no reason",
                     ", keeping its routes as stale" if graceful else "")
            self.up.discard(event.peer)
            self.rib.peer_down(event.peer, graceful, time.monotonic() + self.stale_time)
            self._fib_dirty.set()
        elif event.kind == "update":
            self.rib.update(event.peer, event.announced, event.withdrawn)
            self._fib_dirty.set()
        elif event.kind == "eor":
            self.rib.end_of_rib(event.peer)
            self._fib_dirty.set()

    def fib_worker(self, stop: threading.Event) -> None:
        """Apply the RIB to the kernel once per burst: every update that arrived
        while the previous batch was being written goes into the next one."""
        while not stop.is_set():
            if not self._fib_dirty.wait(0.5):
                continue
            time.sleep(0.002)  # let the rest of a burst arrive
            self._fib_dirty.clear()
            with self.lock:
                try:
                    ok = self.sync_fib()
                except Exception:
                    log.exception("FIB update failed; retrying")
                    ok = False
            if not ok:  # retry what failed, without spinning
                self._fib_dirty.set()
                stop.wait(1.0)

    def encap(self, prefix: str) -> str:
        net = ipaddress.ip_network(prefix)
        for pool in self.pools:
            if net.version == pool.version and net.subnet_of(pool.network):
                return pool.encap
        return "none"

    def plan(self) -> dict[str, tuple[str, str | None]]:
        out = {}
        for prefix, nh in self.rib.fib().items():
            device = DEVICE.get(self.encap(prefix))
            if device == VXLAN_DEV and ":" in nh:  # IPv6 over vxlan: the VTEP's link-local
                node = self.node_at(nh)
                if node is None or not node.vtep_mac:
                    log.warning("no VTEP known for %s: cannot route %s over vxlan", nh, prefix)
                    continue
                nh = link_local(node.vtep_mac)
            out[prefix] = (nh, device)
        return out

    def node_at(self, address: str) -> Node | None:
        if address not in self.nodes:
            self.refresh_nodes()
        return self.nodes.get(address)

    def before_route(self, ipr, prefix: str, route: tuple[str, str | None]) -> bool:
        next_hop, device = route
        if device != VXLAN_DEV:
            return True
        node = self.node_at(next_hop)
        if node is None or not node.vtep_mac or not node.ipv4:
            log.warning("no VTEP known for %s: cannot route %s over vxlan", next_hop, prefix)
            return False
        return self.vteps.ensure(ipr, next_hop, node.vtep_mac, node.ipv4)

    def refresh_nodes(self) -> None:
        try:
            nodes = list_nodes(self.store)
        except DatastoreError as exc:
            log.warning("etcd: %s", exc)
            return
        self.nodes = {a: n for n in nodes
                      for a in (n.ipv4, n.ipv6, link_local(n.vtep_mac) if n.vtep_mac else None) if a}

    def sync_fib(self) -> bool:
        """Make the kernel match the RIB; False if some routes could not be installed."""
        changes, removed = ribmod.diff(self._kernel, self.plan())
        if not (changes or removed):
            return True
        if self.fib.apply(changes, removed, before=self.before_route):
            self._kernel = self.fib.learned()  # trust the kernel, not our intent
            return False
        for prefix in removed:
            self._kernel.pop(prefix, None)
        self._kernel.update(changes)
        return True

    def replay(self, peer: str) -> None:
        for prefix in sorted(self.announced):
            self.send(f"neighbor {peer} {ribmod.announce(prefix, self.ipv6)}")
        self.send(f"neighbor {peer} announce eor ipv4 unicast")
        self.send(f"neighbor {peer} announce eor ipv6 unicast")

    # -- start-up -------------------------------------------------------------------

    def adopt_kernel(self, session_of: dict[str, str]) -> None:
        """Routes a previous incarnation installed: stale until re-learned.

        ``session_of`` maps a next hop (a node's underlay v4 or v6 address) to
        the address of the BGP session it was learned on (the node's v4)."""
        deadline = time.monotonic() + self.stale_time
        self._kernel = self.fib.learned()
        for prefix, (next_hop, _) in self._kernel.items():
            if next_hop:
                peer = session_of.get(next_hop, next_hop)
                self.rib.routes.setdefault(peer, {})[prefix] = next_hop
                self.rib.stale.setdefault(peer, {})[prefix] = deadline

    def resync_from_speaker(self, timeout: float = 5.0) -> None:
        self._collecting = True
        self.send("show adj-rib in")
        lines, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                item = self._show.get(timeout=max(0.0, end - time.monotonic()))
            except Exception:
                break
            if item is None:
                break
            lines.append(item)
        self._collecting = False
        with self.lock:
            for peer, routes in ribmod.parse_adj_rib_in(lines).items():
                self.rib.update(peer, routes, [])
                self.up.add(peer)
            self.sync_fib()

    # -- announcing -------------------------------------------------------------------

    def wanted(self) -> tuple[set[str], int]:
        pools = PoolStore(self.store).list()
        with self.lock:
            changed = pools != self.pools
            self.pools = pools
            if changed:
                self.sync_fib()  # a new pool may change how learned prefixes are reached
        snapshot = self.store.get_prefix(keys.BLOCKS)
        blocks = [codec.loads(Block, kv.value) for kv in snapshot]
        own = {b.cidr for b in blocks if b.affinity == self.node}
        self.fib.set_blackholes(own)
        return ribmod.local_routes(blocks, self.node), snapshot.revision

    def announce_diff(self, wanted: set[str]) -> None:
        with self.lock:
            for prefix in sorted(wanted - self.announced):
                try:
                    self.send(ribmod.announce(prefix, self.ipv6))
                except ValueError as exc:
                    log.warning("%s", exc)
                    continue
                self.announced.add(prefix)
            for prefix in sorted(self.announced - wanted):
                self.send(ribmod.withdraw(prefix))
                self.announced.discard(prefix)

    def announcer(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                node = get_node(self.store, self.node)
                self.ipv6 = node.ipv6 if node else None
                wanted, revision = self.wanted()
                self.announce_diff(wanted)
                if not self.ready:
                    with self.lock:
                        self.ready = True
                        self.send("announce eor ipv4 unicast")
                        self.send("announce eor ipv6 unicast")
                        for peer in list(self.up):
                            self.replay(peer)
                backoff = 0.5
                watch = self.store.watch_prefix(keys.BLOCKS, start_revision=revision + 1).until(stop)
                for _ in watch:
                    self.announce_diff(self.wanted()[0])
            except DatastoreError as exc:
                log.warning("etcd: %s; keeping current routes, retrying", exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)

    def withdraw_all(self) -> None:
        """Withdraw everything we announced (node stop): peers drop our routes at
        once instead of keeping them as stale for a graceful restart."""
        with self.lock:
            for prefix in sorted(self.announced):
                self.send(ribmod.withdraw(prefix))
            log.info("withdrew %d routes", len(self.announced))
            self.announced.clear()

    def status_writer(self, stop: threading.Event) -> None:
        """Publish session states to etcd (for node status), off the event path."""
        while not stop.is_set():
            if not self._status_dirty.wait(1.0):
                continue
            self._status_dirty.clear()
            with self.lock:
                sessions = sorted(self.sessions.values(), key=lambda s: s.peer)
            try:
                save_status(self.store, self.node, sessions)
            except DatastoreError as exc:
                log.warning("cannot publish BGP status: %s", exc)
                self._status_dirty.set()
                stop.wait(2)

    def sweeper(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            with self.lock:
                self.rib.expire(time.monotonic())
                self.sync_fib()


def sessions_by_next_hop(store: Datastore) -> dict[str, str]:
    try:
        nodes = list_nodes(store)
    except DatastoreError as exc:
        log.warning("etcd: %s; adopting kernel routes by next hop", exc)
        return {}
    out = {}
    for node in nodes:
        if node.ipv4:
            out[node.ipv4] = node.ipv4
            if node.ipv6:
                out[node.ipv6] = node.ipv4
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="warren-bgp-api")
    ap.add_argument("--node", required=True)
    ap.add_argument("--stale-time", type=float, default=120.0)
    ap.add_argument("--log", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    store = Datastore(EtcdConfig.from_env())
    api = ApiProcess(args.node, store, Fib(), stale_time=args.stale_time)
    stop = threading.Event()
    try:
        api.pools = PoolStore(store).list()  # before adopting: the plan depends on encapsulation
    except DatastoreError as exc:
        log.warning("etcd: %s; pools unknown until it answers", exc)
    api.adopt_kernel(sessions_by_next_hop(store))

    def read() -> None:
        for line in sys.stdin:
            api.on_line(line)
        stop.set()  # ExaBGP went away: exit (it respawns us)

    threading.Thread(target=read, name="reader", daemon=True).start()
    threading.Thread(target=api.fib_worker, args=(stop,), name="fib", daemon=True).start()
    api.resync_from_speaker()
    threading.Thread(target=api.sweeper, args=(stop,), name="sweeper", daemon=True).start()
    threading.Thread(target=api.status_writer, args=(stop,), name="status", daemon=True).start()
    threading.Thread(target=api.announcer, args=(stop,), name="announcer", daemon=True).start()
    leaving = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (leaving.set(), stop.set()))
    stop.wait()
    if leaving.is_set():
        api.withdraw_all()
        time.sleep(0.5)  # let ExaBGP put the withdrawals on the wire
    return 0


if __name__ == "__main__":
    sys.exit(main())
