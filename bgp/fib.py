"""The kernel routes the BGP API process owns, tagged ``proto 81``.

* learned routes: ``<prefix> via <peer underlay address>`` (plain routed mode),
  or ``... dev warren-vxlan|tunl0 onlink`` for encapsulated pools;
* a ``blackhole`` route for each block this node owns, so an unused address
  of an owned block is dropped here instead of leaving by the default route
  (the /32 workload routes are more specific and win).

Both kinds carry :data:`RTPROT_WARREN_BGP`, so start-up can find exactly our
routes and nobody else's.

Everything goes through iproute2, not a netlink library: reading is one
``ip -json route show proto 81`` per family, and every change of one burst -
one route or a thousand - is one ``ip -force -batch -`` (~15 ms per 1000
routes here, against ~0.35-0.7 s for one pyroute2 request per route). This
also keeps pyroute2 (~17 MiB resident once imported) out of the API process,
which matters for the node's memory. ``ip`` reports a failed line of a batch
as ``Command failed -:N``, so failures are still known per route.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import subprocess
from typing import Callable

log = logging.getLogger(__name__)

RTPROT_WARREN_BGP = 81
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
# = bgp.fabric.VXLAN_DEV / IPIP_DEV, not imported from there: bgp.fabric imports pyroute2
# (~17 MiB), which the API process needs only for VXLAN neighbours. A unit test keeps them equal.
VXLAN_DEV, IPIP_DEV = "warren-vxlan", "tunl0"
ENCAP_DEVICES = (VXLAN_DEV, IPIP_DEV)
IP_TIMEOUT = 60.0

Route = tuple  # (next hop, device or None for the plain routed path)
Before = Callable[[str, Route], bool]

_FAILED = re.compile(r"^Command failed -:(\d+)\s*$")


def normalize(dst: str, version: int) -> str:
    """``ip``'s destination (``10.0.0.5`` for a /32) as a prefix."""
    return str(ipaddress.ip_network(dst if "/" in dst else f"{dst}/{32 if version == 4 else 128}"))


def parse_routes(text: str, version: int) -> dict[str, tuple[int, str | None, str | None]]:
    """``ip -json route show`` -> prefix -> (type, next hop, encapsulation device or None)."""
    out = {}
    for r in json.loads(text or "[]"):
        dst = r.get("dst")
        if not dst or dst == "default":
            continue
        kind = RTN_BLACKHOLE if r.get("type") == "blackhole" else RTN_UNICAST
        dev = r.get("dev")
        if not ("onlink" in r.get("flags", ()) or dev in ENCAP_DEVICES):
            dev = None  # plain routed: the kernel picked the underlay device
        out[normalize(dst, version)] = (kind, r.get("gateway"), dev)
    return out


def route_line(prefix: str, route: Route) -> str:
    """The ``ip -batch`` line installing ``prefix`` via ``route`` (next hop, device)."""
    next_hop, device = route
    dev = ""
    if device:  # a link-local next hop is on the device anyway; onlink only for the others
        dev = f" dev {device}" + ("" if next_hop.startswith("fe80:") else " onlink")
    return f"route replace {prefix} via {next_hop}{dev} proto {RTPROT_WARREN_BGP}"


def delete_line(prefix: str, kind: int = RTN_UNICAST) -> str:
    # ip infers the family from the prefix (no -6 needed in a batch); the type keeps a
    # blackhole and a learned route of the same prefix apart
    kind_word = "blackhole" if kind == RTN_BLACKHOLE else "unicast"
    return f"route del {kind_word} {prefix} proto {RTPROT_WARREN_BGP}"


def blackhole_line(prefix: str) -> str:
    return f"route replace blackhole {prefix} proto {RTPROT_WARREN_BGP}"


def failed_lines(stderr: str) -> dict[int, str]:
    """Line number (1-based) -> error of each failed line of an ``ip -force -batch`` run."""
    failed, pending = {}, []
    for line in stderr.splitlines():
        match = _FAILED.match(line)
        if match:
            failed[int(match.group(1))] = "; ".join(pending) or "failed"
            pending = []
        elif line.strip():
            pending.append(line.strip())
    return failed


def _absent(error: str) -> bool:
    """A delete of a route that is already gone (ESRCH/ENOENT): not a failure."""
    return "No such process" in error or "No such file" in error


class Fib:
    def learned(self) -> dict[str, Route]:
        """prefix -> (next hop, device name or None) of our unicast routes in the kernel."""
        return {p: (nh, dev) for p, (kind, nh, dev) in self._ours().items() if kind == RTN_UNICAST}

    def blackholes(self) -> set[str]:
        return {p for p, (kind, _, _) in self._ours().items() if kind == RTN_BLACKHOLE}

    def _ours(self) -> dict[str, tuple[int, str | None, str | None]]:
        out = {}
        for version in (4, 6):
            result = subprocess.run(["ip", f"-{version}", "-json", "route", "show", "proto",
                                     str(RTPROT_WARREN_BGP)], capture_output=True, text=True,
                                    timeout=IP_TIMEOUT)
            if result.returncode:
                raise OSError(f"ip route show: {result.stderr.strip()}")
            out.update(parse_routes(result.stdout, version))
        return out

    def apply(self, changes: dict[str, Route], removed: list[str], before: Before | None = None) -> int:
        """Install/replace ``changes`` (prefix -> (next hop, device)), delete ``removed``;
        returns the number of routes that could not be installed.

        ``before(prefix, route)`` runs first for each change (e.g. to program the VTEP
        neighbour an encapsulated route needs); False skips (and counts) the route.
        Everything goes to the kernel as one ``ip -batch``."""
        lines: list[str] = []
        skipped = 0
        for prefix, route in changes.items():
            if before is not None and not before(prefix, route):
                skipped += 1
                continue
            lines.append(route_line(prefix, route))
        installs = len(lines)
        lines += [delete_line(prefix) for prefix in removed]
        failures = skipped
        for number, error in self._batch(lines).items():
            if number <= installs:
                failures += 1
                log.warning("%s: %s", lines[number - 1], error)
            elif not _absent(error):
                log.warning("%s: %s", lines[number - 1], error)
        return failures

    def set_blackholes(self, wanted: set[str]) -> int:
        """A blackhole route for each of ``wanted`` and none other; returns the failures."""
        current = self.blackholes()
        lines = [blackhole_line(p) for p in sorted(wanted - current)]
        lines += [delete_line(p, RTN_BLACKHOLE) for p in sorted(current - wanted)]
        failures = 0
        for number, error in self._batch(lines).items():
            if not _absent(error):
                failures += 1
                log.warning("%s: %s", lines[number - 1], error)
        return failures

    @staticmethod
    def _batch(lines: list[str]) -> dict[int, str]:
        if not lines:
            return {}
        result = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                                text=True, capture_output=True, timeout=IP_TIMEOUT)
        failed = failed_lines(result.stderr)
        if result.returncode and not failed:  # ip itself failed, not a line of the batch
            log.warning("ip -batch failed (exit %d): %s", result.returncode, result.stderr.strip()[:200])
            return {n: result.stderr.strip() or "ip failed" for n in range(1, len(lines) + 1)}
        return failed
