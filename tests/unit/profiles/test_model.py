"""Profile and Rule: defaults, validation (one-line errors), JSON."""
from __future__ import annotations

import json

import pytest

from datastore import codec
from profiles.model import Profile, ProfileError, Rule, RuleError, rules_from_document


def test_a_new_profile_has_calicos_defaults():
    p = Profile.new("web")
    assert p.tags == ["web"]
    assert [r.to_dict() for r in p.inbound_rules] == [{"action": "allow", "src_tag": "web"}]
    assert [r.to_dict() for r in p.outbound_rules] == [{"action": "allow"}]


def test_profile_json_round_trip_through_the_codec():
    p = Profile("db", ["db", "backend"],
                [Rule.make("deny", "tcp", src_net="10.0.0.0/8", dst_ports=[22, "8000:8080"])],
                [Rule.make("allow", "icmp", icmp_type=8, icmp_code=0)])
    assert p.tags == ["backend", "db"]  # a set, kept sorted
    raw = codec.dumps(p)
    assert json.loads(raw) == {
        "name": "db", "tags": ["backend", "db"],
        "inbound_rules": [{"action": "deny", "protocol": "tcp", "src_net": "10.0.0.0/8",
                           "dst_ports": [22, "8000:8080"]}],
        "outbound_rules": [{"action": "allow", "protocol": "icmp", "icmp_type": 8, "icmp_code": 0}]}
    assert codec.loads(Profile, raw) == p


def test_rules_json_document():
    p = Profile.new("web")
    doc = p.rules_dict()
    assert doc == {"id": "web", "inbound_rules": [{"action": "allow", "src_tag": "web"}],
                   "outbound_rules": [{"action": "allow"}]}
    assert rules_from_document(doc, "web") == (p.inbound_rules, p.outbound_rules)
    del doc["id"]
    assert rules_from_document(doc, "web") == (p.inbound_rules, p.outbound_rules)


@pytest.mark.parametrize("raw, canonical", [
    (80, 80), ("80", 80), ("8000:8080", "8000:8080"), ("8000-8080", "8000:8080"),
    (0, 0), (65535, 65535), ("5:5", "5:5"),
])
def test_ports_are_canonical(raw, canonical):
    assert Rule.make("allow", "tcp", dst_ports=[raw]).dst_ports == (canonical,)


def test_cidrs_are_canonical():
    r = Rule.make("allow", src_net="10.1.2.3/8", dst_net="10.0.0.1")
    assert (r.src_net, r.dst_net) == ("10.0.0.0/8", "10.0.0.1/32")
    assert Rule.make("allow", src_net="FD00::1/64").src_net == "fd00::/64"


@pytest.mark.parametrize("version, rule", [
    (None, Rule.make("allow")), (None, Rule.make("allow", "tcp", src_tag="x")),
    (4, Rule.make("allow", "icmp")), (6, Rule.make("deny", "icmpv6")),
    (4, Rule.make("allow", dst_net="10.0.0.0/8")), (6, Rule.make("allow", src_net="fd00::/8")),
])
def test_rule_version(version, rule):
    assert rule.version == version


@pytest.mark.parametrize("kwargs, message", [
    (dict(action="permit"), "invalid action 'permit': use allow or deny"),
    (dict(action="allow", protocol="sctp"), "invalid protocol 'sctp'"),
    (dict(action="allow", dst_ports=[80]), "ports need protocol tcp or udp"),
    (dict(action="allow", protocol="icmp", dst_ports=[80]), "ports need protocol tcp or udp, not icmp"),
    (dict(action="allow", protocol="tcp", dst_ports=[70000]), "port 70000 is out of range"),
    (dict(action="allow", protocol="tcp", dst_ports=[-1]), "port -1 is out of range"),
    (dict(action="allow", protocol="tcp", dst_ports=["9:8"]), "the minimum is above the maximum"),
    (dict(action="allow", protocol="tcp", dst_ports=["http"]), "invalid port 'http'"),
    (dict(action="allow", protocol="tcp", dst_ports=[True]), "invalid port True"),
    (dict(action="allow", protocol="tcp", dst_ports=[]), "destination ports is empty"),
    (dict(action="allow", protocol="tcp", src_ports=80), "source ports must be a list"),
    (dict(action="allow", icmp_type=8), "an ICMP type needs protocol icmp or icmpv6"),
    (dict(action="allow", protocol="icmp", icmp_code=0), "an ICMP code needs an ICMP type"),
    (dict(action="allow", protocol="icmp", icmp_type=256), "invalid ICMP type 256"),
    (dict(action="allow", protocol="icmp", icmp_type=8, icmp_code="x"), "invalid ICMP code 'x'"),
    (dict(action="allow", src_net="10.0.0.0/33"), "invalid source CIDR '10.0.0.0/33'"),
    (dict(action="allow", dst_net="nope"), "invalid destination CIDR 'nope'"),
    (dict(action="allow", src_net="10.0.0.0/8", dst_net="fd00::/8"), "of different IP versions"),
    (dict(action="allow", protocol="icmp", src_net="fd00::/8"), "protocol icmp cannot match IPv6 CIDRs"),
    (dict(action="allow", protocol="icmpv6", dst_net="10.0.0.0/8"), "protocol icmpv6 cannot match IPv4"),
    (dict(action="allow", src_tag="a b"), "invalid source tag 'a b'"),
    (dict(action="allow", dst_tag=""), "invalid destination tag ''"),
])
def test_invalid_rules(kwargs, message):
    with pytest.raises(RuleError) as err:
        Rule.make(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("data, message", [
    ({"action": "allow", "srcports": [1]}, "unknown rule key 'srcports'"),
    ({"protocol": "tcp"}, "a rule needs an action"),
    ("allow", "a rule must be a JSON object"),
])
def test_invalid_rule_json(data, message):
    with pytest.raises(RuleError, match=message):
        Rule.from_dict(data)


@pytest.mark.parametrize("doc, message", [
    ([], "the rules must be a JSON object"),
    ({"inbound_rules": []}, "the rules need 'outbound_rules'"),
    ({"id": "other", "inbound_rules": [], "outbound_rules": []}, "does not match profile web"),
    ({"inbound_rules": [], "outbound_rules": [], "extra": 1}, "unknown key 'extra'"),
    ({"inbound_rules": {}, "outbound_rules": []}, "inbound rule must be a list of rules"),
    ({"inbound_rules": [], "outbound_rules": [{"action": "allow"}, {"action": "x"}]},
     "outbound rule 2: invalid action 'x'"),
])
def test_invalid_rule_documents(doc, message):
    with pytest.raises(RuleError) as err:
        rules_from_document(doc, "web")
    assert message in str(err.value)


def test_invalid_profiles():
    with pytest.raises(ProfileError, match="invalid profile name 'a/b'"):
        Profile.new("a/b")
    with pytest.raises(ProfileError, match="invalid tag 'x y'"):
        Profile("p", ["x y"])
    with pytest.raises(ProfileError, match="needs a name"):
        Profile.from_dict({"tags": []})
    with pytest.raises(ProfileError, match="must be a list of names"):
        Profile.from_dict({"name": "p", "tags": "web"})
    with pytest.raises(ProfileError, match="invalid direction 'sideways'"):
        Profile.new("p").rules("sideways")


def test_a_stored_rule_with_an_unknown_key_is_refused_not_widened():
    raw = json.dumps({"name": "p", "tags": [], "inbound_rules": [{"action": "allow", "log": True}]})
    with pytest.raises(codec.InvalidRecord, match="inbound rule 1: unknown rule key 'log'"):
        codec.loads(Profile, raw)


def test_rules_compare_by_value():
    assert (Rule.make("allow", "tcp", dst_ports="80,8000-8080")
            == Rule.make("allow", "tcp", dst_ports=[80, "8000:8080"]))
    assert Rule.make("allow", "tcp", dst_ports=[80]) != Rule.make("allow", "udp", dst_ports=[80])
