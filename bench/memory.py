"""Node memory at idle: RSS and PSS of every process a Warren node runs.

Starts a warren-lab (``--hosts``, default 1: one host with dockerd, etcd and a
node) and measures the node of host1:

1. **fresh**: once every node process is up (plugin server, node agent,
   ExaBGP and its API process) and ``--settle`` seconds have passed;
2. **after use**: after one ``docker network create`` and one ``docker run``
   on a Warren network (the container keeps running, as on a real host), so
   whatever the plugin loads on its first requests is counted, then
   ``--settle`` seconds of idle. The goal (RSS sum <= 150 MiB) is judged on
   this one, the honest figure, summed over every process of the node. The
   goal was written as "plugin + ExaBGP + API process" when the node had no
   other long-lived process; the node agent (policy, nat-outgoing, the
   speaker supervisor) is counted too, and the sum of the three named ones is
   printed beside it.

The processes are found from the node's pid files in the host's private
``/run/warren/host1/`` (``plugin.pid`` and ``agent.pid``, or ``bgp.pid`` of
older layouts) and their descendants; a process counts once even if two pid
files lead to it. RSS (``VmRSS``) counts shared pages - the Python
interpreter, shared libraries - in every process that maps them; PSS
(``smaps_rollup``) splits them between the processes, so the PSS sum is what
the node really costs the host. USS (private pages only) is shown too.

Everything runs in the lab's namespaces; the lab is removed in ``finally``.

    python -m bench.memory [--hosts 1] [--settle 10] [--samples 3]
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import time

GOAL_MIB = 150.0
IMAGE = "warren-lab/busybox:latest"  # = ctl.lab.IMAGE
PIDFILES = ("plugin.pid", "agent.pid", "bgp.pid")
GOAL_NAMED = ("plugin", "plugin (gunicorn)", "exabgp", "bgp.api")  # what the goal's wording names
LABELS = (("gunicorn", "plugin (gunicorn)"), ("plugin.wsgi", "plugin"), ("ctl.agent", "node agent"),
          ("bgp.speaker", "bgp.speaker"), ("exabgp", "exabgp"), ("bgp.api", "bgp.api"))

from bench import runinfo


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def proc_kib(pid: int, path: str, *fields: str) -> int:
    """Sum of ``fields`` (kB lines) of /proc/PID/``path``; 0 if the process is gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in fields:
                    total += int(line.split()[1])
    except OSError:
        return 0
    return total


def label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    for mark, name in LABELS:
        if mark in cmd:
            return name
    return cmd[:40]


def node_pids(lab, host: str) -> list[int]:
    """The node's processes on ``host``: from its pid files, and their descendants."""
    pids: list[int] = []
    for pidfile in PIDFILES:
        text = lab.exec(host, ["cat", f"/run/warren/{host}/{pidfile}"]).stdout.strip()
        if text.isdigit():
            pids += [p for p in descendants(int(text)) if p not in pids]
    if not pids:
        raise RuntimeError(f"{host}: no node pid file under /run/warren/{host}/")
    return pids


def measure(pids: list[int]) -> list[dict]:
    """RSS, PSS and USS (KiB) of each live process of ``pids``."""
    out = []
    for pid in pids:
        rss = proc_kib(pid, "status", "VmRSS")
        if not rss:
            continue  # gone (or a kernel thread)
        out.append({"pid": pid, "what": label(pid), "rss": rss,
                    "pss": proc_kib(pid, "smaps_rollup", "Pss"),
                    "uss": proc_kib(pid, "smaps_rollup", "Private_Clean", "Private_Dirty")})
    return out


def node_memory(lab, host: str) -> list[dict]:
    """RSS/PSS/USS (KiB) of every process of ``host``'s node (also used by bench.fabric)."""
    return measure(node_pids(lab, host))


def wait_for_node(lab, host: str, timeout: float = 60.0) -> None:
    """Until the plugin, the agent, ExaBGP and its API process all run."""
    want = {"exabgp", "bgp.api"}
    deadline = time.monotonic() + timeout
    while True:
        seen = {p["what"] for p in node_memory(lab, host)}
        if want <= seen and seen & {"plugin", "plugin (gunicorn)"}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host}: node processes not all up within {timeout:.0f}s "
                               f"(running: {', '.join(sorted(seen)) or 'none'})")
        time.sleep(0.5)


def sample(lab, host: str, samples: int) -> list[dict]:
    """The last of ``samples`` readings 1 s apart (they barely move at idle)."""
    reading: list[dict] = []
    for i in range(samples):
        if i:
            time.sleep(1.0)
        reading = node_memory(lab, host)
    return reading


def report(title: str, reading: list[dict]) -> float:
    rss = sum(p["rss"] for p in reading) / 1024
    pss = sum(p["pss"] for p in reading) / 1024
    uss = sum(p["uss"] for p in reading) / 1024
    print(f"\n{title} ({len(reading)} processes)")
    for p in sorted(reading, key=lambda p: -p["rss"]):
        print(f"   {p['what']:18s} pid {p['pid']:7d}  RSS {p['rss'] / 1024:6.1f} MiB  "
              f"PSS {p['pss'] / 1024:6.1f} MiB  USS {p['uss'] / 1024:6.1f} MiB")
    print(f"   total RSS {rss:.1f} MiB, PSS {pss:.1f} MiB, USS {uss:.1f} MiB", flush=True)
    return rss


def docker(lab, host: str, *args: str) -> None:
    result = lab.docker(host, list(args), timeout=120)
    if result.returncode:
        raise RuntimeError(f"{host}: docker {' '.join(args)}: {result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1, choices=(1, 2, 3),
                    help="lab hosts (2 or 3: host1's BGP sessions are up while measured)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of idle before each reading")
    ap.add_argument("--samples", type=int, default=3, help="readings 1 s apart; the last one counts")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("must run as root", file=sys.stderr)
        return 2
    from ctl.lab import Lab

    runinfo.header("Warren node memory", "bench.memory", sys.argv[1:] if argv is None else argv)
    lab = Lab("bm" + secrets.token_hex(3))
    try:
        t = time.monotonic()
        lab.up(args.hosts, node=True)
        print(f"lab {lab.name} up with {args.hosts} host(s) in {time.monotonic() - t:.1f} s", flush=True)
        wait_for_node(lab, "host1")
        time.sleep(args.settle)
        report(f"1. host1's node, fresh: up and {args.settle:.0f} s idle", sample(lab, "host1", args.samples))

        docker(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren",
               "--subnet", "10.20.77.0/24", "memnet")
        docker(lab, "host1", "run", "-d", "--init", "--name", "mem1", "--net", "memnet",
               IMAGE, "sleep", "3600")
        time.sleep(args.settle)
        reading = sample(lab, "host1", args.samples)
        rss = report(f"2. after use: one network, one running container, {args.settle:.0f} s idle", reading)
        named = sum(p["rss"] for p in reading if p["what"] in GOAL_NAMED) / 1024
        print(f"\nnode RSS at idle, every node process: {rss:.1f} MiB   goal <= {GOAL_MIB:.0f} MiB   "
              f"{'PASS' if rss <= GOAL_MIB else 'MISS'}")
        print(f"(of which plugin + ExaBGP + API process, the processes the goal names: {named:.1f} MiB)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
