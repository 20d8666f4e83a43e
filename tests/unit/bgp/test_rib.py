"""Pure BGP logic: what to announce, event parsing, RIB with graceful restart."""
from bgp import rib
from ipam import Block


def block(cidr, affinity, borrowed=()):
    b = Block.new(cidr, "10.20.0.0/16", affinity)
    for address, host in borrowed:
        b.allocate_address(address, "h-" + address, host, {})
    return b


def test_local_routes_are_owned_blocks_and_borrowed_addresses():
    blocks = [block("10.20.0.0/26", "n1"), block("10.20.0.64/26", "n2", [("10.20.0.70", "n1")]),
              block("fd00::/122", "n1")]
    assert rib.local_routes(blocks, "n1") == {"10.20.0.0/26", "10.20.0.70/32", "fd00::/122"}
    assert rib.local_routes(blocks, "n2") == {"10.20.0.64/26"}


def test_announce_commands():
    assert rib.announce("10.20.0.0/26", None) == "announce route 10.20.0.0/26 next-hop self"
    assert rib.announce("fd00::/122", "2001:db8::1") == "announce route fd00::/122 next-hop 2001:db8::1"
    assert rib.withdraw("10.20.0.0/26") == "withdraw route 10.20.0.0/26"


def test_parse_events():
    up = rib.parse_event({"type": "state", "neighbor": {"address": {"peer": "10.0.0.2"}, "state": "up"}})
    assert (up.kind, up.peer) == ("up", "10.0.0.2")
    down = rib.parse_event({"type": "state", "neighbor": {"address": {"peer": "10.0.0.2"}, "state": "down",
                                                          "reason": "notification sent (4,0)"}})
    assert down.kind == "down" and not rib.keeps_routes(down.reason)
    assert rib.keeps_routes("closing connection")
    update = rib.parse_event({"type": "update", "neighbor": {"address": {"peer": "10.0.0.2"}, "message": {
        "update": {"announce": {"ipv4 unicast": {"10.0.0.2": [{"nlri": "10.20.0.0/26"}]},
                                "ipv6 unicast": {"2001:db8::2": [{"nlri": "fd00::/122"}]}},
                   "withdraw": {"ipv4 unicast": [{"nlri": "10.20.1.0/26"}]}}}}})
    assert update.announced == {"10.20.0.0/26": "10.0.0.2", "fd00::/122": "2001:db8::2"}
    assert update.withdrawn == ["10.20.1.0/26"]
    eor = rib.parse_event({"type": "update", "neighbor": {"address": {"peer": "10.0.0.2"},
                                                         "message": {"eor": {"afi": "ipv4"}}}})
    assert eor.kind == "eor"


def test_adj_rib_in_text_both_versions():
    lines = ["10.0.0.2 ipv4 unicast 10.20.0.0/26 next-hop 10.0.0.2",
             "neighbor 10.0.0.3 ipv6 unicast fd00::/122 next-hop 2001:db8::3", "garbage"]
    assert rib.parse_adj_rib_in(lines) == {"10.0.0.2": {"10.20.0.0/26": "10.0.0.2"},
                                           "10.0.0.3": {"fd00::/122": "2001:db8::3"}}


def test_graceful_restart_keeps_then_sweeps_at_eor():
    r = rib.Rib()
    r.update("10.0.0.2", {"10.20.0.0/26": "10.0.0.2", "10.20.0.64/26": "10.0.0.2"}, [])
    r.peer_down("10.0.0.2", graceful=True, deadline=100.0)
    assert set(r.fib()) == {"10.20.0.0/26", "10.20.0.64/26"}     # kept while restarting
    r.update("10.0.0.2", {"10.20.0.0/26": "10.0.0.2"}, [])          # re-announced
    r.end_of_rib("10.0.0.2")
    assert set(r.fib()) == {"10.20.0.0/26"}                       # the rest swept


def test_stale_routes_expire_and_hard_down_removes_at_once():
    r = rib.Rib()
    r.update("10.0.0.2", {"10.20.0.0/26": "10.0.0.2"}, [])
    r.peer_down("10.0.0.2", graceful=True, deadline=5.0)
    r.expire(4.0)
    assert r.fib()
    r.expire(5.0)
    assert r.fib() == {}
    r.update("10.0.0.3", {"10.20.0.128/26": "10.0.0.3"}, [])
    r.peer_down("10.0.0.3", graceful=False, deadline=0)
    assert r.fib() == {}


def test_fib_mixes_v4_and_v6_peers_and_lowest_peer_wins():
    r = rib.Rib()
    r.update("10.0.0.3", {"10.20.0.0/26": "10.0.0.3"}, [])
    r.update("10.0.0.2", {"10.20.0.0/26": "10.0.0.2"}, [])
    r.update("2001:db8::9", {"fd00::/122": "2001:db8::9"}, [])   # an adopted v6 owner
    assert r.fib() == {"10.20.0.0/26": "10.0.0.2", "fd00::/122": "2001:db8::9"}


def test_diff():
    assert rib.diff({"a": "1", "b": "1"}, {"a": "2", "c": "1"}) == ({"a": "2", "c": "1"}, ["b"])


def test_batched_announce_commands_group_by_family_and_chunk():
    v4 = [f"10.20.0.{i}/32" for i in range(1, 6)]
    commands, skipped = rib.announce_commands(set(v4) | {"fd00::/122"}, "2001:db8::1", chunk=2)
    assert commands == ["announce attributes next-hop self nlri 10.20.0.1/32 10.20.0.2/32",
                        "announce attributes next-hop self nlri 10.20.0.3/32 10.20.0.4/32",
                        "announce attributes next-hop self nlri 10.20.0.5/32",
                        "announce attributes next-hop 2001:db8::1 nlri fd00::/122"]
    assert skipped == []


def test_batched_commands_sort_numerically_and_scope_to_a_peer():
    commands, _ = rib.announce_commands({"10.20.0.10/32", "10.20.0.9/32", "10.20.0.0/26"}, None,
                                        peer="198.19.0.12")
    assert commands == ["neighbor 198.19.0.12 announce attributes next-hop self nlri "
                        "10.20.0.0/26 10.20.0.9/32 10.20.0.10/32"]


def test_ipv6_without_a_next_hop_is_reported_not_announced():
    commands, skipped = rib.announce_commands({"10.20.0.0/26", "fd00::/122"}, None)
    assert commands == ["announce attributes next-hop self nlri 10.20.0.0/26"]
    assert skipped == ["fd00::/122"]


def test_batched_withdraw_commands_need_no_next_hop():
    assert rib.withdraw_commands({"10.20.0.0/26", "fd00::/122", "10.20.0.64/26"}, chunk=50) == [
        "withdraw attributes nlri 10.20.0.0/26 10.20.0.64/26", "withdraw attributes nlri fd00::/122"]
    assert rib.withdraw_commands(set()) == []


def test_default_chunk_keeps_a_thousand_prefixes_to_twenty_short_commands():
    prefixes = {f"10.20.{i // 250}.{i % 250}/32" for i in range(1000)}
    commands, _ = rib.announce_commands(prefixes, None)
    assert len(commands) == 20 and all(len(c) < 1500 for c in commands)
    listed = [p for c in commands for p in c.split(" nlri ")[1].split()]
    assert sorted(listed) == sorted(prefixes) and len(listed) == 1000  # each prefix once
