"""Data plane cost of Warren: container <-> container across hosts, against
baselines measured in the same run.

One 2-host warren-lab. Paths, client on host1's side, server on host2's:

* ``host``: host1 <-> host2 over the underlay (the lab hosts' own namespaces);
* ``hand-<encap>``: the same container path Warren builds, made by hand with
  ``ip`` in two namespaces this script creates, one hanging off each lab host:
  veth pair (host side MAC ee:ee:ee:ee:ee:ee, ``proxy_arp=1``,
  ``proxy_delay=0``), a /32 in the "container" with ``169.254.1.1`` as its
  (onlink) default gateway, a /32 route to it on its host, and on each host a
  static route to the other container's /32 via the other host's underlay
  address (``native``) or through a VXLAN device with static neighbour and FDB
  entries (``vxlan``). This is the kernel's limit for the design;
* ``warren-<encap>``: two containers on a Warren network (``--ipam-opt
  vxlan=true`` for ``vxlan``), measured in the containers' network namespaces
  with the host's iperf3 and busybox (``nsenter -t PID -n``).

In ``--rounds`` rounds, each test runs on every path back to back (the path
order reverses every round): iperf3 TCP with 1 and 4 streams (``-t --duration
-O 2 -C cubic``: the first 2 s, TCP's ramp-up, are left out; with 4 streams it
sometimes takes more than 1 s) and ``busybox ping -c 200 -i 0.005`` (the median reply; at a
slower rate the RTT is mostly the time to wake an idle vCPU). Medians per path, and the
ratios warren/hand-built (goals >= 0.97 in throughput, <= 1.05 in RTT) and
hand-built/host (context: the two extra veth hops).

Statistics. On 2 vCPUs a single iperf3 run is a coin toss of where the
scheduler puts sender, receiver and softirq work: back-to-back runs of one
path differ by +-10 % with 1 stream and by up to 2x with 4 streams, far more
than the 3-5 % the goals allow. So the verdict is judged on the median of
same-round ratios (the two paths run next to each other, so slow drifts of the
background load cancel), over many short rounds (default 10), and printed with
a distribution-free interval of that median (order statistics, >= 95 %
coverage): a verdict whose interval contains 1.0 is "no difference this run
can resolve". The share of the CPUs busy with
other work just before each measurement is printed too. ``--encap vxlan`` checks first that a vxlan
pool gives cross-host connectivity and reports "not available" otherwise.

Network safety: every packet stays in the lab's namespaces and the two (four
with vxlan) this script creates; nothing is attached to the root namespace and
no client runs there. Everything is removed in ``finally``; only processes
this script started are stopped, by PID.

    python -m bench.dataplane [--rounds 10] [--duration 4] [--encap native,vxlan] [--quiet PCT]

About 14 s per path and round: the default (5 paths, 10 rounds) takes ~12 minutes,
``--encap native`` ~7.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import time

from bench import runinfo
from bench.fabric import (create_network, cross_host_pings, host_netns,
                          in_netns, in_pid_netns, run_container, verdict)

GOAL_THROUGHPUT = 0.97   # warren / hand-built, at least
GOAL_RTT = 1.05          # warren / hand-built, at most

# Hand-built "containers": outside every Warren pool, inside the lab's guarded 10.20.0.0/16.
HAND_ADDR = {"native": ("10.20.250.1", "10.20.251.1"), "vxlan": ("10.20.250.2", "10.20.251.2")}
HAND_VTEP = ("10.20.252.1", "10.20.252.2")
HAND_VTEP_MAC = ("02:00:0a:14:fc:01", "02:00:0a:14:fc:02")
HAND_VNI, HAND_VXLAN_PORT = 4242, 4799   # not Warren's, so the two devices never meet
WARREN_SUBNET = {"native": "10.20.90.0/24", "vxlan": "10.20.91.0/24"}
VXLAN_OVERHEAD = 50
GATEWAY = "169.254.1.1"
HOST_MAC = "ee:ee:ee:ee:ee:ee"
IPERF_PORT = "5201"
OMIT = 2                 # s of each iperf3 run left out (TCP ramp-up)


def sh(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


# -- paths -------------------------------------------------------------------------------

class Path:
    def __init__(self, name: str, client: list[str], server: list[str], target: str):
        self.name, self.client, self.server, self.target = name, client, server, target
        self.proc: subprocess.Popen | None = None

    def start_server(self) -> None:
        self.proc = subprocess.Popen(self.server + ["iperf3", "-s", "-p", IPERF_PORT],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name}: iperf3 server exited with {self.proc.returncode}")

    def stop_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# What dockerd puts in every container's namespace on a user-defined network (its embedded DNS at
# 127.0.0.11): a nat table, so conntrack and nat hooks run there for every packet. The hand-built
# "containers" get the same rules (unless --no-docker-dns), so the baseline is a Docker container's path.
DOCKER_DNS_NAT = """*nat
:DOCKER_OUTPUT - [0:0]
:DOCKER_POSTROUTING - [0:0]
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:39875
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:44811
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p tcp -m tcp --sport 39875 -j SNAT --to-source :53
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p udp -m udp --sport 44811 -j SNAT --to-source :53
COMMIT
"""


class HandBuilt:
    """The hand-made container path: two namespaces of ours off host1 and host2."""

    def __init__(self, lab, encap: str, tag: str, docker_dns: bool = True):
        self.lab, self.encap, self.tag, self.docker_dns = lab, encap, tag, docker_dns
        self.netns = [f"wbd{tag}{encap[0]}{i}" for i in (1, 2)]
        self.veth = [f"hb{tag}{encap[0]}{i}" for i in (1, 2)]
        self.vxlan = f"hbvx{tag}"
        self.addr = HAND_ADDR[encap]
        self.hosts = ("host1", "host2")
        self.created: list[str] = []
        self.routes: list[tuple[str, str]] = []   # (host netns, prefix)
        self.devices: list[tuple[str, str]] = []  # (host netns, ifname)

    def build(self) -> None:
        lab = self.lab
        underlay = [lab.host(h).ipv4 for h in self.hosts]
        hns = [lab.host(h).netns for h in self.hosts]
        mtu = 1500 - (VXLAN_OVERHEAD if self.encap == "vxlan" else 0)
        for i in (0, 1):
            ns, veth, addr = self.netns[i], self.veth[i], self.addr[i]
            sh(["ip", "netns", "add", ns])
            self.created.append(ns)
            sh(["ip", "-n", hns[i], "link", "add", veth, "address", HOST_MAC, "mtu", str(mtu),
                "type", "veth", "peer", "name", "eth0", "netns", ns, "mtu", str(mtu)])
            sh(in_netns(f"/run/netns/{hns[i]}", [
                "sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.proxy_arp=1",
                f"net.ipv4.neigh.{veth}.proxy_delay=0", f"net.ipv4.conf.{veth}.forwarding=1"]))
            sh(["ip", "-n", hns[i], "link", "set", veth, "up"])
            sh(["ip", "-n", hns[i], "route", "add", f"{addr}/32", "dev", veth, "scope", "link"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "eth0"])
            sh(["ip", "-n", ns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link"])
            sh(["ip", "-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0"])
            if self.docker_dns:
                subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=DOCKER_DNS_NAT,
                               text=True, check=True, capture_output=True)
        for i in (0, 1):
            j = 1 - i
            if self.encap == "native":
                sh(["ip", "-n", hns[i], "route", "add", f"{self.addr[j]}/32", "via", underlay[j], "dev", "eth0"])
                self.routes.append((hns[i], f"{self.addr[j]}/32"))
            else:
                sh(["ip", "-n", hns[i], "link", "add", self.vxlan, "address", HAND_VTEP_MAC[i], "mtu", str(mtu),
                    "type", "vxlan", "id", str(HAND_VNI), "local", underlay[i], "dev", "eth0",
                    "dstport", str(HAND_VXLAN_PORT), "nolearning"])
                self.devices.append((hns[i], self.vxlan))
                sh(["ip", "-n", hns[i], "addr", "add", f"{HAND_VTEP[i]}/32", "dev", self.vxlan])
                sh(["ip", "-n", hns[i], "link", "set", self.vxlan, "up"])
        if self.encap == "vxlan":
            for i in (0, 1):
                j = 1 - i
                sh(["ip", "-n", hns[i], "neigh", "add", HAND_VTEP[j], "lladdr", HAND_VTEP_MAC[j],
                    "dev", self.vxlan, "nud", "permanent"])
                sh(["bridge", "-n", hns[i], "fdb", "append", HAND_VTEP_MAC[j], "dev", self.vxlan,
                    "dst", underlay[j]])
                sh(["ip", "-n", hns[i], "route", "add", f"{self.addr[j]}/32", "via", HAND_VTEP[j],
                    "dev", self.vxlan, "onlink"])

    def path(self) -> Path:
        return Path(f"hand-{self.encap}", in_netns(f"/run/netns/{self.netns[0]}", []),
                    in_netns(f"/run/netns/{self.netns[1]}", []), self.addr[1])

    def remove(self) -> None:
        for hns, prefix in self.routes:
            subprocess.run(["ip", "-n", hns, "route", "del", prefix], capture_output=True)
        for hns, dev in self.devices:
            subprocess.run(["ip", "-n", hns, "link", "del", dev], capture_output=True)
        for ns in self.created:  # deleting the namespace deletes its veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def warren_path(lab, encap: str) -> tuple[Path | None, str]:
    name = f"w{encap}"
    create_network(lab, ("host1", "host2"), name, WARREN_SUBNET[encap], encap)
    pid1, _ = run_container(lab, "host1", f"c1{encap}", name)
    pid2, addr2 = run_container(lab, "host2", f"c2{encap}", name)
    if not cross_host_pings(lab, pid1, addr2, timeout=30):
        return None, f"no cross-host connectivity on a {encap} pool ({addr2} from host1)"
    return Path(f"warren-{encap}", in_pid_netns(pid1, []), in_pid_netns(pid2, []), addr2), "ok"


# -- what the kernel does differently on the two paths -------------------------------------

# Per-namespace and per-interface settings that cannot differ on a path's packets: counters,
# per-boot randomness, and IPv6 on a v4 benchmark.
IGNORED_SYSCTL = re.compile(r"(^fs\.|^kernel\.|^vm\.|^user\.|nf_conntrack_count|stable_secret|_random|"
                            r"^net\.ipv6\.|\.lo\.|ping_group_range|ip_unprivileged_port_start)")


def sysctls(prefix: list[str], ifname: str) -> dict[str, str]:
    out = subprocess.run(prefix + ["sysctl", "-a"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition(" = ")
        key = key.replace(f".{ifname}.", ".IF.")
        if key.startswith("net.") and not IGNORED_SYSCTL.search(key):
            found[key] = " ".join(value.split())
    return found


def link_attrs(prefix: list[str], ifname: str) -> dict[str, str]:
    [link] = json.loads(subprocess.run(prefix + ["ip", "-d", "-j", "link", "show", ifname],
                                       capture_output=True, text=True, check=True).stdout)
    keys = ("mtu", "qdisc", "txqlen", "num_tx_queues", "num_rx_queues", "gso_max_size", "gso_max_segs",
            "gro_max_size", "tso_max_size", "tso_max_segs", "operstate")
    attrs = {f"link.{k}": str(link.get(k)) for k in keys}
    attrs["link.kind"] = str(link.get("linkinfo", {}).get("info_kind"))
    return attrs


def host_peer(container: list[str], host: list[str]) -> str:
    """Name of the host-side veth of the container's eth0."""
    # Not /sys/class/net/eth0/iflink: nsenter -n keeps the caller's /sys, which shows another namespace.
    [eth0] = json.loads(subprocess.run(container + ["ip", "-j", "link", "show", "eth0"], capture_output=True,
                                       text=True, check=True).stdout)
    iflink = str(eth0["link_index"])
    for link in json.loads(subprocess.run(host + ["ip", "-j", "link"], capture_output=True, text=True,
                                          check=True).stdout):
        if str(link["ifindex"]) == iflink:
            return link["ifname"]
    raise RuntimeError(f"no host interface with index {iflink}")


def packet_path_differences(lab, hand: Path, warren: Path) -> list[str]:
    """Every setting that differs between the hand-built and the Warren path, on both
    sides (the container's namespace and eth0, and the host-side veth): what could make
    their packets cost differently. An empty list is the structural half of the claim
    that Warren adds nothing on the packet path."""
    differences = []
    for side, host in ((0, "host1"), (1, "host2")):
        hns = in_netns(host_netns(lab, host), [])
        ends = []
        for p in (hand, warren):
            cns = p.client if side == 0 else p.server
            veth = host_peer(cns, hns)
            ends.append({**{f"container {k}": v for k, v in sysctls(cns, "eth0").items()},
                         **{f"container eth0 {k}": v for k, v in link_attrs(cns, "eth0").items()},
                         **{f"host veth {k}": v for k, v in link_attrs(hns, veth).items()},
                         **{f"host {k}": v for k, v in sysctls(hns, veth).items() if ".IF." in k}})
        for key in sorted(set(ends[0]) | set(ends[1])):
            a, b = ends[0].get(key), ends[1].get(key)
            if a != b:
                differences.append(f"{host}: {key}: hand-built {a}, warren {b}")
    return differences


# -- measurements ---------------------------------------------------------------------------

def iperf(path: Path, streams: int, duration: int) -> tuple[float, int]:
    argv = path.client + ["iperf3", "-c", path.target, "-p", IPERF_PORT, "-t", str(duration), "-O", str(OMIT),
                          "-P", str(streams), "-C", "cubic", "-J", "--connect-timeout", "3000"]
    for attempt in range(3):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + OMIT + 60)
        try:
            data = json.loads(result.stdout)
            if "error" in data:
                raise ValueError(data["error"])
            end = data["end"]
            return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0))
        except (ValueError, KeyError) as exc:
            error = f"{exc} {result.stderr.strip()}"
            time.sleep(1)
    raise RuntimeError(f"{path.name}: iperf3 -P {streams} failed: {error}")


REPLY_RE = re.compile(r"time=([\d.]+) ms")


def ping(path: Path, count: int) -> tuple[float, float]:
    """(median, min) RTT in microseconds, over every reply.

    The median, not ping's average: whether an echo finds the vCPUs awake or
    must wake them moves one RTT by 50-150 us here, and a handful of such
    outliers decided the average (the same path gave 40-200 us averages in one
    run)."""
    subprocess.run(path.client + ["busybox", "ping", "-q", "-c", "2", "-W", "1", path.target],
                   capture_output=True)  # neighbour entries warm
    result = subprocess.run(path.client + ["busybox", "ping", "-c", str(count), "-i", "0.005",
                                           path.target], capture_output=True, text=True, timeout=60)
    times = [float(t) * 1000 for t in REPLY_RE.findall(result.stdout)]
    if result.returncode or len(times) < count // 2:
        tail = result.stdout.strip().splitlines()[-2:]
        raise RuntimeError(f"{path.name}: ping failed: {' '.join(tail)} {result.stderr.strip()}")
    return statistics.median(times), min(times)


def cpu_busy(seconds: float = 0.3) -> float:
    """Share of all CPUs busy over ``seconds`` (/proc/stat), while this script is idle:
    the background load a measurement is about to compete with."""
    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values[:8]), values[3] + values[4]  # total, idle + iowait
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def wait_quiet(below: float, limit: float) -> float:
    """Wait (at most ``limit`` s) until the machine's background load is under ``below`` %."""
    deadline = time.monotonic() + limit
    busy = cpu_busy()
    while busy >= below and time.monotonic() < deadline:
        busy = cpu_busy(1.0)
    return busy


def measure(paths: list[Path], rounds: int, duration: int, pings: int,
            quiet: float = 0.0, quiet_wait: float = 30.0) -> dict[str, dict[str, list[float]]]:
    """Rounds of: iperf3 x1 on every path, then x4 on every path, then ping on every
    path. The path order reverses every round (A B C, C B A, ...), so the paths
    compared (hand-built and warren, listed next to each other) run back to back
    and neither is always first."""
    res: dict[str, dict[str, list[float]]] = {
        p.name: {"tcp1": [], "tcp4": [], "rtt": [], "rtt_min": [], "retr1": [], "retr4": [], "busy": []}
        for p in paths}
    for r in range(rounds):
        order = paths if r % 2 == 0 else paths[::-1]
        for test in ("tcp1", "tcp4", "rtt"):
            for p in order:
                busy = wait_quiet(quiet, quiet_wait) if quiet else cpu_busy()
                res[p.name]["busy"].append(busy)
                if test == "rtt":
                    mid, low = ping(p, pings)
                    res[p.name]["rtt"].append(mid)
                    res[p.name]["rtt_min"].append(low)
                    shown = f"ping median {mid:6.1f} us (min {low:5.1f})"
                else:
                    streams = 1 if test == "tcp1" else 4
                    gbps, retr = iperf(p, streams, duration)
                    res[p.name][test].append(gbps)
                    res[p.name]["retr" + test[-1]].append(retr)
                    shown = f"{streams} stream{'s' if streams > 1 else ' '} {gbps:6.2f} Gbit/s ({retr:5d} retr)"
                print(f"   round {r + 1} {p.name:14s} {shown:36s} [background busy {busy:3.0f} %]", flush=True)
    return res


def paired(res, a: str, b: str, key: str) -> float:
    """Median over rounds of a/b measured in the same round (cancels slow drift of
    the machine's background load better than a ratio of medians)."""
    return statistics.median(x / y for x, y in zip(res[a][key], res[b][key]))


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free interval of the median: the order statistics x(k), x(n-k+1)
    with the largest k for which P(Binomial(n, 1/2) < k) <= (1 - level) / 2 (the sign
    test's interval; exact, no assumption about the shape of the noise). Returns
    (low, high, actual coverage); with fewer than 6 values no k qualifies and the
    whole range is returned with its (lower) coverage."""
    xs, n = sorted(values), len(values)
    below = [math.comb(n, i) / 2 ** n for i in range(n + 1)]   # P(X = i)
    k, tail = 1, below[0]                                      # tail = P(X < k)
    while k < n // 2 and tail + below[k] <= (1 - level) / 2:
        tail += below[k]
        k += 1
    return xs[k - 1], xs[n - k], 1 - 2 * tail


def judge(res, a: str, b: str, key: str, goal: float, at_least: bool) -> str:
    """``a``/``b`` for one test: median of same-round ratios, its 95 % interval,
    the verdict on that median, and whether the interval can tell it from 1.0."""
    ratios = [x / y for x, y in zip(res[a][key], res[b][key])]
    med = statistics.median(ratios)
    lo, hi, coverage = median_interval(ratios)
    ok = med >= goal if at_least else med <= goal
    if lo <= 1.0 <= hi:
        note = "no difference resolved"
    else:  # the whole interval on one side of 1.0; for RTT a ratio above 1 means slower
        note = "warren slower" if (hi < 1.0) == at_least else "warren faster"
    return f"{med:.2f} ({coverage:.0%} interval {lo:.2f}-{hi:.2f}, {note}) {verdict(ok)}"


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--duration", type=int, default=4, help=f"seconds per iperf3 run (plus {OMIT} s omitted)")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--no-docker-dns", action="store_true",
                    help="leave the hand-built namespaces without Docker's embedded-DNS nat table")
    ap.add_argument("--quiet", type=float, default=0.0, metavar="PCT",
                    help="before each cell wait until other work keeps the CPUs less than PCT %% busy "
                         "(at most --quiet-wait s; 0: do not wait)")
    ap.add_argument("--quiet-wait", type=float, default=30.0)
    ap.add_argument("--encap", default="native,vxlan",
                    help="comma-separated: native, vxlan (default both)")
    args = ap.parse_args(argv)
    encaps = [e.strip() for e in args.encap.split(",") if e.strip()]
    if not encaps or any(e not in ("native", "vxlan") for e in encaps):
        ap.error("--encap: native and/or vxlan")
    if os.geteuid() != 0:
        print("must run as root", file=sys.stderr)
        return 2
    from ctl.lab import Lab

    runinfo.header("Warren data plane benchmark", "bench.dataplane", argv)
    tag = secrets.token_hex(2)
    lab = Lab("bd" + secrets.token_hex(3))
    hand: list[HandBuilt] = []
    paths: list[Path] = []
    try:
        lab.up(2, node=True)
        h1, h2 = lab.host("host1"), lab.host("host2")
        paths.append(Path("host", in_netns(host_netns(lab, "host1"), []),
                          in_netns(host_netns(lab, "host2"), []), h2.ipv4))
        unavailable = {}
        for encap in encaps:
            hb = HandBuilt(lab, encap, tag, docker_dns=not args.no_docker_dns)
            hand.append(hb)
            hb.build()
            paths.append(hb.path())
            wp, why = warren_path(lab, encap)
            if wp is None:
                unavailable[encap] = why
                print(f"warren-{encap}: NOT AVAILABLE: {why} (the hand-built {encap} path is still measured)")
            else:
                paths.append(wp)
        for p in paths:
            p.start_server()
            ping(p, 3)  # reachable at all (raises otherwise)
        by_name = {p.name: p for p in paths}
        for encap in encaps:
            if f"warren-{encap}" in by_name:
                diffs = packet_path_differences(lab, by_name[f"hand-{encap}"], by_name[f"warren-{encap}"])
                print(f"settings that differ between hand-{encap} and warren-{encap} on the packet path: "
                      + ("none" if not diffs else ""))
                for line in diffs:
                    print(f"   {line}")
        print(f"lab {lab.name}: host1 {h1.ipv4}, host2 {h2.ipv4}; paths: {', '.join(p.name for p in paths)}; "
              f"{args.rounds} rounds of iperf3 -t {args.duration} (-O {OMIT}) x1 and x4 streams, "
              f"ping -c {args.pings} -i 0.005", flush=True)
        res = measure(paths, args.rounds, args.duration, args.pings, args.quiet, args.quiet_wait)
    finally:
        for p in paths:
            p.stop_server()
        for hb in hand:
            hb.remove()
        lab.down()

    med = {name: {k: statistics.median(v) for k, v in m.items()} for name, m in res.items()}
    print("\nmedians")
    for name, m in med.items():
        print(f"   {name:14s} 1 stream {m['tcp1']:6.2f} Gbit/s   4 streams {m['tcp4']:6.2f} Gbit/s   "
              f"ping median {m['rtt']:6.1f} us (min {m['rtt_min']:5.1f})")
    print("\nratios: of the medians [median of same-round ratios]; RTT: larger is slower")
    for encap in encaps:
        hand, warren = f"hand-{encap}", f"warren-{encap}"
        hand_m, warren_m, host_m = med[hand], med.get(warren), med["host"]
        print(f"   {hand}/host: 1 stream {hand_m['tcp1'] / host_m['tcp1']:.2f} "
              f"[{paired(res, hand, 'host', 'tcp1'):.2f}], 4 streams {hand_m['tcp4'] / host_m['tcp4']:.2f} "
              f"[{paired(res, hand, 'host', 'tcp4'):.2f}], RTT {hand_m['rtt'] / host_m['rtt']:.2f} "
              f"[{paired(res, hand, 'host', 'rtt'):.2f}]")
        if warren_m is None:
            print(f"   {warren}/{hand}: not available ({unavailable[encap]})")
            continue
        print(f"   {warren}/{hand}, ratio of medians: 1 stream {warren_m['tcp1'] / hand_m['tcp1']:.2f}, "
              f"4 streams {warren_m['tcp4'] / hand_m['tcp4']:.2f}, RTT {warren_m['rtt'] / hand_m['rtt']:.2f}")
        print(f"   {warren}/{hand}, median of same-round ratios (the verdict; goals >= {GOAL_THROUGHPUT}, "
              f"<= {GOAL_RTT}):")
        print(f"      1 stream  {judge(res, warren, hand, 'tcp1', GOAL_THROUGHPUT, True)}")
        print(f"      4 streams {judge(res, warren, hand, 'tcp4', GOAL_THROUGHPUT, True)}")
        print(f"      RTT       {judge(res, warren, hand, 'rtt', GOAL_RTT, False)}")
    busy = statistics.median(b for m in res.values() for b in m["busy"])
    print(f"background CPU busy before the cells: median {busy:.0f} % "
          f"(above ~15 % the figures are contaminated by other work on this machine)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
