import pytest

from bgp.settings import BgpSettings, BgpSettingsError, PeerRecord, make_peer, peers_for
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


@pytest.mark.parametrize("args", [("nope", 1), ("10.0.0.1", 0), ("10.0.0.1", 2**32), ("10.0.0.1", 1, 'a"b'),
                                  ("10.0.0.1", 1, "")])
def test_bad_peers(args):
    with pytest.raises(BgpSettingsError):
        make_peer(*args)
