"""``warrenctl pool add|remove|show``."""
from __future__ import annotations

import argparse

from ipam import PoolStore, make_pool
from ipam.pools import parse_cidr

from .output import as_json, table


def register(sub: argparse._SubParsersAction) -> None:
    pool = sub.add_parser("pool", help="manage IP pools")
    verbs = pool.add_subparsers(dest="verb", required=True, metavar="{add,remove,show}")

    add = verbs.add_parser("add", help="add one or more pools")
    add.add_argument("cidrs", nargs="+", metavar="CIDR")
    encap = add.add_mutually_exclusive_group()
    encap.add_argument("--ipip", action="store_true", help="IP-in-IP between hosts (IPv4 only)")
    encap.add_argument("--vxlan", action="store_true", help="VXLAN between hosts")
    add.add_argument("--nat-outgoing", action="store_true",
                     help="masquerade traffic from the pool to destinations outside every pool")
    add.add_argument("--block-size", type=int, metavar="N",
                     help="prefix length of a host's block (default 26 for IPv4, 122 for IPv6)")
    add.add_argument("--disabled", action="store_true", help="add the pool but allocate nothing from it")
    add.set_defaults(func=pool_add)

    remove = verbs.add_parser("remove", help="remove pools")
    remove.add_argument("cidrs", nargs="+", metavar="CIDR")
    remove.add_argument("--force", action="store_true",
                        help="remove even if addresses are allocated (they are released)")
    remove.set_defaults(func=pool_remove)

    show = verbs.add_parser("show", help="list pools")
    family = show.add_mutually_exclusive_group()
    family.add_argument("--ipv4", action="store_const", const=4, dest="version")
    family.add_argument("--ipv6", action="store_const", const=6, dest="version")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=pool_show)


def pool_add(args, ctx) -> int:
    pools = [make_pool(c, ipip=args.ipip, vxlan=args.vxlan, nat_outgoing=args.nat_outgoing,
                       disabled=args.disabled, block_size=args.block_size) for c in args.cidrs]
    PoolStore(ctx.store).add(pools)
    for p in pools:
        print(f"Added pool {p.cidr}")
    return 0


def pool_remove(args, ctx) -> int:
    store = PoolStore(ctx.store)
    for cidr in args.cidrs:
        released = store.remove(str(parse_cidr(cidr)), force=args.force)
        extra = f" ({released} allocated addresses released)" if released else ""
        print(f"Removed pool {cidr}{extra}")
    return 0


def pool_show(args, ctx) -> int:
    pools = PoolStore(ctx.store).list(args.version)
    if args.json:
        as_json([{"cidr": p.cidr, "encap": p.encap, "nat_outgoing": p.nat_outgoing,
                  "disabled": p.disabled, "block_size": p.block_size} for p in pools])
        return 0
    for version in (4, 6):
        if args.version not in (None, version):
            continue
        rows = [(p.cidr, f"/{p.block_size}", ",".join(p.options)) for p in pools if p.version == version]
        table([f"IPv{version} CIDR", "Block size", "Options"], rows)
    return 0
