"""ctl.records: every prefix Warren reads is scanned with its readers' checks; records check/remove; the metric."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import argparse

import pytest

from ctl import records
from datastore import codec, keys
from datastore.ops import KV, Range
from ipam.blocks import Block

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EID = "e" * 64


class MemStore:
    def __init__(self, data):
        self.data = {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in data.items()}
        self.revisions = {k: 1 for k in self.data}

    def get(self, key):
        return KV(key, self.data[key], 1, self.revisions[key]) if key in self.data else None

    def get_prefix(self, prefix, keys_only=False):
        return Range([KV(k, v, 1, self.revisions[k]) for k, v in sorted(self.data.items())
                      if k.startswith(prefix)], 1)

    def delete_if_unchanged(self, key, revision):
        if self.revisions.get(key) != revision:
            return False
        del self.data[key]
        return True


def good_records() -> dict:
    block = Block.new("10.20.0.0/30", "10.20.0.0/24", "h1")
    block.allocate("hd1", "h1", {})
    return {
        keys.pool("10.20.0.0/24"): {"cidr": "10.20.0.0/24"},
        keys.IPAM_CONFIG: {"strict_affinity": False},
        keys.block("10.20.0.0/30"): block.to_dict(),
        keys.affinity("h1", "10.20.0.0/30"): {},
        keys.handle("hd1", "10.20.0.0"): {"block": "10.20.0.0/30"},
        keys.network("n1"): {"id": "n1", "pools_v4": ["10.20.0.0/24"], "name": "net1"},
        keys.endpoint("h1", EID): {"id": EID, "network": "n1", "host": "h1", "ipv4": ["10.20.0.0"]},
        keys.node("h1"): {"name": "h1", "ipv4": "198.19.0.1"},
        keys.sandbox_slot("h1", "/var/run/docker/netns/x", 1): EID.encode(),
        keys.BGP_CONFIG: {"default_as": 64512, "node_mesh": True},
        keys.bgp_peer("198.19.0.9"): {"address": "198.19.0.9", "as_number": 64513},
        keys.node_bgp_peer("h1", "198.19.0.8"): {"address": "198.19.0.8", "as_number": 64514},
        keys.bgp_status("h1"): {"sessions": [{"peer": "198.19.0.2", "state": "up", "since": 1.0}]},
        keys.node_alive("h1"): {"name": "h1", "ipv4": "198.19.0.1", "since": 1.0, "lease": 3},
        keys.profile("web"): {"name": "web", "tags": ["web"]},
        keys.PREFIX + "somebody/else": b"not ours: nobody reads it",
    }


BAD = {  # key -> (value, kind)
    keys.pool("10.21.0.0/24"): (b"garbage", "Pool"),
    keys.IPAM_CONFIG: ({"strict_affinity": "yes"}, "IpamConfig"),
    keys.block("10.20.0.4/30"): ({"cidr": "10.20.0.4/30"}, "Block"),
    keys.affinity("h1", "10.20.0.8/30") + "x": ({}, "affinity"),
    keys.handle("hd2", "not-an-ip"): ({"block": "10.20.0.0/30"}, "HandleRef"),
    keys.network("n2"): ({"id": "n2", "pools_v4": [5]}, "Network"),
    keys.endpoint("h1", "x" * 64): ({"id": "x" * 64, "network": "n1", "host": "h1", "ipv4": ["not-an-ip"]},
                                    "Endpoint"),
    keys.node("x"): ({}, "Node"),
    keys.sandbox_slot("h1", "/y", 999): (b"e1", "sandbox slot"),
    keys.bgp_peer("198.19.0.7"): ({"address": "198.19.0.6", "as_number": 64513}, "PeerRecord"),
    keys.node_bgp_peer("h1", "198.19.0.5"): ({"address": "198.19.0.5"}, "PeerRecord"),
    keys.bgp_status("h2"): ({"sessions": 3}, "SessionStatus"),
    keys.bgp_status("h3"): ({"sessions": [{"peer": 5, "state": "up", "since": 1}]}, "SessionStatus"),
    keys.node_alive("h2"): ({"name": "h2"}, "Liveness"),
    keys.profile("db"): ({"name": "web"}, "Profile"),
}


def test_good_records_are_not_reported():
    assert records.scan(MemStore(good_records())) == []


@pytest.mark.parametrize("key", sorted(BAD))
def test_each_kind_of_bad_record_is_reported_with_a_reason(key):
    value, kind = BAD[key]
    found = records.scan(MemStore({**good_records(), key: value}))
    assert [(f.key, f.kind) for f in found] == [(key, kind)]
    assert found[0].reason and "\n" not in found[0].reason


def test_every_prefix_the_code_reads_is_covered():
    kinds = records._kinds()
    for prefix in (keys.POOLS, keys.BLOCKS, keys.AFFINITY, keys.HANDLES, keys.NETWORKS, keys.ENDPOINTS,
                   keys.NODES, keys.SANDBOXES, keys.BGP_PEERS, keys.PROFILES):
        assert any(k.prefix == prefix for k in kinds), prefix
    for key in good_records():
        if not key.startswith(keys.PREFIX + "somebody"):
            assert records.kind_of(key, kinds) is not None, key


def test_scanning_does_not_count_as_skipping():
    before = dict(codec.SKIPPED)
    records.scan(MemStore({**good_records(), **{k: v for k, (v, _) in BAD.items()}}))
    assert dict(codec.SKIPPED) == before


class Ctx:
    def __init__(self, store):
        self.store = store


def test_records_check_prints_and_exits_1(capsys):
    store = MemStore({**good_records(), keys.node("x"): {}})
    assert records.records_check(argparse.Namespace(json=False), Ctx(store)) == 1
    out = capsys.readouterr().out
    assert keys.node("x") in out and "Node: field 'name' is missing" in out and "1 invalid record:" in out
    assert records.records_check(argparse.Namespace(json=True), Ctx(store)) == 1
    assert json.loads(capsys.readouterr().out) == [
        {"key": keys.node("x"), "kind": "Node", "reason": "field 'name' is missing"}]
    assert records.records_check(argparse.Namespace(json=False), Ctx(MemStore(good_records()))) == 0
    assert "No invalid records" in capsys.readouterr().out


def test_records_remove_deletes_only_invalid_records(capsys):
    store = MemStore({**good_records(), keys.node("x"): {}})
    with pytest.raises(ValueError, match="is a valid record"):
        records.records_remove(argparse.Namespace(key=keys.node("h1")), Ctx(store))
    with pytest.raises(ValueError, match="does not exist"):
        records.records_remove(argparse.Namespace(key=keys.node("nope")), Ctx(store))
    with pytest.raises(ValueError, match="not a Warren key"):
        records.records_remove(argparse.Namespace(key="/etc/x"), Ctx(store))
    assert records.records_remove(argparse.Namespace(key=keys.node("x")), Ctx(store)) == 0
    assert keys.node("x") not in store.data and keys.node("h1") in store.data


def test_the_cli_knows_records():
    from ctl.main import build_parser
    args = build_parser().parse_args(["records", "check", "--json"])
    assert args.func is records.records_check and args.json


def test_diags_lists_invalid_records(tmp_path):
    from ctl.diags import Diags
    store = MemStore({**good_records(), keys.node("x"): {}})
    collector = Diags(node="h1", store=store, staging=str(tmp_path), log_dir=str(tmp_path), run_dir=str(tmp_path))
    collector.collect_records()
    listed = json.loads((tmp_path / "etcd" / "invalid-records.json").read_text())
    assert [r["key"] for r in listed] == [keys.node("x")] and collector.manifest["invalid_records"] == 1


def test_skipped_records_are_counted_per_process_in_multiprocess_mode(tmp_path):
    """A node process (PROMETHEUS_MULTIPROC_DIR set) counts skips without asking; the exporter sums them."""
    code = ("import sys; sys.argv = ['/x/plugin/wsgi.py']\n"
            "from datastore import codec\nfrom datastore.ops import KV\nfrom ipam.nodes import Node\n"
            "codec.load_all(Node, [KV('/warren/v1/nodes/x', b'{}', 1, 1), KV('/warren/v1/nodes/y', b'1', 1, 2)])\n")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": REPO}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO)
    read = ("from prometheus_client import CollectorRegistry, generate_latest\n"
            "from prometheus_client.multiprocess import MultiProcessCollector\n"
            f"r = CollectorRegistry(); MultiProcessCollector(r, path={str(tmp_path)!r})\n"
            "print(generate_latest(r).decode())")
    out = subprocess.run([sys.executable, "-c", read], env=env, check=True, cwd=REPO,
                         capture_output=True, text=True).stdout
    assert 'warren_records_skipped_total{process="plugin",record="Node"} 2.0' in out


def test_process_names():
    from datastore.metrics import process_name
    assert process_name(["/w/ctl/agent.py", "--node", "n"]) == "agent"
    assert process_name(["/w/bgp/api.py"]) == "bgp-api"
    assert process_name(["/w/plugin/wsgi.py"]) == "plugin"
