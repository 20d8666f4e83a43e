"""Profiles -> iptables and ipset rules, as pure functions (no kernel needed).

Input: this host's workload endpoints (:class:`LocalEndpoint`: host-side
interface, addresses, ordered profile names), the profiles, and the members
of every tag (addresses of endpoints on *any* host whose profiles carry it).
Output, per IP version: ``iptables-restore --noflush`` text for the filter
table and ``ipset restore`` text for the tag sets (:func:`build`).

Chain layout (one table per IP version; ``wrn+`` = workload interfaces)::

    FORWARD --> WARREN-PROFILES-FORWARD   (the agent inserts the jump first,
    DOCKER-USER --^                        and first in DOCKER-USER when it exists)
                  -i wrn+ -g WARREN-WL-FORWARD
                  -o wrn+ -g WARREN-WL-FORWARD
                  (anything else returns untouched)
    WARREN-WL-FORWARD                           - a verdict for every packet of a workload
        ctstate RELATED,ESTABLISHED  ACCEPT     - a flow's later packets stop here
        ctstate INVALID              DROP
        -j WARREN-DOCKER                        - Docker's bridges: published ports only
        -i wrn+ -j WARREN-FROM-WL               - outbound policy of the sender
        -o wrn+ ctstate DNAT         ACCEPT     - a port published with docker run -p
        -o wrn+ -j WARREN-TO-WL                 - inbound policy of the receiver
        ACCEPT                                  - both (or the one that applies) allowed
    INPUT --> WARREN-PROFILES-INPUT
                  -i wrn+ -g WARREN-WL-INPUT
    WARREN-WL-INPUT                             - workload -> this host
        ctstate RELATED,ESTABLISHED ACCEPT; ctstate INVALID DROP
        (IPv6) ICMPv6 neighbour discovery / MLD  ACCEPT  (link-local, before anti-spoofing)
        -j WARREN-FROM-WL                       - the sender's outbound policy applies
        host_policy "drop":   mark HOST -> ACCEPT, else DROP
        host_policy "accept": ACCEPT
    WARREN-FROM-WL / WARREN-TO-WL               - dispatch on the interface, a two-level tree
        -i wrn<c>+ -g WARREN-FD-<c>       ...   (one per first character after "wrn";
        DROP                                     -o / WARREN-TD- / WARREN-TW- for TO)
    WARREN-FD-<c>
        -i <iface> -g WARREN-FW-<iface>   ...   (the endpoints whose name goes on with <c>)
        DROP                                    - an interface we know nothing of
    WARREN-DOCKER                               - per Docker bridge (docker0 always):
        -i <bridge> ctstate !DNAT DROP          - bridge -> workload, not a published port
        -o <bridge> ctstate !DNAT DROP          - workload -> bridge, not a published port
    WARREN-FW-<iface>                           - from one workload
        clear the ACCEPT, HOST and CONTROL mark bits
        anti-spoofing: a source that is not one of its addresses -> DROP
        (--internal) destination outside warren-pools-vN, not this host -> DROP
        -j WARREN-PH-<profile>  ...             - opening rules of each of its profiles: marks only
        destination in warren-control-vN -j WARREN-FAILSAFE
        -j WARREN-PO-<profile 1>;  mark ACCEPT -> RETURN
        -j WARREN-PO-<profile 2>;  mark ACCEPT -> RETURN   ...
        DROP                                    - no profile allowed it
    WARREN-TW-<iface>                           - to one workload: the same with
        WARREN-PI-<profile> chains and no anti-spoofing
        ((--internal) a source outside warren-pools-vN -> DROP)
    WARREN-PI-<profile> / WARREN-PO-<profile>   - the profile's rules, in order
        <match> -j DROP                         - deny
        <match> -g WARREN-ALLOW                 - allow
        (end: RETURN without a mark - no decision, the next profile runs)
    WARREN-PH-<profile>                         - its outbound allows naming a destination CIDR
        <match> set HOST (+ CONTROL if the CIDR is one address)   - every one, no verdict
    WARREN-FAILSAFE                             - a workload -> the control plane
        mark CONTROL -> RETURN                  - a rule names this address
        (a DNS resolver node: its port 53 -> RETURN)
        DROP
    WARREN-ALLOW        set the ACCEPT mark; RETURN

Why "allow" marks and returns instead of ACCEPTing: a packet between two
workloads of this host must pass the sender's outbound *and* the
receiver's inbound policy in the same FORWARD traversal, so an allow may
only end the endpoint chain. Because a profile chain is entered with ``-j``
and an allow leaves it with ``-g WARREN-ALLOW``, WARREN-ALLOW's RETURN
lands back in the endpoint chain right after that profile's jump, where
the mark test returns. A deny DROPs at once. So the first profile (in the
endpoint's order) that decides wins, and inside a profile the first
matching rule wins: traffic is allowed iff a profile allows it and no
profile before it denies it; otherwise the endpoint chain's final DROP
applies. An endpoint naming a profile that does not exist gets a DROP at
that profile's place (fail closed until the profile appears).

Published ports: ``docker run -p`` is the user saying "anyone may reach
this port", as with Docker's own drivers, so a connection that the nat
table DNATed to a workload (plugin.ports' WARREN-DNAT is the only rule
that DNATs to workload addresses) skips the receiver's inbound profiles;
a local sender's outbound policy still applies.

Living beside Docker's firewall (dockerd's ``--iptables``, on by default).
Docker writes the filter FORWARD chain too, and rewrites it: 20.10 and 26
insert each bridge's rules (``-i br ! -o br -j ACCEPT`` among them) at the
top of FORWARD when a bridge network is created, then move ``-j
DOCKER-USER`` back to the top; 28 moves ``-j DOCKER-FORWARD`` and then
``-j DOCKER-USER`` to the top on every start and firewalld reload and
keeps its per-bridge rules in its own chains. Every engine keeps
DOCKER-USER first ("the place for user rules", never flushed), and dockerd
may set the FORWARD policy to DROP (only when it turned forwarding on
itself). So Warren (a) gives every workload packet a verdict of its own
(WARREN-WL-FORWARD ends in ACCEPT or DROP, never falling through to
Docker's rules or the policy: routed traffic flows with policy DROP), (b)
is jumped to first from FORWARD *and* first from DOCKER-USER, so whichever
of the two Docker put on top, Warren sees workload packets before any
Docker rule - also in the moments after Docker reordered FORWARD and before
the agent notices (see :mod:`profiles.agent`); and (c) never lets traffic
between a workload and one of Docker's bridges through unless it was
DNATed - a port published by Docker's ``-p`` (the sender's outbound policy
still applies) or by Warren's (from a bridge container; the receiver's
inbound profiles are skipped as for anyone). Docker's own traffic never
enters Warren's chains. The alternative, relying on Docker's rules to
isolate its bridges, does not work: 20.10 and 26 drop direct access to a
bridge container only through the FORWARD policy, which is ACCEPT when
forwarding was on before dockerd started (as Warren's node does), and
their ``-i br ! -o br -j ACCEPT`` would let bridge containers past Warren's
inbound profiles. Which interfaces are Docker's bridges is the agent's
input (``docker_bridges``; ``docker0`` always is).

``--internal`` networks: an endpoint of one has no path outside Warren's
pools in either direction (so nothing to nat-outgoing, no outside world, no
Docker bridge), while its profiles decide among the pools as usual; the
host itself stays under the workload-to-host rules below. The pools are
the ``hash:net`` sets ``warren-pools-v4``/``-v6`` (:func:`pools_text`),
filled before the rules that name them.

Opening rules. An outbound ``allow`` rule that names a destination CIDR
(``to cidr 10.0.0.1/32``) is, besides its place in the profile's ordered
chain, an *opening* rule: WARREN-PH-<profile> holds one copy of each, and
every one that matches the packet sets HOST_MARK (and CONTROL_MARK when the
CIDR is a single address, /32 or /128), before any profile decides and
whatever the rule's position. An opening is necessary, not sufficient:
the profiles still decide in order (an earlier deny wins). So an appended
``allow tcp to ports 8080 cidr HOST/32`` behind the default ``allow``
opens the host as written (with the ordered chain alone the ``allow``
would match first and the host would stay closed).

Workload -> host (INPUT): with ``host_policy="drop"`` (the default, as
Felix's DEFAULT_INPUT_CHAIN_ACTION) the host is open only where an opening
rule matched (HOST mark) and the profiles allow the packet. A general
"allow" (such as the default profile's "outbound allow all") does not reach
host services. With ``host_policy="accept"`` the host is a destination like
any other: the outbound policy decides. Either way deny rules,
anti-spoofing and the default DROP apply. Host -> workload (OUTPUT) is not
policed.

The control plane (:mod:`profiles.controlplane`: etcd members, every
node's underlay addresses, this host's own addresses; the ``hash:ip`` sets
``warren-control-v4``/``-v6``, filled by the agent before the rules) is off
limits to workloads whatever the profiles and ``host_policy`` say: every
endpoint chain sends a packet to it into WARREN-FAILSAFE *before* its
profiles run, which drops it unless an opening rule naming that one address
matched (CONTROL mark; a subnet or 0.0.0.0/0 never counts), it goes to a
port a node publishes for a workload (``docker run -p`` publishes to
everyone, as Docker's bridge does; the ``hash:ip,port`` sets
``warren-published-v4``/``-v6`` hold each node's address, protocol and host
port; the profiles still decide), or it is DNS to a node running a resolver
(``resolvers``; none yet). This holds on FORWARD
(other nodes, etcd members) and on INPUT (this host's underlay address;
other host addresses such as the workloads' gateway follow ``host_policy``).

Warren owns packet mark bits 0x7000000 (ACCEPT_MARK | HOST_MARK |
CONTROL_MARK); they are cleared by every endpoint chain and may still be
set when a packet leaves.

Cost (see /work/shared/notes/dataplane.md): the conntrack ACCEPT comes
first, so only a flow's first packet walks the chains; a tag is one
``-m set`` match whatever its size, so rules stay O(rules) and a membership
change rewrites only the set (``ipset swap``), never a chain.

Bad input never stops the render: an endpoint address that does not parse
is left out (the endpoint cannot send from it: fails closed).

Tag sets are ``hash:ip`` of one family, refilled atomically: the set is
created if missing, a shared ``warren-v4-tmp`` (``-v6-``) set is filled and
swapped with it; rules keep referencing the name. Apply order for the
agent: ipsets first (rules reference them), then the filter text, then
``ipset destroy`` of :func:`stale_sets`. Stale per-endpoint and per-profile
chains are deleted by the filter text itself (pass the current chain names
as ``existing_chains``).
"""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from . import names
from .model import Profile, Rule

FORWARD_CHAIN = "WARREN-PROFILES-FORWARD"
INPUT_CHAIN = "WARREN-PROFILES-INPUT"
WL_FORWARD = "WARREN-WL-FORWARD"
WL_INPUT = "WARREN-WL-INPUT"
FROM_DISPATCH = "WARREN-FROM-WL"
TO_DISPATCH = "WARREN-TO-WL"
ALLOW = "WARREN-ALLOW"
DOCKER_BOUNDARY = "WARREN-DOCKER"
FAILSAFE = "WARREN-FAILSAFE"
STATIC_CHAINS = (FORWARD_CHAIN, INPUT_CHAIN, WL_FORWARD, WL_INPUT, FROM_DISPATCH,
                 TO_DISPATCH, ALLOW, DOCKER_BOUNDARY, FAILSAFE)
PARENT_JUMPS = {"FORWARD": FORWARD_CHAIN, "INPUT": INPUT_CHAIN}  # the agent inserts these first
DOCKER_USER = "DOCKER-USER"  # dockerd keeps its jump first in FORWARD; the agent puts ours first in it
OPTIONAL_PARENT_JUMPS = {DOCKER_USER: FORWARD_CHAIN}  # ... when the chain exists
DEFAULT_DOCKER_BRIDGES = ("docker0",)  # Docker's default bridge: always treated as Docker's

ACCEPT_MARK = 0x1000000  # a profile allowed the packet (cleared by every endpoint chain)
HOST_MARK = 0x2000000    # an opening rule (an outbound allow naming a destination CIDR) matched: the host
CONTROL_MARK = 0x4000000  # ... one naming a single address (/32, /128): the control plane too
MARKS = ACCEPT_MARK | HOST_MARK | CONTROL_MARK
RESOLVER_PORTS = (("udp", 53), ("tcp", 53))  # open on a node running a DNS resolver (see chain_rules)
PUBLISHED_PROTOCOLS = ("tcp", "udp", "sctp")  # what -p publishes (see published_members)
WORKLOAD_PREFIX = "wrn"  # plugin.dataplane.HOST_PREFIX
HOST_POLICIES = ("drop", "accept")
MULTIPORT_MAX = 15       # xt_multiport: 15 ports per match, a range counts twice
ND_TYPES = (130, 131, 132, 133, 135, 136)  # MLD query/report/done, RS, NS, NA
SET_OPTIONS = "maxelem 1048576"
FAMILIES = {4: "inet", 6: "inet6"}
PROTOCOL_NAMES = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}


@dataclass
class LocalEndpoint:
    """A workload interface on this host, as the generator needs it."""
    id: str
    iface: str                                   # host side, e.g. wrn1234567890a
    ipv4: Sequence[str] = field(default_factory=list)
    ipv6: Sequence[str] = field(default_factory=list)
    profiles: Sequence[str] = field(default_factory=list)  # in order of precedence
    internal: bool = False                       # on an --internal network: confined to the pools

    def addresses(self, version: int) -> list[str]:
        return _addresses(self.ipv4 if version == 4 else self.ipv6, version)


@dataclass(frozen=True)
class Ruleset:
    """What one IP version's kernel should hold."""
    version: int
    filter: str                 # iptables-restore --noflush input (filter table)
    ipsets: str                 # ipset restore input
    chains: frozenset[str]      # every chain the filter text defines
    sets: frozenset[str]        # every tag set the ipset text defines
    pools: str = ""             # ipset restore input that (re)fills the pools set
    control: str = ""           # ipset restore input that (re)fills the control-plane set
    published: str = ""         # ipset restore input that (re)fills the published-ports set


@functools.lru_cache(maxsize=1 << 16)
def _parse(item: str) -> tuple[int, str, int] | None:
    """(version, canonical text, integer) of one address, None if it is not one; cached, the
    agent parses the same addresses again on every change."""
    try:
        address = ipaddress.ip_interface(item).ip
    except (TypeError, ValueError):
        return None
    return address.version, str(address), int(address)


def _addresses(raw: Iterable[str], version: int) -> list[str]:
    """Plain addresses of ``version`` (a ``/32`` or ``/128`` suffix is allowed), sorted.

    Anything that is not an address is left out: a bad record can make an endpoint lose
    addresses (it fails closed: anti-spoofing drops what it sends from them), never stop
    the render for everyone else."""
    parsed = {p for p in map(_parse, raw) if p is not None and p[0] == version}
    return [text for _, text, _ in sorted(parsed, key=lambda p: p[2])]


def invalid_addresses(raw: Iterable[str]) -> list[str]:
    """The items of ``raw`` that are not addresses (for the agent's log)."""
    return [item for item in raw if _parse(item) is None]


def _check_version(version: int) -> None:
    if version not in (4, 6):
        raise ValueError(f"invalid IP version {version!r}: use 4 or 6")


def _host(address: str, version: int) -> str:
    return f"{address}/{32 if version == 4 else 128}"


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _mark(value: int, mask: int) -> str:
    return f"-j MARK --set-xmark {value:#x}/{mask:#x}"


def _has_mark(mask: int) -> str:
    return f"-m mark --mark {mask:#x}/{mask:#x}"


# -- rules -----------------------------------------------------------------------------

def port_chunks(ports: Sequence[int | str] | None) -> list[str | None]:
    """Split a port list into multiport arguments of at most 15 slots each."""
    if not ports:
        return [None]
    chunks: list[list[str]] = [[]]
    used = 0
    for port in ports:
        weight = 2 if isinstance(port, str) else 1
        if used + weight > MULTIPORT_MAX:
            chunks.append([])
            used = 0
        chunks[-1].append(str(port))
        used += weight
    return [",".join(c) for c in chunks]


def rule_lines(chain: str, rule: Rule, version: int, allow_target: str = ALLOW,
               verdict: str | None = None) -> list[str]:
    """The iptables lines of one rule in ``chain``; none if it cannot match ``version``.

    ``verdict`` replaces the action's target (the opening rules set a mark instead)."""
    if rule.version not in (None, version):
        return []
    match: list[str] = []
    if rule.protocol:
        match.append(f"-p {PROTOCOL_NAMES[rule.protocol]}")
    if rule.src_net:
        match.append(f"-s {rule.src_net}")
    if rule.dst_net:
        match.append(f"-d {rule.dst_net}")
    if rule.src_tag:
        match.append(f"-m set --match-set {names.tag_set(rule.src_tag, version)} src")
    if rule.dst_tag:
        match.append(f"-m set --match-set {names.tag_set(rule.dst_tag, version)} dst")
    if rule.icmp_type is not None:
        code = f"/{rule.icmp_code}" if rule.icmp_code is not None else ""
        module = "-m icmp --icmp-type" if version == 4 else "-m icmp6 --icmpv6-type"
        match.append(f"{module} {rule.icmp_type}{code}")
    target = verdict or ("-j DROP" if rule.action == "deny" else f"-g {allow_target}")
    lines = []
    for sports in port_chunks(rule.src_ports):
        for dports in port_chunks(rule.dst_ports):
            ports = [f"-m multiport --sports {sports}"] if sports else []
            ports += [f"-m multiport --dports {dports}"] if dports else []  # one match each
            lines.append(" ".join([f"-A {chain}", *match, *ports, target]))
    return lines


def profile_lines(profile: Profile, direction: str, version: int) -> list[str]:
    """A profile's chain for one direction: its rules in order."""
    chain = names.profile_chain(profile.name, direction)
    lines = []
    for rule in profile.rules(direction):
        lines += rule_lines(chain, rule, version)
    return lines


def names_one_address(rule: Rule) -> bool:
    """Does the rule's destination CIDR name a single address (``/32``, ``/128``)?"""
    if not rule.dst_net:
        return False
    net = ipaddress.ip_network(rule.dst_net)
    return net.prefixlen == net.max_prefixlen


def opening_lines(profile: Profile, version: int) -> list[str]:
    """``WARREN-PH-<profile>``: the profile's outbound allow rules that name a destination CIDR,
    each setting HOST_MARK (any CIDR) or HOST_MARK | CONTROL_MARK (a single address) when it
    matches - whatever its place among the profile's rules (see the module docstring)."""
    chain = names.profile_chain(profile.name, "open")
    lines = []
    for rule in profile.outbound_rules:
        if rule.action != "allow" or not rule.dst_net:
            continue
        marks = HOST_MARK | (CONTROL_MARK if names_one_address(rule) else 0)
        lines += rule_lines(chain, rule, version, verdict=_mark(marks, marks))
    return lines


# -- endpoints -------------------------------------------------------------------------

def anti_spoof_lines(chain: str, addresses: list[str], version: int) -> list[str]:
    """Drop packets whose source is not one of the workload's addresses."""
    note = _comment("warren: source is not the workload's address")
    if not addresses:
        return [f"-A {chain} {_comment(f'warren: workload has no IPv{version} address')} -j DROP"]
    if len(addresses) == 1:
        return [f"-A {chain} ! -s {_host(addresses[0], version)} {note} -j DROP"]
    # several addresses: a negated match cannot list them, so borrow the ACCEPT bit
    return ([f"-A {chain} -s {_host(a, version)} {_mark(ACCEPT_MARK, ACCEPT_MARK)}" for a in addresses]
            + [f"-A {chain} -m mark ! --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} {note} -j DROP",
               f"-A {chain} {_mark(0, ACCEPT_MARK)}"])


def internal_line(chain: str, outbound: bool, version: int) -> str:
    """An --internal endpoint's bound: nothing outside the pools, either way.

    Outbound, the host itself (a LOCAL destination: INPUT) is left to the
    usual workload-to-host rules; a published port of this host was DNATed
    before the filter table, so it counts as its real destination."""
    pools = names.POOLS_SET[version]
    if outbound:
        return (f"-A {chain} -m set ! --match-set {pools} dst -m addrtype ! --dst-type LOCAL "
                f"{_comment('warren: internal network, destination outside the pools')} -j DROP")
    return (f"-A {chain} -m set ! --match-set {pools} src "
            f"{_comment('warren: internal network, source outside the pools')} -j DROP")


def docker_lines(bridges: Iterable[str]) -> list[str]:
    """WARREN-DOCKER: between a workload and one of Docker's bridges only a published port
    (a connection some DNAT rule of this host redirected: Docker's ``-p`` or Warren's)."""
    lines = []
    for bridge in sorted({names.check_iface(b) for b in (*DEFAULT_DOCKER_BRIDGES, *bridges)}):
        not_published = "-m conntrack ! --ctstate DNAT"
        lines += [f"-A {DOCKER_BOUNDARY} -i {bridge} {not_published} "
                  f"{_comment('warren: Docker bridge to workload, not a published port')} -j DROP",
                  f"-A {DOCKER_BOUNDARY} -o {bridge} {not_published} "
                  f"{_comment('warren: workload to Docker bridge, not a published port')} -j DROP"]
    return lines


def endpoint_lines(endpoint: LocalEndpoint, direction: str, profiles: Mapping[str, Profile],
                   version: int, opening: Iterable[str] = ()) -> list[str]:
    """``WARREN-FW-<iface>`` (outbound) or ``WARREN-TW-<iface>`` (inbound).

    ``opening``: the profiles that have a ``WARREN-PH-`` chain for ``version``."""
    outbound = direction == "outbound"
    chain = (names.from_endpoint_chain if outbound else names.to_endpoint_chain)(endpoint.iface)
    lines = [f"-A {chain} {_mark(0, MARKS)}"]
    if outbound:
        lines += anti_spoof_lines(chain, endpoint.addresses(version), version)
    if endpoint.internal:
        lines.append(internal_line(chain, outbound, version))
    if outbound:
        opening = set(opening)
        for name in dict.fromkeys(endpoint.profiles):  # each once, in order
            if name in opening and name in profiles:
                lines.append(f"-A {chain} -j {names.profile_chain(name, 'open')}")
        lines.append(f"-A {chain} -m set --match-set {names.CONTROL_SET[version]} dst -j {FAILSAFE}")
    for name in endpoint.profiles:
        if name not in profiles:
            lines.append(f"-A {chain} {_comment(f'warren: profile {name} is missing')} -j DROP")
            continue
        lines.append(f"-A {chain} -j {names.profile_chain(name, direction)}")
        lines.append(f"-A {chain} {_has_mark(ACCEPT_MARK)} -j RETURN")
    lines.append(f"-A {chain} {_comment('warren: no profile allowed it')} -j DROP")
    return lines


def _dispatch_chains(endpoints: list[LocalEndpoint], outbound: bool, prefix: str) -> dict[str, list[str]]:
    """The dispatch chain of a direction and its branches: a two-level tree on the first
    character after the workload prefix, so a flow's first packet walks about
    16 + endpoints/16 rules instead of one per endpoint (Felix did the same)."""
    top, flag = (FROM_DISPATCH, "-i") if outbound else (TO_DISPATCH, "-o")
    target = names.from_endpoint_chain if outbound else names.to_endpoint_chain
    unknown = f"{_comment('warren: unknown workload interface')} -j DROP"
    groups: dict[str, list[LocalEndpoint]] = {}
    chains: dict[str, list[str]] = {top: []}
    for e in endpoints:
        if e.iface.startswith(prefix) and len(e.iface) > len(prefix):
            groups.setdefault(e.iface[len(prefix)], []).append(e)
        else:  # not a workload-prefixed name: its own rule at the top
            chains[top].append(f"-A {top} {flag} {e.iface} -g {target(e.iface)}")
    for key, members in sorted(groups.items()):
        branch = names.dispatch_chain(outbound, key)
        chains[top].append(f"-A {top} {flag} {prefix}{key}+ -g {branch}")
        chains[branch] = [f"-A {branch} {flag} {e.iface} -g {target(e.iface)}" for e in members]
        chains[branch].append(f"-A {branch} {unknown}")
    chains[top].append(f"-A {top} {unknown}")
    return chains


def _static_lines(version: int, host_policy: str, prefix: str) -> list[str]:
    wl = f"{prefix}+"
    established = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    invalid = "-m conntrack --ctstate INVALID -j DROP"
    lines = [f"-A {FORWARD_CHAIN} -i {wl} -g {WL_FORWARD}",
             f"-A {FORWARD_CHAIN} -o {wl} -g {WL_FORWARD}",
             f"-A {WL_FORWARD} {established}",
             f"-A {WL_FORWARD} {invalid}",
             f"-A {WL_FORWARD} -j {DOCKER_BOUNDARY}",
             f"-A {WL_FORWARD} -i {wl} -j {FROM_DISPATCH}",
             f"-A {WL_FORWARD} -o {wl} -m conntrack --ctstate DNAT {_comment('warren: published port')}"
             " -j ACCEPT",
             f"-A {WL_FORWARD} -o {wl} -j {TO_DISPATCH}",
             f"-A {WL_FORWARD} -j ACCEPT",
             f"-A {INPUT_CHAIN} -i {wl} -g {WL_INPUT}",
             f"-A {WL_INPUT} {established}",
             f"-A {WL_INPUT} {invalid}"]
    if version == 6:
        lines += [f"-A {WL_INPUT} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in ND_TYPES]
    lines.append(f"-A {WL_INPUT} -j {FROM_DISPATCH}")
    if host_policy == "drop":
        lines += [f"-A {WL_INPUT} {_has_mark(HOST_MARK)} -j ACCEPT",
                  f"-A {WL_INPUT} {_comment('warren: workload to host not allowed')} -j DROP"]
    else:
        lines.append(f"-A {WL_INPUT} -j ACCEPT")
    lines.append(f"-A {ALLOW} {_mark(ACCEPT_MARK, ACCEPT_MARK)}")
    return lines


def failsafe_lines(version: int, resolvers: Iterable[str] = ()) -> list[str]:
    """WARREN-FAILSAFE: a workload's packet to a control-plane address (entered from its
    endpoint chain, before any profile) is dropped unless an opening rule naming that
    address matched (CONTROL_MARK), it goes to a port a node publishes for a workload
    (``docker run -p``: published to everyone, workloads included, as Docker's bridge does),
    or it is DNS to a node that runs a resolver. Returned packets still meet the profiles."""
    lines = [f"-A {FAILSAFE} {_has_mark(CONTROL_MARK)} -j RETURN",
             f"-A {FAILSAFE} -m set --match-set {names.PUBLISHED_SET[version]} dst,dst "
             f"{_comment('warren: a port a node publishes')} -j RETURN"]
    for address in _addresses(resolvers, version):
        lines += [f"-A {FAILSAFE} -d {_host(address, version)} -p {protocol} -m multiport "
                  f"--dports {port} {_comment('warren: DNS resolver')} -j RETURN"
                  for protocol, port in RESOLVER_PORTS]
    lines.append(f"-A {FAILSAFE} {_comment('warren: control plane, no rule names it')} -j DROP")
    return lines


def chain_rules(endpoints: Iterable[LocalEndpoint], profiles: Mapping[str, Profile], version: int,
                host_policy: str = "drop", workload_prefix: str = WORKLOAD_PREFIX,
                docker_bridges: Iterable[str] = (), resolvers: Iterable[str] = ()) -> dict[str, list[str]]:
    """Every chain warren wants for ``version``: name -> its ``-A`` lines, in declaration order.

    ``docker_bridges``: Docker's bridge interfaces on this host (``docker0`` is always one).
    ``resolvers``: control-plane addresses where a DNS resolver for workloads runs (port 53
    stays open to them; there is none yet, so the agent passes nothing)."""
    _check_version(version)
    if host_policy not in HOST_POLICIES:
        raise ValueError(f"invalid host policy {host_policy!r}: use drop or accept")
    eps = sorted(endpoints, key=lambda e: e.iface)
    seen: set[str] = set()
    for e in eps:
        if e.iface in seen:
            raise ValueError(f"two endpoints use interface {e.iface}")
        seen.add(e.iface)
    # An endpoint without an address of this family gets no chains for it: the dispatch
    # chain's final DROP treats its packets of this family as the anti-spoofing rule would.
    eps = [e for e in eps if e.addresses(version)]
    used = sorted({p for e in eps for p in e.profiles if p in profiles})

    chains: dict[str, list[str]] = {name: [] for name in STATIC_CHAINS}
    for line in _static_lines(version, host_policy, workload_prefix):
        chains[line.split()[1]].append(line)
    chains[DOCKER_BOUNDARY] = docker_lines(docker_bridges)
    chains[FAILSAFE] = failsafe_lines(version, resolvers)
    chains.update(_dispatch_chains(eps, True, workload_prefix))
    chains.update(_dispatch_chains(eps, False, workload_prefix))
    opening = {name: opening_lines(profiles[name], version) for name in used}
    opening = {name: lines for name, lines in opening.items() if lines}
    for e in eps:
        chains[names.from_endpoint_chain(e.iface)] = endpoint_lines(e, "outbound", profiles, version,
                                                                    opening)
        chains[names.to_endpoint_chain(e.iface)] = endpoint_lines(e, "inbound", profiles, version)
    for name in used:
        for direction in ("inbound", "outbound"):
            chains[names.profile_chain(name, direction)] = profile_lines(profiles[name], direction, version)
        if name in opening:
            chains[names.profile_chain(name, "open")] = opening[name]
    return chains


def restore_text(wanted: Mapping[str, list[str]], applied: Mapping[str, list[str]] | None = None,
                 existing_chains: Iterable[str] = ()) -> str | None:
    """``iptables-restore --noflush`` text that turns ``applied`` into ``wanted``.

    With ``applied=None`` every wanted chain is (re)written. Otherwise only
    the chains whose rules differ are flushed and refilled, and chains that
    are no longer wanted are flushed and deleted - whether warren applied
    them (``applied``) or found them in the kernel (``existing_chains``;
    only warren's dynamic chains are ever deleted). Returns None when there
    is nothing to do. All of it is one commit: the kernel swaps the table
    atomically, so no packet sees a half-written state.
    """
    if applied is None:
        changed = list(wanted)
    else:
        changed = [c for c, lines in wanted.items() if applied.get(c) != lines]
    candidates = set(existing_chains) | set(applied or ())
    stale = sorted(c for c in candidates if names.is_dynamic_chain(c) and c not in wanted)
    if not changed and not stale:
        return None
    lines = ["*filter"]
    lines += [f":{chain} - [0:0]" for chain in changed + stale]
    lines += [f"-F {chain}" for chain in changed + stale]
    for chain in changed:
        lines += wanted[chain]
    lines += [f"-X {chain}" for chain in stale]
    lines += ["COMMIT", ""]
    return "\n".join(lines)


def filter_rules(endpoints: Iterable[LocalEndpoint], profiles: Mapping[str, Profile], version: int,
                 host_policy: str = "drop", existing_chains: Iterable[str] = (),
                 workload_prefix: str = WORKLOAD_PREFIX, docker_bridges: Iterable[str] = ()) -> str:
    """``iptables-restore --noflush`` text for the filter table of ``version``, all chains.

    ``existing_chains`` are the chains in the kernel now: per-endpoint and
    per-profile chains among them that are no longer wanted are flushed and
    deleted in the same commit.
    """
    wanted = chain_rules(endpoints, profiles, version, host_policy, workload_prefix, docker_bridges)
    return restore_text(wanted, None, existing_chains) or ""


# -- tag sets --------------------------------------------------------------------------

def tag_members(endpoints: Iterable[tuple[Iterable[str], Iterable[str]]],
                profiles: Mapping[str, Profile]) -> dict[str, set[str]]:
    """``(addresses, profile names)`` of endpoints on every host -> tag -> addresses."""
    members: dict[str, set[str]] = {}
    for addresses, profile_names in endpoints:
        addresses = list(addresses)
        for name in profile_names:
            profile = profiles.get(name)
            for tag in profile.tags if profile else ():
                members.setdefault(tag, set()).update(addresses)
    return members


def referenced_tags(endpoints: Iterable[LocalEndpoint], profiles: Mapping[str, Profile],
                    version: int) -> set[str]:
    """Tags named by rules that the filter text of ``version`` contains."""
    tags: set[str] = set()
    for name in {p for e in endpoints if e.addresses(version) for p in e.profiles}:
        profile = profiles.get(name)
        for rule in (profile.inbound_rules + profile.outbound_rules) if profile else ():
            if rule.version in (None, version):
                tags.update(t for t in (rule.src_tag, rule.dst_tag) if t)
    return tags


def ipset_rules(tags: Iterable[str], members: Mapping[str, Iterable[str]], version: int) -> str:
    """``ipset restore`` text that (re)fills one set per tag with its ``version`` members."""
    return ipset_text(set_members(tags, members, version), version)


def stale_sets(existing: Iterable[str], ruleset: Ruleset) -> list[str]:
    """Tag sets of ``ruleset.version`` in the kernel that it no longer uses (destroy after applying)."""
    return sorted(s for s in existing
                  if names.is_tag_set(s, ruleset.version) and s not in ruleset.sets)


def set_members(tags: Iterable[str], members: Mapping[str, Iterable[str]],
                version: int) -> dict[str, list[str]]:
    """Set name -> its sorted ``version`` members, for each tag in ``tags``."""
    _check_version(version)
    return {names.tag_set(t, version): _addresses(members.get(t, ()), version) for t in sorted(set(tags))}


def ipset_text(sets: Mapping[str, Sequence[str]], version: int) -> str:
    """``ipset restore`` text that (re)fills each named set with exactly its members."""
    _check_version(version)
    family, tmp = FAMILIES[version], names.TMP_SET[version]
    create = f"hash:ip family {family} {SET_OPTIONS} -exist"
    lines = [f"create {tmp} {create}"]
    for name in sorted(sets):
        lines += [f"create {name} {create}", f"flush {tmp}"]
        lines += [f"add {tmp} {a}" for a in sets[name]]
        lines.append(f"swap {tmp} {name}")
    lines.append(f"destroy {tmp}")
    return "\n".join(lines) + "\n"


def pool_members(cidrs: Iterable[str], version: int) -> list[str]:
    """The pools of ``version`` among ``cidrs``, canonical and sorted."""
    _check_version(version)
    nets = {ipaddress.ip_network(c, strict=False) for c in cidrs}
    return [str(n) for n in sorted(n for n in nets if n.version == version)]


def pools_text(cidrs: Iterable[str], version: int) -> str:
    """``ipset restore`` text that (re)fills the pools set of ``version`` (``hash:net``) atomically."""
    name = names.POOLS_SET[version]
    tmp = name + "-tmp"
    create = f"hash:net family {FAMILIES[version]} -exist"
    return "\n".join([f"create {name} {create}", f"create {tmp} {create}", f"flush {tmp}",
                      *(f"add {tmp} {c}" for c in pool_members(cidrs, version)),
                      f"swap {tmp} {name}", f"destroy {tmp}"]) + "\n"


def control_members(addresses: Iterable[str], version: int) -> list[str]:
    """The control plane's ``version`` addresses, canonical and sorted (non-addresses left out)."""
    _check_version(version)
    return _addresses(addresses, version)


def control_text(addresses: Iterable[str], version: int) -> str:
    """``ipset restore`` text that (re)fills the control-plane set of ``version`` atomically."""
    return ipset_text({names.CONTROL_SET[version]: control_members(addresses, version)}, version)


def published_members(entries: Iterable[tuple[str, str, int]], version: int) -> list[str]:
    """``ipset`` members (``address,proto:port``) of every (node address, protocol, host port)
    of ``version``, sorted; entries that are not an address, a protocol or a port are left out."""
    _check_version(version)
    found = set()
    for address, protocol, port in entries:
        parsed = _parse(address) if isinstance(address, str) else None
        if (parsed is None or parsed[0] != version or protocol not in PUBLISHED_PROTOCOLS
                or isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            continue
        found.add((parsed[2], protocol, port, parsed[1]))
    return [f"{text},{protocol}:{port}" for _, protocol, port, text in sorted(found)]


def published_text(entries: Iterable[tuple[str, str, int]], version: int) -> str:
    """``ipset restore`` text that (re)fills the published-ports set of ``version`` atomically."""
    name = names.PUBLISHED_SET[version]
    tmp = name + "-tmp"
    create = f"hash:ip,port family {FAMILIES[version]} -exist"
    return "\n".join([f"create {name} {create}", f"create {tmp} {create}", f"flush {tmp}",
                      *(f"add {tmp} {m}" for m in published_members(entries, version)),
                      f"swap {tmp} {name}", f"destroy {tmp}"]) + "\n"


def build(endpoints: Iterable[LocalEndpoint], profiles: Mapping[str, Profile],
          members: Mapping[str, Iterable[str]], version: int, host_policy: str = "drop",
          existing_chains: Iterable[str] = (), docker_bridges: Iterable[str] = (),
          pools: Iterable[str] = (), control: Iterable[str] = (),
          resolvers: Iterable[str] = (), published: Iterable[tuple[str, str, int]] = ()) -> Ruleset:
    """Everything one IP version needs, consistent: every set the rules name exists.
    Apply ``pools``, ``control``, ``published`` and ``ipsets`` before ``filter``."""
    eps = list(endpoints)
    wanted = chain_rules(eps, profiles, version, host_policy, docker_bridges=docker_bridges,
                         resolvers=resolvers)
    tags = referenced_tags(eps, profiles, version)
    return Ruleset(version, restore_text(wanted, None, existing_chains) or "",
                   ipset_rules(tags, members, version), frozenset(wanted),
                   frozenset(names.tag_set(t, version) for t in tags), pools_text(pools, version),
                   control_text(control, version), published_text(published, version))
