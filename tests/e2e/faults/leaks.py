"""Leaks: what Warren holds that no container dockerd knows owns, on both hosts.

dockerd's view (:func:`owned`): per host, the endpoint ids and addresses of
every container (``docker ps -a``) on a Warren network. Warren's state
(:mod:`tests.e2e.faults.collect`, run inside each host; etcd read once):

* endpoint records not owned by a container of their host;
* IPAM allocations whose address no container of their host has, and handle
  index entries naming an address no container has or no allocation holds;
* ``wrn*`` veths, workload host routes and per-endpoint chains
  (``WARREN-FW-``/``WARREN-TW-`` + interface) of no container endpoint of the host;
* tag ipset members (on any host) that are no container's address.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from ctl.lab import Lab
from ipam.workloads import host_ifname

from .common import HOSTS, REPO, HarnessError, docker


@dataclass
class Owned:
    """Per host: the endpoint ids and addresses of every container dockerd has on a Warren network."""
    endpoints: dict[str, set[str]]
    addresses: dict[str, set[str]]

    @property
    def all_addresses(self) -> set[str]:
        return set().union(*self.addresses.values())


def warren_networks(lab: Lab, host: str) -> set[str]:
    res = docker(lab, host, "network", "ls", "-q", "--no-trunc", "--filter", "driver=warren")
    return set(res.stdout.split())


def owned(lab: Lab) -> Owned:
    endpoints: dict[str, set[str]] = {}
    addresses: dict[str, set[str]] = {}
    for host in HOSTS:
        endpoints[host], addresses[host] = set(), set()
        nets = warren_networks(lab, host)
        ids = docker(lab, host, "ps", "-aq", "--no-trunc").stdout.split()
        if not ids:
            continue
        res = docker(lab, host, "inspect", *ids, check=False)
        for c in json.loads(res.stdout or "[]"):
            for attached in ((c.get("NetworkSettings") or {}).get("Networks") or {}).values():
                if attached.get("NetworkID") not in nets or not attached.get("EndpointID"):
                    continue
                endpoints[host].add(attached["EndpointID"])
                for key in ("IPAddress", "GlobalIPv6Address"):
                    if attached.get(key):
                        addresses[host].add(attached[key])
    return Owned(endpoints, addresses)


def collect(lab: Lab, host: str, etcd: bool = False) -> dict:
    argv = [sys.executable, "-m", "tests.e2e.faults.collect"] + (["--etcd"] if etcd else [])
    res = lab.exec(host, argv, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise HarnessError(f"{host}: collect: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout)


LEAK_KINDS = ("endpoints", "allocations", "handles", "veths", "routes", "chains", "set members")


def leaks(lab: Lab) -> dict[str, list[str]]:
    """Every kind of state no container owns (kinds with none are left out)."""
    mine = owned(lab)
    states = {host: collect(lab, host, etcd=(host == HOSTS[0])) for host in HOSTS}
    return compare(mine, states, states[HOSTS[0]])


def compare(mine: Owned, states: dict[str, dict], records: dict) -> dict[str, list[str]]:
    """What of ``states`` (per host, :mod:`.collect`'s kernel part) and ``records`` (its etcd
    part) no container of ``mine`` owns, by kind (kinds with none are left out). Pure."""
    everywhere = mine.all_addresses
    out: dict[str, list[str]] = {kind: [] for kind in LEAK_KINDS}
    for e in records["endpoints"]:
        if e["id"] not in mine.endpoints.get(e["host"], set()):
            out["endpoints"].append(f"{e['host']}/{e['id'][:12]} {','.join(e['addresses'])}")
    for a in records["allocations"]:
        if a["address"] not in mine.addresses.get(a["host"], set()):
            out["allocations"].append(f"{a['address']} on {a['host']} ({a['handle']})")
    held = {(a["handle"], a["address"]) for a in records["allocations"]}
    for h in records["handles"]:
        if h["address"] not in everywhere or (h["handle"], h["address"]) not in held:
            out["handles"].append(f"{h['handle']}/{h['address']}")
    for host, state in states.items():
        ifaces = {host_ifname(e) for e in mine.endpoints.get(host, set())}
        out["veths"] += [f"{host}:{v}" for v in state["veths"] if v not in ifaces]
        out["routes"] += [f"{host}:{r['dst']} dev {r['dev']}" for r in state["routes"]
                          if r["dst"] not in mine.addresses.get(host, set()) or r["dev"] not in ifaces]
        out["chains"] += [f"{host}:{c}" for c in state["chains"] if c[len("WARREN-FW-"):] not in ifaces]
        for name, members in state["sets"].items():
            out["set members"] += [f"{host}:{name}:{m}" for m in members if m not in everywhere]
    return {kind: items for kind, items in out.items() if items}


def settle_leaks(lab: Lab, timeout: float) -> tuple[dict[str, list[str]], dict[str, list[str]], float | None]:
    """Poll :func:`leaks` until there are none or ``timeout`` s passed: (the leaks found first,
    those left at the end, s from the first check until none was left - 0.0 if none was found
    first, None if some were still there at the end)."""
    start = time.monotonic()
    first = found = leaks(lab)
    while found:
        if time.monotonic() - start > timeout:
            return first, found, None
        time.sleep(2)
        found = leaks(lab)
    return first, found, round(time.monotonic() - start, 1) if first else 0.0
