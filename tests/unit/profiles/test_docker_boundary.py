"""What the rules do at Warren's edges: Docker's bridges and --internal networks (netfilter model).

Host-local workloads A and B carry profile "web" (Calico's defaults), I is on an
--internal network with profile "quiet"; 10.9.0.0/16 and fd00:9::/64 are Warren's
pools, 10.9.8.8 a "web" workload on another host; docker0 and br-0123456789ab are
Docker's bridges (172.17.0.2, 172.18.0.2 their containers), eth0 the underlay,
8.8.8.8 the outside world.
"""
from __future__ import annotations

import pytest

from profiles import generator as g
from profiles.grammar import parse_rule
from profiles.model import Profile

from .netfilter import Netfilter, Packet, ipsets

A = g.LocalEndpoint("a" * 64, "wrnaaaaaaaaaaa", ["10.9.0.1"], ["fd00:9::1"], ["web"])
B = g.LocalEndpoint("b" * 64, "wrnbbbbbbbbbbb", ["10.9.0.2"], ["fd00:9::2"], ["web"])
I = g.LocalEndpoint("i" * 64, "wrniiiiiiiiiii", ["10.9.1.1"], ["fd00:9::11"], ["quiet"], internal=True)
BRIDGE = "br-0123456789ab"
POOLS = ["10.9.0.0/16", "fd00:9::/64"]
REMOTE_WEB = "10.9.8.8"


def profiles(web_inbound=None) -> dict[str, Profile]:
    web = Profile.new("web")
    if web_inbound is not None:
        web = Profile("web", ["web"], [parse_rule(r.split()) for r in web_inbound], web.outbound_rules)
    return {"web": web, "quiet": Profile("quiet", ["quiet"], [parse_rule(["allow"])],
                                         [parse_rule(["allow"])])}


def netfilter(version=4, host_policy="drop", bridges=(BRIDGE,), **kw) -> Netfilter:
    members = g.tag_members([(["10.9.0.1", "10.9.0.2", REMOTE_WEB, "fd00:9::1", "fd00:9::2"], ["web"])],
                            profiles(**kw))
    rs = g.build([A, B, I], profiles(**kw), members, version, host_policy, docker_bridges=bridges,
                 pools=POOLS)
    return Netfilter(rs.filter, ipsets(rs.pools + rs.control + rs.published + rs.ipsets))


def forward(nf: Netfilter, src, dst, iin="eth0", iout="eth0", **kw) -> str:
    return nf.run(g.FORWARD_CHAIN, Packet(src, dst, iin=iin, iout=iout, **kw))


# -- Docker's bridges ----------------------------------------------------------------------

@pytest.mark.parametrize("bridge,container", [("docker0", "172.17.0.2"), (BRIDGE, "172.18.0.2")])
def test_workload_to_docker_bridge_only_through_a_published_port(bridge, container):
    nf = netfilter()
    assert forward(nf, "10.9.0.1", container, iin=A.iface, iout=bridge) == "DROP"
    assert forward(nf, "10.9.0.1", container, iin=A.iface, iout=bridge, proto="icmp", icmp_type=8) == "DROP"
    # Docker's -p: the nat table DNATed host:8080 to the container
    assert forward(nf, "10.9.0.1", container, iin=A.iface, iout=bridge, ctstate="NEW,DNAT") == "ACCEPT"
    # the reply of an allowed connection
    assert forward(nf, container, "10.9.0.1", iin=bridge, iout=A.iface, ctstate="ESTABLISHED") == "ACCEPT"


@pytest.mark.parametrize("bridge", ["docker0", BRIDGE])
def test_docker_bridge_to_workload_only_through_a_published_port_whatever_the_profile(bridge):
    for nf in (netfilter(), netfilter(web_inbound=["allow"])):   # even a profile open to all
        assert forward(nf, "172.17.0.2", "10.9.0.1", iin=bridge, iout=A.iface) == "DROP"
        assert forward(nf, "172.17.0.2", "10.9.0.1", iin=bridge, iout=A.iface, proto="udp") == "DROP"
    # Warren's -p (WARREN-DNAT) reached from a bridge container
    nf = netfilter()
    assert forward(nf, "172.17.0.2", "10.9.0.1", iin=bridge, iout=A.iface, ctstate="NEW,DNAT") == "ACCEPT"
    assert forward(nf, "10.9.0.1", "172.17.0.2", iin=A.iface, iout=bridge, ctstate="ESTABLISHED") == "ACCEPT"


def test_the_senders_outbound_policy_still_applies_to_a_published_bridge_port():
    nf = netfilter()
    deny = Profile("web", ["web"], Profile.new("web").inbound_rules, [parse_rule("deny tcp to ports 80".split()),
                                                                      parse_rule(["allow"])])
    members = g.tag_members([(["10.9.0.1"], ["web"])], {"web": deny})
    rs = g.build([A], {"web": deny}, members, 4, docker_bridges=[BRIDGE], pools=POOLS)
    nf = Netfilter(rs.filter, ipsets(rs.pools + rs.control + rs.published + rs.ipsets))
    assert forward(nf, "10.9.0.1", "172.18.0.2", iin=A.iface, iout=BRIDGE, ctstate="NEW,DNAT") == "DROP"
    assert forward(nf, "10.9.0.1", "172.18.0.2", iin=A.iface, iout=BRIDGE, ctstate="NEW,DNAT",
                   dport=81) == "ACCEPT"


def test_positive_controls_warren_traffic_elsewhere_is_untouched():
    nf = netfilter()
    assert forward(nf, "10.9.0.1", "10.9.0.2", iin=A.iface, iout=B.iface) == "ACCEPT"
    assert forward(nf, "10.9.0.1", "8.8.8.8", iin=A.iface) == "ACCEPT"          # nat-outgoing, the outside
    assert forward(nf, REMOTE_WEB, "10.9.0.1", iout=A.iface) == "ACCEPT"        # from another host
    # Docker's own traffic is Docker's business: Warren's chain returns without a verdict
    assert forward(nf, "172.17.0.2", "8.8.8.8", iin="docker0") == "RETURN"
    assert forward(nf, "172.17.0.2", "172.18.0.2", iin="docker0", iout=BRIDGE) == "RETURN"


def test_docker0_is_always_docker_s_and_a_bridge_nobody_named_is_the_outside():
    nf = netfilter(bridges=())
    assert forward(nf, "10.9.0.1", "172.17.0.2", iin=A.iface, iout="docker0") == "DROP"
    assert forward(nf, "10.9.0.1", "172.18.0.2", iin=A.iface, iout=BRIDGE) == "ACCEPT"


def test_docker_bridges_over_ipv6():
    nf = netfilter(version=6)
    assert forward(nf, "fd00:9::1", "fd00:17::2", iin=A.iface, iout=BRIDGE) == "DROP"
    assert forward(nf, "fd00:17::2", "fd00:9::1", iin=BRIDGE, iout=A.iface, proto="ipv6-icmp",
                   icmp_type=128) == "DROP"
    assert forward(nf, "fd00:9::1", "fd00:17::2", iin=A.iface, iout=BRIDGE, ctstate="NEW,DNAT") == "ACCEPT"
    assert forward(nf, "fd00:9::1", "fd00:9::2", iin=A.iface, iout=B.iface) == "ACCEPT"


def test_bad_bridge_names_are_refused():
    with pytest.raises(ValueError, match="invalid interface name"):
        g.chain_rules([A], profiles(), 4, docker_bridges=["br 0"])


# -- --internal networks -------------------------------------------------------------------

def test_internal_endpoints_reach_the_pools_only():
    nf = netfilter()
    assert forward(nf, "10.9.1.1", REMOTE_WEB, iin=I.iface) == "ACCEPT"           # a peer, another host
    assert forward(nf, "10.9.1.1", "10.9.0.2", iin=I.iface, iout=B.iface) == "DROP"  # B's profile says no
    assert forward(nf, "10.9.1.1", "8.8.8.8", iin=I.iface) == "DROP"              # the outside (no NAT)
    assert forward(nf, "10.9.1.1", "8.8.8.8", iin=I.iface, proto="udp", dport=53) == "DROP"
    # a Docker -p on this host is DNATed to a bridge container: outside the pools
    assert forward(nf, "10.9.1.1", "172.17.0.2", iin=I.iface, iout="docker0", ctstate="NEW,DNAT") == "DROP"
    # control: the same profile on a non-internal endpoint reaches the outside
    assert forward(nf, "10.9.0.1", "8.8.8.8", iin=A.iface) == "ACCEPT"


def test_nothing_outside_the_pools_reaches_an_internal_endpoint():
    nf = netfilter()
    assert forward(nf, REMOTE_WEB, "10.9.1.1", iout=I.iface) == "ACCEPT"           # "quiet" allows all
    assert forward(nf, "8.8.8.8", "10.9.1.1", iout=I.iface) == "DROP"
    assert forward(nf, "192.0.2.7", "10.9.1.1", iout=I.iface, proto="icmp", icmp_type=8) == "DROP"


@pytest.mark.parametrize("host_policy,verdict", [("drop", "DROP"), ("accept", "ACCEPT")])
def test_internal_endpoints_reach_the_host_as_the_rules_say(host_policy, verdict):
    nf = netfilter(host_policy=host_policy)
    assert nf.run(g.INPUT_CHAIN, Packet("10.9.1.1", "10.0.0.254", iin=I.iface)) == verdict


def test_internal_over_ipv6():
    nf = netfilter(version=6)
    assert forward(nf, "fd00:9::11", "fd00:9::99", iin=I.iface) == "ACCEPT"
    assert forward(nf, "fd00:9::11", "2001:db8::1", iin=I.iface) == "DROP"
    assert forward(nf, "2001:db8::1", "fd00:9::11", iout=I.iface) == "DROP"


def test_pools_text_refills_the_set_atomically():
    text = g.pools_text(["10.9.0.0/16", "fd00:9::/64", "10.8.0.0/24"], 4)
    assert text.splitlines() == [
        "create warren-pools-v4 hash:net family inet -exist",
        "create warren-pools-v4-tmp hash:net family inet -exist",
        "flush warren-pools-v4-tmp", "add warren-pools-v4-tmp 10.8.0.0/24",
        "add warren-pools-v4-tmp 10.9.0.0/16", "swap warren-pools-v4-tmp warren-pools-v4",
        "destroy warren-pools-v4-tmp"]
    assert ipsets(text) == {"warren-pools-v4": {"10.8.0.0/24", "10.9.0.0/16"}}
    assert "fd00:9::/64" in g.pools_text(["10.9.0.0/16", "fd00:9::/64"], 6)
