"""nat-outgoing: masquerade traffic that leaves every pool, from pools that ask for it.

Design (the one Calico's Felix used):

* Two ipsets per family (``hash:net``), regenerated whole from the pools in
  etcd: ``warren-all-pools`` holds every pool, ``warren-masq-pools`` the
  pools with ``nat_outgoing`` (IPv6: ``warren-all-pools6`` and
  ``warren-masq-pools6``, ``family inet6``).
* One nat chain per family, ``WARREN-NAT-OUTGOING``, jumped to first from
  POSTROUTING, holding exactly one rule::

      -m set --match-set warren-masq-pools src -m set ! --match-set warren-all-pools dst -j MASQUERADE

  So a packet is masqueraded to the outgoing interface's address iff its
  source is in a nat-outgoing pool and its destination is outside *every*
  pool. Traffic between pools (nat-outgoing or not, on this host or
  another) is never NATed, and neither is traffic from non-nat pools or from
  the host itself. Replies need no rule: conntrack reverses the NAT.
* The rule never changes; only the sets do. A set is updated atomically
  with ``ipset restore``: the real set is created if missing, a ``-tmp`` set
  is filled, swapped into place (the rule keeps referencing the name) and
  destroyed. The chain itself is written with ``iptables-restore --noflush``
  (flush and refill in one commit), as ``plugin/ports.py`` does, and the
  POSTROUTING jump is inserted once (checked with ``-C`` first).
* Disabled pools: ``disabled`` only stops *new* allocations - addresses
  already handed out stay in use (``pool remove`` disables a pool before it
  deletes its blocks). So a disabled pool is still in ``all`` (traffic to
  its workloads is inter-pool, not NATed) and, if it has ``nat_outgoing``,
  still in ``masq`` (its workloads keep reaching the outside).
* IPv4 is required; IPv6 is best effort (a host whose ip6tables has no nat
  table logs a warning and keeps IPv4 working).
* :class:`NatOutgoing` keeps the kernel in line with etcd: ``sync`` reads
  the pools and applies them; ``follow`` (a thread of the node agent,
  :mod:`ctl.agent`) syncs, watches ``/warren/v1/pools/`` and
  resyncs on every change. When etcd is unreachable it retries with
  backoff and leaves the kernel as it is: workloads keep their NAT while the
  datastore is away. Nothing is removed when the node stops, for the same
  reason.

Beside Docker's firewall: dockerd's nat rules only masquerade its bridges'
subnets and DNAT its published ports, so they never meet this rule; the
FORWARD side of nat-outgoing (routed traffic must be accepted when dockerd
set the FORWARD policy to DROP) is the policy agent's (:mod:`profiles.generator`).
Endpoints of ``--internal`` networks never get here with a destination
outside the pools: the policy agent drops such packets in FORWARD, before
POSTROUTING, whatever their pool's ``nat_outgoing`` says.

Warren only ever touches chains named ``WARREN-*`` and sets named
``warren-*``.
"""
from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from datastore import Datastore, DatastoreError, Watch, codec, keys
from ipam.pools import Pool

log = logging.getLogger("warren.bgp.natout")

CHAIN = "WARREN-NAT-OUTGOING"
PARENT = "POSTROUTING"
ALL_POOLS = {4: "warren-all-pools", 6: "warren-all-pools6"}
MASQ_POOLS = {4: "warren-masq-pools", 6: "warren-masq-pools6"}
TMP_SUFFIX = "-tmp"
FAMILIES = {4: "inet", 6: "inet6"}
TOOLS = {4: "iptables", 6: "ip6tables"}
IPSET = "ipset"
TIMEOUT = 30.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0


class NatError(Exception):
    """The kernel refused the nat-outgoing sets or rules (one line)."""


# -- pure: what the kernel should hold ------------------------------------------------

def all_pools(pools: Iterable[Pool], version: int) -> list[str]:
    """CIDRs of every pool of ``version``, disabled ones included."""
    return sorted({p.cidr for p in pools if p.version == version}, key=ipaddress.ip_network)


def masq_pools(pools: Iterable[Pool], version: int) -> list[str]:
    """CIDRs of the pools of ``version`` whose outgoing traffic is masqueraded."""
    return sorted({p.cidr for p in pools if p.version == version and p.nat_outgoing},
                  key=ipaddress.ip_network)


def _set_lines(name: str, family: str, members: list[str]) -> list[str]:
    tmp = name + TMP_SUFFIX
    return [f"create {name} hash:net family {family} -exist",
            f"create {tmp} hash:net family {family} -exist",
            f"flush {tmp}",
            *(f"add {tmp} {cidr}" for cidr in members),
            f"swap {tmp} {name}",
            f"destroy {tmp}"]


def ipset_restore_text(pools: Iterable[Pool], version: int) -> str:
    """``ipset restore`` input that replaces both sets of ``version`` atomically."""
    pools = list(pools)
    family = FAMILIES[version]
    lines = (_set_lines(ALL_POOLS[version], family, all_pools(pools, version))
             + _set_lines(MASQ_POOLS[version], family, masq_pools(pools, version)))
    return "\n".join(lines) + "\n"


def nat_rules(version: int) -> str:
    """``iptables-restore --noflush`` input for the nat chain of ``version``."""
    return "\n".join([
        "*nat",
        f":{CHAIN} - [0:0]",
        f"-F {CHAIN}",
        f"-A {CHAIN} -m set --match-set {MASQ_POOLS[version]} src "
        f"-m set ! --match-set {ALL_POOLS[version]} dst -j MASQUERADE",
        "COMMIT",
        "",
    ])


# -- applying it ----------------------------------------------------------------------

def _run(argv: list[str], text: str | None = None) -> None:
    """Run a tool; raise NatError with its stderr on failure."""
    try:
        subprocess.run(argv, input=text, text=True, check=True, capture_output=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise NatError(f"{argv[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().replace("\n", " | ")
        raise NatError(f"{' '.join(argv[:2])} failed: {detail or f'exit {exc.returncode}'}") from None
    except subprocess.TimeoutExpired:
        raise NatError(f"{' '.join(argv[:2])} did not finish within {TIMEOUT:.0f}s") from None


def _ensure_jump(tool: str) -> None:
    """Insert the POSTROUTING jump first, once (``-C`` fails only while it is missing)."""
    jump = ["-j", CHAIN]
    try:
        _run([tool, "-w", "-t", "nat", "-C", PARENT, *jump])
    except NatError:
        _run([tool, "-w", "-t", "nat", "-I", PARENT, "1", *jump])


def apply_family(pools: list[Pool], version: int) -> None:
    """Sets first (the rule references them), then the chain, then the jump."""
    tool = TOOLS[version]
    if shutil.which(f"{tool}-restore") is None:
        raise NatError(f"{tool}-restore is not installed")
    _run([IPSET, "restore"], ipset_restore_text(pools, version))
    _run([f"{tool}-restore", "--noflush"], nat_rules(version))
    _ensure_jump(tool)


_v6_problem: str | None = None  # the last IPv6 failure logged, so it is logged once


def apply(pools: Iterable[Pool]) -> None:
    """Program both families; IPv4 failures raise NatError, IPv6 ones are logged."""
    global _v6_problem
    pools = list(pools)
    apply_family(pools, 4)
    try:
        apply_family(pools, 6)
    except NatError as exc:
        if str(exc) != _v6_problem:
            log.warning("nat-outgoing for IPv6 is not available (IPv4 is programmed): %s", exc)
        _v6_problem = str(exc)
    else:
        _v6_problem = None


# -- keeping it in line with etcd -----------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """What was applied, for logs: (all, masq) CIDRs."""
    all: tuple[str, ...]
    masq: tuple[str, ...]

    @classmethod
    def of(cls, pools: list[Pool]) -> "Summary":
        return cls(tuple(all_pools(pools, 4) + all_pools(pools, 6)),
                   tuple(masq_pools(pools, 4) + masq_pools(pools, 6)))


class NatOutgoing:
    """Single writer of the nat-outgoing sets and chains of this host."""

    def __init__(self, apply_fn: Callable[[list[Pool]], None] = apply):
        self._apply = apply_fn
        self._lock = threading.Lock()
        self._last: Summary | None = None

    def sync(self, store: Datastore) -> list[Pool]:
        """Read the pools and program the kernel; returns the pools applied.

        Raises DatastoreError (kernel untouched) or NatError.
        """
        pools = sorted(codec.load_all(Pool, store.get_prefix(keys.POOLS)),  # invalid records skipped
                       key=lambda p: (p.version, p.network))
        with self._lock:
            self._apply(pools)
            summary = Summary.of(pools)
            if summary != self._last:
                log.info("nat-outgoing: %d pools, masquerading %s", len(summary.all),
                         ", ".join(summary.masq) or "none")
                self._last = summary
        return pools

    def follow(self, store: Datastore, stop: threading.Event) -> None:
        """Sync, then resync on every pool change, until ``stop`` is set."""
        delay = RETRY_MIN
        while not stop.is_set():
            try:
                revision = store.revision()  # watch from here: nothing after the read is missed
                self.sync(store)
                delay = RETRY_MIN
                self._watch(store, stop, revision + 1)
                if not stop.is_set():
                    log.info("nat-outgoing: the pools watch ended; resyncing")
                    stop.wait(RETRY_MIN)
                continue
            except DatastoreError as exc:
                log.warning("nat-outgoing: %s; keeping the current rules, retrying in %.0fs", exc, delay)
            except NatError as exc:
                log.error("nat-outgoing: %s; retrying in %.0fs", exc, delay)
            except Exception:  # never die: log it and resync after the delay
                log.exception("nat-outgoing failed; retrying in %.0fs", delay)
            stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _watch(self, store: Datastore, stop: threading.Event, start_revision: int) -> None:
        watch = store.watch_prefix(keys.POOLS, start_revision=start_revision)
        done = threading.Event()
        threading.Thread(target=_cancel_on_stop, args=(watch, stop, done),
                         name="natout-watch-cancel", daemon=True).start()
        try:
            for event in watch:
                if stop.is_set():
                    return
                log.debug("pool %s %s: resyncing", keys.cidr_of(event.key), event.kind)
                self.sync(store)
        finally:
            done.set()
            watch.cancel()


def _cancel_on_stop(watch: Watch, stop: threading.Event, done: threading.Event) -> None:
    """Cancel ``watch`` when ``stop`` is set; give up when the watch is ``done``."""
    while not done.is_set():
        if stop.wait(0.5):
            watch.cancel()
            return
