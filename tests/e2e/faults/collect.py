"""What Warren holds on one lab host, as JSON: run inside the host by the fault harness.

    python -m tests.e2e.faults.collect [--etcd]     (in a lab host: ``Lab.exec``, cwd = the repo)

Prints one JSON object with the host's kernel state that Warren writes for
workloads, raw (no judgement; :mod:`tests.e2e.faults.harness` compares it with
dockerd's containers):

* ``veths``: host-side workload interfaces (``wrn*``);
* ``routes``: host routes (/32, /128) of workloads: Warren's route protocol, or
  any host route through a ``wrn*`` interface - ``{"dst", "dev"}``;
* ``chains``: per-endpoint filter chains (``WARREN-FW-*``, ``WARREN-TW-*``) of
  iptables and ip6tables;
* ``sets``: members of every tag ipset (``warren-v4-*``, ``warren-v6-*``,
  not the ``tmp`` swap partners);

and with ``--etcd`` the records (read raw, so a record the product's own
validation would skip still counts):

* ``endpoints``: every endpoint record ``{"key", "host", "id", "addresses"}``;
* ``allocations``: every address held in an IPAM block ``{"address", "host", "handle"}``;
* ``handles``: the handle index ``{"handle", "address"}``.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys

from datastore import Datastore, EtcdConfig, keys
from plugin.dataplane import RTPROT_WARREN

VETH_PREFIX = "wrn"
CHAIN_PREFIXES = ("WARREN-FW-", "WARREN-TW-")
SET_PREFIXES = ("warren-v4-", "warren-v6-")
TMP_SETS = ("warren-v4-tmp", "warren-v6-tmp")


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def veths() -> list[str]:
    links = json.loads(_run(["ip", "-j", "link", "show"]) or "[]")
    return sorted(link["ifname"] for link in links if link.get("ifname", "").startswith(VETH_PREFIX))


def routes() -> list[dict[str, str]]:
    found = {}
    for family in ("-4", "-6"):
        for route in json.loads(_run(["ip", "-j", family, "route", "show", "table", "all"]) or "[]"):
            dst, dev = route.get("dst", ""), route.get("dev", "")
            if route.get("type", "unicast") != "unicast" or dst in ("default", ""):
                continue
            net = ipaddress.ip_network(dst, strict=False)
            if net.prefixlen != net.max_prefixlen:
                continue
            if route.get("protocol") in (str(RTPROT_WARREN), RTPROT_WARREN) or dev.startswith(VETH_PREFIX):
                found[(str(net.network_address), dev)] = {"dst": str(net.network_address), "dev": dev}
    return [found[k] for k in sorted(found)]


def chains() -> list[str]:
    out = set()
    for tool in ("iptables-save", "ip6tables-save"):
        for line in _run([tool, "-t", "filter"]).splitlines():
            if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES):
                out.add(line[1:].split()[0])
    return sorted(out)


def sets() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in _run(["ipset", "list", "-n"]).split():
        if not name.startswith(SET_PREFIXES) or name in TMP_SETS:
            continue
        text = _run(["ipset", "list", name])
        members = text.split("Members:", 1)[1].split() if "Members:" in text else []
        out[name] = sorted(members)
    return out


def records() -> dict[str, list[dict]]:
    store = Datastore(EtcdConfig.from_env())
    endpoints = []
    for kv in store.get_prefix(keys.ENDPOINTS):
        host, _, eid = kv.key[len(keys.ENDPOINTS):].partition("/")
        try:
            data = json.loads(kv.value)
            addresses = list(data.get("ipv4") or []) + list(data.get("ipv6") or [])
        except (ValueError, AttributeError, TypeError):
            addresses = []
        endpoints.append({"key": kv.key, "host": host, "id": eid, "addresses": addresses})
    allocations = []
    for kv in store.get_prefix(keys.BLOCKS):
        cidr = keys.decode_cidr(kv.key[len(keys.BLOCKS):])
        try:
            network = ipaddress.ip_network(cidr)
            for ordinal, held in json.loads(kv.value).get("allocations", {}).items():
                allocations.append({"address": str(network[int(ordinal)]), "host": held.get("host"),
                                    "handle": held.get("handle")})
        except (ValueError, AttributeError, TypeError):
            allocations.append({"address": f"unreadable block {cidr}", "host": None, "handle": None})
    handles = []
    for kv in store.get_prefix(keys.HANDLES, keys_only=True):
        handle, _, address = kv.key[len(keys.HANDLES):].partition("/")
        handles.append({"handle": handle, "address": address})
    return {"endpoints": endpoints, "allocations": allocations, "handles": handles}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="collect")
    ap.add_argument("--etcd", action="store_true", help="also the records in etcd")
    args = ap.parse_args(argv)
    state: dict = {"veths": veths(), "routes": routes(), "chains": chains(), "sets": sets()}
    if args.etcd:
        state.update(records())
    json.dump(state, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
