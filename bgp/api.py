"""The ExaBGP API process: announces this node's routes, installs its peers'.

ExaBGP starts it (``process warren-api``) and talks to it over stdio: its
stdout carries commands to ExaBGP, one per line; its stdin carries JSON
events, the text of ``show`` commands and one ``done``/``error`` ack per
command. Threads:

* **reader**: parses stdin; updates the RIB (:class:`bgp.rib.Rib`) and marks
  the FIB dirty;
* **writer** (:class:`Commands`): writes the commands, at most
  :data:`WINDOW` unacknowledged at a time. ExaBGP's reactor works off at most
  50 queued steps per loop and then sleeps ~10 ms unless new input arrived, so
  a burst written at once mostly waits; a new command arriving as each one is
  acked keeps it busy instead (1000 prefixes: ~0.15 s instead of ~0.4 s here);
* **fib**: applies the RIB to the kernel once per burst (one ``ip -batch``),
  outside the RIB lock so the reader keeps up meanwhile;
* **announcer**: reads this node's blocks from etcd, announces them in
  batches (``announce attributes ... nlri``, see :mod:`bgp.rib`; a peer that
  comes up later gets them replayed), then follows a watch and
  announces/withdraws the difference - several etcd changes that arrive
  while one is being handled are handled together. It sends End-of-RIB once
  everything is announced (``manual-eor``). If etcd is unreachable it keeps
  what it has and retries - routes and sessions are never torn down for that;
* **sweeper**: expires stale routes of peers in graceful restart;
* **status**: publishes the sessions to etcd for ``node status``.

No thread dies on bad data: invalid pool, block and node records are skipped
and counted (:mod:`datastore.codec`), so one garbage block never stops this
node announcing the others; an unreadable line from ExaBGP is logged and
dropped; any unexpected error in a loop is logged and the loop goes on. A
learned route that cannot be installed (a link-local next hop outside the
VXLAN device, a VXLAN next hop without a known VTEP) is logged once, not at
every FIB pass, and is not retried as a failure.

On SIGTERM (sent by the speaker when the node stops) it withdraws every route
it announced before exiting. At start it adopts the routes a previous incarnation left in the kernel as
stale (owner = next hop), asks ExaBGP for ``show adj-rib in`` (ExaBGP does
not replay to a respawned API process) and sweeps whatever nobody
re-announces.

Memory: the process stays free of pyroute2 (the FIB goes through iproute2,
see :mod:`bgp.fib`) unless a VXLAN route needs a peer's VTEP programmed,
which is :mod:`bgp.fabric`'s job and is imported only then.
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
from collections import deque
from dataclasses import dataclass

from datastore import Datastore, DatastoreError, EtcdConfig, codec, keys
from ipam import Block
from ipam.nodes import Node
from ipam.pools import Pool

from . import rib as ribmod
from .fib import IPIP_DEV, VXLAN_DEV, Fib, Route
from .settings import SessionStatus, registered_nodes, save_status

log = logging.getLogger("warren.bgp.api")

DEVICE = {"vxlan": VXLAN_DEV, "ipip": IPIP_DEV}  # encapsulation -> device of its routes
WINDOW = 2            # commands written to ExaBGP and not yet acknowledged
ACK_TIMEOUT = 10.0    # s without any ack before unanswered commands are given up on


# =====================================================================================
# Commands to ExaBGP, paced by its acks
# =====================================================================================

@dataclass(eq=False)
class _Command:
    text: str
    lines: list[str] | None = None            # a query collects its text answer here
    answered: threading.Event | None = None


class Commands:
    """Commands to ExaBGP, written by one thread, at most ``window`` awaiting their ack.

    ``send`` never blocks (the reader thread, which reads the acks, sends too).
    ExaBGP answers every command with ``done`` or ``error`` in the order it
    runs them, which is the order they were written, except one case: an
    End-of-RIB with no established peer is refused at once, ahead of earlier
    commands still running. So an ``error`` is put on the oldest outstanding
    End-of-RIB if there is one, else on the oldest command. A query (``show
    ...``) is written alone, so the text lines before its ack are its answer.
    """

    def __init__(self, out, window: int = WINDOW, ack_timeout: float = ACK_TIMEOUT):
        self.out = out
        self.window = window
        self.ack_timeout = ack_timeout
        self._cond = threading.Condition()
        self._queue: deque[_Command] = deque()
        self._sent: deque[_Command] = deque()    # written, oldest first
        self._since = time.monotonic()           # last ack, or first write into an empty window
        self.refused = 0

    def send(self, *texts: str) -> None:
        with self._cond:
            self._queue.extend(_Command(t) for t in texts)
            self._cond.notify_all()

    def query(self, text: str, timeout: float) -> list[str] | None:
        """Run a ``show`` command alone; its text lines, or None without an answer in time."""
        item = _Command(text, lines=[], answered=threading.Event())
        with self._cond:
            self._queue.append(item)
            self._cond.notify_all()
        return item.lines if item.answered.wait(timeout) else None

    def on_ack(self, ok: bool) -> None:
        with self._cond:
            self._since = time.monotonic()
            if not self._sent:
                return  # the answer to a command given up on (ack timeout)
            item = self._sent[0]
            if not ok:
                item = next((c for c in self._sent if " eor " in c.text), item)
                self.refused += 1
            self._sent.remove(item)
            self._cond.notify_all()
        if item.answered is not None:
            item.answered.set()
        if not ok:
            if " eor " in item.text:
                log.debug("ExaBGP refused %r (no established peer)", item.text)
            else:
                log.warning("ExaBGP refused: %.200s", item.text)

    def on_text(self, line: str) -> None:
        with self._cond:
            for item in self._sent:
                if item.lines is not None:
                    item.lines.append(line)
                    return

    def flush(self, timeout: float) -> bool:
        """Wait until every command was written and acknowledged."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def _ready(self) -> bool:
        if not self._queue:
            return False
        if any(c.lines is not None for c in self._sent):
            return False  # a query runs alone
        if self._queue[0].lines is not None:
            return not self._sent
        return len(self._sent) < self.window

    def _expire(self) -> None:
        if self._sent and time.monotonic() - self._since > self.ack_timeout:
            log.warning("no answer from ExaBGP for %.0f s to %d command(s) (oldest: %.80s); going on",
                        self.ack_timeout, len(self._sent), self._sent[0].text)
            for item in self._sent:
                if item.answered is not None:
                    item.answered.set()
            self._sent.clear()
            self._cond.notify_all()

    def run(self) -> None:
        """The writer thread (runs for the life of the process; an unexpected error is
        logged and the loop goes on)."""
        while True:
            try:
                self._write_next()
            except Exception:
                log.exception("command writer failed; going on")
                time.sleep(0.5)

    def _write_next(self) -> None:
        """Write the next command once the window allows it."""
        with self._cond:
            while not self._ready():
                self._cond.wait(0.5)
                self._expire()
            item = self._queue.popleft()
            if not self._sent:
                self._since = time.monotonic()
            self._sent.append(item)
        try:
            self.out.write(item.text + "\n")
            self.out.flush()
        except (OSError, ValueError) as exc:  # ExaBGP went away: stdin EOF ends us soon
            log.warning("cannot write to ExaBGP: %s", exc)
            with self._cond:
                if item in self._sent:
                    self._sent.remove(item)
                self._cond.notify_all()
            if item.answered is not None:
                item.answered.set()


# =====================================================================================
# The API process
# =====================================================================================

class ApiProcess:
    def __init__(self, node: str, store: Datastore, fib: Fib, out=sys.stdout,
                 stale_time: float = 120.0, window: int = WINDOW):
        self.node = node
        self.store = store
        self.fib = fib
        self.commands = Commands(out, window)
        self.stale_time = stale_time
        self.rib = ribmod.Rib()
        self.lock = threading.RLock()          # RIB, sessions, what is announced
        self.announced: set[str] = set()
        self.unannounceable: set[str] = set()  # IPv6 prefixes without an IPv6 next hop (warned once)
        self.unroutable: dict[str, str] = {}   # prefix -> why it is not installed (warned once per reason)
        self.ipv6: str | None = None
        self.ready = False
        self.up: set[str] = set()
        self._kernel: dict[str, Route] = {}    # the FIB worker's view of our kernel routes
        self._encap: dict[str, str] = {}       # prefix -> encapsulation, for the current pools
        self._blackholed: set[str] | None = None
        self.sessions: dict[str, SessionStatus] = {}
        self.pools: list[Pool] = []                    # for the encapsulation of a prefix
        self.nodes: dict[str, Node] = {}               # underlay address -> node (VTEPs)
        self._nodes_read = float("-inf")               # monotonic time of the last registry read
        self._vteps = None                             # bgp.fabric.Vteps, once a VXLAN route needs it
        self._fib_dirty = threading.Event()
        self._status_dirty = threading.Event()

    # -- events from ExaBGP -------------------------------------------------------

    def on_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line in ("done", "error"):
            self.commands.on_ack(line == "done")
            return
        if not line.startswith("{"):
            self.commands.on_text(line)
            return
        try:
            event = ribmod.parse_event(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - one odd line must not end the reader
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

    # -- the FIB ------------------------------------------------------------------------

    def fib_worker(self, stop: threading.Event) -> None:
        """Apply the RIB to the kernel once per burst: every update that arrived
        while the previous batch was being written goes into the next one."""
        while not stop.is_set():
            if not self._fib_dirty.wait(0.5):
                continue
            time.sleep(0.002)  # let the rest of a burst arrive
            self._fib_dirty.clear()
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

    def plan(self) -> dict[str, Route]:
        """prefix -> (next hop, device) the kernel should hold (call with the lock).

        A learned route that cannot be installed is left out and logged once (not
        at every FIB pass): a link-local next hop outside the VXLAN device (which
        interface it is on is not known), or a VXLAN next hop with no known VTEP."""
        out: dict[str, Route] = {}
        unroutable: dict[str, str] = {}
        known, self._encap = self._encap, {}
        for prefix, nh in self.rib.fib().items():
            encap = known.get(prefix) or self.encap(prefix)
            self._encap[prefix] = encap
            device = DEVICE.get(encap)
            if device == VXLAN_DEV and ":" in nh:  # IPv6 over vxlan: the VTEP's link-local
                node = self.node_at(nh)
                if node is None or not node.vtep_mac:
                    unroutable[prefix] = f"no VTEP known for {nh}: cannot route {prefix} over vxlan"
                    continue
                from .fabric import link_local  # vxlan only (bgp.fabric imports pyroute2)
                nh = link_local(node.vtep_mac)
            elif _link_local(nh) and device is None:
                unroutable[prefix] = (f"{prefix} via link-local {nh}: not installed (the peer must "
                                      "announce a global next hop)")
                continue
            out[prefix] = (nh, device)
        for prefix, reason in unroutable.items():
            if self.unroutable.get(prefix) != reason:
                log.warning("%s", reason)
        # keep what the FIB pass found (a VTEP missing at install time) for routes still planned
        self.unroutable = {**{p: r for p, r in self.unroutable.items() if p in out}, **unroutable}
        return out

    def node_at(self, address: str) -> Node | None:
        if address not in self.nodes and time.monotonic() - self._nodes_read > 5.0:
            self.refresh_nodes()  # at most every 5 s for an address no node has
        return self.nodes.get(address)

    def refresh_nodes(self) -> None:
        self._nodes_read = time.monotonic()
        try:
            nodes = registered_nodes(self.store)
        except DatastoreError as exc:
            log.warning("etcd: %s", exc)
            return
        link_local = None
        if any(n.vtep_mac for n in nodes):
            from .fabric import link_local  # only reached for vxlan routes
        self.nodes = {a: n for n in nodes
                      for a in (n.ipv4, n.ipv6, link_local(n.vtep_mac) if n.vtep_mac else None) if a}

    def sync_fib(self) -> bool:
        """Make the kernel match the RIB; False if some routes could not be installed.
        Only the FIB worker calls it (and start-up, before the worker runs)."""
        started = time.monotonic()
        with self.lock:
            wanted = self.plan()
        changes, removed = ribmod.diff(self._kernel, wanted)
        if not (changes or removed):
            return True
        planned = time.monotonic()
        vtep_ipr = []  # a netlink socket for VTEP entries, opened on first need

        def before(prefix: str, route: Route) -> bool:
            next_hop, device = route
            if device != VXLAN_DEV:
                return True
            with self.lock:
                node = self.node_at(next_hop)
                if node is None or not node.vtep_mac or not node.ipv4:
                    reason = f"no VTEP known for {next_hop}: cannot route {prefix} over vxlan"
                    if self.unroutable.get(prefix) != reason:
                        log.warning("%s", reason)
                        self.unroutable[prefix] = reason
                    return False
                self.unroutable.pop(prefix, None)
            if not vtep_ipr:
                from pyroute2 import IPRoute  # vxlan only: ~17 MiB the API process otherwise never loads

                from .fabric import Vteps
                self._vteps = self._vteps or Vteps()
                vtep_ipr.append(IPRoute())
            return self._vteps.ensure(vtep_ipr[0], next_hop, node.vtep_mac, node.ipv4)

        try:
            failures = self.fib.apply(changes, removed, before=before)
        finally:
            for ipr in vtep_ipr:
                ipr.close()
        if failures:
            self._kernel = self.fib.learned()  # trust the kernel, not our intent
            return False
        for prefix in removed:
            self._kernel.pop(prefix, None)
        self._kernel.update(changes)
        log.log(logging.INFO if len(changes) + len(removed) >= 100 else logging.DEBUG,
                "FIB: %d installed, %d removed (plan %.1f ms, kernel %.1f ms)", len(changes), len(removed),
                1000 * (planned - started), 1000 * (time.monotonic() - planned))
        return True

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
        lines = self.commands.query("show adj-rib in", timeout)
        if lines is None:
            log.warning("no answer to 'show adj-rib in' within %.0f s; learning from updates only", timeout)
            return
        with self.lock:
            for peer, routes in ribmod.parse_adj_rib_in(lines).items():
                self.rib.update(peer, routes, [])
                self.up.add(peer)
        self._fib_dirty.set()

    # -- announcing -------------------------------------------------------------------

    def wanted(self) -> tuple[set[str], int]:
        """(what this node announces, the etcd revision read). Invalid pool and block
        records are skipped (and counted): one of them never stops the announcing."""
        pools = read_pools(self.store)
        with self.lock:
            if pools != self.pools:
                self.pools = pools
                self._encap = {}
                self._fib_dirty.set()  # a new pool may change how learned prefixes are reached
        snapshot = self.store.get_prefix(keys.BLOCKS)
        blocks = codec.load_all(Block, snapshot)
        own = {b.cidr for b in blocks if b.affinity == self.node}
        if own != self._blackholed:
            self._blackholed = own if self.fib.set_blackholes(own) == 0 else None
        return ribmod.local_routes(blocks, self.node), snapshot.revision

    def announce_diff(self, wanted: set[str]) -> None:
        with self.lock:
            new, gone = wanted - self.announced, self.announced - wanted
            commands, skipped = ribmod.announce_commands(new, self.ipv6)
            for prefix in sorted(set(skipped) - self.unannounceable):
                log.warning("%s: this node has no IPv6 underlay address to announce it with", prefix)
            self.unannounceable = set(skipped) | (self.unannounceable & wanted)
            commands += ribmod.withdraw_commands(gone)
            self.announced = (self.announced | (new - set(skipped))) - gone
            self.commands.send(*commands)
        if new or gone:
            shown = sorted(new | gone)
            log.info("announcing %d and withdrawing %d prefixes (%d commands)%s",
                     len(new) - len(skipped), len(gone), len(commands),
                     f": {' '.join(shown)}" if len(shown) <= 4 else "")

    def replay(self, peer: str) -> None:
        """Everything we announce, to ``peer`` (a session that came up later), then End-of-RIB."""
        commands, _ = ribmod.announce_commands(self.announced, self.ipv6, peer=peer)
        self.commands.send(*commands, f"neighbor {peer} announce eor ipv4 unicast",
                           f"neighbor {peer} announce eor ipv6 unicast")

    def become_ready(self) -> None:
        """Everything is announced: End-of-RIB to all, and replays to sessions already up."""
        with self.lock:
            self.ready = True
            self.commands.send("announce eor ipv4 unicast", "announce eor ipv6 unicast")
            for peer in sorted(self.up):
                self.replay(peer)

    def announcer(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                self.ipv6 = own_ipv6(self.store, self.node, self.ipv6)
                wanted, revision = self.wanted()
                self.announce_diff(wanted)
                if not self.ready:
                    self.become_ready()
                backoff = 0.5
                self.follow_blocks(revision, stop)
            except DatastoreError as exc:
                log.warning("etcd: %s; keeping current routes, retrying", exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except Exception:  # e.g. ip failing: keep announcing what we have, retry
                log.exception("announcer failed; keeping current routes, retrying")
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)

    def follow_blocks(self, revision: int, stop: threading.Event) -> None:
        """Announce/withdraw as blocks change after ``revision``; events that arrive
        while one is handled are handled together. Returns only when ``stop`` is set;
        raises DatastoreError when the watch fails (the caller re-reads and re-watches)."""
        watch = self.store.watch_prefix(keys.BLOCKS, start_revision=revision + 1)
        changed, ended = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        def consume() -> None:
            try:
                for _ in watch:
                    changed.set()
            except BaseException as exc:  # noqa: BLE001 - handed to the announcer
                failure.append(exc)
            finally:
                ended.set()
                changed.set()

        threading.Thread(target=consume, name="blocks-watch", daemon=True).start()
        try:
            while not stop.is_set():
                if not changed.wait(0.5):
                    continue
                changed.clear()
                if ended.is_set():
                    if failure:
                        raise failure[0]
                    raise DatastoreError("the blocks watch ended")
                self.announce_diff(self.wanted()[0])
        finally:
            watch.cancel()

    def withdraw_all(self, timeout: float = 2.0) -> None:
        """Withdraw everything we announced (node stop): peers drop our routes at
        once instead of keeping them as stale for a graceful restart."""
        with self.lock:
            count = len(self.announced)
            self.commands.send(*ribmod.withdraw_commands(self.announced))
            self.announced.clear()
        acked = self.commands.flush(timeout)
        log.info("withdrew %d routes%s", count, "" if acked else " (not all acknowledged)")

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
            except Exception as exc:  # etcd down, or anything else: retry, never die
                log.warning("cannot publish BGP status: %s", exc)
                self._status_dirty.set()
                stop.wait(2)

    def sweeper(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                with self.lock:
                    if self.rib.stale and self.rib.expire(time.monotonic()):
                        self._fib_dirty.set()  # only when something expired
            except Exception:
                log.exception("stale sweep failed; going on")


def _link_local(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_link_local
    except ValueError:
        return False


def read_pools(store: Datastore) -> list[Pool]:
    """The pools, invalid records skipped (as :class:`ipam.PoolStore` orders them)."""
    pools = codec.load_all(Pool, store.get_prefix(keys.POOLS))
    return sorted(pools, key=lambda p: (p.version, p.network))


def own_ipv6(store: Datastore, node: str, current: str | None) -> str | None:
    """This node's IPv6 underlay address; an invalid own record keeps ``current``."""
    kv = store.get(keys.node(node))
    if kv is None:
        return None
    try:
        return codec.loads(Node, kv.value, kv.key).ipv6
    except codec.InvalidRecord as exc:
        codec.skipped(exc, kv.mod_revision)
        return current


def sessions_by_next_hop(store: Datastore) -> dict[str, str]:
    try:
        nodes = registered_nodes(store)
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
        api.pools = read_pools(store)  # before adopting: the plan depends on encapsulation
    except DatastoreError as exc:
        log.warning("etcd: %s; pools unknown until it answers", exc)
    api.adopt_kernel(sessions_by_next_hop(store))

    def read() -> None:
        for line in sys.stdin:
            api.on_line(line)
        stop.set()  # ExaBGP went away: exit (it respawns us)

    threading.Thread(target=api.commands.run, name="writer", daemon=True).start()
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
        time.sleep(0.5)  # acknowledged = in ExaBGP's RIB: let it put the withdrawals on the wire
    return 0


if __name__ == "__main__":
    sys.exit(main())
