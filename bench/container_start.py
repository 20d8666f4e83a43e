"""Container start cost of Warren, against baselines measured in the same run.

A. In one warren-lab host (its own dockerd): ``docker run --rm IMAGE true`` on a
   Warren network, on a Docker bridge network, and with ``--net none``,
   interleaved, ``--runs`` of each. Reports medians and warren/bridge
   (goal <= 1.3).
B. Per-endpoint plumbing as a host grows from 10 to ``--endpoints`` endpoints:
   the plugin's own request path (RequestAddress + CreateEndpoint + Join, real
   veths and routes, real etcd) in a private network namespace with its own
   etcd. Reports the median cost of endpoints 11-30 and of the last 20, and
   their ratio (goal: flat within 1.2x).

Everything runs in namespaces this script creates and removes; nothing is sent
outside them.

    python -m bench.container_start [--runs 20] [--endpoints 1000]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ctl.lab import IMAGE, Lab
from datastore.localetcd import LocalEtcd

GOAL_START = 1.3
GOAL_FLAT = 1.2


# -- A. docker run ---------------------------------------------------------------

def measure_docker_run(runs: int) -> dict[str, list[float]]:
    lab = Lab("b" + secrets.token_hex(3))
    try:
        lab.up(1, node=True)

        def docker(*args: str) -> None:
            result = lab.docker("host1", list(args), timeout=120)
            if result.returncode:
                raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")

        docker("network", "create", "-d", "warren", "--ipam-driver", "warren",
               "--subnet", "10.20.90.0/24", "wnet")
        docker("network", "create", "-d", "bridge", "--subnet", "10.20.91.0/24", "bnet")
        kinds = {"warren": ["--net", "wnet"], "bridge": ["--net", "bnet"], "none": ["--net", "none"]}
        for extra in kinds.values():  # warm-up: image, plugin activation, first block
            docker("run", "--rm", *extra, IMAGE, "true")
        times: dict[str, list[float]] = {k: [] for k in kinds}
        order = list(kinds)
        for i in range(runs):
            for kind in order[i % 3:] + order[:i % 3]:  # rotate who goes first
                t = time.perf_counter()
                docker("run", "--rm", *kinds[kind], IMAGE, "true")
                times[kind].append(time.perf_counter() - t)
        return times
    finally:
        lab.down()


# -- B. per-endpoint plumbing --------------------------------------------------------

def _endpoints_in_netns(ns: str, endpoint: str, count: int, conn) -> None:
    try:
        from pyroute2 import netns
        netns.setns(ns)
        from datastore import Datastore, EtcdConfig
        from plugin.config import PluginConfig
        from plugin.dataplane import Dataplane
        from plugin.wsgi import build
        dataplane = Dataplane()
        dataplane.ensure_forwarding()
        store = Datastore(EtcdConfig.from_env(env={}, endpoints=endpoint))
        client = build(PluginConfig(host="bench"), store, dataplane).test_client()

        def call(name, body):
            response = client.post(f"/{name}", data=json.dumps(body))
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.get_json()}")
            return response.get_json()

        net = "a" * 64
        pool = call("IpamDriver.RequestPool", {"Pool": "10.20.0.0/16"})
        call("NetworkDriver.CreateNetwork", {"NetworkID": net, "IPv4Data": [
            {"Pool": pool["Pool"], "Gateway": pool["Data"]["com.docker.network.gateway"]}]})
        costs = []
        for i in range(count):
            ep = f"{i:064x}"
            t = time.perf_counter()
            address = call("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"]
            call("NetworkDriver.CreateEndpoint", {"NetworkID": net, "EndpointID": ep,
                                                  "Interface": {"Address": address}})
            call("NetworkDriver.Join", {"NetworkID": net, "EndpointID": ep, "SandboxKey": f"/sb/{i}"})
            costs.append(time.perf_counter() - t)
        conn.send(("ok", costs))
    except BaseException as exc:  # report to the parent
        conn.send(("error", f"{exc.__class__.__name__}: {exc}"))
    finally:
        conn.close()
        os._exit(0)


def measure_plumbing(count: int) -> list[float]:
    ns = "wb" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    data = tempfile.mkdtemp(prefix="warren-bench-etcd-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    etcd = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        etcd = LocalEtcd(data, netns=ns, die_with_parent=True).start()
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_endpoints_in_netns, args=(ns, etcd.endpoint, count, child))
        proc.start()
        child.close()
        if not parent.poll(1800):
            proc.kill()
            raise RuntimeError("plumbing benchmark timed out")
        status, value = parent.recv()
        proc.join(10)
        if status != "ok":
            raise RuntimeError(value)
        return value
    finally:
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", ns], check=False)


# -- report ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--endpoints", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.endpoints < 50:
        ap.error("--endpoints must be at least 50")
    print("Warren container start benchmark")
    print(f"command: {sys.executable} -m bench.container_start --runs {args.runs} --endpoints {args.endpoints}")
    print(f"date: {time.strftime('%Y-%m-%d')}, cores: {os.cpu_count()}")

    times = measure_docker_run(args.runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nA. docker run --rm {IMAGE} true, {args.runs} runs each, interleaved")
    for kind, value in med.items():
        print(f"   {kind:7s} median {value * 1000:7.1f} ms   (min {min(times[kind]) * 1000:.1f}, "
              f"max {max(times[kind]) * 1000:.1f})")
    ratio = med["warren"] / med["bridge"]
    print(f"   warren/bridge = {ratio:.2f}   goal <= {GOAL_START}   {'PASS' if ratio <= GOAL_START else 'MISS'}")
    print(f"   warren - none = {(med['warren'] - med['none']) * 1000:.1f} ms (the network's own cost)")

    costs = measure_plumbing(args.endpoints)
    early, late = statistics.median(costs[10:30]), statistics.median(costs[-20:])
    flat = late / early
    print(f"\nB. plugin per-endpoint plumbing (RequestAddress + CreateEndpoint + Join), "
          f"1 host growing to {args.endpoints} endpoints")
    print(f"   endpoints 11-30 median {early * 1000:.2f} ms; last 20 median {late * 1000:.2f} ms")
    print(f"   late/early = {flat:.2f}   goal <= {GOAL_FLAT}   {'PASS' if flat <= GOAL_FLAT else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
