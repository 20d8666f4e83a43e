"""What the proposals of bench/RESULTS.md would save, measured: the plugin with each change patched in.

Each variant is bench/plugin_profile's harness (the plugin's Flask app in its own namespaces and
etcd, real veths and etcd) with one or more changes patched into that child process only - nothing
in plugin/ is edited. All variants are driven in turn, one container each per round (the order
rotating), so every variant sees the same minutes of a shared machine's load; each is reported as
its median per container and as the median of its same-round ratio to the unchanged plugin.

The changes, each a sketch of a proposal (enough to measure it, not a patch to merge). All three have
since been made for real (adde1f4, 06c3f3f, 4b1edad; bench/plugin_ab compares trees): on today's plugin
``mtu`` and ``rtnl`` measure on top of them, and ``etcd`` refuses (the method it patches is gone).

``mtu``
    CreateEndpoint derives a network's workload MTU once (``NetworkDriver._derived_mtu`` memoised
    per network id) instead of an IPRoute session and an etcd get per endpoint.
``rtnl``
    Join's plumbing (``Dataplane.create_workload``) in four raw rtnetlink requests on one socket
    kept open (bench/netlink_floor.py's encoder) instead of pyroute2 opened per call. IPv4 only
    (the IPv6 gateway address of a second interface is not sketched): the harness is IPv4.
``etcd``
    The endpoint record kept in memory by ``NetworkDriver.save`` and served by
    ``NetworkDriver.endpoint`` when present (Join, ProgramExternalConnectivity, EndpointOperInfo read
    no etcd), and the gateway slot claimed with one create of slot 1 before the listing
    (``_free_slot``): Join 4 -> 2 round trips. (Merging that create with the record's write into one
    transaction, the proposal's last step, is not sketched: one round trip more than proposed.)

    python -m bench.plugin_whatif [--containers 60] [--variants mtu,rtnl,etcd,mtu+rtnl+etcd]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack

from bench.plugin_profile import OTHER_CALLS, START_CALLS, Harness, by_kind
from bench.runinfo import header

CHANGES = ("mtu", "rtnl", "etcd")


def _patch_mtu() -> None:
    from plugin.networks import NetworkDriver
    original = NetworkDriver._derived_mtu
    memo: dict[str, int] = {}

    def derived_mtu(self, network):
        if network.id not in memo:
            memo[network.id] = original(self, network)
        return memo[network.id]
    NetworkDriver._derived_mtu = derived_mtu


def _patch_rtnl() -> None:
    from bench.netlink_floor import Rtnl, raw_workload
    from ipam.workloads import host_ifname, tmp_ifname
    import plugin.dataplane as dataplane
    from plugin.dataplane import Dataplane, DataplaneError
    original = Dataplane.create_workload
    rtnl = Rtnl()

    def create_workload(self, endpoint_id, addresses, mac, mtu, peer_netns=None, peer_name=None, **kw):
        if peer_netns is not None or peer_name is not None or len(addresses) != 1 or ":" in addresses[0]:
            return original(self, endpoint_id, addresses, mac, mtu, peer_netns, peer_name, **kw)
        try:
            raw_workload(rtnl, endpoint_id, addresses[0], mac, mtu, self.proc,
                         lambda path, value: dataplane._write_sysctl(path, value))  # the plugin's, as timed
        except OSError as exc:
            self.remove_workload(endpoint_id)
            raise DataplaneError(f"could not create interface {host_ifname(endpoint_id)}: {exc}") from None
        return host_ifname(endpoint_id), tmp_ifname(endpoint_id)
    Dataplane.create_workload = create_workload


def _patch_etcd() -> None:
    from dataclasses import replace

    from datastore import keys
    from plugin.networks import NetworkDriver
    if not hasattr(NetworkDriver, "_free_slot"):
        raise RuntimeError("the etcd variant sketches a change the plugin has had since 4b1edad (Join in one "
                           "guarded transaction); measure it on an older tree with bench/plugin_ab")
    records: dict[str, object] = {}
    endpoint, save, free_slot = NetworkDriver.endpoint, NetworkDriver.save, NetworkDriver._free_slot
    delete_endpoint = NetworkDriver.delete_endpoint

    def cached_endpoint(self, endpoint_id):
        found = records.get(endpoint_id)
        return replace(found) if found is not None else endpoint(self, endpoint_id)

    def caching_save(self, record):
        save(self, record)
        records[record.id] = replace(record)

    def forgetting_delete(self, endpoint_id):
        try:
            return delete_endpoint(self, endpoint_id)
        finally:
            records.pop(endpoint_id, None)

    def fast_slot(self, sandbox, endpoint_id):
        if self.store.create(keys.sandbox_slot(self.host, sandbox, 1), endpoint_id):
            return 1, []  # the container's first warren interface: nobody else holds a slot
        return free_slot(self, sandbox, endpoint_id)

    NetworkDriver.endpoint, NetworkDriver.save = cached_endpoint, caching_save
    NetworkDriver.delete_endpoint, NetworkDriver._free_slot = forgetting_delete, fast_slot


PATCHES = {"mtu": _patch_mtu, "rtnl": _patch_rtnl, "etcd": _patch_etcd}


def apply(changes: tuple[str, ...]) -> None:
    """Patch ``changes`` into this process's plugin (called in the harness's child)."""
    for name in changes:
        PATCHES[name]()


def parse_variants(text: str) -> list[tuple[str, ...]]:
    """``mtu,rtnl,mtu+etcd`` -> [("mtu",), ("rtnl",), ("mtu", "etcd")]; refuses unknown changes."""
    out = []
    for item in text.split(","):
        parts = tuple(p.strip() for p in item.split("+") if p.strip())
        unknown = [p for p in parts if p not in CHANGES]
        if not parts or unknown:
            raise ValueError(f"unknown change {', '.join(unknown) or repr(item)}; known: {', '.join(CHANGES)}")
        out.append(parts)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--containers", type=int, default=60)
    ap.add_argument("--variants", default="mtu,rtnl,etcd,mtu+rtnl+etcd")
    args = ap.parse_args(argv)
    try:
        variants = [()] + parse_variants(args.variants)
    except ValueError as exc:
        ap.error(str(exc))
    header("Warren plugin: the proposals measured (changes patched into the harness's plugin)",
           "bench.plugin_whatif", sys.argv[1:] if argv is None else argv, flush=True)
    names = ["unchanged"] + ["+".join(v) for v in variants[1:]]
    samples: dict[str, list] = {n: [] for n in names}
    with ExitStack() as stack:
        harnesses = {n: stack.enter_context(Harness(what_if=v)) for n, v in zip(names, variants)}
        for i in range(args.containers):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                samples[name].append(harnesses[name].container())
    base = [s.total(START_CALLS) for s in samples["unchanged"]]
    calls = START_CALLS + OTHER_CALLS
    print(f"\n{args.containers} containers per variant; ms per container, RequestAddress through "
          "ProgramExternalConnectivity (the goal's calls; with EndpointOperInfo in brackets):")
    print(f"   {'variant':16s} {'median':>8s} {'':>10s} {'same-round ratio':>17s}   by kind (mean ms, goal's calls)")
    for name in names:
        totals = [s.total(START_CALLS) for s in samples[name]]
        with_info = [s.total(calls) for s in samples[name]]
        ratio = statistics.median(t / b for t, b in zip(totals, base))
        kinds = ", ".join(f"{k} {v[0]:.1f}" for k, v in by_kind(samples[name]).items())
        print(f"   {name:16s} {statistics.median(totals) * 1000:8.2f} ({statistics.median(with_info) * 1000:7.2f}) "
              f"{ratio:17.2f}   {kinds}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
