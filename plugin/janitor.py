"""The janitor: nothing of Warren's outlives its container on this host.

Endpoint records, their addresses, veths, /32 (/128) routes and published
ports are made and removed by Docker's calls. When a call never arrives or
fails half-way (etcd down during ``docker rm -f``, the plugin killed during
``docker run``, dockerd restarted without live-restore: it calls Leave and
DeleteEndpoint only for some endpoints) something stays behind, and a stale
record whose address is handed out again gives the next container its
network's tag. So a background thread of the plugin server compares this
host's records with **dockerd's own view** and removes what no container
owns. It runs once at start, again as soon as dockerd answers after a
restart (its pid, read from the socket's peer credentials, changed, or it
did not answer for a while: :func:`plugin.names.docker_pid`, polled every
:data:`WATCH_INTERVAL` s) and every ``WARREN_JANITOR_INTERVAL`` s (default
60; ``0`` or ``off`` disables the thread).

What owns what (:func:`owned`):

* a Docker endpoint record (``network`` set) is owned while dockerd lists its
  id among the endpoints of that network (``GET /networks/{id}``,
  ``Containers[*].EndpointID``: joined endpoints and, as ``ep-...``, created
  ones not yet joined). With live-restore dockerd restores the endpoints of
  running containers, so they are listed and never touched;
* a ``warrenctl container add`` record is owned while its ``container`` exists
  and runs (``GET /containers/json?all=1``): a stopped container's network
  namespace and the veth in it are gone, and ``container add`` made them.

An orphan is removed only when it is older than the grace period
(``WARREN_JANITOR_GRACE``, default 60 s), so a CreateEndpoint in flight
(its record is written before dockerd stores the endpoint) is never
raced: a record's age is that of the youngest allocation of its addresses
(RequestAddress stamps ``since`` just before CreateEndpoint), a record
whose addresses are no longer allocated is old. Then everything it holds
goes, through the plugin's own paths: :meth:`NetworkDriver.delete_endpoint
<plugin.networks.NetworkDriver.delete_endpoint>` (veth and routes, gateway
slot, record, published ports), then its addresses are released - each only
if no remaining record names it and it is still held by the allocation seen
(compare-and-swap on the handle), so an address handed to a newer
container is never freed. Also swept, on this host only:

* Docker allocations (``purpose=docker``, this host) and addresses IPAM
  re-imported for a record (``purpose=record``: the record named a freed
  address, :mod:`ipam.allocator`) that no record and no ``--aux-address``
  names, older than the grace period: a RequestAddress whose CreateEndpoint
  never came, a release lost with etcd, a record removed without its
  addresses;
* gateway-slot keys whose endpoint record is gone (read before the records:
  Join writes a slot and its record in one transaction);
* ``wrn*`` interfaces with no joined record, seen so in two rounds in a row
  (``container add`` creates its veth a moment before its record);
* published ports of records removed behind the plugin's back
  (``warrenctl endpoint remove``, ``ipam check --repair``): the port
  publisher syncs when a published endpoint disappears.

* network records this host made (``host``) that dockerd no longer has and
  no endpoint record names, seen so for the grace period (a network record
  has no timestamp): ``docker network rm`` while etcd was down. A network is
  local to each dockerd, so only the host that made a record can tell it is
  gone (CreateNetwork writes ``Network.host``); records that do not say which
  host made them (written by older versions) are never removed.

Never on missing information: when dockerd does not answer or etcd fails,
the round does nothing (logged) and the next one tries again.

:func:`forget` is the etcd half of a removal (record, slot, addresses), for
``warrenctl endpoint remove`` and ``warrenctl ipam check --repair`` run on
any host; the interface and ports then go at the owning host's next round.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping
from urllib.parse import quote

from datastore import Datastore, DatastoreError, codec, keys
from ipam import Allocator
from ipam.allocator import RECORD_PURPOSE, record_handle
from ipam.blocks import Block
from ipam.workloads import Endpoint, Network, host_ifname

from .names import DockerError, DockerNotFound, docker_get, docker_pid

log = logging.getLogger(__name__)

INTERVAL_ENV, GRACE_ENV = "WARREN_JANITOR_INTERVAL", "WARREN_JANITOR_GRACE"
DEFAULT_INTERVAL = 60.0   # s between rounds
DEFAULT_GRACE = 60.0      # s an orphan is spared (a CreateEndpoint in flight)
WATCH_INTERVAL = 5.0      # s between looks at dockerd (a restart triggers a round)
DOCKER_PURPOSE = "docker"  # plugin.ipamdriver.PURPOSE (not imported: no Flask in the CLI's path)
CONTAINER_HANDLE = "container-"  # plugin.containers.handle_of
LIVE_STATES = frozenset({"running", "paused", "restarting"})
SWEPT = (DOCKER_PURPOSE, RECORD_PURPOSE)  # allocations released when no record names them


def settings(env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(interval, grace) from ``WARREN_JANITOR_INTERVAL`` / ``_GRACE``; interval 0: off."""
    env = os.environ if env is None else env

    def number(name: str, default: float) -> float:
        raw = (env.get(name) or "").strip().lower()
        if not raw:
            return default
        if raw == "off":
            return 0.0
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number of seconds or off, not {raw!r}") from None
        if value < 0:
            raise ValueError(f"{name} must not be negative")
        return value
    return number(INTERVAL_ENV, DEFAULT_INTERVAL), number(GRACE_ENV, DEFAULT_GRACE)


# -- dockerd's view ------------------------------------------------------------------

@dataclass(frozen=True)
class DockerView:
    networks: frozenset[str]          # ids of every network dockerd has
    endpoints: frozenset[str]         # endpoint ids dockerd has on the networks asked about
    containers: Mapping[str, str]     # container id -> State ("running", "exited", ...)


def docker_view(network_ids: Iterable[str],
                get: Callable[[str], object] = docker_get) -> DockerView:
    """dockerd's networks, the endpoints of those of ``network_ids`` it has, its containers.

    Raises DockerError when dockerd does not answer (never a partial view)."""
    networks = {n["Id"] for n in get("/networks")}  # type: ignore[union-attr,index]
    endpoints: set[str] = set()
    for network_id in sorted(set(network_ids) & networks):
        try:
            detail = get(f"/networks/{quote(network_id, safe='')}")
        except DockerNotFound:  # removed since the listing: it holds no endpoint
            networks.discard(network_id)
            continue
        for entry in (detail.get("Containers") or {}).values():  # type: ignore[union-attr]
            if entry.get("EndpointID"):
                endpoints.add(entry["EndpointID"])
    containers = {c["Id"]: c.get("State") or "" for c in get("/containers/json?all=1")}  # type: ignore
    return DockerView(frozenset(networks), frozenset(endpoints), containers)


def owned(endpoint: Endpoint, view: DockerView) -> bool:
    if endpoint.container:
        return view.containers.get(endpoint.container) in LIVE_STATES
    return endpoint.id in view.endpoints


def owner(endpoint: Endpoint, get: Callable[[str], object] = docker_get) -> tuple[str, bool] | None:
    """(container id or "", running) of the container dockerd says owns the endpoint, None if
    none does. DockerError when dockerd does not answer."""
    if endpoint.container:
        try:
            attrs = get(f"/containers/{quote(endpoint.container, safe='')}/json")
        except DockerNotFound:
            return None
        state = (attrs.get("State") or {})  # type: ignore[union-attr]
        return endpoint.container, bool(state.get("Running"))
    try:
        detail = get(f"/networks/{quote(endpoint.network, safe='')}")
    except DockerNotFound:
        return None
    for key, entry in (detail.get("Containers") or {}).items():  # type: ignore[union-attr]
        if entry.get("EndpointID") != endpoint.id:
            continue
        if key.startswith("ep-"):  # created, never joined: no container behind it
            return "", False
        try:
            attrs = get(f"/containers/{quote(key, safe='')}/json")
        except DockerNotFound:
            return key, False
        return key, bool((attrs.get("State") or {}).get("Running"))  # type: ignore[union-attr]
    return None


# -- the plan: records and IPAM vs dockerd -> what to remove ---------------------------

@dataclass(frozen=True)
class Held:
    """One allocation as IPAM has it."""
    address: str
    handle: str
    host: str
    purpose: str
    since: float


@dataclass
class Plan:
    endpoints: list[Endpoint] = field(default_factory=list)  # orphans past their grace: remove
    waiting: list[str] = field(default_factory=list)         # orphan ids still in their grace
    release: list[Held] = field(default_factory=list)        # allocations to release
    slots: list[str] = field(default_factory=list)           # gateway-slot keys to delete
    interfaces: list[str] = field(default_factory=list)      # wrn* with no joined record
    networks: list[str] = field(default_factory=list)        # this host's, gone from dockerd

    @property
    def empty(self) -> bool:
        return not (self.endpoints or self.release or self.slots or self.interfaces
                    or self.networks)


def holdings(blocks: Iterable[Block]) -> dict[str, Held]:
    """address -> its allocation, over every block."""
    held = {}
    for block in blocks:
        for ordinal, a in block.allocations.items():
            address = block.address(ordinal)
            try:
                since = float(a.attrs.get("since") or 0)
            except ValueError:
                since = 0.0
            held[address] = Held(address, a.handle, a.host, a.attrs.get("purpose", ""), since)
    return held


def age(endpoint: Endpoint, held: Mapping[str, Held], now: float) -> float:
    """Seconds since the youngest allocation of the endpoint's addresses (inf: none held)."""
    stamps = [held[a].since for a in endpoint.addresses if a in held]
    return now - max(stamps) if stamps else float("inf")


def releasable(endpoint: Endpoint, h: Held) -> bool:
    """Whether ``h`` is the endpoint's own kind of allocation: Docker's, container add's, or
    the one IPAM re-imported for this record (its address was freed under it)."""
    if h.handle == record_handle(endpoint.id):
        return True
    if endpoint.container:
        return h.handle == CONTAINER_HANDLE + endpoint.id
    return h.purpose == DOCKER_PURPOSE


def plan(host: str, endpoints: list[Endpoint], view: DockerView, held: Mapping[str, Held],
         aux: Iterable[str], now: float, grace: float, interfaces: Iterable[str] = (),
         slots: Mapping[str, str] | None = None,
         networks: Mapping[str, str | None] | None = None) -> Plan:
    """What to remove on ``host``: pure, from the records of every host (``endpoints``), what
    dockerd has (``view``), IPAM's allocations (``held``), --aux-address reservations, this
    host's ``wrn*`` interfaces, gateway-slot keys (key -> endpoint id) and network records
    (id -> the host that made it, None when the record does not say)."""
    result = Plan()
    mine = [e for e in endpoints if e.host == host]
    gone: set[str] = set()
    for e in mine:
        if owned(e, view):
            continue
        if age(e, held, now) < grace:
            result.waiting.append(e.id)
            continue
        result.endpoints.append(e)
        gone.add(e.id)
    named = {a for e in endpoints if e.id not in gone for a in e.addresses}
    named |= set(aux)
    releasing: set[str] = set()
    for e in result.endpoints:
        for a in e.addresses:
            h = held.get(a)
            if h is not None and a not in named and a not in releasing and releasable(e, h):
                result.release.append(h)
                releasing.add(a)
    for a, h in sorted(held.items()):
        if (h.host == host and h.purpose in SWEPT and a not in named and a not in releasing
                and now - h.since >= grace):
            result.release.append(h)
    remaining = {e.id for e in mine if e.id not in gone}
    result.slots = sorted(k for k, holder in (slots or {}).items() if holder not in remaining)
    joined = {host_ifname(e.id) for e in mine if e.sandbox and e.id not in gone}
    removed = {host_ifname(e.id) for e in result.endpoints}
    result.interfaces = sorted(i for i in interfaces if i not in joined and i not in removed)
    used = {e.network for e in endpoints if e.id not in gone}
    result.networks = sorted(n for n, made_by in (networks or {}).items()
                             if made_by == host and n not in view.networks and n not in used)
    return result


# -- doing it ---------------------------------------------------------------------------

def release(allocator: Allocator, allocations: Iterable[Held]) -> list[str]:
    """Release each allocation if it is still held by the same handle; the addresses freed."""
    return [h.address for h in allocations if allocator.release(h.address, h.handle)]


def forget(store: Datastore, endpoint: Endpoint, allocator: Allocator | None = None) -> list[str]:
    """The etcd half of removing an endpoint (any host's): its gateway slot, its record, then
    its addresses (those no other record names, held as :func:`releasable`). Returns the
    addresses released. Its interface and published ports go at the owning host's next
    janitor round (the plugin is the one writer of veths and port rules)."""
    if endpoint.sandbox and not endpoint.container:
        slot = keys.sandbox_slot(endpoint.host, endpoint.sandbox, endpoint.gateway_slot)
        kv = store.get(slot)
        if kv is not None and kv.value.decode(errors="replace") == endpoint.id:
            store.delete_if_unchanged(slot, kv.mod_revision)
    store.delete(keys.endpoint(endpoint.host, endpoint.id))
    return release_addresses(store, endpoint, allocator)


def release_addresses(store: Datastore, endpoint: Endpoint,
                      allocator: Allocator | None = None) -> list[str]:
    """Release the addresses of a removed endpoint that no remaining record names."""
    named = {a for _, e in codec.load_each(Endpoint, store.get_prefix(keys.ENDPOINTS))
             if e.id != endpoint.id for a in e.addresses}
    held = holdings(codec.load_all(Block, store.get_prefix(keys.BLOCKS)))
    todo = [held[a] for a in endpoint.addresses
            if a in held and a not in named and releasable(endpoint, held[a])]
    return release(allocator or Allocator(store, endpoint.host), todo)


@dataclass
class Report:
    endpoints: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    slots: int = 0
    interfaces: list[str] = field(default_factory=list)
    waiting: int = 0
    networks: list[str] = field(default_factory=list)


class Janitor:
    """The background thread (see the module docstring). ``driver`` is the plugin's
    NetworkDriver (its delete_endpoint is the one removal path of Docker endpoints)."""

    def __init__(self, store: Datastore, host: str, driver, dataplane, ports=None,
                 interval: float = DEFAULT_INTERVAL, grace: float = DEFAULT_GRACE,
                 view: Callable[[Iterable[str]], DockerView] = docker_view,
                 pid: Callable[[], int | None] = docker_pid,
                 clock: Callable[[], float] = time.time):
        self.store, self.host, self.driver = store, host, driver
        self.dataplane, self.ports = dataplane, ports
        self.interval, self.grace = interval, grace
        self.allocator = Allocator(store, host)
        self._view, self._pid, self._clock = view, pid, clock
        self._strays: set[str] = set()       # wrn* without a joined record at the last round
        self._published: set[str] | None = None  # published endpoint ids at the last round
        self._networks_gone: dict[str, float] = {}  # network id -> when first seen gone
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ----------------------------------------------------------------

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._loop, name="warren-janitor", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        last_pid: int | None = None
        reachable = True
        due = 0.0  # monotonic time of the next periodic round: at once
        while not self._stop.is_set():
            restarted = False
            try:
                pid = self._pid()
                restarted = (not reachable) or (pid is not None and last_pid is not None
                                                and pid != last_pid)
                last_pid, reachable = pid if pid is not None else last_pid, True
            except DockerError as exc:
                if reachable:
                    log.info("janitor: dockerd does not answer (%s); waiting for it", exc)
                reachable = False
            except Exception:  # never let the thread die
                log.exception("janitor: looking at dockerd failed")
            if reachable and (restarted or time.monotonic() >= due):
                if restarted:
                    log.info("janitor: dockerd is back (restarted?): reconciling now")
                report = self._safe_round()
                if restarted:
                    log.info("janitor: round after dockerd's return %s",
                             "skipped" if report is None else
                             f"done: {len(report.endpoints)} endpoint(s) removed")
                due = time.monotonic() + self.interval
            self._stop.wait(min(WATCH_INTERVAL, self.interval))

    def _safe_round(self) -> Report | None:
        try:
            return self.run_once()
        except Exception:
            log.exception("janitor: round failed; trying again at the next one")
            return None

    # -- one round ---------------------------------------------------------------------

    def run_once(self) -> Report | None:
        """One comparison and clean-up; None when dockerd or etcd could not be asked."""
        try:
            interfaces = self.dataplane.workload_interfaces()  # first: see plan()'s race notes
            slot_prefix = keys.SANDBOXES + keys.segment(self.host, "host name") + "/"
            slot_kvs = {kv.key: kv for kv in self.store.get_prefix(slot_prefix)}
            endpoints = codec.load_all(Endpoint, self.store.get_prefix(keys.ENDPOINTS))
            networks = codec.load_all(Network, self.store.get_prefix(keys.NETWORKS))
            aux = {a for n in networks for a in n.aux_addresses}
            held = holdings(codec.load_all(Block, self.store.get_prefix(keys.BLOCKS)))
        except DatastoreError as exc:
            log.info("janitor: etcd unavailable (%s); skipping this round", exc)
            return None
        try:
            view = self._view({e.network for e in endpoints if e.host == self.host and e.network})
        except (DockerError, KeyError, TypeError, AttributeError) as exc:
            log.info("janitor: cannot ask dockerd (%s); skipping this round", exc)
            return None
        slots = {k: kv.value.decode(errors="replace") for k, kv in slot_kvs.items()}
        made_by = {n.id: n.host for n in networks}
        todo = plan(self.host, endpoints, view, held, aux, self._clock(), self.grace,
                    interfaces, slots, made_by)
        report = Report(waiting=len(todo.waiting))
        try:
            self._execute(todo, report, {k: kv.mod_revision for k, kv in slot_kvs.items()})
            self._sync_ports(endpoints, todo)
        except DatastoreError as exc:
            log.info("janitor: etcd failed during the round (%s); the next one goes on", exc)
        if report.endpoints or report.released or report.slots or report.interfaces or report.networks:
            log.info("janitor: removed %d endpoint(s) %s, released %s, %d gateway slot(s), "
                     "interfaces %s, networks %s", len(report.endpoints),
                     [i[:12] for i in report.endpoints], report.released, report.slots,
                     report.interfaces, [n[:12] for n in report.networks])
        return report

    def _execute(self, todo: Plan, report: Report, slot_revisions: Mapping[str, int]) -> None:
        for e in todo.endpoints:
            log.info("janitor: endpoint %s (%s) has no container in dockerd: removing it",
                     e.id[:12], ",".join(e.addresses))
            if e.container:
                self.dataplane.remove_workload(e.id)
                self.store.delete(keys.endpoint(self.host, e.id))
            else:
                self.driver.delete_endpoint(e.id)
            report.endpoints.append(e.id)
        report.released = release(self.allocator, todo.release)
        for key in todo.slots:  # unless re-used meanwhile
            report.slots += self.store.delete_if_unchanged(key, slot_revisions[key])
        strays, self._strays = self._strays, set(todo.interfaces)
        for name in todo.interfaces:
            if name in strays:
                log.info("janitor: removing interface %s (no joined endpoint)", name)
                self.dataplane.remove_workload(name[len("wrn"):])
                report.interfaces.append(name)
                self._strays.discard(name)
        now = time.monotonic()  # a network record has no timestamp: gone for the grace period
        self._networks_gone = {n: self._networks_gone.get(n, now) for n in todo.networks}
        for network_id, since in list(self._networks_gone.items()):
            if now - since >= self.grace:
                log.info("janitor: network %s is gone from dockerd: removing its record",
                         network_id[:12])
                self.driver.delete_network(network_id)
                report.networks.append(network_id)
                del self._networks_gone[network_id]

    def _sync_ports(self, endpoints: list[Endpoint], todo: Plan) -> None:
        """Drop the ports of published endpoints whose record vanished behind our back."""
        removed = {e.id for e in todo.endpoints}
        published = {e.id for e in endpoints if e.host == self.host and e.published
                     and e.id not in removed}
        if self.ports is not None and self._published is not None and self._published - published - removed:
            self.ports.sync()
        self._published = published
