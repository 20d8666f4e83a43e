"""The shape of the generated text: chains, their order, names, sets, stale clean-up."""
from __future__ import annotations

import random

import pytest

from plugin.dataplane import HOST_PREFIX
from profiles import generator as g
from profiles import names
from profiles.grammar import parse_rule
from profiles.model import Profile, Rule

WEB = Profile.new("web")
EP = g.LocalEndpoint("e" * 64, "wrneeeeeeeeeee", ["10.0.0.5"], ["fd00::5"], ["web"])
PI, PO = names.profile_chain("web", "inbound"), names.profile_chain("web", "outbound")
SET4 = names.tag_set("web", 4)


def chain(text: str, name: str) -> list[str]:
    """The rules of one chain, without the ``-A NAME`` prefix."""
    prefix = f"-A {name} "
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def declared(text: str) -> list[str]:
    return [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]


def test_the_interface_prefix_is_the_plugins():
    assert g.WORKLOAD_PREFIX == HOST_PREFIX


def test_default_profile_for_one_endpoint_v4():
    text = g.filter_rules([EP], {"web": WEB}, 4)
    lines = text.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert declared(text) == [*g.STATIC_CHAINS, "WARREN-FD-e", "WARREN-TD-e", "WARREN-FW-wrneeeeeeeeeee",
                              "WARREN-TW-wrneeeeeeeeeee", PI, PO]
    assert chain(text, g.FORWARD_CHAIN) == ["-i wrn+ -g WARREN-WL-FORWARD", "-o wrn+ -g WARREN-WL-FORWARD"]
    assert chain(text, g.WL_FORWARD) == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-m conntrack --ctstate INVALID -j DROP",
        "-j WARREN-DOCKER",
        "-i wrn+ -j WARREN-FROM-WL",
        '-o wrn+ -m conntrack --ctstate DNAT -m comment --comment "warren: published port" -j ACCEPT',
        "-o wrn+ -j WARREN-TO-WL",
        "-j ACCEPT"]
    assert chain(text, g.FROM_DISPATCH) == [
        "-i wrne+ -g WARREN-FD-e",
        '-m comment --comment "warren: unknown workload interface" -j DROP']
    assert chain(text, "WARREN-FD-e") == [
        "-i wrneeeeeeeeeee -g WARREN-FW-wrneeeeeeeeeee",
        '-m comment --comment "warren: unknown workload interface" -j DROP']
    assert chain(text, "WARREN-TD-e")[0] == "-o wrneeeeeeeeeee -g WARREN-TW-wrneeeeeeeeeee"
    assert chain(text, "WARREN-FW-wrneeeeeeeeeee") == [
        "-j MARK --set-xmark 0x0/0x7000000",
        "! -s 10.0.0.5/32 -m comment --comment \"warren: source is not the workload's address\" -j DROP",
        "-m set --match-set warren-control-v4 dst -j WARREN-FAILSAFE",
        f"-j {PO}",
        "-m mark --mark 0x1000000/0x1000000 -j RETURN",
        '-m comment --comment "warren: no profile allowed it" -j DROP']
    assert chain(text, "WARREN-TW-wrneeeeeeeeeee") == [
        "-j MARK --set-xmark 0x0/0x7000000",
        f"-j {PI}",
        "-m mark --mark 0x1000000/0x1000000 -j RETURN",
        '-m comment --comment "warren: no profile allowed it" -j DROP']
    assert chain(text, PI) == [f"-m set --match-set {SET4} src -g WARREN-ALLOW"]
    assert chain(text, PO) == ["-g WARREN-ALLOW"]
    assert chain(text, g.ALLOW) == ["-j MARK --set-xmark 0x1000000/0x1000000"]
    assert chain(text, g.FAILSAFE) == [
        "-m mark --mark 0x4000000/0x4000000 -j RETURN",
        '-m set --match-set warren-published-v4 dst,dst -m comment --comment "warren: a port a node publishes"'
        ' -j RETURN',
        '-m comment --comment "warren: control plane, no rule names it" -j DROP']


def test_every_chain_is_flushed_before_it_is_filled():
    text = g.filter_rules([EP], {"web": WEB}, 4)
    lines = text.splitlines()
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("-A "))
    assert {line[3:] for line in lines[:first_rule] if line.startswith("-F ")} == set(declared(text))


def test_input_chain_per_host_policy():
    drop = chain(g.filter_rules([EP], {"web": WEB}, 4), g.WL_INPUT)
    accept = chain(g.filter_rules([EP], {"web": WEB}, 4, host_policy="accept"), g.WL_INPUT)
    assert drop[:3] == accept[:3] == ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                                      "-m conntrack --ctstate INVALID -j DROP", "-j WARREN-FROM-WL"]
    assert drop[3:] == ["-m mark --mark 0x2000000/0x2000000 -j ACCEPT",
                        '-m comment --comment "warren: workload to host not allowed" -j DROP']
    assert accept[3:] == ["-j ACCEPT"]
    v6 = chain(g.filter_rules([EP], {"web": WEB}, 6), g.WL_INPUT)
    assert v6[2:8] == [f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in g.ND_TYPES]
    assert v6[8] == "-j WARREN-FROM-WL"


def test_rule_rendering():
    r = parse_rule("allow tcp from ports 80,8000:8080 tag web cidr 10.0.0.0/8 to ports 22 tag db".split())
    assert g.rule_lines("C", r, 4) == [
        f"-A C -p tcp -s 10.0.0.0/8 -m set --match-set {SET4} src "
        f"-m set --match-set {names.tag_set('db', 4)} dst "
        "-m multiport --sports 80,8000:8080 -m multiport --dports 22 -g WARREN-ALLOW"]
    assert g.rule_lines("C", r, 6) == []  # its CIDR is IPv4
    assert g.rule_lines("C", parse_rule(["deny", "icmp", "type", "3", "code", "1"]), 4) == [
        "-A C -p icmp -m icmp --icmp-type 3/1 -j DROP"]
    assert g.rule_lines("C", parse_rule(["deny", "icmp"]), 6) == []
    assert g.rule_lines("C", parse_rule("allow icmpv6 type 128".split()), 6) == [
        "-A C -p ipv6-icmp -m icmp6 --icmpv6-type 128 -g WARREN-ALLOW"]
    assert g.rule_lines("C", Rule.make("deny", src_tag="x"), 6) == [
        f"-A C -m set --match-set {names.tag_set('x', 6)} src -j DROP"]


def test_only_outbound_allows_naming_a_cidr_are_opening_rules():
    p = Profile("p", [], [parse_rule("allow to cidr 10.0.0.1".split())],
                [parse_rule("allow".split()), parse_rule("deny to cidr 10.0.0.3".split()),
                 parse_rule("allow tcp to ports 9091 cidr 10.0.0.2".split()),
                 parse_rule("allow to cidr 10.9.0.0/16".split()), parse_rule("allow to tag p".split()),
                 parse_rule("allow to cidr fd00::2/128".split())])
    assert all(line.endswith("-g WARREN-ALLOW") or line.endswith("-j DROP")
               for d in ("inbound", "outbound") for line in g.profile_lines(p, d, 4))
    ph = names.profile_chain("p", "open")
    assert ph.startswith("WARREN-PH-p-")
    assert g.opening_lines(p, 4) == [  # a single address opens the control plane too, a network only the host
        f"-A {ph} -p tcp -d 10.0.0.2/32 -m multiport --dports 9091 -j MARK --set-xmark 0x6000000/0x6000000",
        f"-A {ph} -d 10.9.0.0/16 -j MARK --set-xmark 0x2000000/0x2000000"]
    assert g.opening_lines(p, 6) == [f"-A {ph} -d fd00::2/128 -j MARK --set-xmark 0x6000000/0x6000000"]
    assert g.opening_lines(Profile.new("web"), 4) == []


@pytest.mark.parametrize("ports, chunks", [
    ([], [None]),
    ([1], ["1"]),
    (list(range(15)), [",".join(map(str, range(15)))]),
    (list(range(16)), [",".join(map(str, range(15))), "15"]),
    (["1:2"] * 7 + [3], ["1:2," * 7 + "3"]),
    (["1:2"] * 8, ["1:2," * 6 + "1:2", "1:2"]),
])
def test_multiport_holds_at_most_fifteen_slots(ports, chunks):
    assert g.port_chunks(ports) == chunks


def test_a_long_port_list_becomes_several_rules():
    r = Rule.make("allow", "tcp", src_ports=list(range(20)), dst_ports=list(range(100, 117)))
    assert len(g.rule_lines("C", r, 4)) == 4  # 2 source chunks x 2 destination chunks


def test_output_does_not_depend_on_input_order():
    eps = [g.LocalEndpoint(str(i), f"wrn{i:011d}", [f"10.0.0.{i}"], [], ["web"]) for i in range(1, 9)]
    text = g.filter_rules(eps, {"web": WEB}, 4)
    random.Random(1).shuffle(eps)
    assert g.filter_rules(eps, {"web": WEB}, 4) == text


def test_profiles_without_local_endpoints_make_no_chains():
    text = g.filter_rules([EP], {"web": WEB, "db": Profile.new("db")}, 4)
    assert names.profile_chain("db", "inbound") not in declared(text)


def test_stale_dynamic_chains_are_deleted_others_never():
    existing = ["WARREN-FW-wrnold", "WARREN-PI-gone-0123456789", g.FROM_DISPATCH, "WARREN-FORWARD",
                "WARREN-DNAT", "DOCKER", "INPUT", "WARREN-TW-wrneeeeeeeeeee"]
    text = g.filter_rules([EP], {"web": WEB}, 4, existing_chains=existing)
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("-X ")] == [
        "-X WARREN-FW-wrnold", "-X WARREN-PI-gone-0123456789"]
    last_rule = max(i for i, line in enumerate(lines) if line.startswith("-A "))
    assert lines.index("-X WARREN-FW-wrnold") > last_rule
    assert ":WARREN-FW-wrnold - [0:0]" in lines and "-F WARREN-FW-wrnold" in lines


def test_build_is_consistent():
    db = Profile("db", ["db"], [parse_rule("allow tcp from tag web to ports 5432".split())],
                 [parse_rule("deny to tag other".split()), parse_rule("allow from cidr 10.0.0.0/8".split())])
    ep = g.LocalEndpoint("d", "wrnddddddddddd", ["10.0.0.9"], [], ["db", "web"])
    rs = g.build([ep], {"db": db, "web": WEB}, {"web": ["10.0.0.5", "fd00::5"], "db": ["10.0.0.9"]}, 4)
    referenced = {w for line in rs.filter.splitlines() for w in line.split() if w.startswith("warren-")}
    assert referenced == rs.sets | {names.CONTROL_SET[4], names.PUBLISHED_SET[4]}
    assert "create warren-published-v4 hash:ip,port family inet" in rs.published
    assert rs.sets == {SET4, names.tag_set("other", 4)}
    assert "create warren-control-v4 hash:ip family inet" in rs.control
    created = {line.split()[1] for line in rs.ipsets.splitlines() if line.startswith("create ")}
    assert created == rs.sets | {names.TMP_SET[4]}
    assert rs.chains == set(declared(rs.filter))
    assert g.build([ep], {"db": db, "web": WEB}, {"web": ["fd00::5"]}, 6).sets == set()  # no v6 address
    ep = g.LocalEndpoint("d", "wrnddddddddddd", ["10.0.0.9"], ["fd00::9"], ["db", "web"])
    v6 = g.build([ep], {"db": db, "web": WEB}, {"web": ["10.0.0.5", "fd00::5"]}, 6)
    assert v6.sets == {names.tag_set("web", 6), names.tag_set("other", 6)}  # the cidr rule is v4-only
    assert "add warren-v6-tmp fd00::5" in v6.ipsets and "10.0.0.5" not in v6.ipsets


def test_ipset_text_refills_through_the_tmp_set():
    text = g.ipset_rules(["web"], {"web": ["10.0.0.2", "10.0.0.1/32", "fd00::1"]}, 4)
    assert text.splitlines() == [
        f"create warren-v4-tmp hash:ip family inet {g.SET_OPTIONS} -exist",
        f"create {SET4} hash:ip family inet {g.SET_OPTIONS} -exist",
        "flush warren-v4-tmp",
        "add warren-v4-tmp 10.0.0.1",
        "add warren-v4-tmp 10.0.0.2",
        f"swap warren-v4-tmp {SET4}",
        "destroy warren-v4-tmp"]


def test_stale_sets():
    rs = g.build([EP], {"web": WEB}, {}, 4)
    existing = [SET4, "warren-v4-old-0123456789", "warren-v6-old-0123456789", "warren-all-pools",
                names.TMP_SET[4], "other"]
    assert g.stale_sets(existing, rs) == ["warren-v4-old-0123456789"]


def test_tag_members_span_hosts_and_families():
    profiles = {"web": WEB, "db": Profile("db", ["db", "web"])}
    got = g.tag_members([(["10.0.0.1", "fd00::1"], ["web"]), (["10.9.0.1"], ["db"]),
                         (["10.9.0.2"], ["missing"])], profiles)
    assert got == {"web": {"10.0.0.1", "fd00::1", "10.9.0.1"}, "db": {"10.9.0.1"}}


@pytest.mark.parametrize("kwargs, message", [
    (dict(host_policy="maybe"), "invalid host policy 'maybe'"),
    (dict(version=5), "invalid IP version 5"),
])
def test_bad_parameters(kwargs, message):
    args = dict(endpoints=[EP], profiles={"web": WEB}, version=4) | kwargs
    with pytest.raises(ValueError, match=message):
        g.filter_rules(**args)


def test_bad_endpoints():
    twin = g.LocalEndpoint("other", EP.iface, ["10.0.0.6"], [], [])
    with pytest.raises(ValueError, match="two endpoints use interface wrneeeeeeeeeee"):
        g.filter_rules([EP, twin], {}, 4)
    with pytest.raises(ValueError, match="invalid interface name"):
        g.filter_rules([g.LocalEndpoint("x", "wrn with space", ["10.0.0.7"], [], [])], {}, 4)
    with pytest.raises(ValueError, match="invalid interface name"):
        g.filter_rules([g.LocalEndpoint("x", "wrn0123456789abc", ["10.0.0.7"], [], [])], {}, 4)
    # an address that is not one is left out (the endpoint sends nothing from it), never fatal
    text = g.filter_rules([g.LocalEndpoint("x", "wrnx", ["nope", "10.0.0.7"], [], [])], {}, 4)
    assert "! -s 10.0.0.7/32" in text and "nope" not in text
    text = g.filter_rules([g.LocalEndpoint("x", "wrnx", ["nope"], ["fd00::7"], [])], {}, 4)
    assert "WARREN-FW-wrnx" not in text
    assert g.invalid_addresses(["nope", "10.0.0.7", "fd00::7/128", ""]) == ["nope", ""]


# -- names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["web", "a" * 253, "x:y@z.w-v_u", "web-frontend"])
def test_names_are_short_stable_and_readable(name):
    for direction in ("inbound", "outbound"):
        c = names.profile_chain(name, direction)
        assert len(c) <= names.MAX_CHAIN and c == names.profile_chain(name, direction)
        assert c.startswith(("WARREN-PI-", "WARREN-PO-")) and names.is_dynamic_chain(c)
    for version in (4, 6):
        s = names.tag_set(name, version)
        assert len(s) <= names.MAX_SET and s.startswith(f"warren-v{version}-")
        assert names.is_tag_set(s, version)
    assert names.profile_chain("web-frontend", "inbound").startswith("WARREN-PI-web-fro-")
    assert names.tag_set("web-frontend", 4).startswith("warren-v4-web-fronte-")


def test_names_of_similar_profiles_differ():
    long = "a" * 100
    assert names.profile_chain(long + "1", "inbound") != names.profile_chain(long + "2", "inbound")
    assert names.tag_set(long + "1", 4) != names.tag_set(long + "2", 4)
    assert names.tag_set("tmp", 4) != names.TMP_SET[4] and not names.is_tag_set(names.TMP_SET[4], 4)
    assert len(names.from_endpoint_chain("wrn0123456789a")) <= names.MAX_CHAIN
    assert len(names.to_endpoint_chain("a" * 15)) <= names.MAX_CHAIN


# -- incremental writes --------------------------------------------------------------------

def test_restore_text_rewrites_only_changed_chains_and_deletes_unwanted_ones():
    other = g.LocalEndpoint("f" * 64, "wrnfffffffffff", ["10.0.0.6"], [], ["web"])
    before = g.chain_rules([EP, other], {"web": WEB}, 4)
    assert g.restore_text(before, before) is None  # nothing changed: nothing to write
    after = g.chain_rules([EP], {"web": WEB}, 4)
    text = g.restore_text(after, before)
    changed = {g.FROM_DISPATCH, g.TO_DISPATCH}
    gone = {"WARREN-FW-wrnfffffffffff", "WARREN-TW-wrnfffffffffff", "WARREN-FD-f", "WARREN-TD-f"}
    assert set(declared(text)) == changed | gone
    assert {line[3:] for line in text.splitlines() if line.startswith("-X ")} == gone
    assert chain(text, g.FROM_DISPATCH) == chain(g.filter_rules([EP], {"web": WEB}, 4), g.FROM_DISPATCH)
    # a new endpoint in an existing branch rewrites that branch only (and its own two chains)
    third = g.LocalEndpoint("e1" * 32, "wrnee11111111e", ["10.0.0.7"], [], ["web"])
    text = g.restore_text(g.chain_rules([EP, third], {"web": WEB}, 4), after)
    assert set(declared(text)) == {"WARREN-FD-e", "WARREN-TD-e", "WARREN-FW-wrnee11111111e",
                                   "WARREN-TW-wrnee11111111e"}
    # a chain warren never wrote but finds in the kernel is deleted too, foreign chains never
    text = g.restore_text(after, after, ["WARREN-PI-old-0123456789", "DOCKER-USER"])
    assert declared(text) == ["WARREN-PI-old-0123456789"]


def test_a_rule_change_rewrites_the_profile_chain_only():
    before = g.chain_rules([EP], {"web": WEB}, 4)
    web = WEB.with_rules("inbound", WEB.inbound_rules + [parse_rule("allow tcp to ports 80".split())])
    after = g.chain_rules([EP], {"web": web}, 4)
    assert declared(g.restore_text(after, before)) == [PI]


def test_ipset_text_for_chosen_sets():
    sets = g.set_members(["web"], {"web": ["10.0.0.7", "fd00::7", "10.0.0.5"]}, 4)
    assert sets == {SET4: ["10.0.0.5", "10.0.0.7"]}
    text = g.ipset_text(sets, 4)
    assert text == g.ipset_rules(["web"], {"web": ["10.0.0.7", "fd00::7", "10.0.0.5"]}, 4)
