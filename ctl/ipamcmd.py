"""``warrenctl ipam show|info|release``."""
from __future__ import annotations

import argparse
from collections import defaultdict

from datastore import codec, keys
from ipam import Allocator, InvalidRequest
from ipam.check import check, repair
from ipam.inventory import address_info, list_blocks

from plugin.ipamdriver import PURPOSE
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

    check = verbs.add_parser("check", help="find addresses whose Docker endpoint is gone")
    check.add_argument("--repair", action="store_true", help="release them and fix the index")
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


def ipam_check(args, ctx) -> int:
    live = {a for kv in ctx.store.get_prefix(keys.ENDPOINTS)
            for a in codec.loads(Endpoint, kv.value).addresses}
    live |= {a for kv in ctx.store.get_prefix(keys.NETWORKS)    # --aux-address reservations
             for a in codec.loads(Network, kv.value).aux_addresses}
    findings = check(ctx.store, live, PURPOSE, grace=args.grace)
    if not findings:
        print("IPAM is consistent: every Docker address belongs to an endpoint or an --aux-address")
        return 0
    table(["Problem", "Address", "Handle", "Block"],
          [(f.kind, f.address, f.handle, f.block or "-") for f in findings])
    if args.repair:
        fixed = repair(ctx.store, ctx.host, findings)
        print(f"Repaired {fixed} of {len(findings)}")
        return 0
    print(f"{len(findings)} problem(s); run 'warrenctl ipam check --repair' to fix them")
    return 1
