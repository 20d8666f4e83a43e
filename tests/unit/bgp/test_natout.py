"""nat-outgoing: the generated ipset/iptables text, its meaning, and the follow loop."""
from __future__ import annotations

import ipaddress
import queue
import re
import shlex
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp import natout
from bgp.natout import (ALL_POOLS, CHAIN, MASQ_POOLS, NatError, NatOutgoing, ipset_restore_text,
                        nat_rules)
from datastore import KV, DatastoreUnavailable, Range, WatchEvent, codec, keys
from ipam.pools import Pool

POOLS = [
    Pool("10.20.30.0/24", nat_outgoing=True),
    Pool("10.20.31.0/24"),
    Pool("10.20.32.0/24", nat_outgoing=True, disabled=True),
    Pool("10.20.33.0/24", disabled=True),
    Pool("fd00:30::/64", nat_outgoing=True, encap="vxlan"),
    Pool("fd00:31::/64"),
]


# -- a tiny model of the kernel: ipset restore and the one rule -----------------------------

class IpsetModel:
    """Applies ``ipset restore`` text the way ipset does, failing where ipset would."""

    def __init__(self) -> None:
        self.sets: dict[str, tuple[str, str, set]] = {}  # name -> (type, family, members)

    def restore(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self._command(shlex.split(line))

    def _command(self, words: list[str]) -> None:
        verb, name, rest = words[0], words[1], words[2:]
        if verb == "create":
            kind, family = rest[0], rest[rest.index("family") + 1]
            if name in self.sets:
                assert "-exist" in rest, f"create {name}: set exists"
                assert self.sets[name][:2] == (kind, family), f"create {name}: different set exists"
            else:
                self.sets[name] = (kind, family, set())
        elif verb == "flush":
            self.sets[name][2].clear()
        elif verb == "add":
            kind, family, members = self.sets[name]
            net = ipaddress.ip_network(rest[0])
            assert kind == "hash:net" and 0 < net.prefixlen
            assert net.version == (4 if family == "inet" else 6), f"{net} in a {family} set"
            members.add(net)
        elif verb == "swap":
            other = rest[0]
            assert self.sets[name][:2] == self.sets[other][:2], "swap of different set types"
            self.sets[name], self.sets[other] = self.sets[other], self.sets[name]
        elif verb == "destroy":
            del self.sets[name]
        else:
            raise AssertionError(f"unexpected ipset command {verb}")

    def contains(self, name: str, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.sets[name][2] if net.version == ip.version)


RULE = re.compile(r"^-A (\S+) -m set (!\s)?--match-set (\S+) (src|dst) "
                  r"-m set (!\s)?--match-set (\S+) (src|dst) -j (\S+)$")


def masqueraded(rules: str, ipsets: IpsetModel, src: str, dst: str) -> bool:
    """Does the chain in ``rules`` MASQUERADE a packet src -> dst?"""
    for line in rules.splitlines():
        m = RULE.match(line)
        if not m:
            continue
        chain, neg1, set1, dir1, neg2, set2, dir2, target = m.groups()
        assert chain == CHAIN
        ok = all(ipsets.contains(name, src if direction == "src" else dst) != bool(neg)
                 for neg, name, direction in ((neg1, set1, dir1), (neg2, set2, dir2)))
        if ok:
            return target == "MASQUERADE"
    return False


def calico_says(pools: list[Pool], src: str, dst: str) -> bool:
    """Calico's semantics: source in a nat-outgoing pool, destination in no pool."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return any(p.nat_outgoing and s in p.network for p in pools if p.version == s.version) and \
        not any(d in p.network for p in pools if p.version == d.version)


def kernel_for(pools: list[Pool], before: IpsetModel | None = None) -> IpsetModel:
    model = before or IpsetModel()
    for version in (4, 6):
        model.restore(ipset_restore_text(pools, version))
    return model


# -- generated text ---------------------------------------------------------------------

def test_ipset_text_for_v4_pools():
    text = ipset_restore_text(POOLS, 4)
    assert text == "\n".join([
        "create warren-all-pools hash:net family inet -exist",
        "create warren-all-pools-tmp hash:net family inet -exist",
        "flush warren-all-pools-tmp",
        "add warren-all-pools-tmp 10.20.30.0/24",
        "add warren-all-pools-tmp 10.20.31.0/24",
        "add warren-all-pools-tmp 10.20.32.0/24",
        "add warren-all-pools-tmp 10.20.33.0/24",
        "swap warren-all-pools-tmp warren-all-pools",
        "destroy warren-all-pools-tmp",
        "create warren-masq-pools hash:net family inet -exist",
        "create warren-masq-pools-tmp hash:net family inet -exist",
        "flush warren-masq-pools-tmp",
        "add warren-masq-pools-tmp 10.20.30.0/24",
        "add warren-masq-pools-tmp 10.20.32.0/24",  # disabled pools keep their NAT
        "swap warren-masq-pools-tmp warren-masq-pools",
        "destroy warren-masq-pools-tmp",
        ""])


def test_ipset_text_for_v6_pools():
    text = ipset_restore_text(POOLS, 6)
    assert "create warren-all-pools6 hash:net family inet6 -exist" in text
    assert "add warren-all-pools6-tmp fd00:30::/64\nadd warren-all-pools6-tmp fd00:31::/64\n" in text
    assert re.findall(r"add warren-masq-pools6-tmp (\S+)", text) == ["fd00:30::/64"]
    assert "10.20." not in text and "family inet " not in text


def test_no_pools_empties_the_sets():
    for version in (4, 6):
        text = ipset_restore_text([], version)
        assert "add " not in text
        assert f"swap {ALL_POOLS[version]}-tmp {ALL_POOLS[version]}" in text
        assert f"swap {MASQ_POOLS[version]}-tmp {MASQ_POOLS[version]}" in text
    model = kernel_for(POOLS)
    kernel_for([], before=model)
    assert all(not members for _, _, members in model.sets.values())
    assert sorted(model.sets) == sorted([*ALL_POOLS.values(), *MASQ_POOLS.values()])


def test_sets_are_sorted_and_unique():
    shuffled = [Pool("10.20.40.0/24"), Pool("10.20.4.0/24", nat_outgoing=True), Pool("10.20.40.0/24")]
    text = ipset_restore_text(shuffled, 4)
    assert re.findall(r"add warren-all-pools-tmp (\S+)", text) == ["10.20.4.0/24", "10.20.40.0/24"]


def test_names_fit_ipset_and_warren_conventions():
    for name in [*ALL_POOLS.values(), *MASQ_POOLS.values()]:
        assert name.startswith("warren-") and len(name + natout.TMP_SUFFIX) <= 31
    assert CHAIN.startswith("WARREN-") and len(CHAIN) <= 28


@pytest.mark.parametrize("version, masq, all_", [(4, "warren-masq-pools", "warren-all-pools"),
                                                 (6, "warren-masq-pools6", "warren-all-pools6")])
def test_nat_rules(version, masq, all_):
    assert nat_rules(version) == "\n".join([
        "*nat",
        ":WARREN-NAT-OUTGOING - [0:0]",
        "-F WARREN-NAT-OUTGOING",
        f"-A WARREN-NAT-OUTGOING -m set --match-set {masq} src -m set ! --match-set {all_} dst -j MASQUERADE",
        "COMMIT",
        ""])


def test_restore_replaces_old_contents():
    model = kernel_for(POOLS)
    kernel_for([Pool("10.20.50.0/24", nat_outgoing=True)], before=model)
    assert model.contains("warren-masq-pools", "10.20.50.1")
    assert not model.contains("warren-masq-pools", "10.20.30.1")
    assert not model.contains("warren-all-pools", "10.20.31.1")
    assert not model.contains("warren-all-pools6", "fd00:31::1")
    assert not any(name.endswith(natout.TMP_SUFFIX) for name in model.sets)


# -- what the rule means ------------------------------------------------------------------

@pytest.mark.parametrize("src, dst, nat", [
    ("10.20.30.5", "198.19.0.200", True),     # nat pool -> outside
    ("10.20.30.5", "10.20.30.9", False),      # within the nat pool
    ("10.20.30.5", "10.20.31.9", False),      # nat pool -> other pool
    ("10.20.30.5", "10.20.33.9", False),      # nat pool -> disabled pool (addresses still in use)
    ("10.20.31.5", "198.19.0.200", False),    # non-nat pool -> outside
    ("10.20.31.5", "10.20.30.9", False),      # non-nat pool -> nat pool
    ("10.20.32.5", "8.8.8.8", True),          # disabled nat pool -> outside
    ("198.19.0.11", "8.8.8.8", False),        # the host itself
    ("fd00:30::5", "2001:db8::200", True),
    ("fd00:30::5", "fd00:31::9", False),
    ("fd00:31::5", "2001:db8::200", False),
])
def test_rule_matches_calico_semantics(src, dst, nat):
    model = kernel_for(POOLS)
    version = ipaddress.ip_address(src).version
    assert masqueraded(nat_rules(version), model, src, dst) is nat
    assert calico_says(POOLS, src, dst) is nat


@st.composite
def pool_sets(draw) -> list[Pool]:
    thirds = draw(st.lists(st.integers(0, 15), min_size=0, max_size=6, unique=True))
    return [Pool(f"10.{third}.0.0/16", nat_outgoing=draw(st.booleans()), disabled=draw(st.booleans()))
            for third in thirds]


@settings(max_examples=150, deadline=None)
@given(pools=pool_sets(), src=st.integers(10 << 24, (10 << 24) + (20 << 16)),
       dst=st.integers(10 << 24, (10 << 24) + (20 << 16)))
def test_rule_agrees_with_calico_for_any_pools(pools, src, dst):
    model = kernel_for(pools)
    s, d = str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst))
    assert masqueraded(nat_rules(4), model, s, d) is calico_says(pools, s, d)


# -- applying -----------------------------------------------------------------------------

def test_apply_runs_ipset_then_restore_then_jump(monkeypatch):
    calls: list[tuple[list[str], str | None]] = []

    def fake_run(argv, input=None, check=False, **kw):
        calls.append((argv, input))
        if "-C" in argv and check:  # the jump is not there yet
            raise natout.subprocess.CalledProcessError(1, argv, "", "Bad rule")
        return natout.subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(natout.subprocess, "run", fake_run)
    monkeypatch.setattr(natout.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    natout.apply(POOLS)
    argvs = [" ".join(argv) for argv, _ in calls]
    assert argvs == [
        "ipset restore", "iptables-restore --noflush",
        "iptables -w -t nat -C POSTROUTING -j WARREN-NAT-OUTGOING",
        "iptables -w -t nat -I POSTROUTING 1 -j WARREN-NAT-OUTGOING",
        "ipset restore", "ip6tables-restore --noflush",
        "ip6tables -w -t nat -C POSTROUTING -j WARREN-NAT-OUTGOING",
        "ip6tables -w -t nat -I POSTROUTING 1 -j WARREN-NAT-OUTGOING"]
    assert calls[0][1] == ipset_restore_text(POOLS, 4) and calls[1][1] == nat_rules(4)
    assert calls[5][1] == nat_rules(6)


def test_apply_does_not_insert_the_jump_twice(monkeypatch):
    argvs: list[str] = []

    def fake_run(argv, input=None, **kw):
        argvs.append(" ".join(argv))
        return natout.subprocess.CompletedProcess(argv, 0, "", "")  # -C: the jump is there
    monkeypatch.setattr(natout.subprocess, "run", fake_run)
    monkeypatch.setattr(natout.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    natout.apply(POOLS)
    assert not [a for a in argvs if " -I " in a]
    assert len([a for a in argvs if " -C POSTROUTING " in a]) == 2


def test_ipv6_failure_is_logged_not_raised(monkeypatch, caplog):
    def fake_run(argv, input=None, **kw):
        if argv[0] == "ip6tables-restore":
            raise natout.subprocess.CalledProcessError(2, argv, "", "can't initialize ip6tables table `nat'")
        return natout.subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(natout.subprocess, "run", fake_run)
    monkeypatch.setattr(natout.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(natout, "_v6_problem", None)
    natout.apply(POOLS)
    assert "IPv6 is not available" in caplog.text and "ip6tables" in caplog.text


def test_ipv4_failure_raises(monkeypatch):
    def fake_run(argv, input=None, **kw):
        if argv[0] == "ipset":
            raise natout.subprocess.CalledProcessError(1, argv, "", "ipset v7.17: Kernel error\n")
        return natout.subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(natout.subprocess, "run", fake_run)
    monkeypatch.setattr(natout.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    with pytest.raises(NatError, match="ipset restore failed: ipset v7.17: Kernel error"):
        natout.apply(POOLS)


# -- following etcd -------------------------------------------------------------------------

class FakeWatch:
    def __init__(self) -> None:
        self.events: "queue.Queue[WatchEvent | Exception | None]" = queue.Queue()
        self.cancelled = False

    def __iter__(self):
        while True:
            item = self.events.get()
            if item is None or self.cancelled:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def cancel(self) -> None:
        self.cancelled = True
        self.events.put(None)


class FakeStore:
    """The parts of Datastore that NatOutgoing uses; ``down`` makes every call fail."""

    def __init__(self, pools: list[Pool]):
        self.pools = list(pools)
        self.rev = 10
        self.down = False
        self.watches: list[tuple[str, int | None, FakeWatch]] = []

    def _check(self) -> None:
        if self.down:
            raise DatastoreUnavailable(["http://etcd:2379"], ["connection refused"])

    def revision(self) -> int:
        self._check()
        return self.rev

    def get_prefix(self, prefix: str, keys_only: bool = False) -> Range:
        self._check()
        assert prefix == keys.POOLS
        return Range([KV(keys.pool(p.cidr), codec.dumps(p), self.rev) for p in self.pools], self.rev)

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> FakeWatch:
        self._check()
        watch = FakeWatch()
        self.watches.append((prefix, start_revision, watch))
        return watch

    def watching(self, count: int, timeout: float = 5.0) -> FakeWatch:
        """The ``count``-th watch, once it exists."""
        deadline = time.monotonic() + timeout
        while len(self.watches) < count:
            assert time.monotonic() < deadline, f"watch {count} never started"
            time.sleep(0.005)
        return self.watches[count - 1][2]

    def change(self, pools: list[Pool]) -> None:
        self.pools = list(pools)
        self.rev += 1
        self.watches[-1][2].events.put(WatchEvent("put", keys.pool(pools[-1].cidr), b"", self.rev))


class Recorder:
    def __init__(self, fail: int = 0):
        self.applied: list[list[str]] = []
        self.fail = fail
        self.cond = threading.Condition()

    def __call__(self, pools: list[Pool]) -> None:
        with self.cond:
            if self.fail:
                self.fail -= 1
                raise NatError("iptables-restore failed: boom")
            self.applied.append([p.cidr for p in pools])
            self.cond.notify_all()

    def wait_for(self, cidrs: list[str], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while cidrs not in self.applied:
                left = deadline - time.monotonic()
                assert left > 0, f"{cidrs} never applied; applied: {self.applied}"
                self.cond.wait(left)


@pytest.fixture
def following(monkeypatch):
    monkeypatch.setattr(natout, "RETRY_MIN", 0.01)
    monkeypatch.setattr(natout, "RETRY_MAX", 0.05)
    started: list[tuple[threading.Thread, threading.Event]] = []

    def start(store: FakeStore, recorder: Recorder) -> threading.Thread:
        stop = threading.Event()
        thread = threading.Thread(target=NatOutgoing(recorder).follow, args=(store, stop), daemon=True)
        thread.start()
        started.append((thread, stop))
        return thread
    yield start
    for thread, stop in started:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), "follow() did not return after stop"


def test_follow_syncs_then_resyncs_on_every_change(following):
    store, recorder = FakeStore([Pool("10.20.30.0/24", nat_outgoing=True)]), Recorder()
    following(store, recorder)
    recorder.wait_for(["10.20.30.0/24"])
    store.watching(1)
    assert [w[:2] for w in store.watches] == [(keys.POOLS, 11)]  # just after the revision it read
    store.change([Pool("10.20.30.0/24", nat_outgoing=True), Pool("10.20.31.0/24")])
    recorder.wait_for(["10.20.30.0/24", "10.20.31.0/24"])


def test_follow_keeps_the_kernel_while_etcd_is_down(following):
    store, recorder = FakeStore([Pool("10.20.30.0/24", nat_outgoing=True)]), Recorder()
    store.down = True
    following(store, recorder)
    time.sleep(0.2)
    assert recorder.applied == []  # never "no pools" just because etcd did not answer
    store.down = False
    watch = store.watching(1)
    # The watch breaks; nothing is applied until etcd answers again, then a full resync.
    store.down = True
    watch.events.put(DatastoreUnavailable(["http://etcd:2379"], ["stream reset"]))
    time.sleep(0.2)
    assert recorder.applied == [["10.20.30.0/24"]]
    store.pools.append(Pool("10.20.31.0/24"))
    store.down = False
    recorder.wait_for(["10.20.30.0/24", "10.20.31.0/24"])


def test_follow_retries_when_the_kernel_refuses(following):
    store, recorder = FakeStore([Pool("10.20.30.0/24", nat_outgoing=True)]), Recorder(fail=2)
    following(store, recorder)
    recorder.wait_for(["10.20.30.0/24"])
    assert recorder.fail == 0


def test_follow_returns_when_stopped_during_a_watch(following):
    store, recorder = FakeStore([]), Recorder()
    thread = following(store, recorder)
    recorder.wait_for([])
    assert not store.watching(1).cancelled
    assert thread.is_alive()  # the fixture stops it and asserts it returns


class GarbageStore(FakeStore):
    """One pool record that is not a pool, beside the good ones."""

    def get_prefix(self, prefix: str, keys_only: bool = False) -> Range:
        good = super().get_prefix(prefix, keys_only)
        return Range(good.kvs + [KV(keys.pool("10.99.0.0/24"), b'{"cidr": 5}', self.rev)], good.revision)


def test_a_garbage_pool_record_never_stops_the_others(following):
    store, recorder = GarbageStore([Pool("10.20.30.0/24", nat_outgoing=True)]), Recorder()
    following(store, recorder)
    recorder.wait_for(["10.20.30.0/24"])
    store.watching(1)
    store.change([Pool("10.20.30.0/24", nat_outgoing=True), Pool("10.20.31.0/24")])
    recorder.wait_for(["10.20.30.0/24", "10.20.31.0/24"])


def test_an_unexpected_error_is_logged_and_the_loop_goes_on(following, caplog):
    class Flaky(Recorder):
        raised = False

        def __call__(self, pools):
            if not self.raised:
                self.raised = True
                raise RuntimeError("unexpected")
            super().__call__(pools)
    store, recorder = FakeStore([Pool("10.20.30.0/24")]), Flaky()
    following(store, recorder)
    recorder.wait_for(["10.20.30.0/24"])
    assert "nat-outgoing failed" in caplog.text and "RuntimeError: unexpected" in caplog.text
