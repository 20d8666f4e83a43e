"""Plain-text tables and JSON output for warrenctl (no third-party deps)."""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Print a boxed table like calicoctl's PrettyTable output."""
    out = out or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    print(rule, file=out)
    print(line(headers), file=out)
    print(rule, file=out)
    for row in cells:
        print(line(row), file=out)
    print(rule, file=out)


def as_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=out or sys.stdout)
