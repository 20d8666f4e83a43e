"""``warrenctl profile ...`` as a subprocess against a real etcd."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datastore import codec, keys
from plugin.records import Endpoint, Network
from profiles import Profile, ProfileStore
from profiles.grammar import parse_rule

ROOT = Path(__file__).parents[3]


@pytest.fixture
def ctl(etcd_server, store):
    """Run warrenctl against the session etcd (``store`` wipes it around the test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ctl.main", "--etcd-endpoints", etcd_server.endpoint, *args],
            cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=30)
    return run


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def error(result: subprocess.CompletedProcess) -> str:
    """Exit 1, exactly one stderr line, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warrenctl: error: "), result.stderr
    return lines[0][len("warrenctl: error: "):]


def rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def test_add_show_remove(ctl, store):
    assert ok(ctl("profile", "add", "web")) == "Created profile web\n"
    ok(ctl("profile", "add", "db"))
    assert rows(ok(ctl("profile", "show"))) == [["Name"], ["db"], ["web"]]
    assert ProfileStore(store).get("web") == Profile.new("web")
    assert error(ctl("profile", "add", "web")) == "profile web already exists"
    assert ok(ctl("profile", "remove", "web")) == "Deleted profile web\n"
    assert error(ctl("profile", "remove", "web")) == "profile web does not exist"
    assert error(ctl("profile", "add", "a/b")).startswith("invalid profile name 'a/b'")


def test_default_rules_and_tags(ctl):
    ok(ctl("profile", "add", "web"))
    assert ok(ctl("profile", "web", "rule", "show")) == (
        "Inbound rules:\n   1 allow from tag web\nOutbound rules:\n   1 allow\n")
    assert ok(ctl("profile", "web", "tag", "show")) == "web\n"
    assert ok(ctl("profile", "web", "tag", "add", "frontend")) == "Tag frontend added to profile web\n"
    assert ok(ctl("profile", "web", "tag", "show")) == "frontend\nweb\n"
    assert ok(ctl("profile", "web", "tag", "remove", "web")) == "Tag web removed from profile web\n"
    assert error(ctl("profile", "web", "tag", "remove", "web")) == "tag web is not on profile web"
    assert error(ctl("profile", "nope", "tag", "show")) == "profile nope does not exist"


def test_rule_add_and_remove(ctl, store):
    ok(ctl("profile", "add", "web"))
    out = ok(ctl("profile", "web", "rule", "add", "inbound", "allow", "tcp", "from", "ports",
                 "1024-65535", "tag", "lb", "to", "ports", "80,443"))
    assert out == ("Added inbound rule 2 to profile web: "
                   "allow tcp from ports 1024:65535 tag lb to ports 80,443\n")
    ok(ctl("profile", "web", "rule", "add", "inbound", "--at=1",
           "deny", "tcp", "from", "cidr", "10.9.0.0/16"))
    ok(ctl("profile", "web", "rule", "add", "outbound", "--at", "1",
           "deny", "icmp", "type", "8", "code", "0"))
    assert ok(ctl("profile", "web", "rule", "add", "outbound", "deny", "icmp", "type", "8", "code", "0")) == (
        "Rule already present, skipping.\n")
    assert ok(ctl("profile", "web", "rule", "show")) == (
        "Inbound rules:\n"
        "   1 deny tcp from cidr 10.9.0.0/16\n"
        "   2 allow from tag web\n"
        "   3 allow tcp from ports 1024:65535 tag lb to ports 80,443\n"
        "Outbound rules:\n"
        "   1 deny icmp type 8 code 0\n"
        "   2 allow\n")
    assert ok(ctl("profile", "web", "rule", "remove", "inbound", "--at=2")) == (
        "Removed inbound rule 2 from profile web: allow from tag web\n")
    ok(ctl("profile", "web", "rule", "remove", "outbound", "deny", "icmp", "type", "8", "code", "0"))
    p = ProfileStore(store).get("web")
    assert p.inbound_rules == [parse_rule("deny tcp from cidr 10.9.0.0/16".split()),
                               parse_rule("allow tcp from ports 1024:65535 tag lb to ports 80,443".split())]
    assert p.outbound_rules == [parse_rule(["allow"])]


@pytest.mark.parametrize("args, message", [
    (["rule", "add", "inbound", "allow", "tcp", "to", "ports", "99999"], "port 99999 is out of range"),
    (["rule", "add", "inbound", "permit"], "a rule starts with allow or deny, not 'permit'"),
    (["rule", "add", "sideways", "allow"], "rule add needs a direction: inbound or outbound"),
    (["rule", "add", "inbound", "--at=0", "allow", "udp"], "position 0 is out of range"),
    (["rule", "add", "inbound", "--at=x", "allow"], "invalid position 'x'"),
    (["rule", "remove", "inbound"], "rule remove takes either --at=<POSITION> or a rule"),
    (["rule", "remove", "inbound", "--at=1", "allow"], "rule remove takes either --at=<POSITION> or a rule"),
    (["rule", "remove", "inbound", "deny", "udp"], "profile web has no such inbound rule"),
    (["rule", "remove", "outbound", "--at=9"], "position 9 is out of range"),
    (["rule", "frobnicate"], "usage: warrenctl profile <PROFILE> rule"),
    (["tag", "add"], "usage: warrenctl profile <PROFILE> tag show"),
    (["show"], "unknown profile command 'web show'"),
])
def test_bad_rule_commands_fail_in_one_line(ctl, store, args, message):
    ProfileStore(store).add(Profile.new("web"))
    assert message in error(ctl("profile", "web", *args))
    assert ProfileStore(store).get("web") == Profile.new("web")


def test_rule_json_and_update(ctl, store):
    ok(ctl("profile", "add", "web"))
    doc = json.loads(ok(ctl("profile", "web", "rule", "json")))
    assert doc == Profile.new("web").rules_dict()
    doc["inbound_rules"].insert(0, {"action": "deny", "protocol": "tcp", "dst_ports": [22]})
    assert ok(ctl("profile", "web", "rule", "update", stdin=json.dumps(doc))) == (
        "Successfully updated rules on profile web\n")
    assert ProfileStore(store).get("web").inbound_rules[0] == parse_rule("deny tcp to ports 22".split())

    assert "not valid JSON" in error(ctl("profile", "web", "rule", "update", stdin="{nope"))
    bad = {"inbound_rules": [{"action": "allow", "dst_ports": [80]}], "outbound_rules": []}
    assert error(ctl("profile", "web", "rule", "update", stdin=json.dumps(bad))) == (
        "inbound rule 1: ports need protocol tcp or udp")
    other = dict(doc, id="db")
    assert "does not match profile web" in error(ctl("profile", "web", "rule", "update",
                                                     stdin=json.dumps(other)))
    assert ProfileStore(store).get("web").inbound_rules[0] == parse_rule("deny tcp to ports 22".split())


def _member(store, profile: str) -> Endpoint:
    store.put(keys.network("n1"), codec.dumps(Network("n1", profile=profile)))
    ep = Endpoint("e" * 64, "n1", "host1", ipv4=["10.0.0.5"], ipv6=["fd00::5"])
    store.put(keys.endpoint("host1", ep.id), codec.dumps(ep))
    return ep


def test_remove_checks_for_endpoints_unless_told_not_to(ctl, store):
    ok(ctl("profile", "add", "web"))
    ok(ctl("profile", "add", "db"))
    _member(store, "web")
    assert error(ctl("profile", "remove", "web")) == (
        "profile web is in use by 1 endpoint(s); use --no-check to remove it anyway")
    table = rows(ok(ctl("profile", "show", "--detailed")))
    assert table == [["Name", "Tags", "Host", "Endpoint ID", "Addresses"],
                     ["db", "db", "-", "-", "-"],
                     ["web", "web", "host1", "e" * 12, "10.0.0.5,fd00::5"]]
    ok(ctl("profile", "remove", "web", "--no-check"))
    assert ProfileStore(store).names() == ["db"]


def test_profiles_named_like_keywords(ctl, store):
    assert ok(ctl("profile", "add", "rule")) == "Created profile rule\n"
    ok(ctl("profile", "rule", "tag", "add", "x"))
    assert ok(ctl("profile", "rule", "tag", "show")) == "rule\nx\n"
    ok(ctl("profile", "add", "show"))
    assert ok(ctl("profile", "show", "rule", "show")).startswith("Inbound rules:")
    ok(ctl("profile", "remove", "rule", "--no-check"))
    assert ProfileStore(store).names() == ["show"]


def test_usage_errors_and_help(ctl):
    assert "missing profile command" in error(ctl("profile"))
    assert "profile show takes only --detailed" in error(ctl("profile", "show", "--json"))
    assert "usage: warrenctl profile remove <PROFILE> [--no-check]" in error(ctl("profile", "remove"))
    help_text = ok(ctl("profile", "--help"))
    assert "warrenctl profile <PROFILE> rule add (inbound|outbound) [--at=<POSITION>] <RULE>" in help_text
    assert "(tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]" in help_text


def test_etcd_down_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    env["WARREN_ETCD_TIMEOUT"] = "1"
    result = subprocess.run([sys.executable, "-m", "ctl.main", "--etcd-endpoints", "http://127.0.0.1:1",
                             "profile", "show"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=30)
    assert "etcd is unreachable" in error(result)
