"""``warrenctl diags`` (ctl.diags): tarball contents and redaction, with a fake store and runner.

Pure: no etcd, no system tools. The store is an in-memory stand-in with the
Datastore read API; the runner answers each command with canned output
(some of which carries secrets, to prove the scrubbing).
"""
from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass

import pytest

from ctl import diags as diagsmod
from ctl.diags import REDACTED, CommandResult, Diags, redact, redact_record, secrets_in
from ctl.main import main as warrenctl
from datastore import KV, DatastoreError, DatastoreUnavailable, EtcdConfig, Range, keys

PASSWORD = "Pa55-w0rd!x"
OTHER_PASSWORD = "another-one-7"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
KEY_CONTENT = "TLS-KEY-MATERIAL-NEVER-READ"


class FakeStore:
    """The read API of Datastore over a dict of key -> JSON value."""

    def __init__(self, data: dict[str, object], config: EtcdConfig, fail: Exception | None = None):
        self.data = {k: json.dumps(v).encode() for k, v in data.items()}
        self.config = config
        self.fail = fail

    def get(self, key: str) -> KV | None:
        if self.fail:
            raise self.fail
        return KV(key, self.data[key], 1) if key in self.data else None

    def get_prefix(self, prefix: str, keys_only: bool = False) -> Range:
        if self.fail:
            raise self.fail
        return Range([KV(k, v, 1) for k, v in sorted(self.data.items()) if k.startswith(prefix)], 1)


@dataclass
class FakeRunner:
    outputs: dict[str, CommandResult]

    def __post_init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> CommandResult:
        self.calls.append(argv)
        name = os.path.basename(argv[0])
        return self.outputs.get(name, CommandResult(argv, 0, f"output of {' '.join(argv)}\n", ""))


def etcd_data() -> dict[str, object]:
    return {
        keys.node("n1"): {"name": "n1", "ipv4": "192.0.2.1"},
        keys.node("n2"): {"name": "n2", "ipv4": "192.0.2.2"},
        keys.pool("10.20.0.0/24"): {"cidr": "10.20.0.0/24"},
        keys.block("10.20.0.0/26"): {"cidr": "10.20.0.0/26", "affinity": "n1"},
        keys.block("10.20.0.64/26"): {"cidr": "10.20.0.64/26", "affinity": "n2"},
        keys.affinity("n1", "10.20.0.0/26"): {},
        keys.affinity("n2", "10.20.0.64/26"): {},
        keys.endpoint("n1", "ep1"): {"address": "10.20.0.1"},
        keys.endpoint("n2", "ep2"): {"address": "10.20.0.65"},
        keys.network("net1"): {"name": "net1"},
        keys.BGP_CONFIG: {"default_as": 64512, "node_mesh": True},
        keys.bgp_peer("198.51.100.1"): {"address": "198.51.100.1", "as_number": 64513, "password": PASSWORD},
        keys.node_bgp_peer("n1", "198.51.100.2"): {"address": "198.51.100.2", "as_number": 64514,
                                                    "password": None},
        keys.node_bgp_peer("n2", "198.51.100.3"): {"address": "198.51.100.3", "as_number": 64515,
                                                    "password": OTHER_PASSWORD},
        keys.bgp_status("n1"): {"sessions": [{"peer": "192.0.2.2", "state": "up", "since": 1.0}]},
    }


@pytest.fixture
def tls_files(tmp_path):
    paths = {}
    for name, content in (("ca.crt", "CA"), ("client.crt", "CERT"), ("client.key", KEY_CONTENT)):
        (tmp_path / name).write_text(content)
        paths[name] = str(tmp_path / name)
    return paths


@pytest.fixture
def config(tls_files):
    return EtcdConfig.from_env(env={"WARREN_ETCD_CA": tls_files["ca.crt"],
                                    "WARREN_ETCD_CERT": tls_files["client.crt"],
                                    "WARREN_ETCD_KEY": tls_files["client.key"]},
                               endpoints="https://192.0.2.10:2379,https://192.0.2.11:2379")


@pytest.fixture
def node_dirs(tmp_path):
    logs, run = tmp_path / "log" / "n1", tmp_path / "run" / "n1"
    logs.mkdir(parents=True)
    run.mkdir(parents=True)
    (logs / "plugin.log").write_text(f"started\nconfig: password={PASSWORD}\n")
    (logs / "bgp-speaker.log").write_text(f"peer 198.51.100.3 uses {OTHER_PASSWORD}\n{KEY_PEM}")
    (logs / "stray.key").write_text(KEY_CONTENT)
    (run / "exabgp.conf").write_text(f'neighbor 198.51.100.1 {{\n    md5-password "{PASSWORD}";\n}}\n')
    return str(tmp_path / "log"), str(tmp_path / "run")


def make(tmp_path, store, node_dirs, runner=None, **kw) -> Diags:
    staging = tmp_path / "staging"
    staging.mkdir()
    log_dir, run_dir = node_dirs
    return Diags(node="n1", store=store, staging=str(staging), log_dir=log_dir, run_dir=run_dir,
                 runner=runner or FakeRunner({}), bgp_status=lambda: {"node": "n1", "sessions": []},
                 versions=lambda: "warren 0.1.0\n",
                 environ={"WARREN_NODE_NAME": "n1", "WARREN_ETCD_KEY": "/k.key", "WARREN_TOKEN": "tok-123",
                          "HOME": "/root"}, **kw)


def archive(d: Diags, tmp_path) -> dict[str, str]:
    out = str(tmp_path / "out.tar.gz")
    d.collect()
    count = d.archive(out, "top")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    assert len(members) == count
    assert all(name.startswith("top/") for name in members)
    return {name[len("top/"):]: text for name, text in members.items()}


def test_tarball_has_every_part(tmp_path, config, node_dirs):
    files = archive(make(tmp_path, FakeStore(etcd_data(), config), node_dirs), tmp_path)
    for part in ("manifest.json", "versions.txt", "environment.json", "etcd/config.json", "etcd/node.json",
                 "etcd/nodes.json", "etcd/blocks.json", "etcd/affinities.json", "etcd/endpoints.json",
                 "etcd/networks.json", "etcd/pools.json", "etcd/bgp.json", "etcd/bgp-status.json",
                 "net/ip-route.txt", "net/ip6-route.txt", "net/ip-rule.txt", "net/ip6-rule.txt",
                 "net/sysctl.txt", "netfilter/iptables-save.txt", "netfilter/ip6tables-save.txt",
                 "netfilter/ipset-list.txt", "bgp/status.json", "bgp/exabgp.conf",
                 "logs/plugin.log", "logs/bgp-speaker.log"):
        assert part in files, part
    manifest = json.loads(files["manifest.json"])
    assert manifest["node"] == "n1" and set(manifest["parts"].values()) == {"ok"}
    assert manifest["commands"]["netfilter/iptables-save.txt"] == {"argv": ["iptables-save", "-c"], "exit": 0}
    assert "output of iptables-save -c" in files["netfilter/iptables-save.txt"]
    assert "output of ip -6 route show table all" in files["net/ip6-route.txt"]
    assert "warren 0.1.0" in files["versions.txt"] and "$ uname -a" in files["versions.txt"]


def test_etcd_state_is_this_nodes(tmp_path, config, node_dirs):
    files = archive(make(tmp_path, FakeStore(etcd_data(), config), node_dirs), tmp_path)
    assert json.loads(files["etcd/node.json"]) == {keys.node("n1"): {"name": "n1", "ipv4": "192.0.2.1"}}
    assert list(json.loads(files["etcd/blocks.json"])) == [keys.block("10.20.0.0/26")]
    assert list(json.loads(files["etcd/affinities.json"])) == [keys.affinity("n1", "10.20.0.0/26")]
    assert list(json.loads(files["etcd/endpoints.json"])) == [keys.endpoint("n1", "ep1")]
    assert list(json.loads(files["etcd/networks.json"])) == [keys.network("net1")]
    bgp = json.loads(files["etcd/bgp.json"])
    assert bgp["config"] == {"default_as": 64512, "node_mesh": True}
    assert list(bgp["global_peers"]) == [keys.bgp_peer("198.51.100.1")]
    assert list(bgp["node_peers"]) == [keys.node_bgp_peer("n1", "198.51.100.2")]  # not n2's
    assert json.loads(files["etcd/bgp-status.json"])["sessions"][0]["state"] == "up"
    cfg = json.loads(files["etcd/config.json"])
    assert cfg["endpoints"] == ["https://192.0.2.10:2379", "https://192.0.2.11:2379"] and cfg["tls"] is True
    assert cfg["key_file"].endswith("client.key (not included)")


def test_no_secret_survives(tmp_path, config, node_dirs):
    files = archive(make(tmp_path, FakeStore(etcd_data(), config), node_dirs), tmp_path)
    everything = "\n".join(files.values())
    for secret in (PASSWORD, OTHER_PASSWORD, KEY_CONTENT, "MIGHAgEAMBMGByqGSM49", "tok-123"):
        assert secret not in everything, secret
    assert not any(name.endswith(".key") for name in files)
    assert json.loads(files["etcd/bgp.json"])["global_peers"][keys.bgp_peer("198.51.100.1")]["password"] == REDACTED
    assert json.loads(files["etcd/bgp.json"])["node_peers"][keys.node_bgp_peer("n1", "198.51.100.2")]["password"] is None
    assert f'md5-password "{REDACTED}";' in files["bgp/exabgp.conf"]
    assert f"password={REDACTED}" in files["logs/plugin.log"]
    assert f"uses {REDACTED}" in files["logs/bgp-speaker.log"]   # another node's password, seen in etcd
    assert json.loads(files["environment.json"]) == {"WARREN_ETCD_KEY": "/k.key", "WARREN_NODE_NAME": "n1",
                                                     "WARREN_TOKEN": REDACTED}


def test_secrets_in_command_output_are_scrubbed(tmp_path, config, node_dirs):
    runner = FakeRunner({"ipset": CommandResult(["ipset"], 0, f"Name: x\ncomment \"{PASSWORD}\"\n", "")})
    files = archive(make(tmp_path, FakeStore(etcd_data(), config), node_dirs, runner=runner), tmp_path)
    assert PASSWORD not in files["netfilter/ipset-list.txt"] and REDACTED in files["netfilter/ipset-list.txt"]


def test_a_broken_part_costs_only_that_part(tmp_path, config, node_dirs):
    down = DatastoreUnavailable(["https://192.0.2.10:2379"], ["https://192.0.2.10:2379: connection refused"])
    runner = FakeRunner({"ipset": CommandResult(["ipset"], 127, "", "ipset: not found")})

    def no_status():
        raise DatastoreError("etcd is down")
    d = make(tmp_path, FakeStore(etcd_data(), config, fail=down), node_dirs, runner=runner)
    d.bgp_status = no_status
    files = archive(d, tmp_path)
    parts = json.loads(files["manifest.json"])["parts"]
    assert parts["etcd"].startswith("error: etcd is unreachable at https://192.0.2.10:2379")
    assert parts["bgp"] == "error: etcd is down"
    assert parts["logs"] == parts["routes"] == parts["netfilter"] == parts["versions"] == "ok"
    assert "etcd/config.json" in files and "etcd/node.json" not in files
    assert "# exit 127: ipset: not found" in files["netfilter/ipset-list.txt"]
    assert json.loads(files["manifest.json"])["commands"]["netfilter/ipset-list.txt"]["exit"] == 127
    assert "logs/plugin.log" in files and "net/ip-route.txt" in files


def test_missing_log_directory_is_reported(tmp_path, config, node_dirs):
    d = make(tmp_path, FakeStore(etcd_data(), config), node_dirs)
    d.node = "elsewhere"
    files = archive(d, tmp_path)
    assert json.loads(files["manifest.json"])["parts"]["logs"].startswith("error: no log directory")


def test_redact_patterns():
    assert redact('{"password": "x1"}') == f'{{"password": "{REDACTED}"}}'
    assert redact('{"password": null}') == '{"password": null}'
    assert redact("md5-password hunter2;") == f'md5-password "{REDACTED}";'
    assert redact("db_secret=abc other=1") == f"db_secret={REDACTED} other=1"
    assert redact("TOKEN: 'abc def'") == f"TOKEN: '{REDACTED}'"
    assert redact("-----BEGIN EC PRIVATE KEY-----\nAAA\n-----END EC PRIVATE KEY-----") \
        == f"-----{REDACTED} PRIVATE KEY-----"
    assert redact("a hunter2 b", ["hunter2"]) == f"a {REDACTED} b"
    assert redact("nothing secret about a password policy") == "nothing secret about a password policy"


def test_redact_record_and_secrets_in():
    doc = {"a": [{"password": "p1"}, {"md5_password": "p2", "as": 1}], "password": None, "x": {"token": ""}}
    assert secrets_in(doc) == {"p1", "p2"}
    assert redact_record(doc) == {"a": [{"password": REDACTED}, {"md5_password": REDACTED, "as": 1}],
                                  "password": None, "x": {"token": ""}}


def test_output_path(tmp_path):
    assert diagsmod.output_path(str(tmp_path), "n1", "S") == str(tmp_path / "warren-diags-n1-S.tar.gz")
    assert diagsmod.output_path(str(tmp_path / "f.tgz"), "n1", "S") == str(tmp_path / "f.tgz")
    with pytest.raises(diagsmod.DiagsError, match="does not exist"):
        diagsmod.output_path(str(tmp_path / "no" / "f.tgz"), "n1", "S")


def test_cli_bad_output_is_one_line(tmp_path, capsys):
    assert warrenctl(["diags", "--output", str(tmp_path / "missing" / "x.tgz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warrenctl: error: cannot write") and "Traceback" not in err


def test_cli_writes_a_tarball_even_without_etcd(tmp_path, capsys, monkeypatch, node_dirs):
    """Bad etcd configuration (TLS files that do not exist): the rest is still collected."""
    log_dir, run_dir = node_dirs
    monkeypatch.setenv("WARREN_LOG_DIR", log_dir)
    monkeypatch.setenv("WARREN_RUN_DIR", run_dir)
    monkeypatch.setenv("WARREN_ETCD_CA", str(tmp_path / "missing-ca.crt"))
    monkeypatch.setenv("WARREN_ETCD_ENDPOINTS", "https://192.0.2.10:2379")
    monkeypatch.setattr(diagsmod, "run_command", FakeRunner({}))
    assert warrenctl(["diags", "--name", "n1", "--output", str(tmp_path / "d.tgz")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"Diagnostics of node n1 written to {tmp_path / 'd.tgz'} (") and out.count("\n") == 1
    assert "part 'etcd' is incomplete: TLS file" in err and "Traceback" not in err
    with tarfile.open(tmp_path / "d.tgz") as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
    assert "logs/plugin.log" in names and "etcd/config.json" not in names
