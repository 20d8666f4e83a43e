"""The generated text is accepted by the real iptables-restore and ipset, in a test-made netns.

Only syntax and consistency are checked here (the semantics are in the unit
tests); the agent that applies the rules on a node is not built yet.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from profiles import generator as g
from profiles import names
from profiles.grammar import parse_rule
from profiles.model import Profile
from tests.support.netns import sh, temp_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("iptables-restore", "ip6tables-restore", "ipset")),
    reason="needs root, iptables-restore, ip6tables-restore and ipset")

TOOLS = {4: "iptables", 6: "ip6tables"}


def profiles() -> dict[str, Profile]:
    rules = ["deny tcp to ports 22", "allow tcp from ports " + ",".join(map(str, range(1, 20))) + " tag web",
             "allow icmp type 8 code 0", "allow icmpv6 type 128", "allow udp to ports 53:60 cidr 10.0.0.1",
             "deny from cidr fd00::/8 to tag db"]
    db = Profile("db", ["db"], [parse_rule(r.split()) for r in rules],
                 [parse_rule("allow udp to ports 53 cidr 10.0.0.254/32".split()),
                  parse_rule("allow to tag db".split()), parse_rule(["allow"])])
    return {"web": Profile.new("web"), "db": db}


ENDPOINTS = [g.LocalEndpoint("a", "wrnaaaaaaaaaaa", ["10.0.0.1"], ["fd00::1"], ["web"]),
             g.LocalEndpoint("b", "wrnbbbbbbbbbbb", ["10.0.0.2", "10.0.0.3"], [], ["db", "web", "gone"])]
MEMBERS = {"web": {"10.0.0.1", "fd00::1", "10.1.1.1"}, "db": {"10.0.0.2"}}


def apply(ns: str, rs: g.Ruleset) -> None:
    """In the agent's order: sets first (rules reference them), then the chains."""
    _restore(ns, ["ipset", "restore"], rs.control)
    _restore(ns, ["ipset", "restore"], rs.published)
    _restore(ns, ["ipset", "restore"], rs.ipsets)
    _restore(ns, [f"{TOOLS[rs.version]}-restore", "--noflush"], rs.filter)


def _restore(ns: str, argv: list[str], text: str) -> None:
    result = subprocess.run(["ip", "netns", "exec", ns, *argv], input=text, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def chains(ns: str, version: int) -> set[str]:
    out = sh(ns, f"{TOOLS[version]}-save", "-t", "filter").stdout
    return {line[1:].split()[0] for line in out.splitlines() if line.startswith(":WARREN-")}


@pytest.mark.parametrize("version", [4, 6])
def test_rules_and_sets_load_and_reload(version):
    with temp_netns("wpr") as ns:
        first = g.build(ENDPOINTS, profiles(), MEMBERS, version)
        apply(ns, first)
        assert chains(ns, version) == set(first.chains)
        members = sh(ns, "ipset", "list", names.tag_set("web", version)).stdout
        assert ("10.1.1.1" in members) == (version == 4) and ("fd00::1" in members) == (version == 6)

        # one endpoint leaves, a tag gains a member: stale chains go, sets are refilled
        second = g.build(ENDPOINTS[:1], profiles(), {"web": {"10.0.0.9", "fd00::9"}}, version,
                         host_policy="accept", existing_chains=chains(ns, version))
        apply(ns, second)
        assert chains(ns, version) == set(second.chains)
        members = sh(ns, "ipset", "list", names.tag_set("web", version)).stdout
        assert "10.1.1.1" not in members and "fd00::1" not in members
        sets = sh(ns, "ipset", "list", "-n").stdout.split()
        stale = g.stale_sets(sets, second)
        # db's only member endpoint has no IPv6 address, so IPv6 never had a db set
        assert stale == ([names.tag_set("db", version)] if version == 4 else [])
        for name in stale:
            sh(ns, "ipset", "destroy", name)
        assert names.TMP_SET[version] not in sets


@pytest.mark.parametrize("version", [4, 6])
def test_docker_boundary_and_internal_endpoints_load(version):
    internal = g.LocalEndpoint("i", "wrniiiiiiiiiii", ["10.0.1.1"], ["fd00:1::1"], ["web"], internal=True)
    with temp_netns("wpd") as ns:
        rs = g.build([*ENDPOINTS, internal], profiles(), MEMBERS, version,
                     docker_bridges=["br-0123456789ab", "mybridge"], pools=["10.0.0.0/16", "fd00::/48"])
        _restore(ns, ["ipset", "restore"], rs.pools)
        apply(ns, rs)
        saved = sh(ns, f"{TOOLS[version]}-save", "-t", "filter").stdout
        assert "-A WARREN-DOCKER -o mybridge -m conntrack ! --ctstate DNAT" in saved
        assert "--match-set warren-pools-v%d dst -m addrtype ! --dst-type LOCAL" % version in saved
        listed = sh(ns, "ipset", "list", names.POOLS_SET[version]).stdout
        assert ("10.0.0.0/16" in listed) == (version == 4) and ("fd00::/48" in listed) == (version == 6)
        _restore(ns, ["ipset", "restore"], g.pools_text(["10.0.0.0/16", "10.5.0.0/24"], version))
        assert ("10.5.0.0/24" in sh(ns, "ipset", "list", names.POOLS_SET[version]).stdout) == (version == 4)


@pytest.mark.parametrize("version", [4, 6])
def test_failsafe_opening_rules_and_the_retired_chain(version):
    control = ["198.19.0.1", "198.19.0.2", "2001:db8::1", "2001:db8::2"]
    opened = {"db": profiles()["db"].with_rules("outbound", [
        parse_rule("allow tcp to ports 9091 cidr 198.19.0.2/32".split()),
        parse_rule("allow to cidr 2001:db8::2/128".split()), parse_rule(["allow"])]), "web": Profile.new("web")}
    with temp_netns("wpf") as ns:
        sh(ns, TOOLS[version], "-N", "WARREN-ALLOW-HOST")  # what an older agent left
        rs = g.build(ENDPOINTS, opened, MEMBERS, version, control=control, resolvers=["198.19.0.2", "2001:db8::2"],
                     existing_chains=chains(ns, version))
        apply(ns, rs)
        saved = sh(ns, f"{TOOLS[version]}-save", "-t", "filter").stdout
        assert f"-A WARREN-FW-wrnaaaaaaaaaaa -m set --match-set warren-control-v{version} dst -j WARREN-FAILSAFE" in saved
        assert "-A WARREN-FAILSAFE -m mark --mark 0x4000000/0x4000000 -j RETURN" in saved
        assert "--dports 53" in saved and "WARREN-ALLOW-HOST" not in saved
        opening = names.profile_chain("db", "open")
        assert (f"-A {opening} -d 198.19.0.2/32 -p tcp -m multiport --dports 9091 -j MARK --set-xmark"
                in saved) == (version == 4)
        listed = sh(ns, "ipset", "list", names.CONTROL_SET[version]).stdout
        assert ("198.19.0.2" in listed) == (version == 4) and ("2001:db8::2" in listed) == (version == 6)
