"""The cost of policy (issue #5): full resync, change latency across hosts, and the data path.

Three parts (``--parts``, default all), each against a baseline measured in the same run:

1. **resync** (no lab): a private etcd and the kernel of namespaces this script
   creates. ``--profiles`` profiles (each with its own tag and six rules, with
   tag, port-list, port-range and ICMP matches), ``--endpoints`` local endpoint
   records (1-2 profiles each) and as many remote ones on four other hosts (tag
   members). Timed: a fresh ``PolicyAgent``'s ``load()`` + ``apply(full=True)``
   into an empty netns, then again into the same netns now holding the rules
   (a restart; goal <= 1 s each). Baseline (the kernel's floor): a bare
   ``iptables-restore`` / ``ip6tables-restore`` and ``ipset restore`` of exactly
   the text the agent wrote, replayed by a process in another fresh netns. Then
   the rule count (``iptables-save`` lines of WARREN chains) over a grid of
   endpoint and profile counts, fitted as a linear function of endpoints and
   profile rules, and once more with four times the tag members (the rule
   count must not move: members live in ipsets, never in rules).
   Each process that times runs *inside* its netns, so the tools are called as
   the agent calls them on a host (no ``ip netns exec`` wrapper per call); its
   etcd listens on that netns's loopback.
2. **latency** (a 2-host warren-lab): time from a change written to etcd (by a
   helper on host1) until host2's kernel holds it (a helper in host2's
   namespaces polls ``ipset test`` / ``iptables -S CHAIN``, one clock:
   CLOCK_MONOTONIC is shared by all namespaces). Two kinds, alternating add and
   remove: *membership* (an endpoint record of host1 gains/loses a profile whose
   tag a rule on host2 names: its address enters/leaves host2's ipset) and
   *rule* (a rule added to/removed from a profile a host2 endpoint uses: host2's
   profile chain changes). ``--changes`` of each kind, p50/p99 (goal p99 <= 1 s),
   once with an almost empty configuration and once with the full one of part 3.
3. **dataplane** (the same lab): a warren network with a container on each host;
   ``--profiles`` profiles and ``--endpoints`` extra endpoint records per host
   (records only: addresses outside every pool, no veths), so both agents'
   chains are full size. Record ids are hex digests, spread like Docker's
   endpoint ids over the 16 branches of the dispatch tree (so a container's
   interface shares its branch with ~1/16 of them, as on a real host). TCP connect time with the policy in place is taken at the
   almost empty and at the full configuration (context: a flow's first packet
   walks the dispatch chains). Then both agents are killed (-9) so they cannot
   put the jumps back (their rules stay), and per round, with the policy's parent
   jumps ``FORWARD/INPUT -j WARREN-PROFILES-*`` in place and removed by this
   script (and, without them, the script's own ``-i/-o wrn+ -j ACCEPT`` first in
   FORWARD, since plugin.forward's WARREN-FORWARD drops unjudged workload
   traffic), in alternating order: cross-host ``iperf3 -P 4``; ``--slices``
   alternations of ``--round-trips`` round trips of a pinned TCP ping-pong on one
   connection (the host's python3 in the containers' netns via nsenter, client
   on CPU 0, server on CPU 1); 200 TCP connects. Goals: throughput with/without
   >= 0.9, RTT with - without <= 2 us. The agents are restarted with ``warrenctl
   node start`` at the end.

Network safety: all traffic stays in namespaces this script or its lab made;
the lab blackholes its prefixes in the root netns; every namespace, process and
temp directory made here is removed in ``finally``; only processes started here
are stopped, by PID (the lab's agents by the PID in their pid file, after
checking it is ``ctl.agent``).

    python -m bench.policy [--parts resync,latency,dataplane] [--endpoints 1000] [--profiles 100]
                           [--runs 5] [--changes 40] [--rounds 6] [--duration 3] [--slices 10]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import queue
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator

from bench import runinfo
from bench.dataplane import Path, cpu_busy, iperf, wait_quiet
from bench.fabric import (bgp_routes, create_network, cross_host_pings, in_pid_netns, percentile,
                          run_container, wait_until)
from datastore import Datastore, Delete, EtcdConfig, Put, codec, keys
from datastore.config import parse_endpoint
from datastore.localetcd import LocalEtcd
from ipam.workloads import Endpoint
from profiles import Profile, Rule, names
from profiles.agent import PREFIXES, PolicyAgent, Snapshot, desired
from profiles.generator import OPTIONAL_PARENT_JUMPS, PARENT_JUMPS, WORKLOAD_PREFIX
from profiles.kernel import Kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOAL_RESYNC = 1.0        # s, load + full apply
GOAL_LATENCY_P99 = 1.0   # s
GOAL_THROUGHPUT = 0.9    # with / without
GOAL_RTT_US = 2.0        # with - without

NODE = "bench-node"
REMOTE_HOSTS = 4
TXN_OPS = 100            # puts per etcd transaction (etcd's default limit is 128)
LOCAL_BASE = "10.20.128.0"    # record addresses: inside the lab's guarded 10.20/16, outside every pool
REMOTE_BASE = "10.20.192.0"


# =====================================================================================
# The configuration: profiles and endpoint records (pure)
# =====================================================================================

def profile_name(i: int) -> str:
    return f"bp{i:03d}"


def bench_profiles(count: int) -> list[Profile]:
    """``count`` profiles, each with its own tag and six rules (five apply to IPv6)."""
    out = []
    for i in range(count):
        name, peer = profile_name(i), profile_name((i + 1) % count)
        inbound = [Rule.make("allow", src_tag=name),
                   Rule.make("allow", "tcp", src_tag=peer, dst_ports=[80, 443, "8000:8080"]),
                   Rule.make("deny", "udp", dst_ports=[53, "5000:5100"]),
                   Rule.make("allow", "icmp", icmp_type=8)]
        outbound = [Rule.make("deny", "tcp", dst_ports=[25]), Rule.make("allow")]
        out.append(Profile(name, [name], inbound, outbound))
    return out


def endpoint_profiles(i: int, profiles: int) -> list[str]:
    """Every endpoint has one profile, every second one a second (a different one)."""
    first = i % profiles
    if i % 2 == 0 or profiles < 2:
        return [profile_name(first)]
    second = (first + 1 + (i // profiles) % (profiles - 1)) % profiles
    return [profile_name(first), profile_name(second)]


def endpoint_id(host: str, i: int) -> str:
    """Stable hex ids, spread like Docker's endpoint ids over the dispatch tree's branches
    (the same in every run)."""
    return hashlib.sha256(f"bench-policy/{host}/{i}".encode()).hexdigest()


def bench_endpoints(host: str, count: int, base: str, profiles: int, start: int = 0) -> list[Endpoint]:
    """``count`` endpoint records of ``host`` (no network, own profile lists, one IPv4 address)."""
    first = ipaddress.ip_address(base)
    return [Endpoint(endpoint_id(host, i), "", host, [str(first + i)], profiles=endpoint_profiles(i, profiles))
            for i in range(start, start + count)]


def remote_endpoints(count: int, profiles: int) -> list[Endpoint]:
    """``count`` endpoints spread over REMOTE_HOSTS other hosts (tag members only)."""
    out = []
    for h in range(REMOTE_HOSTS):
        share = count // REMOTE_HOSTS + (1 if h < count % REMOTE_HOSTS else 0)
        start = sum(count // REMOTE_HOSTS + (1 if k < count % REMOTE_HOSTS else 0) for k in range(h))
        out += bench_endpoints(f"bench-remote{h + 1}", share, REMOTE_BASE, profiles, start)
    return out


def records(profiles: list[Profile], endpoints: list[Endpoint]) -> list[tuple[str, str]]:
    """(key, JSON value) of every record."""
    out = [(keys.profile(p.name), codec.dumps(p).decode()) for p in profiles]
    out += [(keys.endpoint(e.host, e.id), codec.dumps(e).decode()) for e in endpoints]
    return out


def write_records(store, items: list[tuple[str, str]]) -> None:
    for i in range(0, len(items), TXN_OPS):
        store.txn([], [Put(k, v) for k, v in items[i:i + TXN_OPS]])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# =====================================================================================
# Namespaces and children
# =====================================================================================

@contextlib.contextmanager
def private_netns(prefix: str) -> Iterator[str]:
    """A uniquely named netns of ours with lo up; always deleted."""
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_netns_argv(netns: str, *args: str) -> list[str]:
    """This module's helper ``args`` run by a process that lives in ``netns`` (network only)."""
    return ["nsenter", f"--net=/run/netns/{netns}", "--", sys.executable, "-m", "bench.policy", *args]


def run_json(argv: list[str], timeout: float = 600) -> dict:
    """Run a helper; its last stdout line is JSON. Raises with its stderr on failure."""
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.strip().splitlines()
    if proc.returncode or not lines:
        raise RuntimeError(f"helper {argv[6] if len(argv) > 6 else argv}: exit {proc.returncode}: "
                           f"{err.strip()[-600:]}")
    return json.loads(lines[-1])


# =====================================================================================
# 1. Resync (helpers run inside a netns of ours)
# =====================================================================================

class TimedKernel(Kernel):
    """The agent's Kernel, noting each tool call: argv, seconds, input text."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[str], float, str | None]] = []

    def _run(self, argv: list[str], text: str | None = None) -> str:
        started = time.perf_counter()
        try:
            return super()._run(argv, text)
        finally:
            self.calls.append((argv, time.perf_counter() - started, text))


def _private_etcd(data_dir: str) -> tuple[LocalEtcd, Datastore]:
    """etcd on this process's netns loopback (the helper lives in a netns of ours)."""
    server = LocalEtcd(data_dir, die_with_parent=True).start()
    return server, Datastore(EtcdConfig((parse_endpoint(server.endpoint),), timeout=30.0))


def _kernel_counts() -> dict:
    """WARREN rules and chains per IP version, and tag set entries, in this netns."""
    out = {}
    for version, tool in ((4, "iptables-save"), (6, "ip6tables-save")):
        text = subprocess.run([tool, "-t", "filter"], capture_output=True, text=True, check=True).stdout
        lines = text.splitlines()
        out[f"rules{version}"] = sum(1 for line in lines if line.startswith("-A WARREN-"))
        out[f"chains{version}"] = sum(1 for line in lines if line.startswith(":WARREN-"))
    listing = subprocess.run(["ipset", "list", "-t"], capture_output=True, text=True, check=True).stdout
    set_names = [line.split(":", 1)[1].strip() for line in listing.splitlines() if line.startswith("Name:")]
    entries = [int(line.split(":", 1)[1]) for line in listing.splitlines()
               if line.startswith("Number of entries:")]
    tags = [(n, c) for n, c in zip(set_names, entries) if names.is_tag_set(n, 4)]
    out["sets4"] = len(tags)
    out["set_entries4"] = sum(c for _, c in tags)
    return out


def _expected(store, node: str) -> dict:
    """What the generator says the kernel should hold (pure), for the checks."""
    snapshot = Snapshot()
    for prefix in PREFIXES:
        for kv in store.get_prefix(prefix):
            snapshot.update(prefix, kv.key, kv.value)
    out = {}
    for version in (4, 6):
        chains, sets = desired(snapshot, node, version)
        out[f"rules{version}"] = sum(len(lines) for lines in chains.values())
        out[f"chains{version}"] = len(chains)
        if version == 4:
            out["sets4"] = len(sets)
            out["set_entries4"] = sum(len(m) for m in sets.values())
    return out


def timed_resync(store, node: str) -> tuple[dict, list]:
    """A fresh agent's load + full apply; the figures and the tool calls it made."""
    kernel = TimedKernel()
    t0 = time.perf_counter()
    agent = PolicyAgent(store, node, kernel)
    agent.load()
    t1 = time.perf_counter()
    agent.apply(full=True)
    t2 = time.perf_counter()
    tools = sum(seconds for _, seconds, _ in kernel.calls)
    restores = [(argv, seconds, text) for argv, seconds, text in kernel.calls if text is not None]
    by_tool: dict[str, float] = {}
    for argv, seconds, text in kernel.calls:
        name = argv[0] if text is not None or argv[0].endswith("-save") else f"{argv[0]} (other)"
        by_tool[name] = by_tool.get(name, 0.0) + seconds
    return ({"total": t2 - t0, "load": t1 - t0, "apply": t2 - t1, "tools": tools,
             "restores": sum(s for _, s, _ in restores), "calls": len(kernel.calls), "by_tool": by_tool,
             "text_lines": sum(t.count("\n") for _, _, t in restores)},
            # the agent writes IPv4 and IPv6 concurrently: keep each family's order, IPv4 first
            sorted(((argv, text) for argv, _, text in restores), key=lambda c: _family(*c)))


def _family(argv: list[str], text: str) -> int:
    return 6 if argv[0].startswith("ip6tables") or "family inet6" in text else 4


def helper_resync(args: list[str]) -> int:
    """``_resync E P REMOTE DATA_DIR TEXT_DIR``: in this netns, populate a private etcd,
    time a fresh agent into the empty kernel and again (restart); save the texts it wrote."""
    n_local, n_profiles, n_remote = int(args[0]), int(args[1]), int(args[2])
    data_dir, text_dir = args[3], args[4]
    server, store = _private_etcd(data_dir)
    try:
        profiles = bench_profiles(n_profiles)
        endpoints = bench_endpoints(NODE, n_local, LOCAL_BASE, n_profiles) + remote_endpoints(n_remote, n_profiles)
        write_records(store, records(profiles, endpoints))
        result = {}
        for case in ("empty", "restart"):
            figures, texts = timed_resync(store, NODE)
            result[case] = figures
            with open(os.path.join(text_dir, f"{case}.json"), "w") as f:
                json.dump(texts, f)
        result["kernel"] = _kernel_counts()
        result["expected"] = _expected(store, NODE)
        print(json.dumps(result), flush=True)
        return 0
    finally:
        store.close()
        server.stop()


def helper_floor(args: list[str]) -> int:
    """``_floor TEXT_DIR [parallel]``: in this (empty) netns, replay the agent's restore texts bare:
    once into the empty kernel and once more (the restart case). With ``parallel`` (context for
    a proposal): only the empty case, the sets first, then IPv4 and IPv6 restored concurrently."""
    out = {}
    for case in ("empty",) if args[1:] == ["parallel"] else ("empty", "restart"):
        with open(os.path.join(args[0], f"{case}.json")) as f:
            texts = json.load(f)
        started = time.perf_counter()
        if args[1:] == ["parallel"]:
            for argv, text in texts:
                if argv[0] == "ipset":
                    subprocess.run(argv, input=text, text=True, capture_output=True, check=True)
            procs = [(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, text=True), text)
                     for argv, text in texts if argv[0] != "ipset"]
            for proc, text in procs:
                proc.stdin.write(text)
                proc.stdin.close()
            if any(proc.wait() for proc, _ in procs):
                raise RuntimeError("a concurrent restore failed")
        else:
            for argv, text in texts:
                subprocess.run(argv, input=text, text=True, capture_output=True, check=True)
        out[case] = time.perf_counter() - started
    print(json.dumps(out), flush=True)
    return 0


def helper_scale(args: list[str]) -> int:
    """``_scale DATA_DIR E,P,REMOTE ...``: for each point, the agent's full resync and the
    kernel's WARREN rule count (JSON list)."""
    server, store = _private_etcd(args[0])
    out = []
    try:
        for point in args[1:]:
            n_local, n_profiles, n_remote = (int(x) for x in point.split(","))
            store.delete_prefix(keys.PREFIX)
            profiles = bench_profiles(n_profiles)
            endpoints = (bench_endpoints(NODE, n_local, LOCAL_BASE, n_profiles)
                         + remote_endpoints(n_remote, n_profiles))
            write_records(store, records(profiles, endpoints))
            figures, _ = timed_resync(store, NODE)
            refs = sum(len(e.profiles) for e in endpoints if e.host == NODE)
            used = {p for e in endpoints if e.host == NODE for p in e.profiles}
            profile_rules = sum(len(p.inbound_rules) + len(p.outbound_rules) for p in profiles
                                if p.name in used)
            out.append({"endpoints": n_local, "profiles": n_profiles, "remote": n_remote,
                        "refs": refs, "profile_rules": profile_rules, "seconds": figures["total"],
                        "kernel": _kernel_counts(), "expected": _expected(store, NODE)})
        print(json.dumps(out), flush=True)
        return 0
    finally:
        store.close()
        server.stop()


def _tmpfs_dir(prefix: str) -> str:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def fit_linear(rows: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """Least squares y = a*x1 + b*x2 + c over (x1, x2, y); returns (a, b, c, max |residual|)."""
    n = len(rows)
    sx1 = sum(r[0] for r in rows)
    sx2 = sum(r[1] for r in rows)
    sy = sum(r[2] for r in rows)
    m = [[sum(r[0] * r[0] for r in rows), sum(r[0] * r[1] for r in rows), sx1],
         [sum(r[0] * r[1] for r in rows), sum(r[1] * r[1] for r in rows), sx2],
         [sx1, sx2, n]]
    v = [sum(r[0] * r[2] for r in rows), sum(r[1] * r[2] for r in rows), sy]
    # Gaussian elimination with partial pivoting on the 3x3 normal equations
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        m[col], m[pivot], v[col], v[pivot] = m[pivot], m[col], v[pivot], v[col]
        if abs(m[col][col]) < 1e-12:
            raise ValueError("the grid does not determine a linear fit (vary both counts)")
        for r in range(col + 1, 3):
            f = m[r][col] / m[col][col]
            m[r] = [a - f * b for a, b in zip(m[r], m[col])]
            v[r] -= f * v[col]
    coef = [0.0, 0.0, 0.0]
    for r in (2, 1, 0):
        coef[r] = (v[r] - sum(m[r][k] * coef[k] for k in range(r + 1, 3))) / m[r][r]
    a, b, c = coef
    worst = max(abs(a * x1 + b * x2 + c - y) for x1, x2, y in rows)
    return a, b, c, worst


def resync_round(args, r: int, text_dirs: list[str]) -> dict:
    """One round in fresh namespaces: the agent (which saves the texts it wrote) and the floor.
    Odd rounds time the floor first, with the previous round's (identical) texts, so neither
    side always runs first on a machine whose load drifts."""
    data_dir = _tmpfs_dir("warren-bench-policy-etcd-")
    text_dirs.append(tempfile.mkdtemp(prefix="warren-bench-policy-"))
    try:
        with private_netns("wpba") as agent_ns, private_netns("wpbf") as floor_ns, \
                private_netns("wpbp") as parallel_ns:
            def agent() -> dict:
                return run_json(in_netns_argv(agent_ns, "_resync", str(args.endpoints), str(args.profiles),
                                              str(args.endpoints), data_dir, text_dirs[-1]))

            def floor() -> dict:
                texts = text_dirs[-1] if r % 2 == 0 else text_dirs[-2]
                got = run_json(in_netns_argv(floor_ns, "_floor", texts))
                got["parallel"] = run_json(in_netns_argv(parallel_ns, "_floor", texts, "parallel"))["empty"]
                return got
            if r % 2 == 0:
                result = {"agent": agent(), "floor": floor()}
            else:
                result = {"floor": floor(), "agent": agent()}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    agent_r, floor_r = result["agent"], result["floor"]
    for case in ("empty", "restart"):
        a = agent_r[case]
        print(f"   round {r + 1} {case:7s}: agent {a['total'] * 1000:6.0f} ms (load {a['load'] * 1000:4.0f}, "
              f"apply {a['apply'] * 1000:5.0f}: restore tools {a['restores'] * 1000:5.0f}, other tools "
              f"{(a['tools'] - a['restores']) * 1000:4.0f} in {a['calls']} calls, summed over the "
              "concurrent IPv4 and IPv6 writers); bare restore of the same "
              f"{a['text_lines']} lines {floor_r[case] * 1000:6.0f} ms"
              + (f" (IPv4 and IPv6 concurrently: {floor_r['parallel'] * 1000:.0f} ms)" if case == "empty" else "")
              + ("   [floor timed first]" if r % 2 else ""), flush=True)
    return result


def part_resync(args) -> dict:
    """Part 1; returns every figure (also printed)."""
    print(f"\n1. resync: {args.endpoints} local endpoint records, {args.profiles} profiles, "
          f"{args.endpoints} remote endpoints on {REMOTE_HOSTS} other hosts; {args.runs} rounds, "
          "each in fresh namespaces", flush=True)
    rounds = []
    text_dirs: list[str] = []
    try:
        for r in range(args.runs):
            rounds.append(resync_round(args, r, text_dirs))
        texts = set()
        for d in text_dirs:
            for case in ("empty", "restart"):
                with open(os.path.join(d, f"{case}.json")) as f:
                    texts.add((case, f.read()))
        if len(texts) != 2:
            raise RuntimeError("the agent wrote different texts in different rounds: the floor compared is not its own")
    finally:
        for d in text_dirs:
            shutil.rmtree(d, ignore_errors=True)
    kernel, expected = rounds[-1]["agent"]["kernel"], rounds[-1]["agent"]["expected"]
    print(f"   kernel after the resync: {kernel['rules4']} IPv4 / {kernel['rules6']} IPv6 WARREN rules in "
          f"{kernel['chains4']} / {kernel['chains6']} chains, {kernel['sets4']} IPv4 tag sets with "
          f"{kernel['set_entries4']} entries (generator: {expected['rules4']} / {expected['rules6']} rules, "
          f"{expected['set_entries4']} entries) {'OK' if kernel == expected else 'MISMATCH'}")
    summary = {"rounds": rounds, "kernel": kernel, "expected": expected}
    for case in ("empty", "restart"):
        agent_t = statistics.median(r["agent"][case]["total"] for r in rounds)
        floor_t = statistics.median(r["floor"][case] for r in rounds)
        detail = {k: statistics.median(r["agent"][case][k] for r in rounds) for k in ("load", "apply", "tools")}
        tools = sorted({t for r in rounds for t in r["agent"][case]["by_tool"]})
        by_tool = {t: statistics.median(r["agent"][case]["by_tool"].get(t, 0.0) for r in rounds) for t in tools}
        summary[case] = {"agent": agent_t, "floor": floor_t, "by_tool": by_tool, **detail}
        print(f"   {case:7s} median: agent {agent_t * 1000:.0f} ms (load {detail['load'] * 1000:.0f}, apply "
              f"{detail['apply'] * 1000:.0f}; kernel tools, summed over IPv4 and IPv6 running at once, "
              f"{detail['tools'] * 1000:.0f}), floor "
              f"{floor_t * 1000:.0f} ms, agent/floor {agent_t / floor_t:.2f}   goal <= {GOAL_RESYNC:.0f} s   "
              f"{verdict(agent_t <= GOAL_RESYNC)}", flush=True)
        print("           the agent's tool time by tool: "
              + ", ".join(f"{t} {v * 1000:.0f} ms" for t, v in by_tool.items()), flush=True)
    parallel = statistics.median(r["floor"]["parallel"] for r in rounds)
    summary["floor_parallel"] = parallel
    print(f"   (context) the empty-case floor with IPv4 and IPv6 restored concurrently: {parallel * 1000:.0f} ms "
          f"({parallel / summary['empty']['floor']:.2f} of the sequential floor)", flush=True)

    # rule count over a grid, and with four times the members
    grid = [(e, p, e) for e in args.scale_endpoints for p in args.scale_profiles]
    big_e, big_p = max(args.scale_endpoints), max(args.scale_profiles)
    grid.append((big_e, big_p, 4 * big_e))
    print(f"\n   rule count (IPv4 WARREN rules in the kernel) over endpoints x profiles, remote = local; "
          f"then {big_e} x {big_p} with 4x the remote members", flush=True)
    data_dir = _tmpfs_dir("warren-bench-policy-etcd-")
    try:
        with private_netns("wpbs") as ns:
            points = run_json(in_netns_argv(ns, "_scale", data_dir, *(f"{e},{p},{r}" for e, p, r in grid)))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    for pt in points:
        k = pt["kernel"]
        members = k["set_entries4"] / max(1, k["sets4"])
        pt["members_per_tag"] = members
        print(f"   {pt['endpoints']:5d} endpoints {pt['profiles']:4d} profiles ({pt['profile_rules']:4d} profile "
              f"rules) remote {pt['remote']:5d}: {k['rules4']:6d} rules = {k['rules4'] / pt['endpoints']:5.2f} per "
              f"endpoint; tag sets {k['sets4']} x {members:5.1f} members (a rule per endpoint and member: "
              f"{pt['endpoints'] * members:7.0f}); resync {pt['seconds'] * 1000:5.0f} ms"
              + ("" if k == pt["expected"] else "  MISMATCH with the generator"), flush=True)
    same_members = [p for p in points if p["remote"] == p["endpoints"]]
    a, b, c, worst = fit_linear([(p["endpoints"], p["profile_rules"], p["kernel"]["rules4"]) for p in same_members])
    base = next(p for p in same_members if p["endpoints"] == big_e and p["profiles"] == big_p)
    more = points[-1]
    print(f"   fit: rules = {a:.2f} x endpoints + {b:.2f} x profile rules + {c:.1f}, largest residual "
          f"{worst:.1f} rules ({'exactly linear' if worst < 0.5 else 'not exactly linear'}; each endpoint "
          f"averages {base['refs'] / base['endpoints']:.1f} profiles)")
    grows = more["kernel"]["rules4"] - base["kernel"]["rules4"]
    print(f"   4x members ({base['members_per_tag']:.0f} -> {more['members_per_tag']:.0f} per tag): rules "
          f"{base['kernel']['rules4']} -> {more['kernel']['rules4']} ({grows:+d}), set entries "
          f"{base['kernel']['set_entries4']} -> {more['kernel']['set_entries4']}   goal: linear in endpoints + "
          f"rules, never endpoints x members   {verdict(worst < 0.5 and grows == 0)}", flush=True)
    summary.update(points=points, fit=(a, b, c, worst), members_growth=grows)
    return summary


# =====================================================================================
# Lab helpers: a writer on host1, a poller on host2 (python -m bench.policy _name)
# =====================================================================================

def helper_writer(args: list[str]) -> int:
    """``_writer``: JSON lines on stdin, each ``{"puts": [[key, value]...], "deletes": [key...]}``;
    writes them (transactions of TXN_OPS) and answers ``{"t0": before, "t1": after}`` (monotonic)."""
    store = Datastore(EtcdConfig.from_env())
    store.revision()  # connected before the first timed write
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        ops = [Put(k, v) for k, v in request.get("puts", ())] + [Delete(k) for k in request.get("deletes", ())]
        t0 = time.monotonic()
        for i in range(0, len(ops), TXN_OPS):
            store.txn([], ops[i:i + TXN_OPS])
        print(json.dumps({"t0": t0, "t1": time.monotonic()}), flush=True)
    store.close()
    return 0


def _present(request: dict) -> bool:
    """Whether this namespace's kernel holds what ``request`` names (a missing set or chain: no)."""
    if request["kind"] == "set":
        argv = ["ipset", "test", request["name"], request["needle"]]
        return subprocess.run(argv, capture_output=True).returncode == 0
    done = subprocess.run(["iptables", "-w", "5", "-S", request["name"]], capture_output=True, text=True)
    return done.returncode == 0 and any(request["needle"] + " " in line + " " for line in done.stdout.splitlines())


def helper_poll(args: list[str]) -> int:
    """``_poll INTERVAL``: JSON lines on stdin ``{"kind": "set"|"rule", "name", "needle", "want", "timeout"}``.

    Answers ``{"armed": t}`` (the kernel is not yet in the wanted state) or
    ``{"error": ...}``, then polls every INTERVAL s (``ipset test SET ADDR`` or
    ``iptables -S CHAIN``, a process each) and answers ``{"seen": end of the
    poll that saw it, "start": its start, "polls": n}`` or ``{"timeout": n}``."""
    interval = float(args[0])
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if _present(request) == request["want"]:
            print(json.dumps({"error": f"{request['name']} already {'has' if request['want'] else 'lacks'} "
                                       f"{request['needle']}"}), flush=True)
            continue
        armed = time.monotonic()
        print(json.dumps({"armed": armed}), flush=True)
        polls = 0
        while True:
            start = time.monotonic()
            state = _present(request)
            end = time.monotonic()
            polls += 1
            if state == request["want"]:
                print(json.dumps({"seen": end, "start": start, "polls": polls, "armed": armed}), flush=True)
                break
            if end - armed > request["timeout"]:
                print(json.dumps({"timeout": polls}), flush=True)
                break
            time.sleep(interval)
    return 0


class HostHelper:
    """A long-running helper of this module inside a lab host (its net, mount and UTS namespaces)."""

    def __init__(self, lab, host: str, *args: str):
        self.host = host
        self.err = tempfile.TemporaryFile(mode="w+")
        argv = lab.nsenter_argv(host, [sys.executable, "-m", "bench.policy", *args], cwd=REPO)
        self.proc = subprocess.Popen(argv, env=lab.env(host), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self.next(60) != "ready":
            raise RuntimeError(f"{host}: helper {args[0]} did not start: {self.stderr()}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def stderr(self) -> str:
        self.err.seek(0)
        return " ".join(self.err.read().split())[-500:]

    def next(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.host}: helper silent for {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.host}: helper exited {self.proc.wait()}: {self.stderr()}")
        return line

    def send(self, request: dict) -> None:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def ask(self, request: dict, timeout: float = 120) -> dict:
        self.send(request)
        return json.loads(self.next(timeout))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.err.close()


# =====================================================================================
# 2. Latency
# =====================================================================================

LAT_DST, LAT_SRC = "lat-dst", "lat-src"     # host2's endpoint uses LAT_DST, whose rule names tag LAT_SRC
LAT_DST_ADDR = "10.20.120.1"
LAT_MEMBER_BASE = "10.20.121.0"
LAT_PORT = 20000
POLL_INTERVAL = 0.01


def latency_profile(name: str) -> Profile:
    """LAT_DST or LAT_SRC as first written: own tag, inbound allow from tag LAT_SRC, outbound allow."""
    return Profile(name, [name], [Rule.make("allow", src_tag=LAT_SRC)], [Rule.make("allow")])


def latency_records(changes: int) -> tuple[list[tuple[str, str]], list[Endpoint]]:
    """The profiles, host2's endpoint and host1's (not yet member) endpoints; returns (records, members)."""
    dst, src = latency_profile(LAT_DST), latency_profile(LAT_SRC)
    host2 = Endpoint(endpoint_id("host2", 999999), "", "host2", [LAT_DST_ADDR], profiles=[LAT_DST])
    first = ipaddress.ip_address(LAT_MEMBER_BASE)
    members = [Endpoint(endpoint_id("host1", 900000 + i), "", "host1", [str(first + 1 + i)], profiles=[])
               for i in range((changes + 1) // 2)]
    return records([dst, src], [host2] + members), members


def measure_latency(writer: HostHelper, poller: HostHelper, changes: int, label: str) -> dict[str, list[dict]]:
    """``changes`` membership and ``changes`` rule changes, alternating add/remove, interleaved."""
    _, members = latency_records(changes)
    dst = latency_profile(LAT_DST)
    set_name, chain = names.tag_set(LAT_SRC, 4), names.profile_chain(LAT_DST, "inbound")
    out: dict[str, list[dict]] = {"membership": [], "rule": []}
    for i in range(changes):
        add = i % 2 == 0
        # membership: member i//2 gains (then loses) LAT_SRC, so its address enters (leaves) host2's set
        member = members[i // 2]
        member.profiles = [LAT_SRC] if add else []
        write = {"puts": [(keys.endpoint(member.host, member.id), codec.dumps(member).decode())]}
        watch = {"kind": "set", "name": set_name, "needle": member.ipv4[0], "want": add}
        out["membership"].append(_one_change(writer, poller, write, watch, add))
        # rule: a port rule added to (then removed from) LAT_DST, whose inbound chain host2 holds
        port = LAT_PORT + i // 2
        rule = Rule.make("allow", "tcp", src_tag=LAT_SRC, dst_ports=[port])
        profile = dst.with_rules("inbound", dst.inbound_rules + ([rule] if add else []))
        write = {"puts": [(keys.profile(LAT_DST), codec.dumps(profile).decode())]}
        watch = {"kind": "rule", "name": chain, "needle": f"--dports {port}", "want": add}
        out["rule"].append(_one_change(writer, poller, write, watch, add))
        for kind in ("membership", "rule"):
            r = out[kind][-1]
            print(f"   {label} {i + 1:3d} {kind:10s} {'add   ' if add else 'remove'} "
                  f"{r['seconds'] * 1000:7.1f} ms (write {r['write'] * 1000:5.1f} ms, {r['polls']:3d} polls)",
                  flush=True)
    return out


def _one_change(writer: HostHelper, poller: HostHelper, write: dict, watch: dict, add: bool) -> dict:
    armed = poller.ask({**watch, "timeout": 30.0})
    if "armed" not in armed:
        raise RuntimeError(f"latency probe: {armed}")
    wrote = writer.ask(write)
    seen = json.loads(poller.next(60))
    if "seen" not in seen:
        raise RuntimeError(f"host2 did not enforce the change within 30 s: {watch}")
    time.sleep(0.1)  # let the agent's write settle before the next change
    return {"seconds": seen["seen"] - wrote["t0"], "write": wrote["t1"] - wrote["t0"], "polls": seen["polls"],
            "cycle": (seen["seen"] - seen["armed"]) / seen["polls"], "add": add}


def report_latency(label: str, results: dict[str, list[dict]]) -> dict:
    out = {}
    for kind, rs in results.items():
        secs = [r["seconds"] for r in rs]
        p50, p99 = percentile(secs, 50), percentile(secs, 99)
        cycle = statistics.median(r["cycle"] for r in rs)
        adds = [r["seconds"] for r in rs if r["add"]]
        removes = [r["seconds"] for r in rs if not r["add"]]
        out[kind] = {"p50": p50, "p99": p99, "max": max(secs), "n": len(secs),
                     "add_p50": statistics.median(adds), "remove_p50": statistics.median(removes)}
        print(f"   {label}: {kind:10s} n={len(secs)} p50 {p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms, max "
              f"{max(secs) * 1000:6.1f} ms (add p50 {statistics.median(adds) * 1000:.1f}, remove p50 "
              f"{statistics.median(removes) * 1000:.1f}; poll cycle {cycle * 1000:.1f} ms)   goal p99 <= "
              f"{GOAL_LATENCY_P99:.0f} s   {verdict(p99 <= GOAL_LATENCY_P99)}", flush=True)
    return out


# =====================================================================================
# 3. Data plane, and the lab around parts 2 and 3
# =====================================================================================

NETWORK, SUBNET = "wpol", "10.20.70.0/24"
HOST_LOCAL_BASE = {"host1": "10.20.128.0", "host2": "10.20.160.0"}
PINGPONG_PORT = 5301
CONNECTS = 200
PINGPONG_SERVER = r"""
import socket, sys, threading

def echo(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(64)
        if not d:
            break
        c.sendall(d)
    c.close()

s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(256)
print("ready", flush=True)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""
PINGPONG_CLIENT = r"""
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
c = socket.create_connection((host, port), timeout=10); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg, clock = b"x" * 64, time.perf_counter_ns

def rtt(n):
    out = []
    for i in range(n):
        t = clock(); c.sendall(msg); got = 0
        while got < 64:
            d = c.recv(64)
            if not d:
                raise SystemExit("the server closed the connection")
            got += len(d)
        out.append(clock() - t)
    return sorted(out)

def connect(n):
    out = []
    for i in range(n):
        s = socket.socket(); t = clock(); s.connect((host, port)); out.append(clock() - t); s.close()
    return sorted(out)

rtt(500)
print("ready", flush=True)
for line in sys.stdin:
    what, n = line.split()
    got = rtt(int(n)) if what == "rtt" else connect(int(n))
    print(json.dumps({"median": got[len(got) // 2] / 1e3, "mean": sum(got) / len(got) / 1e3,
                      "p99": got[int(len(got) * 0.99)] / 1e3}), flush=True)
"""


def config_records(n_endpoints: int, n_profiles: int) -> list[tuple[str, str]]:
    """100 profiles and ``n_endpoints`` records per host (no veths; addresses outside every pool)."""
    endpoints = [e for host, base in HOST_LOCAL_BASE.items()
                 for e in bench_endpoints(host, n_endpoints, base, n_profiles)]
    return records(bench_profiles(n_profiles), endpoints)


def kernel_state(lab, host: str) -> tuple[int, int]:
    """(WARREN rules, WARREN-FW chains) in a lab host's IPv4 filter table."""
    text = lab.exec(host, ["iptables-save", "-t", "filter"], timeout=60).stdout
    lines = text.splitlines()
    return (sum(1 for line in lines if line.startswith("-A WARREN-")),
            sum(1 for line in lines if line.startswith(":WARREN-FW-")))


def wait_config(lab, n_endpoints: int, timeout: float = 180) -> dict[str, int]:
    """Until both hosts hold at least ``n_endpoints`` endpoint chains and their rule counts are stable."""
    state: dict[str, tuple[int, int]] = {}

    def settled() -> bool:
        now = {h: kernel_state(lab, h) for h in ("host1", "host2")}
        done = all(fw >= n_endpoints for _, fw in now.values()) and now == state
        state.update(now)
        return done
    wait_until(settled, timeout, step=2.0, what=f"{n_endpoints} endpoint chains on both hosts")
    return {h: rules for h, (rules, _) in state.items()}


def dispatch_position(lab, host: str, address: str, chain: str, flag: str) -> tuple[int, int]:
    """(1-based position of the workload's interface rule in ``chain``, rules in it) on ``host``:
    how many rules a flow's first packet walks there."""
    route = lab.exec(host, ["ip", "-o", "route", "get", address]).stdout.split()
    iface = route[route.index("dev") + 1] if "dev" in route else "?"
    rules = [line for line in lab.exec(host, ["iptables", "-w", "5", "-S", chain]).stdout.splitlines()
             if line.startswith("-A ")]
    position = next((i for i, line in enumerate(rules, 1) if f" {flag} {iface} " in line), 0)
    return position, len(rules)


def agent_pid(lab, host: str) -> int | None:
    text = lab.exec(host, ["cat", f"/run/warren/{host}/agent.pid"]).stdout.strip()
    if not text.isdigit():
        return None
    try:
        with open(f"/proc/{text}/cmdline", "rb") as f:
            return int(text) if b"ctl.agent" in f.read() else None
    except OSError:
        return None


def kill_agent(lab, host: str) -> None:
    pid = agent_pid(lab, host)
    if pid is None:
        raise RuntimeError(f"{host}: no running node agent")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


def restart_agent(lab, host: str) -> None:
    h = lab.host(host)
    result = lab.exec(host, ["warrenctl", "node", "start", "--name", host, "--ip", h.ipv4, "--ip6", h.ipv6],
                      cwd=REPO, timeout=120)
    if result.returncode or agent_pid(lab, host) is None:
        raise RuntimeError(f"{host}: warrenctl node start: {result.stdout.strip()} {result.stderr.strip()}")


def set_jumps(lab, on: bool) -> None:
    """Insert (first) or remove the policy's parent jumps on both hosts, both IP versions
    (one shell per host), and check FORWARD's first rule.

    Without the policy, plugin.forward's WARREN-FORWARD drops workload traffic no policy
    judged, so "off" also puts this script's own accepts for the workload interfaces
    first in FORWARD (and "on" removes them): the path without policy is then one
    accept, the cheapest possible.
    """
    steps = []
    bare = [f"-i {WORKLOAD_PREFIX}+ -j ACCEPT", f"-o {WORKLOAD_PREFIX}+ -j ACCEPT"]
    for tool in ("iptables", "ip6tables"):
        jumps = [(parent, target) for parent, target in PARENT_JUMPS.items()]
        optional = [(parent, target) for parent, target in OPTIONAL_PARENT_JUMPS.items()]
        for rule in bare:
            steps.append(f"while {tool} -w 5 -D FORWARD {rule} 2>/dev/null; do :; done")
        for parent, target in jumps + optional:
            steps.append(f"while {tool} -w 5 -D {parent} -j {target} 2>/dev/null; do :; done")
        if on:
            for parent, target in optional:
                steps.append(f"{{ ! {tool} -w 5 -nL {parent} >/dev/null 2>&1 || "
                             f"{tool} -w 5 -I {parent} 1 -j {target}; }}")
            steps += [f"{tool} -w 5 -I {parent} 1 -j {target}" for parent, target in jumps]
        else:
            steps += [f"{tool} -w 5 -I FORWARD 1 {rule}" for rule in bare]
    script = " && ".join(steps) + " && iptables -w 5 -S FORWARD"
    expected = f"-A FORWARD -j {PARENT_JUMPS['FORWARD']}" if on else f"-A FORWARD {bare[-1]}"
    for host in ("host1", "host2"):
        done = lab.exec(host, ["sh", "-c", script], timeout=60)
        first = done.stdout.splitlines()[1:2]
        if done.returncode or first != [expected]:
            raise RuntimeError(f"{host}: policy jumps not {'in' if on else 'out'}: FORWARD starts with {first} "
                               f"{done.stderr.strip()}")


class PingPong:
    """The TCP ping-pong client, pinned to CPU 0 in a container's netns; one connection for
    every RTT sample, so switching the policy on and off applies to it at once."""

    def __init__(self, client_pid: int, target: str):
        argv = in_pid_netns(client_pid, ["taskset", "-c", "0", "python3", "-c", PINGPONG_CLIENT, target,
                                         str(PINGPONG_PORT)])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"ping-pong client to {target} did not start")

    def ask(self, what: str, n: int) -> dict:
        self.proc.stdin.write(f"{what} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"ping-pong client exited {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def measure_dataplane(path: Path, pp: PingPong, lab, args) -> dict[str, dict[str, list[float]]]:
    """Per round: iperf3 -P 4 in each mode, then ``--slices`` alternations of
    ``--round-trips`` ping-pongs per mode, then 200 connects per mode. The mode order flips
    every round (and every slice), so neither mode is always first."""
    res = {mode: {"tcp4": [], "rtt": [], "rtt_mean": [], "rtt_p99": [], "connect": [], "busy": [],
                  "rtt_slices": []} for mode in ("with", "without")}
    res["paired"] = {"rtt": []}
    for r in range(args.rounds):
        order = ("with", "without") if r % 2 == 0 else ("without", "with")
        for mode in order:
            set_jumps(lab, mode == "with")
            busy = wait_quiet(args.quiet, args.quiet_wait) if args.quiet else cpu_busy()
            gbps, retr = iperf(path, 4, args.duration)
            res[mode]["tcp4"].append(gbps)
            res[mode]["busy"].append(busy)
            print(f"   round {r + 1} {mode:7s} 4 streams {gbps:6.2f} Gbit/s ({retr:5d} retr) "
                  f"[background busy {busy:3.0f} %]", flush=True)
        busy = cpu_busy()
        slices: dict[str, list[dict]] = {"with": [], "without": []}
        for j in range(args.slices):
            for mode in (order if j % 2 == 0 else order[::-1]):
                set_jumps(lab, mode == "with")
                slices[mode].append(pp.ask("rtt", args.round_trips))
        connect = {}
        for mode in order:
            set_jumps(lab, mode == "with")
            connect[mode] = pp.ask("connect", CONNECTS)["median"]
        for mode in order:
            m, got = res[mode], slices[mode]
            m["rtt"].append(statistics.median(g["median"] for g in got))
            m["rtt_mean"].append(statistics.median(g["mean"] for g in got))
            m["rtt_p99"].append(statistics.median(g["p99"] for g in got))
            m["rtt_slices"] += [g["median"] for g in got]
            m["connect"].append(connect[mode])
            m["busy"].append(busy)
        diffs = [a["median"] - b["median"] for a, b in zip(slices["with"], slices["without"])]
        res["paired"]["rtt"].append(statistics.median(diffs))
        print(f"   round {r + 1} TCP RTT median of {args.slices} x {args.round_trips}: with "
              f"{res['with']['rtt'][-1]:6.1f} us, without {res['without']['rtt'][-1]:6.1f} us, paired "
              f"difference {res['paired']['rtt'][-1]:+5.1f} us; connect with {connect['with']:6.1f} us, without "
              f"{connect['without']:6.1f} us [background busy {busy:3.0f} %]", flush=True)
    return res


def report_dataplane(res: dict[str, dict[str, list[float]]]) -> dict:
    med = {mode: {k: statistics.median(v) for k, v in res[mode].items()} for mode in ("with", "without")}
    w, wo = med["with"], med["without"]
    same_tput = statistics.median(a / b for a, b in zip(res["with"]["tcp4"], res["without"]["tcp4"]))
    same_rtt = statistics.median(res["paired"]["rtt"])
    same_conn = statistics.median(a - b for a, b in zip(res["with"]["connect"], res["without"]["connect"]))
    tput, rtt = w["tcp4"] / wo["tcp4"], w["rtt"] - wo["rtt"]
    for mode in ("with", "without"):
        m = med[mode]
        print(f"   median {mode:7s}: 4 streams {m['tcp4']:6.2f} Gbit/s, TCP RTT {m['rtt']:6.1f} us (mean "
              f"{m['rtt_mean']:6.1f}, p99 {m['rtt_p99']:6.1f}), connect {m['connect']:6.1f} us")
    print(f"   throughput with/without {tput:.2f} [same-round {same_tput:.2f}]   goal >= {GOAL_THROUGHPUT}   "
          f"{verdict(tput >= GOAL_THROUGHPUT)}")
    print(f"   RTT with - without {rtt:+.1f} us [paired slices {same_rtt:+.1f} us]   goal <= +{GOAL_RTT_US:.0f} us   "
          f"{verdict(rtt <= GOAL_RTT_US)}")
    print(f"   (context) TCP connect with - without {w['connect'] - wo['connect']:+.1f} us "
          f"[same-round {same_conn:+.1f} us]: a flow's first packet walks the chains")
    busy = statistics.median(b for mode in ("with", "without") for b in res[mode]["busy"])
    print(f"   background CPU busy before the cells: median {busy:.0f} % "
          f"(above ~15 % the figures are contaminated by other work on this machine)", flush=True)
    return {"median": med, "throughput": tput, "throughput_same_round": same_tput, "rtt": rtt,
            "rtt_same_round": same_rtt, "busy": busy}


def start_containers(lab) -> tuple[int, str, int, str]:
    """A container on each host on one warren network; (pid1, addr1, pid2, addr2) once they talk."""
    create_network(lab, ("host1", "host2"), NETWORK, SUBNET)
    pid1, addr1 = run_container(lab, "host1", "pc1", NETWORK)
    pid2, addr2 = run_container(lab, "host2", "pc2", NETWORK)
    block = str(ipaddress.ip_network(f"{addr2}/26", strict=False))
    wait_until(lambda: any(r.startswith(block) for r in bgp_routes(lab, "host1")), 120, step=0.5,
               what=f"host2's block {block} routed on host1 (BGP session up)")
    if not cross_host_pings(lab, pid1, addr2, timeout=60):
        raise RuntimeError(f"no cross-host connectivity on {NETWORK} ({addr2} from host1; host1's "
                           f"BGP routes: {'; '.join(bgp_routes(lab, 'host1')) or 'none'})")
    return pid1, addr1, pid2, addr2


def start_pingpong(pid1: int, pid2: int, addr2: str, started: list) -> PingPong:
    """The ping-pong server (CPU 1) in container 2 and the client (CPU 0) in container 1."""
    server = subprocess.Popen(in_pid_netns(pid2, ["taskset", "-c", "1", "python3", "-c", PINGPONG_SERVER,
                                                  str(PINGPONG_PORT)]),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started.append(server)
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("ping-pong server did not start")
    client = PingPong(pid1, addr2)
    started.append(client)
    return client


def connect_cost(lab, containers: tuple[int, str, int, str], pp: PingPong, label: str) -> dict:
    """TCP connect time across hosts with the policy in place (median of 3 x CONNECTS, us),
    and how many dispatch rules the SYN walks (host1's WARREN-FROM-WL + host2's WARREN-TO-WL)."""
    _, addr1, _, addr2 = containers
    from_pos = dispatch_position(lab, "host1", addr1, "WARREN-FROM-WL", "-i")
    to_pos = dispatch_position(lab, "host2", addr2, "WARREN-TO-WL", "-o")
    seconds = statistics.median(pp.ask("connect", CONNECTS)["median"] for _ in range(3))
    print(f"\n   TCP connect across hosts with the policy in place, {label} configuration: {seconds:.1f} us "
          f"(median of {3 * CONNECTS}); the SYN walks rule {from_pos[0]} of {from_pos[1]} in host1's "
          f"WARREN-FROM-WL and rule {to_pos[0]} of {to_pos[1]} in host2's WARREN-TO-WL", flush=True)
    return {"us": seconds, "walked": from_pos[0] + to_pos[0]}


def setup_latency(lab, writer: HostHelper, changes: int, helpers: list) -> HostHelper:
    poller = HostHelper(lab, "host2", "_poll", str(POLL_INTERVAL))
    helpers.append(poller)
    items, _ = latency_records(changes)
    writer.ask({"puts": items})
    set_name, chain = names.tag_set(LAT_SRC, 4), names.profile_chain(LAT_DST, "inbound")
    wait_until(lambda: set_name in lab.exec("host2", ["ipset", "list", "-n"]).stdout.split()
               and lab.exec("host2", ["iptables", "-w", "5", "-S", chain]).returncode == 0,
               60, step=0.5, what=f"host2: set {set_name} and chain {chain}")
    return poller


def load_config(lab, writer: HostHelper, args) -> dict[str, int]:
    started = time.monotonic()
    writer.ask({"puts": config_records(args.endpoints, args.profiles)})
    rules = wait_config(lab, args.endpoints)
    print(f"\nconfiguration: {args.profiles} profiles, {args.endpoints} endpoint records per host; kernels hold "
          f"{rules['host1']} / {rules['host2']} IPv4 WARREN rules after {time.monotonic() - started:.0f} s",
          flush=True)
    return rules


def run_dataplane(lab, args, containers: tuple[int, str, int, str], pp: PingPong, started: list) -> dict:
    pid1, _, pid2, addr2 = containers
    print(f"\n3. dataplane: {args.rounds} rounds, policy jumps in place ('with') and removed "
          f"('without'), alternating; per round iperf3 -P 4 -t {args.duration} in each mode, then "
          f"{args.slices} alternations of {args.round_trips} TCP ping-pongs on one connection (client "
          f"CPU 0, server CPU 1), then {CONNECTS} TCP connects per mode", flush=True)
    for host in ("host1", "host2"):
        kill_agent(lab, host)
    path = Path(NETWORK, in_pid_netns(pid1, []), in_pid_netns(pid2, []), addr2)
    path.start_server()
    started.append(path)
    out = report_dataplane(measure_dataplane(path, pp, lab, args))
    set_jumps(lab, True)
    for host in ("host1", "host2"):
        restart_agent(lab, host)
    print("   agents restarted with warrenctl node start; cross-host ping after the restart: "
          f"{'ok' if cross_host_pings(lab, pid1, addr2) else 'FAILED'}", flush=True)
    return out


def part_lab(args) -> dict:
    """Parts 2 and 3 in one 2-host warren-lab."""
    from ctl.lab import Lab
    out: dict = {}
    lab = Lab("bp" + secrets.token_hex(3))
    helpers: list[HostHelper] = []
    started: list = []   # servers and clients, stopped in finally
    try:
        t0 = time.monotonic()
        lab.up(2, node=True)
        print(f"\nlab {lab.name} up in {time.monotonic() - t0:.0f} s", flush=True)
        writer = HostHelper(lab, "host1", "_writer")
        helpers.append(writer)
        containers, pp = None, None
        if "dataplane" in args.parts:
            containers = start_containers(lab)
            pp = start_pingpong(containers[0], containers[2], containers[3], started)
        poller = setup_latency(lab, writer, args.changes, helpers) if "latency" in args.parts else None
        for label in ("base", "full"):
            if label == "full":
                out["rules"] = load_config(lab, writer, args)
            if pp is not None:
                out[f"connect_{label}"] = connect_cost(lab, containers, pp, label)
            if poller is not None:
                print(f"\n2. latency, {label} configuration: {args.changes} membership and {args.changes} rule "
                      "changes written on host1, enforced on host2", flush=True)
                out[f"latency_{label}"] = report_latency(label, measure_latency(writer, poller, args.changes, label))
        if pp is not None:
            base, full = out["connect_base"], out["connect_full"]
            per_rule = (full["us"] - base["us"]) / max(1, full["walked"] - base["walked"]) * 1000
            out["ns_per_dispatch_rule"] = per_rule
            print(f"   (context) connect full - base: {full['us'] - base['us']:+.1f} us for "
                  f"{full['walked'] - base['walked']} more top-level dispatch rules walked "
                  "(the dispatch is a two-level tree: the top chain and one branch)", flush=True)
            out["dataplane"] = run_dataplane(lab, args, containers, pp, started)
        return out
    finally:
        for item in started:
            if isinstance(item, Path):
                item.stop_server()
            elif isinstance(item, PingPong):
                item.close()
            elif item.poll() is None:
                item.kill()
                item.wait()
        for helper in helpers:
            helper.close()
        lab.down()


# =====================================================================================
# main
# =====================================================================================

HELPERS = {"_resync": helper_resync, "_floor": helper_floor, "_scale": helper_scale,
           "_writer": helper_writer, "_poll": helper_poll}
PARTS = ("resync", "latency", "dataplane")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if len(values) < 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"give at least two positive numbers: {text!r}")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: resync, latency, dataplane")
    ap.add_argument("--endpoints", type=int, default=1000, help="local endpoint records (per host in the lab)")
    ap.add_argument("--profiles", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5, help="resync rounds")
    ap.add_argument("--scale-endpoints", type=_int_list, default=[250, 500, 1000])
    ap.add_argument("--scale-profiles", type=_int_list, default=[25, 50, 100])
    ap.add_argument("--changes", type=int, default=40, help="latency: changes of each kind, per configuration")
    ap.add_argument("--rounds", type=int, default=6, help="dataplane: rounds of with/without")
    ap.add_argument("--duration", type=int, default=3, help="dataplane: seconds per iperf3 run (plus 1 omitted)")
    ap.add_argument("--round-trips", type=int, default=1000, help="dataplane: TCP ping-pongs per slice")
    ap.add_argument("--slices", type=int, default=10, help="dataplane: with/without alternations of the "
                    "ping-pong per round")
    ap.add_argument("--quiet", type=float, default=0.0, metavar="PCT",
                    help="dataplane: before each iperf3 cell wait until other work keeps the CPUs less than "
                         "PCT %% busy (at most --quiet-wait s; 0: do not wait)")
    ap.add_argument("--quiet-wait", type=float, default=30.0)
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if not parts or bad:
        ap.error(f"--parts: unknown part {bad[0] if bad else '(none)'}: use {', '.join(PARTS)}")
    if args.profiles < 2 or args.endpoints < 1 or args.runs < 1 or args.changes < 2 or args.rounds < 1:
        ap.error("need --profiles >= 2, --endpoints >= 1, --runs >= 1, --changes >= 2, --rounds >= 1")
    if min(args.scale_profiles) < 2:
        ap.error("--scale-profiles: at least 2 profiles per point")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in HELPERS:
        return HELPERS[argv[0]](argv[1:])
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.policy: must run as root (namespaces, iptables)", file=sys.stderr)
        return 2
    missing = [t for t in ("etcd", "iptables-restore", "ip6tables-restore", "ipset", "nsenter") if not shutil.which(t)]
    if missing:
        print(f"bench.policy: missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    runinfo.header("Warren policy benchmark", "bench.policy", argv, flush=True)
    if "resync" in args.parts:
        part_resync(args)
    if "latency" in args.parts or "dataplane" in args.parts:
        part_lab(args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
