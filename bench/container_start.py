"""Container start cost of Warren, against baselines measured in the same run.

A. In one warren-lab host (its own dockerd, of the engine ``--engine``, with Docker's
   own firewall on unless ``--docker-firewall off``): ``docker run --rm IMAGE true``
   on a Warren network, on a Docker bridge network, and with ``--net none``,
   interleaved, ``--runs`` of each. Reports medians and warren/bridge (goal <= 1.0:
   as fast as Docker's own bridge). **Timed inside the plugin**: before and after
   every Warren run, the node's Prometheus exporter (``/metrics`` on
   ``127.0.0.1:9091`` inside the host's netns, read by a process run in that netns)
   is scraped; the differences of ``warren_plugin_request_seconds_sum`` per Docker
   call are that container's time inside the plugin's handlers, summed over
   RequestAddress, CreateEndpoint, Join and ProgramExternalConnectivity (goal:
   median <= 10 ms), with the teardown calls of ``--rm`` shown apart. ``--split N``
   also times the start (``docker run -d ... sleep 60``) and the teardown (``docker
   rm -f``) apart, N more rounds, to tell which half a warren/bridge gap is in.
B. Per-endpoint plumbing as a host grows to ``--endpoints`` endpoints: the plugin's
   own request path (RequestAddress, CreateEndpoint, Join, ProgramExternalConnectivity;
   real veths and routes, real etcd) in a private network namespace with its own etcd,
   driven by bench/plugin_profile.py (which also says where the time goes). On a
   shared machine the load drifts more in a few minutes than any growth would show,
   so a second plugin in namespaces and an etcd of its own, holding 10 endpoints (each
   new one removed again), is driven in turn with the growing one: the figure is the
   same-time ratio growing/small, its median over the last 50 endpoints against
   endpoints 11-60 (goal: flat within 1.2x), with the cost by kind (etcd, netlink,
   sysctl, python, flask) early and late on both hosts.

Everything runs in namespaces this script creates and removes; nothing is sent
outside them.

    python -m bench.container_start [--runs 20] [--endpoints 1000] [--engine 28]
                                    [--docker-firewall on|off] [--parts A,B] [--split N]
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import secrets
import statistics
import sys
import time

from bench.plugin_profile import START_CALLS, STOP_CALLS, Harness, by_kind
from bench.runinfo import header
from ctl.lab import IMAGE, Lab

GOAL_START = 1.0     # warren / bridge
GOAL_PLUGIN_MS = 10  # the plugin's own time per container, median
GOAL_FLAT = 1.2
METRIC = "warren_plugin_request_seconds"
POLICY = "warren_policy_apply_seconds"  # the node agent's policy writes, which share the CPUs meanwhile
SCRAPE = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
          "'http://127.0.0.1:9091/metrics', timeout=10).read().decode())")
# The served plugin's cost per request beyond its handler: an empty call (DiscoverNew answers {}),
# sent as dockerd sends it (a fresh unix-socket connection, HTTP/1.1 POST, JSON), timed by the client.
PROBE = """
import socket, statistics, sys, time
path, n, out = sys.argv[1], int(sys.argv[2]), []
req = (b"POST /NetworkDriver.DiscoverNew HTTP/1.1\\r\\nHost: plugin\\r\\n"
       b"Content-Type: application/json\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
for _ in range(n):
    t = time.perf_counter()
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(req)
    data = b""
    while True:  # until the whole answer (Content-Length) is in, as an HTTP client returns
        chunk = s.recv(65536)
        data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        length = [int(l.split(b":")[1]) for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length:")]
        if not chunk or (length and len(body) >= length[0]):
            break
    out.append(time.perf_counter() - t)
    s.close()
print(statistics.median(out))
"""
PLUGIN_SOCKET = "/run/docker/plugins/warren.sock"


# -- A. docker run ---------------------------------------------------------------

def parse_latency(text: str, metric: str = METRIC, label: str = "endpoint") -> dict[str, tuple[float, float]]:
    """Prometheus text -> {label value: (seconds summed, observations)} of a histogram
    (by default the plugin's request latency by Docker call)."""
    out: dict[str, list[float]] = {}
    pattern = re.compile(rf'^{metric}_(sum|count)\{{[^}}]*{label}="([^"]+)"[^}}]*\}} (\S+)$')
    for line in text.splitlines():
        m = pattern.match(line.strip())
        if m:
            cell = out.setdefault(m.group(2), [0.0, 0.0])
            cell[0 if m.group(1) == "sum" else 1] += float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def latency_delta(before: dict[str, tuple[float, float]],
                  after: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Per call: (seconds, requests) between two scrapes; calls that did not happen are left out."""
    out = {}
    for call, (s, n) in after.items():
        s0, n0 = before.get(call, (0.0, 0.0))
        if n - n0 > 0:
            out[call] = (s - s0, n - n0)
    return out


def lab_up(lab: Lab, engine: str | None, firewall: str | None) -> None:
    wanted = {"engine": engine, "docker_firewall": None if firewall is None else firewall == "on"}
    wanted = {k: v for k, v in wanted.items() if v is not None}
    accepted = inspect.signature(lab.up).parameters
    missing = [k for k in wanted if k not in accepted]
    if missing:
        raise SystemExit(f"this warren-lab cannot choose {', '.join(missing)} yet (Lab.up has no such argument)")
    lab.up(1, node=True, **wanted)


def measure_docker_run(runs: int, engine: str | None = None, firewall: str | None = None,
                       split: int = 0) -> dict:
    lab = Lab("b" + secrets.token_hex(3))
    try:
        lab_up(lab, engine, firewall)
        status = lab.status()
        host = status.get("hosts", [{}])[0]
        info = {"engine": status.get("engine"), "docker_version": host.get("docker_version"),
                "docker_firewall": status.get("docker_firewall")}

        def docker(*args: str) -> None:
            result = lab.docker("host1", list(args), timeout=120)
            if result.returncode:
                raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")

        def scrape() -> dict[str, tuple[float, float]]:
            result = lab.exec("host1", [sys.executable, "-c", SCRAPE], timeout=60)
            if result.returncode:
                raise RuntimeError(f"metrics scrape in host1: {result.stderr.strip()[-300:]}")
            return {**parse_latency(result.stdout),
                    **{f"{POLICY} {k}": v for k, v in parse_latency(result.stdout, POLICY, "kind").items()}}

        docker("network", "create", "-d", "warren", "--ipam-driver", "warren",
               "--subnet", "10.20.90.0/24", "wnet")
        docker("network", "create", "-d", "bridge", "--subnet", "10.20.91.0/24", "bnet")
        kinds = {"warren": ["--net", "wnet"], "bridge": ["--net", "bnet"], "none": ["--net", "none"]}
        failures: list[str] = []

        def run(kind: str, attempts: int = 3) -> None:
            """A run that fails (runc, newer engines, load) is repeated; the failures are reported."""
            for attempt in range(1, attempts + 1):
                try:
                    return docker("run", "--rm", *kinds[kind], IMAGE, "true")
                except RuntimeError as exc:
                    if attempt == attempts:
                        raise
                    failures.append(f"{kind}: {' '.join(str(exc).split())[-200:]}")

        for kind in kinds:  # warm-up: image, plugin activation, first block
            run(kind)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        plugin: list[dict[str, tuple[float, float]]] = []
        order = list(kinds)
        for i in range(runs):
            for kind in order[i % 3:] + order[:i % 3]:  # rotate who goes first
                before = scrape() if kind == "warren" else None
                n = len(failures)
                t = time.perf_counter()
                run(kind)
                elapsed = time.perf_counter() - t
                if len(failures) > n:  # this timing includes a failed attempt: not kept (None)
                    times[kind].append(None)
                    continue
                times[kind].append(elapsed)
                if before is not None:
                    plugin.append(latency_delta(before, scrape()))
        info["failures"] = failures
        # start and teardown apart: `docker run -d ... sleep` (returns once started), then `docker rm -f`
        parts: dict[str, dict[str, list[float]]] = {k: {"start": [], "rm": []} for k in kinds}
        for i in range(split):
            for kind in order[i % 3:] + order[:i % 3]:
                name = f"split-{kind}-{i}"
                t = time.perf_counter()
                started = lab.docker("host1", ["run", "-d", "--name", name, *kinds[kind], IMAGE, "sleep", "60"],
                                     timeout=120)
                elapsed = time.perf_counter() - t
                time.sleep(0.2)
                t = time.perf_counter()
                lab.docker("host1", ["rm", "-f", name], timeout=120)
                if started.returncode:
                    failures.append(f"{kind} (split): {' '.join(started.stderr.split())[-200:]}")
                    continue
                parts[kind]["start"].append(elapsed)
                parts[kind]["rm"].append(time.perf_counter() - t)
        info["split"] = parts
        probe = lab.exec("host1", [sys.executable, "-c", PROBE, PLUGIN_SOCKET, "50"], timeout=120)
        info["request_overhead"] = float(probe.stdout) if probe.returncode == 0 else None
        return {"times": times, "plugin": plugin, "info": info}
    finally:
        lab.down()


def report_docker_run(result: dict, runs: int) -> None:
    rounds, plugin, info = result["times"], result["plugin"], result["info"]
    times = {k: [t for t in v if t is not None] for k, v in rounds.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nA. docker run --rm {IMAGE} true, {runs} runs each, interleaved; engine {info['engine']} "
          f"(dockerd {info['docker_version']}), Docker's firewall {'on' if info['docker_firewall'] else 'off'}")
    for failure in info.get("failures", []):
        print(f"   (failed and ran again, that run not counted: {failure})")
    for kind, value in med.items():
        print(f"   {kind:7s} median {value * 1000:7.1f} ms   (min {min(times[kind]) * 1000:.1f}, "
              f"max {max(times[kind]) * 1000:.1f})")
    ratio = med["warren"] / med["bridge"]
    print(f"   warren/bridge = {ratio:.2f}   goal <= {GOAL_START}   {'PASS' if ratio <= GOAL_START else 'MISS'}")
    print(f"   warren - none = {(med['warren'] - med['none']) * 1000:.1f} ms (the network's own cost, "
          "Docker's share included)")
    pairs = [w / b for w, b in zip(rounds["warren"], rounds["bridge"]) if w is not None and b is not None]
    print(f"   (same-round warren/bridge ratios: median {statistics.median(pairs):.2f}, "
          f"min {min(pairs):.2f}, max {max(pairs):.2f})")
    start = [sum(d.get(c, (0.0, 0))[0] for c in START_CALLS) * 1000 for d in plugin]
    stop = [sum(d.get(c, (0.0, 0))[0] for c in STOP_CALLS) * 1000 for d in plugin]
    other = sorted({c for d in plugin for c in d if not c.startswith(POLICY)} - set(START_CALLS) - set(STOP_CALLS))
    print(f"   inside the plugin per Warren container (its latency histogram, scraped around each run):")
    p = statistics.median(start)
    print(f"     start calls ({' + '.join(c.split('.')[-1] for c in START_CALLS)}): median {p:.1f} ms "
          f"(min {min(start):.1f}, max {max(start):.1f})   goal <= {GOAL_PLUGIN_MS} ms   "
          f"{'PASS' if p <= GOAL_PLUGIN_MS else 'MISS'}")
    for call in START_CALLS + STOP_CALLS + tuple(other):
        per = [d.get(call, (0.0, 0)) for d in plugin]
        ms = [s * 1000 for s, _ in per]
        print(f"       {call:44s} median {statistics.median(ms):6.1f} ms, mean {statistics.fmean(ms):6.1f} ms, "
              f"{statistics.fmean(n for _, n in per):.1f} requests per container")
    print(f"     teardown calls (--rm): median {statistics.median(stop):.1f} ms")
    every = [sum(v[0] for k, v in d.items() if not k.startswith(POLICY)) * 1000 for d in plugin]
    calls = statistics.fmean(sum(v[1] for k, v in d.items() if not k.startswith(POLICY)) for d in plugin)
    print(f"     every call: median {statistics.median(every):.1f} ms in the handlers, {calls:.1f} requests")
    policy = [sum(v[0] for k, v in d.items() if k.startswith(POLICY)) * 1000 for d in plugin]
    applies = statistics.fmean(sum(v[1] for k, v in d.items() if k.startswith(POLICY)) for d in plugin)
    print(f"   the node agent's policy writes meanwhile (not the plugin's time; same 2 CPUs): median "
          f"{statistics.median(policy):.1f} ms, {applies:.1f} applies per container")
    split = info.get("split") or {}
    if split.get("warren", {}).get("start"):
        print(f"   start and teardown apart ({len(split['warren']['start'])} rounds: `docker run -d ... sleep 60`, "
              "then `docker rm -f`):")
        for phase in ("start", "rm"):
            m = {k: statistics.median(v[phase]) * 1000 for k, v in split.items() if v[phase]}
            print(f"     {phase:5s}  warren {m['warren']:6.1f} ms, bridge {m['bridge']:6.1f} ms, none "
                  f"{m.get('none', float('nan')):6.1f} ms   warren/bridge = {m['warren'] / m['bridge']:.2f}")
    if info.get("request_overhead") is not None:
        over = info["request_overhead"] * 1000
        print(f"   an empty plugin call timed by a client in host1 (connect, HTTP, werkzeug, Flask): median "
              f"{over:.2f} ms; x {calls:.1f} requests = {over * calls:.1f} ms per container beyond the handlers")


# -- B. per-endpoint plumbing --------------------------------------------------------

SMALL = 10  # endpoints the same-time baseline host holds


def measure_plumbing(count: int, progress: bool = True) -> tuple[list, list]:
    """Two plugins in their own namespaces and etcds, driven in turn (the first one alternating):
    one keeps every endpoint (the host grows to ``count``), the other holds SMALL and removes each
    new one again (the same calls on a small host, in the same minutes). Returns both sample lists."""
    with Harness() as big, Harness() as small:
        for _ in range(SMALL):
            small.container(record=False)
        grown, base = [], []
        for i in range(count):
            if i % 2:
                base.append(small.container(teardown=True))
                grown.append(big.container())
            else:
                grown.append(big.container())
                base.append(small.container(teardown=True))
            if progress and (i + 1) % 100 == 0:
                print(f"   ... {i + 1} endpoints", file=sys.stderr, flush=True)
    return grown, base


def report_plumbing(grown: list, base: list, count: int) -> None:
    costs = [s.total(START_CALLS) for s in grown]
    bases = [s.total(START_CALLS) for s in base]
    early, late = statistics.median(costs[10:30]), statistics.median(costs[-20:])
    print(f"\nB. plugin per-endpoint plumbing ({' + '.join(c.split('.')[-1] for c in START_CALLS)}), "
          f"1 host growing to {count} endpoints, against a host holding {SMALL} driven in turn")
    print(f"   growing host: endpoints 11-30 median {early * 1000:.2f} ms; last 20 median {late * 1000:.2f} ms "
          f"(late/early {late / early:.2f}; load drifts between the two)")
    ratios = [c / b for c, b in zip(costs, bases)]
    r_early, r_late = statistics.median(ratios[10:60]), statistics.median(ratios[-50:])
    print(f"   same-time ratio growing/small host: endpoints 11-60 median {r_early:.2f}; "
          f"last 50 median {r_late:.2f}")
    flat = r_late / r_early
    print(f"   flatness (last 50 / 11-60 of those ratios) = {flat:.2f}   goal <= {GOAL_FLAT}   "
          f"{'PASS' if flat <= GOAL_FLAT else 'MISS'}")
    step = max(len(ratios) // 10, 1)
    print("   same-time ratio per tenth of the run: " + ", ".join(
        f"{statistics.median(ratios[i:i + step]):.2f}" for i in range(0, len(ratios) - step + 1, step)))
    first, last = by_kind(grown[10:60]), by_kind(grown[-50:])
    sfirst, slast = by_kind(base[10:60]), by_kind(base[-50:])
    print("   by kind, ms per endpoint (mean), growing host early -> late [small host early -> late]: " + ", ".join(
        f"{k} {first[k][0]:.2f} -> {last.get(k, (0.0, 0))[0]:.2f} "
        f"[{sfirst.get(k, (0.0, 0))[0]:.2f} -> {slast.get(k, (0.0, 0))[0]:.2f}]" for k in first))


# -- report ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--engine", help="the lab's Docker engine for part A (20.10, 26, 28; "
                                     "default: warren-lab's, $WARREN_LAB_ENGINE)")
    ap.add_argument("--docker-firewall", choices=("on", "off"),
                    help="dockerd's own iptables rules in part A (default: warren-lab's)")
    ap.add_argument("--parts", default="A,B", help="A, B or A,B")
    ap.add_argument("--split", type=int, default=0, metavar="N",
                    help="part A also times start (run -d) and teardown (rm -f) apart, N rounds")
    args = ap.parse_args(argv)
    parts = {p.strip().upper() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"A", "B"}:
        ap.error("--parts takes A, B or A,B")
    if "B" in parts and args.endpoints < 50:
        ap.error("--endpoints must be at least 50")
    header("Warren container start benchmark", "bench.container_start",
           sys.argv[1:] if argv is None else argv, flush=True)
    if "A" in parts:
        report_docker_run(measure_docker_run(args.runs, args.engine, args.docker_firewall, args.split), args.runs)
    if "B" in parts:
        report_plumbing(*measure_plumbing(args.endpoints), args.endpoints)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
