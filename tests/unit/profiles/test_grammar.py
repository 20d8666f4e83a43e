"""The calicoctl v0.x rule grammar: every form, the round trip, and one-line errors."""
from __future__ import annotations

import pytest

from profiles.grammar import format_rule, parse_rule
from profiles.model import RuleError

# (words, the rule's JSON, the canonical text if it differs from the input)
FORMS = [
    ("allow", {"action": "allow"}, None),
    ("deny", {"action": "deny"}, None),
    ("allow tcp", {"action": "allow", "protocol": "tcp"}, None),
    ("deny udp", {"action": "deny", "protocol": "udp"}, None),
    ("allow tcp from ports 80,443,8000:8080 tag web cidr 10.0.0.0/8 to ports 22",
     {"action": "allow", "protocol": "tcp", "src_ports": [80, 443, "8000:8080"], "src_tag": "web",
      "src_net": "10.0.0.0/8", "dst_ports": [22]}, None),
    ("allow udp to ports 53 tag dns cidr 10.0.0.2/32",
     {"action": "allow", "protocol": "udp", "dst_ports": [53], "dst_tag": "dns",
      "dst_net": "10.0.0.2/32"}, None),
    ("allow tcp from tag web to tag db",
     {"action": "allow", "protocol": "tcp", "src_tag": "web", "dst_tag": "db"}, None),
    ("allow tcp from ports 1024-65535",
     {"action": "allow", "protocol": "tcp", "src_ports": ["1024:65535"]}, "allow tcp from ports 1024:65535"),
    ("deny icmp", {"action": "deny", "protocol": "icmp"}, None),
    ("deny icmp type 8", {"action": "deny", "protocol": "icmp", "icmp_type": 8}, None),
    ("deny icmp type 8 code 0", {"action": "deny", "protocol": "icmp", "icmp_type": 8, "icmp_code": 0}, None),
    ("allow icmp type 0 from tag mon cidr 10.0.0.0/8 to cidr 10.1.0.0/16",
     {"action": "allow", "protocol": "icmp", "icmp_type": 0, "src_tag": "mon", "src_net": "10.0.0.0/8",
      "dst_net": "10.1.0.0/16"}, None),
    ("allow icmpv6 type 128 code 0 from cidr fd00::/8",
     {"action": "allow", "protocol": "icmpv6", "icmp_type": 128, "icmp_code": 0,
      "src_net": "fd00::/8"}, None),
    ("allow icmpv6 to tag x", {"action": "allow", "protocol": "icmpv6", "dst_tag": "x"}, None),
    ("allow from tag foo", {"action": "allow", "src_tag": "foo"}, None),
    ("allow from cidr 192.168.0.0/16", {"action": "allow", "src_net": "192.168.0.0/16"}, None),
    ("allow to tag db cidr fd00::/64", {"action": "allow", "dst_tag": "db", "dst_net": "fd00::/64"}, None),
    ("deny from tag a cidr 10.0.0.0/8 to tag b cidr 10.2.0.0/16",
     {"action": "deny", "src_tag": "a", "src_net": "10.0.0.0/8", "dst_tag": "b",
      "dst_net": "10.2.0.0/16"}, None),
    # accepted beyond the canonical form
    ("allow from 192.168.0.0/16", {"action": "allow", "src_net": "192.168.0.0/16"},
     "allow from cidr 192.168.0.0/16"),
    ("allow to cidr 10.0.0.1", {"action": "allow", "dst_net": "10.0.0.1/32"}, "allow to cidr 10.0.0.1/32"),
    ("allow tcp to ports 22 from tag admin", {"action": "allow", "protocol": "tcp", "dst_ports": [22],
                                              "src_tag": "admin"}, "allow tcp from tag admin to ports 22"),
    ("allow from cidr 10.0.0.0/8 tag x", {"action": "allow", "src_tag": "x", "src_net": "10.0.0.0/8"},
     "allow from tag x cidr 10.0.0.0/8"),
    ("allow tcp from to ports 80", {"action": "allow", "protocol": "tcp", "dst_ports": [80]},
     "allow tcp to ports 80"),
]


@pytest.mark.parametrize("text, data, canonical", FORMS, ids=[f[0] for f in FORMS])
def test_every_form_parses_and_round_trips(text, data, canonical):
    rule = parse_rule(text.split())
    assert rule.to_dict() == data
    shown = format_rule(rule)
    assert shown == (canonical or text)
    assert parse_rule(shown.split()) == rule


BAD = [
    ("", "a rule needs an action: allow or deny"),
    ("permit tcp", "a rule starts with allow or deny, not 'permit'"),
    ("allow sctp", "unexpected 'sctp' in rule: expected tcp, udp, icmp, icmpv6, from or to"),
    ("allow tcp web", "unexpected 'web' in rule: expected from or to"),
    ("allow from tag a to tag b extra", "unexpected 'extra' after 'to': expected ports, tag or cidr"),
    ("allow from ports 80", "ports need protocol tcp or udp (e.g. allow tcp to ports 80)"),
    ("allow icmp to ports 80", "ports need protocol tcp or udp, not icmp"),
    ("allow tcp to ports", "'ports' needs a port list such as 80,443,8000:8080"),
    ("allow tcp to ports 80,,81", "invalid port ''"),
    ("allow tcp to ports 99999", "port 99999 is out of range: ports are 0-65535"),
    ("allow tcp to ports 90:80", "invalid port range '90:80': the minimum is above the maximum"),
    ("allow tcp to ports http", "invalid port 'http'"),
    ("allow from tag", "'tag' needs a tag name"),
    ("allow from tag a/b", "invalid source tag 'a/b'"),
    ("allow from cidr", "'cidr' needs a CIDR such as 10.0.0.0/8"),
    ("allow to cidr 10.0.0.0/40", "invalid destination CIDR '10.0.0.0/40'"),
    ("allow from 300.1.1.1/8", "invalid source CIDR '300.1.1.1/8'"),
    ("allow from tag a from tag b", "'from' appears twice in the rule"),
    ("allow from tag a tag b", "'from' has two tag parts"),
    ("allow type 8", "'type' needs protocol icmp or icmpv6 right before it"),
    ("allow tcp type 8", "'type' needs protocol icmp or icmpv6 right before it"),
    ("allow icmp code 0", "'code' needs protocol icmp or icmpv6 right before it"),
    ("allow icmp type", "'type' needs an ICMP type (0-254)"),
    ("allow icmp type 8 code", "'code' needs an ICMP code (0-255)"),
    ("allow icmp type 300", "invalid ICMP type 300: use a number 0-254"),
    ("allow icmp type echo", "invalid ICMP type 'echo'"),
    ("allow from tag a tcp", "the protocol (tcp) must come right after allow/deny"),
    ("allow ports 80", "'ports' must follow 'from' or 'to'"),
    ("allow icmp from cidr fd00::/8", "protocol icmp cannot match IPv6 CIDRs"),
    ("allow from cidr 10.0.0.0/8 to cidr fd00::/8", "of different IP versions"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[b[0] or "empty" for b in BAD])
def test_bad_rules_give_one_clear_line(text, message):
    with pytest.raises(RuleError) as err:
        parse_rule(text.split())
    assert message in str(err.value)
    assert "\n" not in str(err.value)
