"""``warrenctl pool add|remove|show``.

``pool remove`` refuses a pool that still holds addresses. ``pool remove --force``
removes it anyway **and keeps every allocated address allocated**, as Calico's
``calicoctl pool remove`` did (it deleted the pool, never the allocations): the
blocks that hold addresses stay, containers keep their addresses and routes, and
each address is freed when its container releases it (the block goes with its
last address). Adding the pool again reuses those blocks, so IPAM never hands an
address a running container holds to a second one (:mod:`ipam.poolremoval`,
:mod:`ipam.allocator`). ``warrenctl ipam check --repair`` frees kept addresses
whose container is gone.

``pool add`` refuses a pool that overlaps this host's subnets, a registered
node's underlay address or an etcd member (:mod:`ipam.underlay`): its first
blackhole route would cut the node off etcd and its peers.
"""
from __future__ import annotations

import argparse
import logging

from datastore import EtcdConfig
from ipam import PoolStore, make_pool
from ipam.poolremoval import remove_keeping_held
from ipam.pools import parse_cidr
from ipam.underlay import Protected, cluster_protected, host_protected, refuse_overlap

from .output import as_json, table

log = logging.getLogger(__name__)


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
                        help="remove even if addresses are allocated: they stay allocated to their "
                             "containers until released")
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
    protected = protected_networks(ctx)
    for p in pools:
        refuse_overlap(p, protected)
    PoolStore(ctx.store).add(pools)
    for p in pools:
        print(f"Added pool {p.cidr}")
    return 0


def protected_networks(ctx) -> list[Protected]:
    """This host's subnets, every node's underlay addresses and the etcd members'."""
    from plugin.dataplane import Dataplane  # pyroute2: only for the commands that need the kernel
    try:
        dataplane = Dataplane()
        try:
            host = host_protected(dataplane.host_subnets())
        finally:
            dataplane.close()
    except Exception as exc:  # no netlink here (e.g. a container without it): the cluster's part still holds
        log.warning("cannot read this host's addresses: %s", exc)
        host = []
    etcd_hosts = [e.host for e in EtcdConfig.from_env(endpoints=ctx.endpoints).endpoints]
    return host + cluster_protected(ctx.store, etcd_hosts)


def pool_remove(args, ctx) -> int:
    store = PoolStore(ctx.store)
    for cidr in [str(parse_cidr(c)) for c in args.cidrs]:
        if not args.force:
            store.remove(cidr)
            print(f"Removed pool {cidr}")
            continue
        removed = remove_keeping_held(ctx.store, cidr)
        held = removed.kept_addresses
        extra = (f" ({held} allocated address{'es' if held != 1 else ''} stay allocated to their "
                 "containers until released)") if held else ""
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
