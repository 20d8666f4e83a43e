"""warrenctl bgp ... and node status against a real etcd: refusals are one line, node status
shows the speaker's real state and what was left out."""
import json

import pytest

from bgp.settings import SpeakerState, SessionStatus, save_speaker_state, save_status
from ctl.main import main
from datastore import codec, keys
from ipam.nodes import Node


@pytest.fixture
def cli(store, etcd_server, capsys, monkeypatch):
    monkeypatch.setenv("WARREN_NODE_NAME", "n1")
    for node in (Node("n1", "198.19.0.11"), Node("n2", "198.19.0.12", "2001:db8::12")):
        store.put(keys.node(node.name), codec.dumps(node))

    def run(*argv):
        code = main(["--etcd-endpoints", etcd_server.endpoint, *argv])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


@pytest.mark.parametrize("argv,message", [
    (("bgp", "peer", "add", "198.19.0.12", "as", "65000"), "is the address of node n2"),
    (("bgp", "peer", "add", "2001:db8::12", "as", "65000"), "is the address of node n2"),
    (("bgp", "peer", "add", "0.0.0.0", "as", "65000"), "cannot be a BGP peer"),
    (("bgp", "peer", "add", "::", "as", "65000"), "cannot be a BGP peer"),
    (("bgp", "peer", "add", "127.0.0.1", "as", "65000"), "cannot be a BGP peer"),
    (("bgp", "peer", "add", "224.0.0.5", "as", "65000"), "cannot be a BGP peer"),
    (("bgp", "peer", "add", "198.19.0.50", "as", "0"), "invalid AS number 0"),
    (("bgp", "peer", "add", "198.19.0.50", "as", str(2**32)), "invalid AS number 4294967296"),
    (("bgp", "peer", "add", "198.19.0.50", "as", "65000", "--password", "caf\u00e9"), "printable ASCII"),
    (("bgp", "peer", "add", "198.19.0.50", "as", "65000", "--password", "x" * 81), "printable ASCII"),
    (("node", "bgp", "peer", "add", "198.19.0.11", "as", "65000"), "is the address of node n1"),
    (("node", "bgp", "peer", "add", "198.19.0.50", "as", "65000", "--name", "a/b"), "invalid node name"),
    (("bgp", "default-node-as", "0"), "invalid AS number 0"),
])
def test_bad_values_are_refused_with_one_line(cli, store, argv, message):
    code, out, err = cli(*argv)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(store.get_prefix(keys.BGP))


def test_an_apostrophe_password_is_stored_and_invalid_records_are_shown_apart(cli, store):
    assert cli("bgp", "peer", "add", "198.19.0.50", "as", "65000", "--password", "it's")[0] == 0
    store.put(keys.bgp_peer("198.19.0.51"), json.dumps({"address": "198.19.0.51", "as_number": 0}).encode())
    code, out, err = cli("bgp", "peer", "show", "--json")
    assert code == 0 and json.loads(out) == [{"address": "198.19.0.50", "as": 65000, "password": True}]
    assert "skipped invalid PeerRecord record at /warren/v1/bgp/peers/198.19.0.51" in err


def test_node_status_shows_the_speaker_and_what_was_left_out(cli, store):
    store.put(keys.bgp_peer("198.19.0.51"), json.dumps({"address": "198.19.0.51", "as_number": 2**32}).encode())
    save_status(store, "n1", [SessionStatus("198.19.0.12", "up", 1.0)])
    code, out, _ = cli("node", "status", "--json")
    shown = json.loads(out)
    assert code == 0 and not shown["speaker"]["running"] and not shown["speaker"]["node_alive"]
    assert shown["sessions"] == [{"peer": "198.19.0.12", "type": "mesh", "state": "down", "since": shown[
        "sessions"][0]["since"], "info": "speaker not running"}]   # a stale row is not "up"
    assert any("/warren/v1/bgp/peers/198.19.0.51" in s for s in shown["speaker"]["skipped"])

    store.put(keys.node_alive("n1"), json.dumps({"name": "n1", "ipv4": "198.19.0.11", "since": 1.0,
                                                 "lease": 1}).encode())
    save_speaker_state(store, "n1", SpeakerState("running", 42, exabgp_pid=43, since=1.0, config_ok=False,
                                                 config_error="exabgp validate refused the new config: x",
                                                 render_failures=1))
    code, out, _ = cli("node", "status")
    assert code == 0
    assert "Speaker: running, ExaBGP pid 43" in out
    assert "Config: REFUSED, the previous config stays in use (1 refused): exabgp validate refused" in out
    assert "Left out: invalid PeerRecord record at /warren/v1/bgp/peers/198.19.0.51" in out
    assert "198.19.0.12" in out and "Established" in out

    save_speaker_state(store, "n1", SpeakerState("restarting", 42, restarts=3, last_exit="exit status 1",
                                                 since=1.0))
    shown = json.loads(cli("node", "status", "--json")[1])
    assert not shown["speaker"]["running"] and shown["sessions"][0]["state"] == "down"
    assert "ExaBGP NOT running" in shown["speaker"]["summary"]
    code, out, _ = cli("status")
    assert code == 0 and "restarting, config refused" not in out and "restarting" in out


def test_cluster_status_counts_invalid_records(cli, store):
    code, out, _ = cli("status", "--json")
    assert code == 0 and json.loads(out)["invalid_records"] == 0
    store.put(keys.node("n3"), b"{}")                                   # a node record with no name
    store.put(keys.node_speaker("n1"), b'{"state": 5}')                  # a speaker state of the wrong type
    code, out, _ = cli("status")
    assert code == 0 and "2 invalid records in etcd" in out and "warrenctl records check" in out
    code, out, _ = cli("status", "--json")
    assert json.loads(out)["invalid_records"] == 2
