"""``warrenctl ipam show|info|release|check``.

``check`` does not trust the endpoint records: this host's records are
compared with dockerd's view (:func:`plugin.janitor.docker_view`, the
janitor's own rule, :func:`plugin.janitor.plan`), and a record no container
owns, older than ``--grace``, is an ``orphan-endpoint``; ``--repair``
removes it with its gateway slot and addresses (:func:`plugin.janitor.forget`,
as the janitor does; its interface goes at the plugin's next round). Records
of other hosts are trusted (only their own dockerd can judge them: run
``check`` there, or let their janitors do it). If dockerd does not answer,
this host's records are trusted too and a note says so.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import time

from datastore import codec, keys
from ipam import Allocator, InvalidRequest
from ipam.allocator import RECORD_PURPOSE
from ipam.blocks import Block
from ipam.check import check, repair
from ipam.inventory import address_info, list_blocks

from plugin.ipamdriver import PURPOSE
from plugin.janitor import docker_view, forget, holdings, plan
from plugin.names import DockerError
from plugin.records import Endpoint, Network

from .output import as_json, table


def register(sub: argparse._SubParsersAction) -> None:
    ipam = sub.add_parser("ipam", help="inspect and repair address allocations")
    verbs = ipam.add_subparsers(dest="verb", required=True, metavar="{show,info,release,check}")

    show = verbs.add_parser("show", help="blocks per host with used/free counts")
    show.add_argument("--host", help="only this host's blocks")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=ipam_show)

    info = verbs.add_parser("info", help="who holds an address")
    info.add_argument("ip", metavar="IP")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=ipam_info)

    release = verbs.add_parser("release", help="release an address")
    release.add_argument("ip", metavar="IP")
    release.set_defaults(func=ipam_release)

    check = verbs.add_parser("check", help="find addresses and endpoints no container owns")
    check.add_argument("--repair", action="store_true",
                       help="remove those endpoints, release those addresses, fix the index")
    check.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                       help="spare allocations younger than this (default 60)")
    check.set_defaults(func=ipam_check)


def ipam_show(args, ctx) -> int:
    blocks = list_blocks(ctx.store, args.host)
    rows = [{"host": b.affinity or "-", "block": b.cidr, "pool": b.pool,
             "used": b.used, "free": b.free,
             "borrowed": sum(1 for a in b.allocations.values() if a.host != b.affinity)}
            for b in blocks]
    if args.json:
        as_json(rows)
        return 0
    table(["Host", "Block", "Pool", "Used", "Free", "Borrowed"],
          [(r["host"], r["block"], r["pool"], r["used"], r["free"], r["borrowed"]) for r in rows])
    per_host = defaultdict(lambda: [0, 0])
    for r in rows:
        per_host[r["host"]][0] += r["used"]
        per_host[r["host"]][1] += r["free"]
    for host, (used, free) in sorted(per_host.items()):
        print(f"{host}: {used} used, {free} free")
    return 0


def ipam_info(args, ctx) -> int:
    info = address_info(ctx.store, args.ip)
    if info.pool is None:
        raise InvalidRequest(f"{info.address} is not in any pool")
    a = info.allocation
    data = {"address": info.address, "pool": info.pool,
            "block": info.block.cidr if info.block else None,
            "block_host": info.block.affinity if info.block else None,
            "assigned": a is not None,
            "handle": a.handle if a else None, "host": a.host if a else None,
            "attributes": a.attrs if a else {}}
    if args.json:
        as_json(data)
        return 0
    if a is None:
        print(f"{info.address} is not assigned (pool {info.pool})")
        return 0
    print(f"Address:    {info.address}")
    print(f"Pool:       {info.pool}")
    print(f"Block:      {data['block']} (affinity: {data['block_host'] or 'none'})")
    print(f"Handle:     {a.handle}")
    print(f"Host:       {a.host}")
    for k, v in sorted(a.attrs.items()):
        print(f"Attribute:  {k}={v}")
    return 0


def ipam_release(args, ctx) -> int:
    if Allocator(ctx.store, ctx.host).release(args.ip):
        print(f"Released {args.ip}")
    else:
        print(f"{args.ip} was not assigned; nothing to release")
    return 0


def orphans(ctx, endpoints: list[Endpoint], aux: set[str], grace: float) -> tuple[list[Endpoint], str]:
    """This host's endpoint records no container owns in dockerd's view (past ``grace``),
    and a note when dockerd could not be asked."""
    mine = {e.network for e in endpoints if e.host == ctx.host and e.network}
    if not any(e.host == ctx.host for e in endpoints):
        return [], ""
    try:
        view = docker_view(mine)
    except DockerError as exc:
        return [], (f"note: {exc}; the endpoint records of host {ctx.host} were not compared "
                    "with dockerd")
    held = holdings(codec.load_all(Block, ctx.store.get_prefix(keys.BLOCKS)))
    return plan(ctx.host, endpoints, view, held, aux, time.time(), grace).endpoints, ""


def ipam_check(args, ctx) -> int:
    endpoints = codec.load_all(Endpoint, ctx.store.get_prefix(keys.ENDPOINTS))
    aux = {a for n in codec.load_all(Network, ctx.store.get_prefix(keys.NETWORKS))  # --aux-address
           for a in n.aux_addresses}
    lost, note = orphans(ctx, endpoints, aux, args.grace)
    if note:
        print(note)
    live = {a for e in endpoints for a in e.addresses} | aux  # an orphan's addresses: with it
    findings = check(ctx.store, live, (PURPOSE, RECORD_PURPOSE), grace=args.grace)
    if not findings and not lost:
        print("IPAM is consistent: every Docker address belongs to an endpoint or an --aux-address"
              + ("" if note else ", and dockerd owns every endpoint of this host"))
        return 0
    table(["Problem", "Address", "Handle", "Block"],
          [("orphan-endpoint", ",".join(e.addresses) or "-", f"endpoint {e.id[:12]}", "-")
           for e in lost]
          + [(f.kind, f.address, f.handle, f.block or "-") for f in findings])
    total = len(findings) + len(lost)
    if args.repair:
        allocator = Allocator(ctx.store, ctx.host)
        for e in lost:
            forget(ctx.store, e, allocator)
        fixed = len(lost) + repair(ctx.store, ctx.host, findings)
        print(f"Repaired {fixed} of {total}")
        return 0
    print(f"{total} problem(s); run 'warrenctl ipam check --repair' to fix them")
    return 1
