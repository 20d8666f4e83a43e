"""Forget UDP flows to host ports whose publishing changed (as Docker's bridge does).

conntrack remembers where the first packet of a UDP "connection" was DNATed
(or that it went to the host itself), and keeps using that for every later
packet of the flow while the client keeps sending. When a published UDP port
goes to another container, or stops or starts being published, a client
that keeps its source port (DNS resolvers, games, VPNs) would otherwise keep
talking to the old target until it falls silent for the conntrack timeout.
TCP needs nothing: a new connection gets a new entry, and an old one to a
removed container is dead anyway.
"""
from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)

FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def forget_udp(ports: set[tuple[int, int]]) -> int:
    """Delete the conntrack entries of UDP flows to (IP version, host port); returns how many."""
    if not ports:
        return 0
    try:
        from pyroute2 import Conntrack
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
    except ImportError:  # pragma: no cover - pyroute2 is a dependency
        return 0
    deleted = 0
    try:
        ct = Conntrack()
    except OSError as exc:  # no nf_conntrack_netlink: nothing is tracked that we could clear
        log.debug("conntrack: %s", exc)
        return 0
    try:
        for version, port in sorted(ports):
            wanted = NFCTAttrTuple(family=FAMILIES[version], proto=socket.IPPROTO_UDP, dport=port)
            for entry in list(ct.dump_entries(tuple_orig=wanted)):
                orig = entry.tuple_orig
                if orig.proto != socket.IPPROTO_UDP or orig.dport != port:
                    continue  # a kernel without tuple filters dumps everything
                try:
                    ct.delete(entry)
                    deleted += 1
                except OSError:  # gone meanwhile
                    pass
    except OSError as exc:
        log.warning("could not clear UDP conntrack entries for %s: %s", sorted(ports), exc)
    finally:
        ct.close()
    return deleted
