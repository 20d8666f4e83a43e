"""The policy agent: keeps this host's iptables chains and ipsets in sync with etcd.

One agent per host is the single writer of warren's filter chains and tag
sets (design.md). It holds a cache of five etcd prefixes - endpoints of
*every* host (tag members live anywhere), Docker networks (an endpoint's
default profile is its network's, and ``internal`` confines it), profiles,
pools (the bounds of ``--internal`` endpoints) and nodes (their underlay
addresses are control plane) - filled by one read each and kept current by
one watch each.

The control plane (:mod:`profiles.controlplane`): the agent keeps the set
``warren-control-v4``/``-v6`` filled with the etcd members of its own
configuration (host names resolved at every full refresh), every node's
underlay addresses (from the snapshot) and this host's own addresses (read
from the kernel at every full refresh and when Docker's bridges change).
Workloads' packets to it are dropped before any profile, unless a rule
naming the address opens it (see :mod:`profiles.generator`), or they go to a
port a node publishes (``warren-published-v4``/``-v6``: every published
endpoint's port map at its node's underlay address, :func:`published_ports`).

Records are never trusted (issue 12): every listing and watch event is
decoded with :mod:`datastore.codec`'s checks, and a record that fails is
skipped and counted (as if absent: an endpoint's chains fail closed).
Whatever still goes wrong - a bug, a surprising record - is logged with
its traceback and the loop starts over from a fresh read after a backoff
(up to ``ERROR_RETRY_MAX``); the thread never dies of it.

After each batch of watch events it computes, per IP version, the chains
and sets it wants with the pure functions of :mod:`profiles.generator`
(:func:`desired`) and writes only the difference from what it last wrote:
a membership change refills one set, a rule change rewrites one profile
chain, a new endpoint adds its two chains and the two dispatch chains.

Full writes happen on start, after any failure and every ``refresh``
seconds: all chains are rewritten in one ``iptables-restore`` commit,
warren chains and sets the kernel has but nobody wants are removed, and the
parent jumps are put back first in FORWARD, INPUT and (if dockerd made it)
DOCKER-USER. A restart (even ``kill -9``) therefore opens no window: the
old rules stay in the kernel until the new ones replace them atomically.

Docker's side (see :mod:`profiles.generator` for the design): the node
agent's :class:`profiles.dockerbridges.DockerBridges` calls
:meth:`PolicyAgent.docker_changed` when Docker's bridges change or dockerd
comes back; the agent then rewrites WARREN-DOCKER and puts its jumps first
again at once, since those are exactly the moments dockerd rewrote
FORWARD. The jumps are also checked every ``JUMP_CHECK`` seconds (for a
firewalld reload or a hand-made change).

etcd unreachable: nothing in the kernel changes; the agent retries with
backoff and resyncs from a fresh read when etcd is back.

The agent also gives each Docker network its default profile once: when
it sees a network whose profile name is known (``-o profile=NAME`` or the
resolved Docker name) and not yet created, it creates the profile with
the defaults (create-if-absent, so agents on several hosts may race),
marked ``auto``, and marks the network record. A profile the user removes
later stays removed.

And it removes such a profile again once nothing uses it (as Calico's
DeleteNetwork did): an ``auto`` profile that no network record (of any
host: with a local-scope driver each host's network has its own id) and no
endpoint names is deleted by whichever agent notices first. The snapshot
only nominates candidates; the decision is a fresh read of networks and
endpoints at revision R and one transaction that deletes the profile only
if it is unchanged and no network or endpoint was created or modified after
R, so a network being created on another host at that moment keeps it (or,
if its record came just after, that host's agent makes the profile again).
A profile the user changed (``ProfileStore.update`` clears ``auto``) is
theirs and is never removed by the agent.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from datastore import (KV, Datastore, DatastoreError, Delete, ModRevisionIs, Put, UnchangedSince, codec,
                       keys)
from ipam.nodes import Node
from ipam.pools import Pool
from ipam.workloads import Endpoint, Network, effective_profiles

from . import controlplane, generator, names
from .kernel import Kernel, KernelError
from .model import Profile, ProfileError
from .store import ProfileExists, ProfileStore

log = logging.getLogger(__name__)

PREFIXES = (keys.ENDPOINTS, keys.NETWORKS, keys.PROFILES, keys.POOLS, keys.NODES)
DOCKER = "docker"  # the queue's marker for "Docker's bridges changed" (see docker_changed)
RETRY_MIN, RETRY_MAX = 0.5, 2.0  # short: endpoints made right after an outage wait for our resync
ERROR_RETRY_MAX = 30.0  # after an unexpected error (a bug, a surprising record): log, back off, resync
JUMP_CHECK = 10.0  # seconds between checks that the parent jumps are still first
CLASSES = {keys.ENDPOINTS: Endpoint, keys.NETWORKS: Network, keys.PROFILES: Profile,
           keys.POOLS: Pool, keys.NODES: Node}


@dataclass
class Snapshot:
    """The agent's copy of etcd: endpoints by key; networks, profiles, pools and nodes by the
    last segment of theirs (id, name)."""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

    def table(self, prefix: str) -> dict:
        return {keys.ENDPOINTS: self.endpoints, keys.NETWORKS: self.networks,
                keys.PROFILES: self.profiles, keys.POOLS: self.pools, keys.NODES: self.nodes}[prefix]

    @staticmethod
    def ident(prefix: str, key: str) -> str:
        return key if prefix == keys.ENDPOINTS else keys.last_segment(key)

    def update(self, prefix: str, key: str, value: bytes | None, revision: int = 0) -> bool:
        """Apply one put (value) or delete (None); a record that fails codec's checks counts as
        absent (skipped, logged and counted by :func:`datastore.codec.load_one`).

        Returns whether the policy can have changed: an endpoint put that changes only what
        no rule reads (POLICY_IGNORED: Join's sandbox and gateway slot, -p's port map, the MAC,
        the MTU) does not, so the four writes of every container start cost one apply, not four.
        """
        table, ident = self.table(prefix), self.ident(prefix, key)
        old = table.get(ident)
        new = None if value is None else codec.load_one(CLASSES[prefix], KV(key, value, revision))
        if new is None:  # deleted, or invalid: fail closed, as if absent
            table.pop(ident, None)
            return old is not None
        table[ident] = new
        if old is None:
            return True
        if prefix == keys.ENDPOINTS:
            return (replace(old, **POLICY_IGNORED) != replace(new, **POLICY_IGNORED)
                    or _published(old) != _published(new))
        return old != new


def _published(endpoint: Endpoint) -> list:
    """What the published-ports set takes from an endpoint: its port map while it is published."""
    return endpoint.ports if endpoint.published else []


# Endpoint fields no rule reads (see Snapshot.update), with the value both sides are compared at.
POLICY_IGNORED = {"sandbox": None, "gateway_slot": 1, "ports": [], "published": False, "mac": "", "mtu": 1500}


def _internal(endpoint: Endpoint, networks: dict[str, Network]) -> bool:
    network = networks.get(endpoint.network)
    return bool(network and network.internal)


def _valid_iface(iface: object) -> bool:
    try:
        names.check_iface(iface)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def local_endpoints(snapshot: Snapshot, node: str) -> list[generator.LocalEndpoint]:
    """This node's endpoints. Records no render can use are left out (their traffic meets the
    dispatch chains' DROP): a bad interface name, or two records claiming one interface."""
    mine = [e for e in snapshot.endpoints.values() if e.host == node]
    claims: dict[str, int] = {}
    for e in mine:
        claims[e.iface] = claims.get(e.iface, 0) + 1
    out = []
    for e in mine:
        if not _valid_iface(e.iface) or claims[e.iface] > 1:
            log.debug("endpoint %s: interface %r is invalid or claimed twice; no chains", e.id[:12], e.iface)
            continue
        out.append(generator.LocalEndpoint(e.id, e.iface, e.ipv4, e.ipv6,
                                           effective_profiles(e, snapshot.networks),
                                           _internal(e, snapshot.networks)))
    return out


def desired(snapshot: Snapshot, node: str, version: int, host_policy: str = "drop",
            docker_bridges: Iterable[str] = ()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(chain -> rules, set -> members) that this node's kernel should hold for ``version``."""
    local = local_endpoints(snapshot, node)
    everywhere = ((e.addresses, effective_profiles(e, snapshot.networks))
                  for e in snapshot.endpoints.values())
    members = generator.tag_members(everywhere, snapshot.profiles)
    chains = generator.chain_rules(local, snapshot.profiles, version, host_policy,
                                   docker_bridges=[b for b in docker_bridges if _valid_iface(b)],
                                   resolvers=controlplane.DNS_RESOLVERS)
    tags = generator.referenced_tags(local, snapshot.profiles, version)
    return chains, generator.set_members(tags, members, version)


def pool_cidrs(snapshot: Snapshot, version: int) -> list[str]:
    """Every pool of ``version`` (disabled ones too: their addresses are still in use)."""
    return generator.pool_members((p.cidr for p in snapshot.pools.values()), version)


def profiles_to_create(networks: Iterable[Network]) -> list[Network]:
    return [n for n in networks if n.default_profile and not n.profile_created]


def used_profiles(endpoints: Iterable[Endpoint], networks: dict[str, Network]) -> set[str]:
    """Every profile a network (as its default) or an endpoint names."""
    used = {n.default_profile for n in networks.values() if n.default_profile}
    for e in endpoints:
        used.update(effective_profiles(e, networks))
    return used


def unused_auto_profiles(snapshot: Snapshot) -> list[str]:
    """Profiles the agents made for a network that nothing in ``snapshot`` uses any more."""
    used = used_profiles(snapshot.endpoints.values(), snapshot.networks)
    return sorted(name for name, p in snapshot.profiles.items() if p.auto and name not in used)


def published_ports(snapshot: Snapshot) -> list[tuple[str, str, int]]:
    """(node address, protocol, host port) of every port any node publishes for a workload
    (``docker run -p``), for the published-ports set: a workload may reach them at the
    node's underlay address, which is otherwise control plane. A mapping bound to one host
    address counts where that is the node's underlay address; ``0.0.0.0`` is every IPv4
    address, ``::`` every IPv6 one, and ``""`` (older records) both."""
    found = []
    for e in snapshot.endpoints.values():
        node = snapshot.nodes.get(e.host)
        if not e.published or node is None:
            continue
        for m in e.ports:
            if not isinstance(m, dict):
                continue
            bound = m.get("host_ip") or ""
            for address, anywhere in ((node.ipv4, "0.0.0.0"), (node.ipv6, "::")):
                if address and bound in ("", anywhere, address):
                    found.append((address, m.get("proto"), m.get("host_port")))
    return found


def node_addresses(snapshot: Snapshot) -> list[tuple[str | None, str | None]]:
    return [(n.ipv4, n.ipv6) for n in snapshot.nodes.values()]


@dataclass
class Stats:
    applies: int = 0
    failures: int = 0
    last_apply_seconds: float = 0.0


class PolicyAgent:
    def __init__(self, store: Datastore, node: str, kernel: Kernel | None = None,
                 host_policy: str = "drop", refresh: float = 300.0,
                 observe: Callable[[bool, float, bool], None] | None = None,
                 docker_bridges: Iterable[str] = (), etcd_hosts: Iterable[str] | None = None,
                 resolver: controlplane.Resolver = controlplane.resolve):
        if host_policy not in generator.HOST_POLICIES:
            raise ValueError(f"invalid workload-to-host policy {host_policy!r}: use drop or accept")
        self.store = store
        self.node = node
        self.kernel = kernel or Kernel()
        self.host_policy = host_policy
        self.refresh = refresh
        self.observe = observe or (lambda full, seconds, ok: None)  # (full, seconds, ok): metrics
        self.snapshot = Snapshot()
        self.stats = Stats()
        self._chains: dict[int, dict[str, list[str]] | None] = {}  # what we last wrote
        self._sets: dict[int, dict[str, list[str]] | None] = {}
        self._pools: dict[int, list[str]] = {}
        self._control: dict[int, list[str]] = {}
        self._published: dict[int, list[str]] = {}
        # the control plane's parts the snapshot does not hold (see profiles.controlplane)
        config = getattr(store, "config", None)
        self.etcd_hosts = list(etcd_hosts if etcd_hosts is not None
                               else [e.host for e in getattr(config, "endpoints", ())])
        self.resolver = resolver
        self.etcd_resolved: dict[str, list[str]] = {}
        self.local_addresses: list[str] = []
        self.docker_bridges: frozenset[str] = frozenset(docker_bridges)
        self._events: queue.Queue = queue.Queue()
        self._versions = self.kernel.versions()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="policy-apply")

    # -- reading etcd -------------------------------------------------------------

    def load(self) -> int:
        """Read the prefixes afresh (invalid records skipped and counted); returns the revision
        to watch after."""
        snapshot = Snapshot()
        revision = None
        for prefix in PREFIXES:
            found = self.store.get_prefix(prefix)
            revision = found.revision if revision is None else revision
            table = snapshot.table(prefix)
            for kv, record in codec.load_each(CLASSES[prefix], found):
                table[snapshot.ident(prefix, kv.key)] = record
        self.snapshot = snapshot
        return revision or 0

    # -- the control plane ----------------------------------------------------------

    def refresh_control(self, etcd: bool = True) -> None:
        """Resolve the etcd members again (``etcd``) and read this host's addresses; a failure
        keeps what was known (logged)."""
        if etcd:
            self.etcd_resolved = controlplane.etcd_addresses(self.etcd_hosts, self.etcd_resolved,
                                                             self.resolver)
        try:
            self.local_addresses = controlplane.local_addresses(self.kernel.addresses())
        except KernelError as exc:
            log.warning("cannot read this host's addresses (%s); the control plane keeps %d", exc,
                        len(self.local_addresses))

    def control_addresses(self) -> list[str]:
        """Every control-plane address the set should hold now (both versions)."""
        return controlplane.members(self.etcd_resolved, node_addresses(self.snapshot),
                                    self.local_addresses)

    def create_network_profiles(self) -> None:
        """Give networks their default profile once (see the module docstring)."""
        profiles = ProfileStore(self.store)
        for network in profiles_to_create(self.snapshot.networks.values()):
            name = network.default_profile
            try:
                profiles.add(replace(Profile.new(name), auto=True))
                log.info("created profile %s for network %s", name, network.id[:12])
            except ProfileExists:
                pass
            except ProfileError as exc:
                log.error("network %s: cannot create profile %r: %s", network.id[:12], name, exc)
                continue
            kv = self.store.get(keys.network(network.id))
            current = codec.load_one(Network, kv)
            if current is None:
                continue
            if current.default_profile == name and not current.profile_created:
                self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                               [Put(kv.key, codec.dumps(replace(current, profile_created=True)))])

    def remove_unused_profiles(self) -> list[str]:
        """Delete the ``auto`` profiles nothing uses any more (see the module docstring);
        returns the names this agent deleted."""
        candidates = unused_auto_profiles(self.snapshot)
        if not candidates:
            return []
        networks = self.store.get_prefix(keys.NETWORKS)  # fresh: the snapshot only nominates
        revision = networks.revision
        fresh = {n.id: n for n in codec.load_all(Network, networks)}
        used = used_profiles(codec.load_all(Endpoint, self.store.get_prefix(keys.ENDPOINTS)), fresh)
        removed = []
        for name in candidates:
            if name in used:
                continue
            kv = self.store.get(keys.profile(name))
            profile = codec.load_one(Profile, kv)
            if profile is None or not profile.auto:
                continue
            if self.store.txn([ModRevisionIs(kv.key, kv.mod_revision),
                               UnchangedSince(keys.NETWORKS, revision),
                               UnchangedSince(keys.ENDPOINTS, revision)], [Delete(kv.key)]).succeeded:
                log.info("removed profile %s: no network or endpoint uses it any more", name)
                removed.append(name)
        return removed

    # -- writing the kernel -------------------------------------------------------

    def apply(self, full: bool = False) -> None:
        """Make the kernel match the snapshot (only the differences unless ``full``)."""
        started = time.monotonic()
        try:
            # IPv4 and IPv6 at once: the time is spent waiting for the kernel tools
            jobs = [self._pool.submit(self._apply_version, v, full or self._chains.get(v) is None)
                    for v in self._versions]
            for job in jobs:
                job.result()
        except KernelError:
            self.stats.failures += 1
            self._chains.clear()  # unknown state: the next attempt writes everything
            self._sets.clear()
            self.observe(full, time.monotonic() - started, False)
            raise
        self.stats.applies += 1
        self.stats.last_apply_seconds = time.monotonic() - started
        self.observe(full, self.stats.last_apply_seconds, True)

    def _apply_version(self, version: int, full: bool) -> None:
        chains, sets = desired(self.snapshot, self.node, version, self.host_policy, self.docker_bridges)
        pools = pool_cidrs(self.snapshot, version)
        if full or self._pools.get(version) != pools:  # before the rules that name the set
            self.kernel.ipset_restore(generator.pools_text(pools, version))
            self._pools[version] = pools
        control = generator.control_members(self.control_addresses(), version)
        if full or self._control.get(version) != control:  # likewise
            self.kernel.ipset_restore(generator.control_text(control, version))
            self._control[version] = control
        entries = published_ports(self.snapshot)
        published = generator.published_members(entries, version)
        if full or self._published.get(version) != published:  # likewise
            self.kernel.ipset_restore(generator.published_text(entries, version))
            self._published[version] = published
        applied_sets = {} if full else (self._sets.get(version) or {})
        changed = {n: m for n, m in sets.items() if applied_sets.get(n) != m}
        if changed:  # sets first: the rules about to be written reference them
            self.kernel.ipset_restore(generator.ipset_text(changed, version))
        existing = self.kernel.chains(version) if full else ()
        text = generator.restore_text(chains, None if full else self._chains.get(version), existing)
        if text:
            self.kernel.restore(version, text)
        self._chains[version] = chains
        if full:
            self.ensure_jumps(version)
            gone = {s for s in self.kernel.sets() if names.is_tag_set(s, version)} - set(sets)
        else:
            gone = set(applied_sets) - set(sets)
        for name in sorted(gone):  # after the rules that used them are gone
            self.kernel.destroy_set(name)
        self._sets[version] = sets
        if text or changed or gone:
            log.debug("IPv%d: %d chains rewritten, %d sets refilled, %d sets removed", version,
                      0 if not text else text.count("\n:"), len(changed), len(gone))

    def ensure_jumps(self, version: int) -> None:
        """Our jumps first in FORWARD and INPUT, and first in DOCKER-USER where dockerd made it."""
        for parent, target in generator.PARENT_JUMPS.items():
            self.kernel.ensure_first(version, parent, target)
        for parent, target in generator.OPTIONAL_PARENT_JUMPS.items():
            self.kernel.ensure_first(version, parent, target, optional=True)

    def docker_changed(self, bridges: Iterable[str]) -> None:
        """Docker's bridges changed or dockerd came back (:mod:`profiles.dockerbridges`; any
        thread): rewrite WARREN-DOCKER and put the jumps first again, at once."""
        self.docker_bridges = frozenset(bridges)  # read by the next apply, full or not
        self._events.put((DOCKER, None))

    # -- the loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Sync, then follow etcd until ``stop`` is set; never gives up, never dies of an error."""
        delay = RETRY_MIN
        while not stop.is_set():
            try:
                revision = self.load()
                self.create_network_profiles()
                self.refresh_control()
                self.apply(full=True)
                self.remove_unused_profiles()
                log.info("policy in sync: %d local endpoints, %d profiles",
                         sum(e.host == self.node for e in self.snapshot.endpoints.values()),
                         len(self.snapshot.profiles))
                delay = RETRY_MIN
                self.follow(stop, revision + 1)
                continue
            except DatastoreError as exc:
                log.warning("etcd: %s; keeping the current rules, retrying in %.1fs", exc, delay)
            except KernelError as exc:
                log.error("%s; retrying in %.1fs", exc, delay)
            except Exception:  # noqa: BLE001 - a bug or a record nobody foresaw: never a dead thread
                self.stats.failures += 1
                self._chains.clear()  # unknown state: the next attempt writes everything
                self._sets.clear()
                delay = max(delay, RETRY_MAX)
                log.exception("policy agent: unexpected error; resyncing in %.1fs", delay)
                stop.wait(delay)
                delay = min(delay * 2, ERROR_RETRY_MAX)
                continue
            stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def follow(self, stop: threading.Event, start_revision: int) -> None:
        """Apply watch events in batches; returns (to resync) when a watch fails."""
        events: queue.Queue = queue.Queue()
        self._events = events  # docker_changed wakes this loop through it
        done = threading.Event()
        watches = []
        try:
            for prefix in PREFIXES:
                watch = self.store.watch_prefix(prefix, start_revision=start_revision).until(stop)
                watches.append(watch)
                threading.Thread(target=_pump, args=(watch, prefix, events, done),
                                 name=f"policy-watch-{prefix}", daemon=True).start()
            next_full = time.monotonic() + self.refresh
            next_jumps = time.monotonic() + JUMP_CHECK
            while not stop.is_set():
                try:
                    batch = [events.get(timeout=max(0.05, min(next_full, next_jumps) - time.monotonic()))]
                except queue.Empty:
                    now = time.monotonic()
                    if now >= next_full:
                        self.refresh_control()
                        self.apply(full=True)
                        self.remove_unused_profiles()
                        next_full = now + self.refresh
                    if now >= next_jumps:
                        for version in self._versions:
                            self.ensure_jumps(version)
                        next_jumps = now + JUMP_CHECK
                    continue
                time.sleep(0.005)  # let a burst arrive: one write for all of it
                while True:
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                networks_changed = docker = changed = users_changed = False
                for prefix, event in batch:
                    if prefix is None:  # a watch ended: resync from a fresh read
                        if not stop.is_set():
                            log.info("policy watch ended (%s); resyncing", event)
                        return
                    if prefix == DOCKER:
                        docker = True
                        continue
                    changed |= self.snapshot.update(prefix, event.key,
                                                    event.value if event.kind == "put" else None,
                                                    event.mod_revision)
                    networks_changed |= prefix == keys.NETWORKS
                    users_changed |= prefix in (keys.NETWORKS, keys.ENDPOINTS, keys.PROFILES)
                if networks_changed:
                    self.create_network_profiles()
                if docker:  # a bridge (and its address) came or went
                    self.refresh_control(etcd=False)
                if changed or docker:
                    self.apply()
                if users_changed:
                    self.remove_unused_profiles()
                if docker:  # dockerd has just rewritten FORWARD: our jumps first again
                    for version in self._versions:
                        self.ensure_jumps(version)
                    next_jumps = time.monotonic() + JUMP_CHECK
        finally:
            done.set()
            for watch in watches:
                watch.cancel()


def _pump(watch, prefix: str, events: queue.Queue, done: threading.Event) -> None:
    """Feed one watch's events to the agent's queue; a final (None, reason) when it ends."""
    reason = "cancelled"
    try:
        for event in watch:
            events.put((prefix, event))
    except DatastoreError as exc:
        reason = str(exc)
    if not done.is_set():
        events.put((None, reason))
