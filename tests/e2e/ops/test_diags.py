"""``warrenctl diags`` on a real lab host: every part is in the tarball, and no secret is.

Runs on host1 of the shared ops lab (Warren nodes on a TLS etcd cluster), with
a container, a warren network and BGP peers with passwords in place, so each
part has something real to show.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
import time

import pytest

from tests.e2e.helpers import E2E, address, ctl, dk, run
from tests.e2e.ops.conftest import remove

pytestmark = E2E

PASSWORD = "diags-S3cret-pw"
NODE_PASSWORD = "node-peer-pw-42"


@pytest.fixture(scope="module")
def tarball(ops_lab, tmp_path_factory):
    lab = ops_lab
    global_peer, node_peer = lab.layout.addr_v4(250), lab.layout.addr_v4(251)  # nobody answers there
    for host in ("host1", "host2"):
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.66.0/24", "dg66")
    out = tmp_path_factory.mktemp("diags")
    try:
        run(lab, "host1", "dg-a", "dg66")
        addr = address(lab, "host1", "dg-a", "dg66")
        run(lab, "host2", "dg-b", "dg66", "--ip", "10.20.66.200")
        deadline = time.monotonic() + 90   # host1 learned host2's block over BGP
        while "10.20.66.192/26 via" not in lab.exec("host1", ["ip", "route"]).stdout:
            assert time.monotonic() < deadline, "host1 never learned host2's block"
            time.sleep(0.5)
        ctl(lab, "host1", "bgp", "peer", "add", global_peer, "as", "64513", "--password", PASSWORD)
        ctl(lab, "host1", "node", "bgp", "peer", "add", node_peer, "as", "64514", "--password", NODE_PASSWORD)
        conf = lab.host(1).path("run", "warren", "host1", "exabgp.conf")   # the host's /run, from outside
        deadline = time.monotonic() + 60
        while not (os.path.exists(conf) and node_peer in open(conf).read()):
            assert time.monotonic() < deadline, f"the speaker never configured the peers ({conf})"
            time.sleep(0.5)
        state = dk(lab, "host1", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}", "dg-a")
        assert addr and state.stdout.split()[0] == "running", f"dg-a ({addr}): {state.stdout}"
        res = ctl(lab, "host1", "diags", "--output", str(out))
        [path] = [os.path.join(out, f) for f in os.listdir(out)]
        assert res.stdout.strip().startswith(f"Diagnostics of node host1 written to {path} (")
        with tarfile.open(path) as tar:
            files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode(errors="replace")
                     for m in tar.getmembers() if m.isfile()}
        yield lab, files, addr, res
    finally:
        ctl(lab, "host1", "bgp", "peer", "remove", global_peer, check=False)
        ctl(lab, "host1", "node", "bgp", "peer", "remove", node_peer, check=False)
        remove(lab, "host1", ["dg-a"], ["dg66"])
        remove(lab, "host2", ["dg-b"], ["dg66"])


def test_every_part_is_collected(tarball):
    _, files, _, res = tarball
    manifest = json.loads(files["manifest.json"])
    assert manifest["node"] == "host1"
    assert manifest["parts"] == {p: "ok" for p in ("etcd", "records", "logs", "routes", "netfilter", "bgp",
                                                   "versions", "environment")}, res.stderr
    assert json.loads(files["etcd/invalid-records.json"]) == []   # a healthy lab has none
    assert res.stderr == ""
    assert all(c["exit"] == 0 for c in manifest["commands"].values()), manifest["commands"]


def test_etcd_state_of_this_node(tarball):
    lab, files, addr, _ = tarball
    assert list(json.loads(files["etcd/node.json"]).values())[0]["ipv4"] == lab.host(1).ipv4
    blocks = json.loads(files["etcd/blocks.json"])
    assert any(key.endswith("10.20.66.0-26") or "10.20.66." in key for key in blocks), blocks.keys()
    assert all(b["affinity"] == "host1" for b in blocks.values())
    assert any(addr in json.dumps(e) for e in json.loads(files["etcd/endpoints.json"]).values())
    assert any(n.get("name") == "dg66" for n in json.loads(files["etcd/networks.json"]).values()
               if isinstance(n, dict))
    cfg = json.loads(files["etcd/config.json"])
    assert cfg["endpoints"] == lab.status()["etcd_endpoints"] and cfg["tls"] is True
    assert cfg["key_file"].endswith("client.key (not included)")


def test_routes_netfilter_bgp_and_versions(tarball):
    lab, files, addr, _ = tarball
    assert f"{addr} dev wrn" in files["net/ip-route.txt"]
    assert "10.20.66.192/26 via " + lab.host(2).ipv4 in files["net/ip-route.txt"]   # learned over BGP
    assert "default via" in files["net/ip6-route.txt"] and "from all lookup main" in files["net/ip-rule.txt"]
    assert "WARREN" in files["netfilter/iptables-save.txt"] and "*filter" in files["netfilter/ip6tables-save.txt"]
    assert "Name: " in files["netfilter/ipset-list.txt"]
    sessions = {s["peer"]: s for s in json.loads(files["bgp/status.json"])["sessions"]}
    assert sessions[lab.host(2).ipv4]["type"] == "mesh"
    assert sessions[lab.layout.addr_v4(250)]["type"] == "global"
    versions = files["versions.txt"]
    engine = next(h["docker_version"] for h in lab.status()["hosts"] if h["name"] == "host1")
    for needle in ("warren ", "ExaBGP", f"dockerd {engine}", "Linux", "iptables v", "ipset v", "iproute2"):
        assert needle in versions, needle
    assert any(name.startswith("logs/") and "plugin" in name for name in files)
    assert "logs/supervisor.log" in files and "logs/agent.log" in files   # the node's processes


def test_no_secret_in_the_tarball(tarball):
    lab, files, _, _ = tarball
    with open(lab.layout.pki("client.key")) as f:
        key_body = "".join(line for line in f.read().splitlines() if "-----" not in line)
    everything = "\n".join(files.values())
    assert PASSWORD not in everything and NODE_PASSWORD not in everything
    assert key_body[:40] not in everything.replace("\n", "")
    assert not re.search(r"BEGIN [A-Z ]*PRIVATE KEY-----\n", everything)
    bgp = json.loads(files["etcd/bgp.json"])
    assert [p["password"] for p in bgp["global_peers"].values()] == ["<redacted>"]
    assert [p["password"] for p in bgp["node_peers"].values()] == ["<redacted>"]
    assert 'md5-password "<redacted>"' in files["bgp/exabgp.conf"]
    assert json.loads(files["environment.json"])["WARREN_ETCD_KEY"] == lab.layout.pki("client.key")
