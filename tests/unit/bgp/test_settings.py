import json

import pytest

from bgp.settings import (BgpSettings, BgpSettingsError, PeerRecord, add_peer, load_settings, make_peer,
                          peers, peers_for, plan_peers, registered_nodes)
from datastore import codec, keys
from ipam.nodes import Node

ME = Node("n1", "10.0.0.1", "2001:db8::1")
NODES = [ME, Node("n2", "10.0.0.2", as_number=65010), Node("n3", "10.0.0.3"), Node("v6only", None, "2001:db8::4")]


def test_full_mesh_uses_each_nodes_as_or_the_default():
    got = {p.address: (p.as_number, p.kind) for p in peers_for(ME, NODES, BgpSettings(64600), [], [])}
    assert got == {"10.0.0.2": (65010, "mesh"), "10.0.0.3": (64600, "mesh")}


def test_mesh_off_keeps_only_configured_peers_and_most_specific_kind_wins():
    global_peers = [PeerRecord("10.0.0.9", 65000), PeerRecord("10.0.0.1", 65000)]  # ourselves: skipped
    node_peers = [PeerRecord("10.0.0.9", 65001, "pw")]
    got = peers_for(ME, NODES, BgpSettings(node_mesh=False), global_peers, node_peers)
    assert [(p.address, p.as_number, p.kind, p.password) for p in got] == [("10.0.0.9", 65001, "node", "pw")]


def test_a_peer_at_a_nodes_address_never_replaces_the_mesh_session():
    global_peers = [PeerRecord("10.0.0.2", 65099), PeerRecord("2001:db8::4", 65099), PeerRecord("10.0.0.9", 65000)]
    node_peers = [PeerRecord("10.0.0.3", 65098, "pw")]
    got, skipped = plan_peers(ME, NODES, BgpSettings(), global_peers, node_peers)
    assert {p.address: (p.as_number, p.kind) for p in got} == {
        "10.0.0.2": (65010, "mesh"), "10.0.0.3": (64512, "mesh"), "10.0.0.9": (65000, "global")}
    assert sorted(skipped) == ["global peer 10.0.0.2: the address of node n2",
                               "global peer 2001:db8::4: the address of node v6only",
                               "node peer 10.0.0.3: the address of node n3"]


def test_unusable_nodes_and_records_are_left_out_with_a_reason():
    nodes = NODES + [Node("lo", "127.0.0.1"), Node("big", "10.0.0.7", as_number=2**32)]
    records = [PeerRecord("0.0.0.0", 65000), PeerRecord("10.0.0.8", 0), PeerRecord("10.0.0.9", 65000, "it's")]
    got, skipped = plan_peers(ME, nodes, BgpSettings(), records, [])
    assert {p.address for p in got} == {"10.0.0.2", "10.0.0.3", "10.0.0.9"}
    assert len(skipped) == 4 and any(s.startswith("node lo: ") for s in skipped)
    assert any(s.startswith("node big: invalid AS number") for s in skipped)


@pytest.mark.parametrize("args", [("nope", 1), ("10.0.0.1", 0), ("10.0.0.1", 2**32), ("10.0.0.1", 1, ""),
                                  ("0.0.0.0", 1), ("::", 1), ("127.0.0.1", 1), ("224.0.0.1", 1), ("fe80::1", 1),
                                  ("10.0.0.1", 1, "x" * 81), ("10.0.0.1", 1, "caf\u00e9")])
def test_bad_peers(args):
    with pytest.raises(BgpSettingsError):
        make_peer(*args)


def test_an_apostrophe_in_a_password_is_accepted():
    assert make_peer("10.0.0.9", 65000, "it's").password == "it's"


def store_with_nodes(store):
    for node in NODES:
        store.put(keys.node(node.name), codec.dumps(node))
    return store


def test_add_peer_refuses_a_registered_nodes_address(store):
    store_with_nodes(store)
    for address in ("10.0.0.2", "2001:db8::4", "2001:DB8::0:4"):
        with pytest.raises(BgpSettingsError, match="is the address of node"):
            add_peer(store, PeerRecord(address, 65000))
    with pytest.raises(BgpSettingsError):
        add_peer(store, PeerRecord("10.0.0.9", 0))
    add_peer(store, PeerRecord("10.0.0.9", 65000, "it's"), node="n1")
    assert peers(store, "n1") == [PeerRecord("10.0.0.9", 65000, "it's")]


def test_invalid_records_are_skipped_and_counted_at_read_time(store):
    store_with_nodes(store)
    store.put(keys.node("x"), b"{}")
    store.put(keys.node("y"), b"garbage")
    good = PeerRecord("10.0.0.9", 65000)
    store.put(keys.bgp_peer("10.0.0.9"), codec.dumps(good))
    for address, record in [("10.0.0.10", {"address": "10.0.0.10", "as_number": 2**32}),
                            ("10.0.0.11", {"address": "10.0.0.11", "as_number": 0}),
                            ("10.0.0.12", {"address": "0.0.0.0", "as_number": 65000}),
                            ("10.0.0.13", {"address": "10.0.0.13", "as_number": "65000"}),
                            ("10.0.0.14", {"address": "10.0.0.14", "as_number": 65000, "password": "\u00e9"}),
                            ("10.0.0.15", [1, 2]),
                            ("10.0.0.16", {"address": "10.0.0.17", "as_number": 65000})]:  # not its key
        store.put(keys.bgp_peer(address), json.dumps(record).encode())
    before = codec.SKIPPED["PeerRecord"]
    assert peers(store) == [good]
    assert codec.SKIPPED["PeerRecord"] - before == 7
    assert [n.name for n in registered_nodes(store)] == sorted(n.name for n in NODES)


def test_invalid_settings_read_as_the_last_good_ones(store):
    store.put(keys.BGP_CONFIG, json.dumps({"default_as": 0, "node_mesh": True}).encode())
    assert load_settings(store) == BgpSettings()
    assert load_settings(store, BgpSettings(65001, False)) == BgpSettings(65001, False)
    store.put(keys.BGP_CONFIG, codec.dumps(BgpSettings(65002)))
    assert load_settings(store, BgpSettings(65001)) == BgpSettings(65002)
