"""Versions of the plugin side by side: bench/plugin_profile's harness from several source trees,
driven in turn, one container each per round (the order rotating), so all see the same minutes
of a shared machine's load.

Each side is a worker process started in its own tree (``PYTHONPATH`` and working directory set to
it), running that tree's ``bench.plugin_profile.Harness``: its own namespaces, etcd, real veths.
Reported per call: the median per container of each side and, for each side after the first, the
median of its same-round ratios to the previous side - the figure to quote on a noisy machine
(with trees of successive commits: each commit's own effect). Make the trees with ``git archive``::

    mkdir /tmp/a /tmp/b && git archive OLD | tar -x -C /tmp/a && git archive NEW | tar -x -C /tmp/b
    python -m bench.plugin_ab --tree old=/tmp/a --tree new=/tmp/b --containers 100 --teardown
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from bench.runinfo import header

WORKER = r"""
import json, sys
from bench.plugin_profile import START_CALLS, STOP_CALLS, Harness
teardown = sys.argv[1] == "1"
calls = START_CALLS + (STOP_CALLS if teardown else ())
with Harness() as harness:
    print(json.dumps({"ready": True}), flush=True)
    for _ in sys.stdin:
        s = harness.container(True, teardown)
        out = {"start": s.total(START_CALLS), **{c: s.total((c,)) for c in calls}}
        if teardown:
            out["teardown"] = s.total(STOP_CALLS)
        print(json.dumps(out), flush=True)
"""


class Side:
    def __init__(self, tree: str, teardown: bool):
        env = dict(os.environ, PYTHONPATH=tree)
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, "1" if teardown else "0"], cwd=tree, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a worker died (see its stderr above)")
        return json.loads(line)

    def container(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                    help="a source tree of the plugin (twice or more; ratios to the one before)")
    ap.add_argument("--containers", type=int, default=60)
    ap.add_argument("--teardown", action="store_true", help="also time the calls of docker run --rm's end")
    args = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    if len(trees) < 2 or any(not os.path.isdir(p) for p in trees.values()):
        ap.error("give two or more --tree NAME=PATH, each an existing directory")
    header("Warren plugin: versions side by side", "bench.plugin_ab",
           sys.argv[1:] if argv is None else argv, flush=True)
    names = list(trees)
    sides: dict[str, Side] = {}
    samples: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for name in names:
            sides[name] = Side(trees[name], args.teardown)
        for i in range(args.containers):
            for name in names[i % len(names):] + names[:i % len(names)]:
                samples[name].append(sides[name].container())
    finally:
        for side in sides.values():
            side.close()
    print(f"\n{args.containers} containers per side; ms per container (medians); in brackets the "
          "median same-round ratio to the side before:")
    print(f"   {'calls':52s} " + " ".join(f"{n:>16s}" for n in names))
    for key in samples[names[0]][0]:
        label = {"start": "start: RequestAddress..ProgramExternalConnectivity",
                 "teardown": "teardown: Revoke..ReleaseAddress"}.get(key, "  " + key)
        cells = []
        for j, name in enumerate(names):
            values = [s[key] for s in samples[name]]
            cell = f"{statistics.median(values) * 1000:.2f}"
            if j:
                before = [s[key] for s in samples[names[j - 1]]]
                cell += f" ({statistics.median(y / x for x, y in zip(before, values) if x > 0):.2f})"
            cells.append(f"{cell:>16s}")
        print(f"   {label:52s} " + " ".join(cells))
    first, last = samples[names[0]], samples[names[-1]]
    overall = statistics.median(b["start"] / a["start"] for a, b in zip(first, last))
    print(f"start, {names[-1]} / {names[0]}: median same-round ratio {overall:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
