"""What the generated rules *do*: packets walked through them by a netfilter model.

Layout of the scenarios: host-local workloads A and B carry profile "web"
(Calico defaults), C carries "db"; 10.1.1.1 is a "web" workload on another
host, 8.8.8.8 and 1.2.3.4 are outside.
"""
from __future__ import annotations

import pytest

from profiles import generator as g
from profiles.grammar import parse_rule
from profiles.model import Profile

from .netfilter import Netfilter, Packet, ipsets

A = g.LocalEndpoint("a" * 64, "wrnaaaaaaaaaaa", ["10.0.0.1"], ["fd00::1"], ["web"])
B = g.LocalEndpoint("b" * 64, "wrnbbbbbbbbbbb", ["10.0.0.2"], ["fd00::2"], ["web"])
C = g.LocalEndpoint("c" * 64, "wrnccccccccccc", ["10.0.0.3"], [], ["db"])
REMOTE_WEB = "10.1.1.1"


def rule(text: str):
    return parse_rule(text.split())


def profile(name: str, inbound=(), outbound=(), tags=None) -> Profile:
    return Profile(name, [name] if tags is None else tags,
                   [rule(r) for r in inbound], [rule(r) for r in outbound])


def base_profiles() -> dict[str, Profile]:
    return {"web": Profile.new("web"), "db": Profile.new("db")}


def members(endpoints, profiles, remote=()) -> dict[str, set[str]]:
    pairs = [(list(e.ipv4) + list(e.ipv6), e.profiles) for e in endpoints] + list(remote)
    return g.tag_members(pairs, profiles)


def netfilter(endpoints, profiles, version=4, host_policy="drop", remote=()) -> Netfilter:
    rs = g.build(endpoints, profiles, members(endpoints, profiles, remote), version, host_policy)
    return Netfilter(rs.filter, ipsets(rs.control + rs.published + rs.ipsets))


def forward(nf: Netfilter, src: str, dst: str, iin: str = "eth0", iout: str = "eth0", **kw) -> str:
    return nf.run(g.FORWARD_CHAIN, Packet(src, dst, iin=iin, iout=iout, **kw))


def to_host(nf: Netfilter, src: str, iin: str, dst: str = "10.0.0.254", **kw) -> str:
    return nf.run(g.INPUT_CHAIN, Packet(src, dst, iin=iin, **kw))


@pytest.fixture
def nf():
    return netfilter([A, B, C], base_profiles(), remote=[([REMOTE_WEB], ["web"])])


# -- the defaults of a new profile ---------------------------------------------------------

def test_members_of_a_profile_reach_each_other(nf):
    assert forward(nf, "10.0.0.1", "10.0.0.2", iin=A.iface, iout=B.iface) == "ACCEPT"


def test_others_cannot_reach_in(nf):
    assert forward(nf, "10.0.0.3", "10.0.0.2", iin=C.iface, iout=B.iface) == "DROP"
    assert forward(nf, "1.2.3.4", "10.0.0.2", iout=B.iface) == "DROP"


def test_a_member_on_another_host_is_let_in_through_the_tag_set(nf):
    assert forward(nf, REMOTE_WEB, "10.0.0.2", iout=B.iface) == "ACCEPT"


def test_members_reach_out(nf):
    assert forward(nf, "10.0.0.2", "8.8.8.8", iin=B.iface) == "ACCEPT"
    assert forward(nf, "10.0.0.3", "8.8.8.8", iin=C.iface, proto="udp", dport=53) == "ACCEPT"


def test_established_and_invalid_are_decided_first(nf):
    assert forward(nf, "1.2.3.4", "10.0.0.2", iout=B.iface, ctstate="ESTABLISHED") == "ACCEPT"
    assert forward(nf, "1.2.3.4", "10.0.0.2", iout=B.iface, ctstate="RELATED") == "ACCEPT"
    assert forward(nf, "10.0.0.1", "10.0.0.2", iin=A.iface, iout=B.iface, ctstate="INVALID") == "DROP"
    assert nf.trace == [f"-A {g.FORWARD_CHAIN} -i wrn+ -g {g.WL_FORWARD}",  # nothing else was walked
                        f"-A {g.WL_FORWARD} -m conntrack --ctstate INVALID -j DROP"]


def test_traffic_of_other_interfaces_is_left_alone(nf):
    assert forward(nf, "192.168.1.1", "192.168.2.1", iin="docker0", iout="eth0") == "RETURN"
    assert nf.run(g.INPUT_CHAIN, Packet("192.168.1.1", "192.168.1.2", iin="eth0")) == "RETURN"


def test_unknown_workload_interfaces_are_dropped(nf):
    assert forward(nf, "10.0.0.9", "8.8.8.8", iin="wrnzzzzzzzzzzz") == "DROP"
    assert forward(nf, "8.8.8.8", "10.0.0.9", iout="wrnzzzzzzzzzzz") == "DROP"


# -- anti-spoofing ---------------------------------------------------------------------------

def test_a_workload_cannot_send_from_another_address(nf):
    assert forward(nf, "10.0.0.2", "8.8.8.8", iin=A.iface) == "DROP"      # B's address, A's interface
    assert forward(nf, "10.0.0.99", "10.0.0.2", iin=A.iface, iout=B.iface) == "DROP"
    assert to_host(nf, "10.0.0.99", A.iface) == "DROP"


def test_a_workload_with_several_addresses_may_use_each():
    multi = g.LocalEndpoint("m", "wrnmmmmmmmmmmm", ["10.0.0.7", "10.0.0.8/32"], [], ["web"])
    nf = netfilter([multi], base_profiles())
    assert forward(nf, "10.0.0.7", "8.8.8.8", iin=multi.iface) == "ACCEPT"
    assert forward(nf, "10.0.0.8", "8.8.8.8", iin=multi.iface) == "ACCEPT"
    assert forward(nf, "10.0.0.9", "8.8.8.8", iin=multi.iface) == "DROP"


def test_a_workload_without_an_address_of_the_family_sends_nothing_of_it():
    nf = netfilter([C], base_profiles(), version=6)
    assert forward(nf, "fd00::3", "2001:db8::1", iin=C.iface) == "DROP"


# -- order: profiles and rules -------------------------------------------------------------------

def ordered(*names: str) -> dict:
    profiles = {"no-ssh": profile("no-ssh", inbound=["deny tcp to ports 22"]),
                "open": profile("open", inbound=["allow"]), **base_profiles()}
    ep = g.LocalEndpoint("o", "wrnooooooooooo", ["10.0.0.5"], [], list(names))
    return {"nf": netfilter([ep], profiles), "iface": ep.iface}


@pytest.mark.parametrize("dport, verdict", [(22, "DROP"), (80, "ACCEPT")])
def test_a_deny_in_an_earlier_profile_beats_a_later_allow(dport, verdict):
    s = ordered("no-ssh", "open")
    assert forward(s["nf"], "1.2.3.4", "10.0.0.5", iout=s["iface"], dport=dport) == verdict


def test_an_allow_in_an_earlier_profile_beats_a_later_deny():
    s = ordered("open", "no-ssh")
    assert forward(s["nf"], "1.2.3.4", "10.0.0.5", iout=s["iface"], dport=22) == "ACCEPT"


def test_a_profile_that_decides_nothing_passes_to_the_next():
    s = ordered("no-ssh", "web")
    assert forward(s["nf"], "1.2.3.4", "10.0.0.5", iout=s["iface"], dport=80) == "DROP"  # web: not a member
    s = ordered("web", "open")
    assert forward(s["nf"], "1.2.3.4", "10.0.0.5", iout=s["iface"], dport=80) == "ACCEPT"


def test_within_a_profile_the_first_matching_rule_wins():
    p = profile("p", inbound=["allow tcp from cidr 1.2.3.0/24 to ports 22", "deny tcp", "allow"])
    ep = g.LocalEndpoint("p", "wrnppppppppppp", ["10.0.0.5"], [], ["p"])
    nf = netfilter([ep], {"p": p})
    assert forward(nf, "1.2.3.4", "10.0.0.5", iout=ep.iface, dport=22) == "ACCEPT"
    assert forward(nf, "1.2.3.4", "10.0.0.5", iout=ep.iface, dport=23) == "DROP"
    assert forward(nf, "9.9.9.9", "10.0.0.5", iout=ep.iface, dport=22) == "DROP"
    assert forward(nf, "9.9.9.9", "10.0.0.5", iout=ep.iface, proto="udp", dport=22) == "ACCEPT"


def test_no_profile_or_a_missing_one_means_drop():
    bare = g.LocalEndpoint("n", "wrnnnnnnnnnnnn", ["10.0.0.5"], [], [])
    missing = g.LocalEndpoint("x", "wrnxxxxxxxxxxx", ["10.0.0.6"], [], ["gone", "web"])
    nf = netfilter([bare, missing], base_profiles())
    assert forward(nf, "10.0.0.5", "8.8.8.8", iin=bare.iface) == "DROP"
    assert forward(nf, "10.0.0.6", "8.8.8.8", iin=missing.iface) == "DROP"  # fail closed


def test_the_senders_allow_does_not_open_the_receiver():
    profiles = {"out": profile("out", outbound=["allow"]), "closed": profile("closed")}
    a = g.LocalEndpoint("a", "wrnaaaaaaaaaaa", ["10.0.0.1"], [], ["out"])
    b = g.LocalEndpoint("b", "wrnbbbbbbbbbbb", ["10.0.0.2"], [], ["closed"])
    nf = netfilter([a, b], profiles)
    assert forward(nf, "10.0.0.1", "10.0.0.2", iin=a.iface, iout=b.iface) == "DROP"
    assert forward(nf, "10.0.0.1", "8.8.8.8", iin=a.iface) == "ACCEPT"


def test_outbound_deny_to_a_tag():
    profiles = {"w": profile("w", inbound=["allow"], outbound=["deny to tag secret", "allow"]),
                "secret": profile("secret", inbound=["allow"])}
    w = g.LocalEndpoint("w", "wrnwwwwwwwwwww", ["10.0.0.1"], [], ["w"])
    s = g.LocalEndpoint("s", "wrnsssssssssss", ["10.0.0.2"], [], ["secret"])
    nf = netfilter([w, s], profiles, remote=[(["10.9.9.9"], ["secret"])])
    assert forward(nf, "10.0.0.1", "10.0.0.2", iin=w.iface, iout=s.iface) == "DROP"
    assert forward(nf, "10.0.0.1", "10.9.9.9", iin=w.iface) == "DROP"
    assert forward(nf, "10.0.0.1", "10.9.9.10", iin=w.iface) == "ACCEPT"


# -- matches -------------------------------------------------------------------------------------

def test_ports_lists_ranges_and_more_than_fifteen():
    ports = ",".join(str(p) for p in range(1000, 1018)) + ",2000:2010"
    p = profile("p", inbound=[f"allow tcp from ports 5,7 to ports {ports}"])
    ep = g.LocalEndpoint("p", "wrnppppppppppp", ["10.0.0.5"], [], ["p"])
    nf = netfilter([ep], {"p": p})
    go = lambda **kw: forward(nf, "1.2.3.4", "10.0.0.5", iout=ep.iface, **kw)  # noqa: E731
    assert go(sport=5, dport=1017) == "ACCEPT"
    assert go(sport=7, dport=2005) == "ACCEPT"
    assert go(sport=6, dport=1000) == "DROP"
    assert go(sport=5, dport=1018) == "DROP"
    assert go(sport=5, dport=1000, proto="udp") == "DROP"


def test_icmp_type_and_code():
    p = profile("p", inbound=["allow icmp type 8 code 0", "allow icmpv6 type 128"])
    ep = g.LocalEndpoint("p", "wrnppppppppppp", ["10.0.0.5"], ["fd00::5"], ["p"])
    nf4, nf6 = netfilter([ep], {"p": p}, 4), netfilter([ep], {"p": p}, 6)
    ping = dict(proto="icmp", icmp_type=8, icmp_code=0)
    assert forward(nf4, "1.2.3.4", "10.0.0.5", iout=ep.iface, **ping) == "ACCEPT"
    assert forward(nf4, "1.2.3.4", "10.0.0.5", iout=ep.iface, **{**ping, "icmp_type": 13}) == "DROP"
    ping6 = dict(proto="ipv6-icmp", icmp_type=128, icmp_code=0)
    assert forward(nf6, "2001:db8::1", "fd00::5", iout=ep.iface, **ping6) == "ACCEPT"
    assert forward(nf6, "2001:db8::1", "fd00::5", iout=ep.iface, proto="tcp") == "DROP"


# -- workload -> host ----------------------------------------------------------------------------

def test_the_host_is_closed_to_workloads_by_default(nf):
    assert to_host(nf, "10.0.0.1", A.iface, dport=22) == "DROP"
    assert to_host(nf, "10.0.0.1", A.iface, ctstate="ESTABLISHED") == "ACCEPT"


def test_host_policy_accept_lets_the_outbound_policy_decide():
    profiles = {**base_profiles(), "quiet": profile("quiet", outbound=["deny tcp to ports 22", "allow"])}
    q = g.LocalEndpoint("q", "wrnqqqqqqqqqqq", ["10.0.0.4"], [], ["quiet"])
    nf = netfilter([A, q], profiles, host_policy="accept")
    assert to_host(nf, "10.0.0.1", A.iface, dport=22) == "ACCEPT"
    assert to_host(nf, "10.0.0.4", q.iface, dport=22) == "DROP"
    assert to_host(nf, "10.0.0.4", q.iface, dport=80) == "ACCEPT"
    assert to_host(nf, "10.0.0.99", q.iface, dport=80) == "DROP"  # anti-spoofing still applies


def test_a_rule_naming_the_host_opens_it():
    dns = profile("dns", outbound=["allow udp to ports 53 cidr 10.0.0.254/32", "allow"])
    ep = g.LocalEndpoint("d", "wrnddddddddddd", ["10.0.0.5"], [], ["dns"])
    nf = netfilter([ep], {"dns": dns})
    assert to_host(nf, "10.0.0.5", ep.iface, proto="udp", dport=53) == "ACCEPT"
    assert to_host(nf, "10.0.0.5", ep.iface, proto="udp", dport=54) == "DROP"
    assert to_host(nf, "10.0.0.5", ep.iface, dst="10.0.0.253", proto="udp", dport=53) == "DROP"


def test_ipv6_neighbour_discovery_reaches_the_host():
    nf = netfilter([A], base_profiles(), version=6)
    ns = dict(proto="ipv6-icmp", icmp_type=135, icmp_code=0)
    assert to_host(nf, "fe80::1", A.iface, dst="fe80::2", **ns) == "ACCEPT"
    assert to_host(nf, "fe80::1", A.iface, dst="fe80::2", proto="udp", dport=547) == "DROP"
    assert forward(nf, "fd00::1", "2001:db8::1", iin=A.iface) == "ACCEPT"


def test_membership_changes_touch_only_the_sets():
    profiles = base_profiles()
    one = g.build([A, B], profiles, {"web": {"10.0.0.1"}}, 4)
    two = g.build([A, B], profiles, {"web": {"10.0.0.1", "10.0.0.2", "10.7.7.7"}}, 4)
    assert one.filter == two.filter and one.ipsets != two.ipsets
    sets = ipsets(one.control + one.published + one.ipsets)
    sets = ipsets(two.ipsets, sets)  # a refill over existing sets
    nf = Netfilter(two.filter, sets)
    assert forward(nf, "10.7.7.7", "10.0.0.1", iout=A.iface) == "ACCEPT"
    assert sets[g.names.tag_set("web", 4)] == {"10.0.0.1", "10.0.0.2", "10.7.7.7"}
    assert g.names.TMP_SET[4] not in sets


# -- published ports (docker run -p) ---------------------------------------------------------

def test_a_published_port_lets_anyone_in(nf):
    assert forward(nf, "1.2.3.4", "10.0.0.2", iout=B.iface) == "DROP"
    assert forward(nf, "1.2.3.4", "10.0.0.2", iout=B.iface, ctstate="NEW,DNAT") == "ACCEPT"


def test_a_published_port_does_not_bypass_the_senders_outbound_policy(nf):
    assert forward(nf, "10.0.0.9", "10.0.0.2", iin=A.iface, iout=B.iface, ctstate="NEW,DNAT") == "DROP"
