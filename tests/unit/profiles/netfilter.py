"""A tiny netfilter model for tests: runs generated iptables-restore text on a packet.

It understands exactly the matches and targets profiles.generator emits
(and raises on anything else, so it cannot silently ignore a match):
``-i/-o`` (with ``+``), ``-s/-d``, ``-p``, ``!``, conntrack ``--ctstate``,
set ``--match-set`` (``hash:ip`` and ``hash:net`` members; ``hash:ip,port``
members ``address,proto:port`` matched with ``dst,dst``), addrtype ``--dst-type LOCAL``
(true exactly for INPUT packets: those with no output interface), multiport ``--sports/--dports``, icmp/icmp6 types,
``--mark``, comments; targets ACCEPT, DROP, RETURN, MARK ``--set-xmark``,
``-j CHAIN`` (call) and ``-g CHAIN`` (goto: no return frame). ipset restore
text (create/flush/add/swap/destroy) is modelled too, so the swap logic is
checked, not assumed.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field


@dataclass
class Packet:
    src: str
    dst: str
    proto: str = "tcp"               # tcp | udp | icmp | ipv6-icmp
    sport: int = 40000
    dport: int = 80
    icmp_type: int | None = None
    icmp_code: int | None = None
    iin: str = ""                    # input interface
    iout: str = ""                   # output interface ("" for INPUT)
    ctstate: str = "NEW"               # comma-separated, e.g. "NEW,DNAT"
    mark: int = 0


def ipsets(text: str, sets: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Apply ``ipset restore`` text to ``sets`` (name -> members); returns it."""
    sets = {} if sets is None else sets
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        cmd, name = words[0], words[1]
        if cmd == "create":
            if name in sets and "-exist" not in words:
                raise AssertionError(f"set {name} exists")
            sets.setdefault(name, set())
        elif cmd == "flush":
            sets[name].clear()
        elif cmd == "add":
            member = words[2]
            if "," in member:  # hash:ip,port
                address, _, port = member.partition(",")
                proto, _, number = port.partition(":")
                assert proto in ("tcp", "udp", "sctp") and 0 < int(number) < 65536, member
                sets[name].add(f"{ipaddress.ip_address(address)},{proto}:{int(number)}")
            else:
                sets[name].add(str(ipaddress.ip_network(member)) if "/" in member
                               else str(ipaddress.ip_address(member)))
        elif cmd == "swap":
            other = words[2]
            sets[name], sets[other] = sets[other], sets[name]
        elif cmd == "destroy":
            del sets[name]
        else:
            raise AssertionError(f"unknown ipset command {line!r}")
    return sets


@dataclass
class Match:
    kind: str
    args: tuple[str, ...]
    negated: bool = False


@dataclass
class Line:
    matches: list[Match] = field(default_factory=list)
    target: str = ""
    goto: bool = False
    xmark: tuple[int, int] | None = None
    text: str = ""


def _ports(spec: str) -> list[tuple[int, int]]:
    out = []
    for item in spec.split(","):
        low, _, high = item.partition(":")
        out.append((int(low), int(high or low)))
    return out


def _mask(spec: str) -> tuple[int, int]:
    value, _, mask = spec.partition("/")
    return int(value, 0), int(mask or "0xffffffff", 0)


class Netfilter:
    """The filter table built from restore text, with tag sets."""

    def __init__(self, restore: str, sets: dict[str, set[str]]):
        self.sets = sets
        self.chains: dict[str, list[Line]] = {}
        self.trace: list[str] = []
        for raw in restore.splitlines():
            if raw.startswith(":"):
                self.chains.setdefault(raw[1:].split()[0], [])
            elif raw.startswith("-F "):
                self.chains[raw.split()[1]] = []
            elif raw.startswith("-X "):
                del self.chains[raw.split()[1]]
            elif raw.startswith("-A "):
                chain, line = self._parse(raw)
                self.chains[chain].append(line)
            elif raw not in ("*filter", "COMMIT", ""):
                raise AssertionError(f"unexpected line {raw!r}")
        for chain, lines in self.chains.items():
            for line in lines:
                if line.target not in ("ACCEPT", "DROP", "RETURN", "MARK"):
                    assert line.target in self.chains, f"{chain} jumps to undeclared {line.target}"
                for m in line.matches:
                    if m.kind == "set":
                        assert m.args[0] in sets, f"set {m.args[0]} does not exist"

    @staticmethod
    def _parse(raw: str) -> tuple[str, Line]:
        words = shlex.split(raw)
        chain, words = words[1], words[2:]
        line, negate, i = Line(text=raw), False, 0
        while i < len(words):
            w = words[i]
            if w == "!":
                negate = True
                i += 1
                continue
            if w in ("-i", "-o", "-s", "-d", "-p"):
                line.matches.append(Match(w, (words[i + 1],), negate))
                i += 2
            elif w == "-m":
                i += 2  # the module name; its options follow
                continue
            elif w in ("--ctstate", "--sports", "--dports", "--icmp-type", "--icmpv6-type",
                       "--mark", "--dst-type"):
                line.matches.append(Match(w, (words[i + 1],), negate))
                i += 2
            elif w == "--match-set":
                line.matches.append(Match("set", (words[i + 1], words[i + 2]), negate))
                i += 3
            elif w == "--comment":
                i += 2
            elif w in ("-j", "-g"):
                line.target, line.goto = words[i + 1], w == "-g"
                i += 2
            elif w == "--set-xmark":
                line.xmark = _mask(words[i + 1])
                i += 2
            else:
                raise AssertionError(f"the model does not know {w!r} in {raw!r}")
            negate = False
        assert line.target, f"no target in {raw!r}"
        return chain, line

    def _match(self, m: Match, p: Packet) -> bool:
        value = m.args[0]
        if m.kind in ("-i", "-o"):
            iface = p.iin if m.kind == "-i" else p.iout
            hit = iface.startswith(value[:-1]) if value.endswith("+") else iface == value
        elif m.kind in ("-s", "-d"):
            addr = ipaddress.ip_address(p.src if m.kind == "-s" else p.dst)
            net = ipaddress.ip_network(value)
            hit = addr.version == net.version and addr in net
        elif m.kind == "-p":
            hit = p.proto == value
        elif m.kind == "--ctstate":
            hit = bool(set(p.ctstate.split(",")) & set(value.split(",")))
        elif m.kind in ("--sports", "--dports"):
            port = p.sport if m.kind == "--sports" else p.dport
            hit = any(low <= port <= high for low, high in _ports(value))
        elif m.kind in ("--icmp-type", "--icmpv6-type"):
            t, _, c = value.partition("/")
            hit = p.icmp_type == int(t) and (not c or p.icmp_code == int(c))
        elif m.kind == "--mark":
            want, mask = _mask(value)
            hit = p.mark & mask == want
        elif m.kind == "--dst-type":
            assert value == "LOCAL", value
            hit = not p.iout
        elif m.kind == "set":
            name, direction = m.args
            if direction == "dst,dst":  # hash:ip,port: destination address and port
                hit = f"{ipaddress.ip_address(p.dst)},{p.proto}:{p.dport}" in self.sets[name]
                return hit != m.negated
            addr = ipaddress.ip_address(p.src if direction == "src" else p.dst)
            hit = any(addr in ipaddress.ip_network(member) if "/" in member else str(addr) == member
                      for member in self.sets[name])
        else:  # pragma: no cover
            raise AssertionError(m.kind)
        return hit != m.negated

    def run(self, chain: str, p: Packet) -> str:
        """ACCEPT, DROP, or RETURN (the packet left ``chain`` without a verdict)."""
        stack: list[tuple[str, int]] = []
        current, i = chain, 0
        self.trace = []
        for _ in range(10000):
            lines = self.chains[current]
            if i >= len(lines):
                if not stack:
                    return "RETURN"
                current, i = stack.pop()
                continue
            line = lines[i]
            i += 1
            if not all(self._match(m, p) for m in line.matches):
                continue
            self.trace.append(line.text)
            if line.target in ("ACCEPT", "DROP"):
                return line.target
            if line.target == "RETURN":
                if not stack:
                    return "RETURN"
                current, i = stack.pop()
            elif line.target == "MARK":
                value, mask = line.xmark
                p.mark = (p.mark & ~mask) ^ value
            else:
                if not line.goto:
                    stack.append((current, i))
                current, i = line.target, 0
        raise AssertionError("loop in the chains")
