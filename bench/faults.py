"""Faults on a 2-host warren-lab: lost pings, time to recover and leaks, per fault kind (issue 12).

For every fault kind of :data:`tests.e2e.faults.harness.FAULTS` (the harness's
docstring says how each is injected and recovered), on one lab: while a
10/s ping crosses from ``host2`` to a container on ``host1``, ``--containers``
containers are started and removed on ``host1`` (``docker run -d`` /
``docker rm -f``, three alive at a time) and the fault hits ``host1`` a third
of the way in. ``none`` (the churn alone) is the same-run baseline: what the
probe and the churn see on this machine without a fault.

Per fault, one table row:

* **recovery**: what brought the node back (``itself``: the product alone;
  ``node start``: the operator's command was needed);
* **lost / sent**: pings lost (no reply within 1 s) from the fault to the end
  of the churn, and sent; **outage**: the longest run of lost pings, s;
* **ping back**: s from the fault to the first reply after the last loss;
* **run ok**: s from the fault (etcd: from its restart) to the end of the first
  ``docker run`` started afterwards that succeeded; **failed**: runs / rms that
  failed;
* **leaks first**: what no container of dockerd's owns once the churn is over
  (endpoint records, IPAM allocations and handles, veths, routes, chains, tag
  set members; for etcd: right after it is back, before the churn), so what
  a janitor round removed during a long churn is not seen; **clean**: s from
  then until none was left (``-``: not
  within ``--settle`` s; the janitor runs with its defaults: a round every
  60 s, orphans older than 60 s); **leaks left**: what was still there.

Then, per fault, where it misses the issue's goals (0 lost pings except
across a dockerd restart without live-restore, recovery by itself where the
issue asks for it, no leak). Everything runs in the lab's namespaces; nothing
is sent outside them.

    python -m bench.faults [--containers 50] [--settle 180] [--faults none,plugin,...] [--engine 28]
"""
from __future__ import annotations

import argparse
import secrets
import sys
import time

from bench.runinfo import header
from ctl.lab import Lab
from tests.e2e.faults.harness import FAULTS, Fabric, FaultResult, HarnessError, run_fault

COLUMNS = ("fault", "recovery", "lost/sent", "outage s", "ping back s", "run ok s", "failed run/rm",
           "leaks first", "clean s", "leaks left", "took s")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def row(result: FaultResult, took: float) -> list[str]:
    def count(found: dict[str, list[str]]) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in found.items()) or "0"
    return [FAULTS[result.fault].title, result.recovered_by, f"{result.pings.lost}/{result.pings.sent}",
            _s(result.pings.longest_outage), _s(result.pings.recovered_after), _s(result.run_recovery),
            f"{result.failed_runs}/{result.failed_rms}", count(result.first_leaks), _s(result.clean_after),
            count(result.leaks), f"{took:.0f}"]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(list(COLUMNS)), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.faults")
    ap.add_argument("--containers", type=int, default=50, help="successful docker runs per fault")
    ap.add_argument("--settle", type=float, default=180.0, help="s to wait for leaks to go")
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, in order")
    ap.add_argument("--engine", help="the lab's Docker engine (default: $WARREN_LAB_ENGINE, else 28)")
    args = ap.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        ap.error(f"unknown fault {unknown[0]!r}: one of {', '.join(FAULTS)}")
    header("Faults on a 2-host lab: lost pings, recovery, leaks", "bench.faults", sys.argv[1:] if argv is None
           else argv, flush=True)
    lab = Lab("bf" + secrets.token_hex(3))
    rows, misses = [], []
    try:
        lab.up(2, node=True, **({"engine": args.engine} if args.engine else {}))
        status = lab.status()
        print(f"engine: {status.get('engine')}, "
              f"dockerd {status['hosts'][0].get('docker_version')}, {args.containers} containers per fault, "
              f"settle {args.settle:.0f} s", flush=True)
        fabric = Fabric(lab).setup()
        for fault in faults:
            t0 = time.monotonic()
            try:
                result = run_fault(fabric, fault, args.containers, args.settle)
            except HarnessError as exc:
                print(f"{fault}: not measured: {exc}", flush=True)
                misses.append((fault, [f"not measured: {exc}"]))
                continue
            rows.append(row(result, time.monotonic() - t0))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            misses.append((fault, result.problems()))
            for note in result.notes:
                print(f"  {fault}: {note[:300]}", flush=True)
        fabric.teardown()
    finally:
        lab.down()
    print()
    print(table(rows))
    print()
    for fault, problems in misses:
        print(f"{fault}: " + ("goals met" if not problems else "; ".join(p[:300] for p in problems)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
