"""The API process without ExaBGP, etcd or a kernel: command pacing, batching, FIB sync."""
import threading
import time

import pytest

from bgp import api as apimod
from bgp.api import ApiProcess, Commands

WAIT = 5.0  # s; generous, never a timing assertion


class Out:
    """ExaBGP's stdin as the writer sees it: records lines, lets a test wait for them."""

    def __init__(self):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self._buf = ""

    def write(self, text):
        with self.cond:
            self._buf += text
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self.lines.append(line)
            self.cond.notify_all()

    def flush(self):
        pass

    def wait_for(self, count):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.lines) >= count, WAIT), self.lines
            return list(self.lines)

    def settled(self, count):
        """Exactly ``count`` lines, also a little later (nothing else was written)."""
        lines = self.wait_for(count)
        time.sleep(0.1)
        assert self.lines == lines
        return lines


def writer(commands):
    threading.Thread(target=commands.run, daemon=True).start()
    return commands


def test_at_most_window_commands_await_their_ack():
    out = Out()
    commands = writer(Commands(out, window=2))
    commands.send("c1", "c2", "c3", "c4", "c5")
    assert out.settled(2) == ["c1", "c2"]
    commands.on_ack(True)
    assert out.settled(3)[-1] == "c3"
    assert not commands.flush(0.1)           # c2..c5 are not all answered
    commands.on_ack(True)
    out.wait_for(4)
    commands.on_ack(True)
    assert out.wait_for(5) == ["c1", "c2", "c3", "c4", "c5"]
    commands.on_ack(True)
    commands.on_ack(True)
    assert commands.flush(WAIT)


def test_a_query_runs_alone_and_collects_its_text():
    out = Out()
    commands = writer(Commands(out, window=2))
    commands.send("announce attributes next-hop self nlri 10.20.0.0/26")
    got = {}
    t = threading.Thread(target=lambda: got.update(lines=commands.query("show adj-rib in", WAIT)))
    t.start()
    commands.send("after")
    assert out.settled(1) == ["announce attributes next-hop self nlri 10.20.0.0/26"]
    commands.on_ack(True)
    assert out.settled(2)[-1] == "show adj-rib in"       # "after" waits for the query's answer
    commands.on_text("10.0.0.2 ipv4 unicast 10.20.1.0/26 next-hop 10.0.0.2")
    commands.on_ack(True)
    t.join(WAIT)
    assert got["lines"] == ["10.0.0.2 ipv4 unicast 10.20.1.0/26 next-hop 10.0.0.2"]
    assert out.wait_for(3)[-1] == "after"


def test_an_error_goes_to_an_outstanding_end_of_rib_first(caplog):
    out = Out()
    commands = writer(Commands(out, window=3))
    commands.send("announce attributes next-hop self nlri 10.20.0.0/26", "announce eor ipv4 unicast",
                  "withdraw attributes nlri 10.20.1.0/26")
    out.wait_for(3)
    commands.on_ack(False)   # ExaBGP refuses an EOR at once when no peer is up
    assert [c.text for c in commands._sent] == ["announce attributes next-hop self nlri 10.20.0.0/26",
                                               "withdraw attributes nlri 10.20.1.0/26"]
    commands.on_ack(False)
    assert "ExaBGP refused: announce attributes" in caplog.text
    assert commands.refused == 2


def test_unanswered_commands_are_given_up_on_after_the_ack_timeout():
    out = Out()
    commands = writer(Commands(out, window=1, ack_timeout=0.2))
    commands.send("lost", "next")
    assert out.wait_for(2) == ["lost", "next"]   # went on without the ack


class FakeFib:
    def __init__(self, fail=0):
        self.kernel: dict = {}
        self.fail = fail
        self.applied: list = []

    def apply(self, changes, removed, before=None):
        self.applied.append((dict(changes), list(removed)))
        for prefix, route in changes.items():
            if before is None or before(prefix, route):
                self.kernel[prefix] = route
        for prefix in removed:
            self.kernel.pop(prefix, None)
        return self.fail

    def learned(self):
        return dict(self.kernel)


def process(window=apimod.WINDOW, fib=None):
    out = Out()
    api = ApiProcess("n1", store=None, fib=fib or FakeFib(), out=out, window=window)
    writer(api.commands)
    return api, out


def ack_all(api, out, count):
    """Answer ``done`` to the first ``count`` commands as they arrive."""
    for i in range(count):
        out.wait_for(i + 1)
        api.on_line("done")


def test_announce_diff_batches_and_withdraws_the_difference():
    api, out = process(window=100)
    api.ipv6 = "2001:db8::1"
    api.announce_diff({"10.20.0.0/26", "10.20.1.5/32", "fd00::/122"})
    assert out.wait_for(2) == ["announce attributes next-hop self nlri 10.20.0.0/26 10.20.1.5/32",
                               "announce attributes next-hop 2001:db8::1 nlri fd00::/122"]
    api.announce_diff({"10.20.0.0/26"})
    assert out.wait_for(4)[2:] == ["withdraw attributes nlri 10.20.1.5/32",   # one family per command
                                   "withdraw attributes nlri fd00::/122"]
    assert api.announced == {"10.20.0.0/26"}


def test_ipv6_without_next_hop_is_warned_once_and_not_announced(caplog):
    api, out = process(window=100)
    api.announce_diff({"10.20.0.0/26", "fd00::/122"})
    api.announce_diff({"10.20.0.0/26", "fd00::/122"})
    assert out.settled(1) == ["announce attributes next-hop self nlri 10.20.0.0/26"]
    assert caplog.text.count("fd00::/122: this node has no IPv6 underlay address") == 1
    assert api.announced == {"10.20.0.0/26"}


def test_a_peer_that_comes_up_after_ready_gets_everything_replayed():
    api, out = process(window=100)
    api.announce_diff({"10.20.0.0/26", "10.20.0.64/26"})
    api.become_ready()
    out.wait_for(3)
    api.on_line('{"type": "state", "neighbor": {"address": {"peer": "198.19.0.13"}, "state": "up"}}')
    assert out.wait_for(6)[3:] == [
        "neighbor 198.19.0.13 announce attributes next-hop self nlri 10.20.0.0/26 10.20.0.64/26",
        "neighbor 198.19.0.13 announce eor ipv4 unicast", "neighbor 198.19.0.13 announce eor ipv6 unicast"]
    assert "198.19.0.13" in api.up


def test_withdraw_all_waits_for_the_acks():
    api, out = process(window=2)
    api.announced = {f"10.20.{i // 200}.{i % 200}/32" for i in range(120)}
    t = threading.Thread(target=ack_all, args=(api, out, 3), daemon=True)
    t.start()
    api.withdraw_all(timeout=WAIT)
    assert len(out.lines) == 3 and all(line.startswith("withdraw attributes nlri ") for line in out.lines)
    assert api.announced == set() and not api.commands._sent


def update(peer, announced=(), withdrawn=()):
    import json
    message = {"update": {}}
    if announced:
        message["update"]["announce"] = {"ipv4 unicast": {peer: [{"nlri": p} for p in announced]}}
    if withdrawn:
        message["update"]["withdraw"] = {"ipv4 unicast": [{"nlri": p} for p in withdrawn]}
    return json.dumps({"type": "update", "neighbor": {"address": {"peer": peer}, "message": message}})


def test_updates_reach_the_kernel_in_one_batch_and_only_the_difference_after():
    fib = FakeFib()
    api, _ = process(fib=fib)
    api.on_line(update("198.19.0.12", [f"10.20.0.{i}/32" for i in range(1, 101)]))
    api.on_line(update("198.19.0.12", [f"10.20.0.{i}/32" for i in range(101, 201)]))
    assert api.sync_fib()
    assert len(fib.applied) == 1 and len(fib.applied[0][0]) == 200
    api.on_line(update("198.19.0.12", withdrawn=["10.20.0.1/32"]))
    assert api.sync_fib()
    assert fib.applied[-1] == ({}, ["10.20.0.1/32"])
    assert api.sync_fib() and len(fib.applied) == 2   # nothing left to do: no call


def test_a_failed_install_rereads_the_kernel_and_reports_it():
    fib = FakeFib(fail=1)
    api, _ = process(fib=fib)
    api.on_line(update("198.19.0.12", ["10.20.0.1/32"]))
    assert not api.sync_fib()
    assert api._kernel == fib.learned()


def test_a_vxlan_route_without_a_known_vtep_is_skipped(monkeypatch):
    from ipam.pools import make_pool
    fib = FakeFib()
    api, _ = process(fib=fib)
    api.pools = [make_pool("10.20.0.0/24", vxlan=True)]
    monkeypatch.setattr(api, "refresh_nodes", lambda: None)  # etcd knows no such node
    api.on_line(update("198.19.0.12", ["10.20.0.1/32"]))
    api.sync_fib()
    assert fib.applied == [({"10.20.0.1/32": ("198.19.0.12", "warren-vxlan")}, [])]
    assert fib.kernel == {}


@pytest.mark.parametrize("line", ["done", "error"])
def test_acks_never_reach_the_rib(line):
    api, _ = process()
    api.on_line(line)
    assert api.rib.routes == {}


def ipv6_update(peer, next_hop, prefixes):
    import json
    announce = {"ipv6 unicast": {next_hop: [{"nlri": p} for p in prefixes]}}
    return json.dumps({"type": "update", "neighbor": {"address": {"peer": peer},
                                                      "message": {"update": {"announce": announce}}}})


def test_a_link_local_next_hop_is_not_installed_and_warned_once(caplog):
    fib = FakeFib()
    api, _ = process(fib=fib)
    api.on_line(ipv6_update("2001:db8::12", "fe80::12", ["fd00:20::/122"]))
    api.on_line(ipv6_update("2001:db8::12", "2001:db8::12", ["fd00:30::/122"]))
    for _ in range(5):  # the FIB worker runs again and again (e.g. while stale routes are swept)
        assert api.sync_fib()  # not a failure: nothing to retry every second
        api.plan()
    assert fib.kernel == {"fd00:30::/122": ("2001:db8::12", None)}
    assert caplog.text.count("fd00:20::/122 via link-local fe80::12: not installed") == 1
    api.on_line(ipv6_update("2001:db8::12", "2001:db8::12", ["fd00:20::/122"]))  # a usable next hop now
    assert api.sync_fib() and fib.kernel["fd00:20::/122"] == ("2001:db8::12", None)


def test_a_vtep_warning_is_logged_once(monkeypatch, caplog):
    from ipam.pools import make_pool
    api, _ = process()
    api.pools = [make_pool("10.20.0.0/24", vxlan=True)]
    monkeypatch.setattr(api, "refresh_nodes", lambda: None)
    api.on_line(update("198.19.0.12", ["10.20.0.1/32"]))
    for _ in range(5):
        api._kernel = {}
        api.sync_fib()
    assert caplog.text.count("no VTEP known for 198.19.0.12") == 1


def test_the_sweeper_wakes_the_fib_only_when_something_expired():
    api, _ = process()
    api.rib.routes["198.19.0.12"] = {"10.20.0.0/26": "198.19.0.12"}
    api.rib.stale["198.19.0.12"] = {"10.20.0.0/26": time.monotonic() + 3600}
    assert api.rib.expire(time.monotonic()) == 0
    assert api.rib.expire(time.monotonic() + 7200) == 1 and api.rib.routes["198.19.0.12"] == {}


def test_one_garbage_block_never_stops_the_announcing(store):
    from datastore import codec, keys
    from ipam.blocks import Block
    from ipam.pools import make_pool

    class BlackholeFib(FakeFib):
        def set_blackholes(self, wanted):
            self.blackholed = set(wanted)
            return 0

    pool = make_pool("10.20.0.0/24")
    store.put(keys.pool(pool.cidr), codec.dumps(pool))
    store.put(keys.pool("10.21.0.0-24"), b'{"cidr": 5}')
    store.put(keys.block("10.20.0.0/26"), codec.dumps(Block("10.20.0.0/26", pool.cidr, "n1",
                                                            unallocated=list(range(64)))))
    store.put(keys.block("10.20.0.64/26"), b"garbage")
    store.put(keys.block("10.20.0.128/26"), b'{"cidr": "10.20.0.128/26"}')
    api = ApiProcess("n1", store=store, fib=BlackholeFib(), out=Out())
    wanted, _ = api.wanted()
    assert wanted == {"10.20.0.0/26"} and api.pools == [pool]
    store.put(keys.block("10.20.0.192/26"), codec.dumps(Block("10.20.0.192/26", pool.cidr, "n1",
                                                              unallocated=list(range(64)))))
    assert api.wanted()[0] == {"10.20.0.0/26", "10.20.0.192/26"}   # new blocks still announced


def test_an_odd_line_from_exabgp_never_reaches_the_rib():
    api, _ = process()
    for line in ('{"type": "update", "neighbor": "x"}', '{"type": "state", "neighbor": {"address": 5}}',
                 '{"type": "update", "neighbor": {"message": {"update": {"announce": {"f": {"nh": [5]}}}}}}',
                 "[1, 2]"):
        api.on_line(line)
    assert api.rib.routes == {}
