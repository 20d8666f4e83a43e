"""The control plane is off limits to workloads (issue 12), and rules naming the host open it
whatever their place: packets walked through the generated rules by the netfilter model.

Layout: workload A (10.0.0.1, fd00::1) carries the default profile "web"; this host is
198.19.0.1 (and 2001:db8::1), another node 198.19.0.2, etcd 198.19.0.100; all three are
in the control-plane set. 8.8.8.8 is outside.
"""
from __future__ import annotations

import pytest

from profiles import generator as g
from profiles import names
from profiles.grammar import parse_rule
from profiles.model import Profile, RuleError

from .netfilter import Netfilter, Packet, ipsets

A = g.LocalEndpoint("a" * 64, "wrnaaaaaaaaaaa", ["10.0.0.1"], ["fd00::1"], ["web"])
THIS_HOST, OTHER_NODE, ETCD = "198.19.0.1", "198.19.0.2", "198.19.0.100"
CONTROL = [THIS_HOST, OTHER_NODE, ETCD, "2001:db8::1", "2001:db8::2"]


def web(*outbound: str) -> dict[str, Profile]:
    """Profile "web": the defaults, with ``outbound`` rules appended."""
    base = Profile.new("web")
    return {"web": base.with_rules("outbound", base.outbound_rules + [parse_rule(r.split())
                                                                       for r in outbound])}


def netfilter(profiles, version=4, host_policy="drop", endpoints=(A,), control=CONTROL,
              resolvers=()) -> Netfilter:
    rs = g.build(list(endpoints), profiles, {}, version, host_policy, control=control,
                 resolvers=resolvers)
    return Netfilter(rs.filter, ipsets(rs.control + rs.published + rs.ipsets))


def out(nf: Netfilter, dst: str, src: str = "10.0.0.1", **kw) -> str:
    """Workload A -> another host (FORWARD)."""
    return nf.run(g.FORWARD_CHAIN, Packet(src, dst, iin=A.iface, iout="eth0", **kw))


def to_host(nf: Netfilter, dst: str, src: str = "10.0.0.1", **kw) -> str:
    """Workload A -> this host (INPUT)."""
    return nf.run(g.INPUT_CHAIN, Packet(src, dst, iin=A.iface, **kw))


@pytest.mark.parametrize("port", [179, 2379, 9091, 22])
def test_the_control_plane_is_closed_whatever_the_profile_says(port):
    nf = netfilter(web())  # outbound: allow everything
    assert out(nf, "8.8.8.8", dport=port) == "ACCEPT"          # the control: outside is open
    assert out(nf, OTHER_NODE, dport=port) == "DROP"
    assert out(nf, ETCD, dport=port) == "DROP"
    assert to_host(nf, THIS_HOST, dport=port) == "DROP"
    nf = netfilter(web(), host_policy="accept")                # even with the host open
    assert to_host(nf, "169.254.1.1", dport=port) == "ACCEPT"  # the host, not its underlay address
    assert to_host(nf, THIS_HOST, dport=port) == "DROP"


def test_ipv6_control_plane_too():
    nf = netfilter(web(), version=6)
    assert out(nf, "2001:db8::2", src="fd00::1") == "DROP"
    assert out(nf, "2001:db8::99", src="fd00::1") == "ACCEPT"


def test_established_flows_are_not_cut():
    assert out(netfilter(web()), ETCD, dport=2379, ctstate="ESTABLISHED") == "ACCEPT"


def test_a_rule_naming_one_control_address_opens_exactly_that():
    nf = netfilter(web("allow tcp to ports 9091 cidr 198.19.0.2/32"))
    assert out(nf, OTHER_NODE, dport=9091) == "ACCEPT"
    assert out(nf, OTHER_NODE, dport=179) == "DROP"
    assert out(nf, OTHER_NODE, proto="udp", dport=9091) == "DROP"
    assert out(nf, ETCD, dport=9091) == "DROP"


def test_a_network_or_everything_does_not_open_the_control_plane():
    for rule in ("allow to cidr 198.19.0.0/24", "allow to cidr 0.0.0.0/0", "allow tcp to ports 2379"):
        nf = netfilter(web(rule))
        assert out(nf, ETCD, dport=2379) == "DROP", rule


def test_the_opening_is_checked_before_the_drop_and_the_profile_still_decides():
    # the opening rule's place does not matter (appended after the default "allow")...
    nf = netfilter(web("allow tcp to ports 2379 cidr 198.19.0.100"))
    assert out(nf, ETCD, dport=2379) == "ACCEPT"
    # ...but an earlier deny of the profile still wins: opening is necessary, not sufficient
    deny_first = Profile("web", ["web"], [], [parse_rule("deny tcp to ports 2379".split()),
                                             parse_rule("allow tcp to ports 2379 cidr 198.19.0.100".split())])
    assert out(netfilter({"web": deny_first}), ETCD, dport=2379) == "DROP"
    text = g.filter_rules([A], web("allow to cidr 198.19.0.100"), 4)
    fw = [line for line in text.splitlines() if line.startswith(f"-A WARREN-FW-{A.iface} ")]
    opening = fw.index(f"-A WARREN-FW-{A.iface} -j {names.profile_chain('web', 'open')}")
    failsafe = fw.index(f"-A WARREN-FW-{A.iface} -m set --match-set warren-control-v4 dst -j WARREN-FAILSAFE")
    profile = fw.index(f"-A WARREN-FW-{A.iface} -j {names.profile_chain('web', 'outbound')}")
    assert opening < failsafe < profile


def test_an_opening_rule_in_another_profile_of_the_endpoint_counts():
    profiles = {**web(), "ops": Profile("ops", [], [], [parse_rule("allow to cidr 198.19.0.100".split())])}
    ep = g.LocalEndpoint("a" * 64, A.iface, A.ipv4, A.ipv6, ["web", "ops"])
    assert out(netfilter(profiles, endpoints=[ep]), ETCD, dport=2379) == "ACCEPT"
    assert out(netfilter(profiles), ETCD, dport=2379) == "DROP"  # A without "ops"


def test_dns_to_a_resolver_node_stays_open():
    nf = netfilter(web(), resolvers=[OTHER_NODE])
    assert out(nf, OTHER_NODE, proto="udp", dport=53) == "ACCEPT"
    assert out(nf, OTHER_NODE, proto="tcp", dport=53) == "ACCEPT"
    assert out(nf, OTHER_NODE, proto="udp", dport=54) == "DROP"
    assert out(nf, ETCD, proto="udp", dport=53) == "DROP"
    assert out(netfilter(web()), OTHER_NODE, proto="udp", dport=53) == "DROP"


def test_the_control_set_skips_what_is_not_an_address():
    assert g.control_members(["198.19.0.2", "nope", "2001:db8::1", "198.19.0.2/32"], 4) == ["198.19.0.2"]
    sets = ipsets(g.control_text(["198.19.0.2", "", "x"], 4))
    assert sets == {"warren-control-v4": {"198.19.0.2"}}


# -- the host: rules naming its address open it, whatever their place (issue 12, item 7) --------

def test_an_appended_rule_naming_the_host_opens_it():
    nf = netfilter(web("allow tcp to ports 8080 cidr 169.254.1.1/32"))
    assert to_host(nf, "169.254.1.1", dport=8080) == "ACCEPT"
    assert to_host(nf, "169.254.1.1", dport=22) == "DROP"
    assert to_host(netfilter(web()), "169.254.1.1", dport=8080) == "DROP"
    # the host's underlay address is control plane: a rule naming it opens it too
    nf = netfilter(web("allow tcp to ports 8080 cidr 198.19.0.1/32"))
    assert to_host(nf, THIS_HOST, dport=8080) == "ACCEPT"
    assert to_host(nf, THIS_HOST, dport=22) == "DROP"


def test_a_network_naming_the_host_opens_it_but_not_its_control_addresses():
    nf = netfilter(web("allow to cidr 169.254.0.0/16", "allow to cidr 198.19.0.0/24"))
    assert to_host(nf, "169.254.1.1", dport=22) == "ACCEPT"
    assert to_host(nf, THIS_HOST, dport=22) == "DROP"


# -- ICMP types (issue 12, item 7): 255 is iptables' "any", so it is refused --------------------

@pytest.mark.parametrize("words", ["allow icmp type 255", "allow icmpv6 type 255", "allow icmp type 256"])
def test_an_icmp_type_that_would_match_any_is_refused(words):
    with pytest.raises(RuleError, match="invalid ICMP type") as err:
        parse_rule(words.split())
    assert "\n" not in str(err.value)


def test_icmp_type_254_and_code_255_compile_exactly():
    assert g.rule_lines("C", parse_rule("allow icmp type 254 code 255".split()), 4) == [
        "-A C -p icmp -m icmp --icmp-type 254/255 -g WARREN-ALLOW"]


def test_opening_chains_come_and_go_and_the_retired_chain_is_deleted():
    ph = names.profile_chain("web", "open")
    assert names.is_dynamic_chain(ph) and names.is_dynamic_chain("WARREN-ALLOW-HOST")
    first = g.chain_rules([A], web("allow to cidr 198.19.0.100"), 4)
    assert ph in first
    text = g.restore_text(g.chain_rules([A], web(), 4), first, existing_chains={"WARREN-ALLOW-HOST"})
    assert f"-X {ph}" in text and "-X WARREN-ALLOW-HOST" in text
