"""The policy agent: keeps this host's iptables chains and ipsets in sync with etcd.

One agent per host is the single writer of warren's filter chains and tag
sets (design.md). It holds a cache of four etcd prefixes - endpoints of
*every* host (tag members live anywhere), Docker networks (an endpoint's
default profile is its network's, and ``internal`` confines it), profiles
and pools (the bounds of ``--internal`` endpoints) - filled by one read
each and kept current by one watch each.

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
the defaults (create-if-absent, so agents on several hosts may race) and
marks the network record. A profile the user removes later stays removed.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from datastore import Datastore, DatastoreError, ModRevisionIs, Put, codec, keys
from ipam.pools import Pool
from ipam.workloads import Endpoint, Network, effective_profiles

from . import generator, names
from .kernel import Kernel, KernelError
from .model import Profile, ProfileError
from .store import ProfileExists, ProfileStore

log = logging.getLogger(__name__)

PREFIXES = (keys.ENDPOINTS, keys.NETWORKS, keys.PROFILES, keys.POOLS)
DOCKER = "docker"  # the queue's marker for "Docker's bridges changed" (see docker_changed)
RETRY_MIN, RETRY_MAX = 0.5, 2.0  # short: endpoints made right after an outage wait for our resync
JUMP_CHECK = 10.0  # seconds between checks that the parent jumps are still first


@dataclass
class Snapshot:
    """The agent's copy of etcd: endpoints by key, networks by id, profiles by name, pools by key."""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)

    def update(self, prefix: str, key: str, value: bytes | None) -> bool:
        """Apply one put (value) or delete (None); a record that does not parse counts as absent.

        Returns whether the policy can have changed: an endpoint put that changes only what
        no rule reads (POLICY_IGNORED: Join's sandbox and gateway slot, -p's port map, the MAC,
        the MTU) does not, so the four writes of every container start cost one apply, not four.
        """
        table, cls = {keys.ENDPOINTS: (self.endpoints, Endpoint),
                      keys.NETWORKS: (self.networks, Network),
                      keys.PROFILES: (self.profiles, Profile),
                      keys.POOLS: (self.pools, Pool)}[prefix]
        ident = key if prefix == keys.ENDPOINTS else keys.last_segment(key)
        old = table.get(ident)
        if value is None:
            table.pop(ident, None)
            return old is not None
        try:
            new = codec.loads(cls, value)
        except (DatastoreError, ProfileError, TypeError, ValueError) as exc:
            log.error("ignoring bad record %s: %s", key, exc)  # fail closed: as if absent
            table.pop(ident, None)
            return old is not None
        table[ident] = new
        if old is None:
            return True
        if prefix == keys.ENDPOINTS:
            return replace(old, **POLICY_IGNORED) != replace(new, **POLICY_IGNORED)
        return old != new


# Endpoint fields no rule reads (see Snapshot.update), with the value both sides are compared at.
POLICY_IGNORED = {"sandbox": None, "gateway_slot": 1, "ports": [], "published": False, "mac": "", "mtu": 1500}


def _internal(endpoint: Endpoint, networks: dict[str, Network]) -> bool:
    network = networks.get(endpoint.network)
    return bool(network and network.internal)


def local_endpoints(snapshot: Snapshot, node: str) -> list[generator.LocalEndpoint]:
    return [generator.LocalEndpoint(e.id, e.iface, e.ipv4, e.ipv6,
                                    effective_profiles(e, snapshot.networks),
                                    _internal(e, snapshot.networks))
            for e in snapshot.endpoints.values() if e.host == node]


def desired(snapshot: Snapshot, node: str, version: int, host_policy: str = "drop",
            docker_bridges: Iterable[str] = ()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(chain -> rules, set -> members) that this node's kernel should hold for ``version``."""
    local = local_endpoints(snapshot, node)
    everywhere = ((e.addresses, effective_profiles(e, snapshot.networks))
                  for e in snapshot.endpoints.values())
    members = generator.tag_members(everywhere, snapshot.profiles)
    chains = generator.chain_rules(local, snapshot.profiles, version, host_policy,
                                   docker_bridges=docker_bridges)
    tags = generator.referenced_tags(local, snapshot.profiles, version)
    return chains, generator.set_members(tags, members, version)


def pool_cidrs(snapshot: Snapshot, version: int) -> list[str]:
    """Every pool of ``version`` (disabled ones too: their addresses are still in use)."""
    return generator.pool_members((p.cidr for p in snapshot.pools.values()), version)


def profiles_to_create(networks: Iterable[Network]) -> list[Network]:
    return [n for n in networks if n.default_profile and not n.profile_created]


@dataclass
class Stats:
    applies: int = 0
    failures: int = 0
    last_apply_seconds: float = 0.0


class PolicyAgent:
    def __init__(self, store: Datastore, node: str, kernel: Kernel | None = None,
                 host_policy: str = "drop", refresh: float = 300.0,
                 observe: Callable[[bool, float, bool], None] | None = None,
                 docker_bridges: Iterable[str] = ()):
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
        self.docker_bridges: frozenset[str] = frozenset(docker_bridges)
        self._events: queue.Queue = queue.Queue()
        self._versions = self.kernel.versions()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="policy-apply")

    # -- reading etcd -------------------------------------------------------------

    def load(self) -> int:
        """Read the three prefixes afresh; returns the revision to watch after."""
        snapshot = Snapshot()
        revision = None
        for prefix in PREFIXES:
            found = self.store.get_prefix(prefix)
            revision = found.revision if revision is None else revision
            for kv in found:
                snapshot.update(prefix, kv.key, kv.value)
        self.snapshot = snapshot
        return revision or 0

    def create_network_profiles(self) -> None:
        """Give networks their default profile once (see the module docstring)."""
        profiles = ProfileStore(self.store)
        for network in profiles_to_create(self.snapshot.networks.values()):
            name = network.default_profile
            try:
                profiles.add(Profile.new(name))
                log.info("created profile %s for network %s", name, network.id[:12])
            except ProfileExists:
                pass
            except ProfileError as exc:
                log.error("network %s: cannot create profile %r: %s", network.id[:12], name, exc)
                continue
            kv = self.store.get(keys.network(network.id))
            if kv is None:
                continue
            current = codec.loads(Network, kv.value)
            if current.default_profile == name and not current.profile_created:
                self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                               [Put(kv.key, codec.dumps(replace(current, profile_created=True)))])

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
        """Sync, then follow etcd until ``stop`` is set; never gives up."""
        delay = RETRY_MIN
        while not stop.is_set():
            try:
                revision = self.load()
                self.create_network_profiles()
                self.apply(full=True)
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
                        self.apply(full=True)
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
                networks_changed = docker = changed = False
                for prefix, event in batch:
                    if prefix is None:  # a watch ended: resync from a fresh read
                        if not stop.is_set():
                            log.info("policy watch ended (%s); resyncing", event)
                        return
                    if prefix == DOCKER:
                        docker = True
                        continue
                    changed |= self.snapshot.update(prefix, event.key,
                                                    event.value if event.kind == "put" else None)
                    networks_changed |= prefix == keys.NETWORKS
                if networks_changed:
                    self.create_network_profiles()
                if changed or docker:
                    self.apply()
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
