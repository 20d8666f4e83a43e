"""What every benchmark prints first: its title, the command that reproduces it, and the machine's state.

The figures in RESULTS.md are quoted with this header, so a reader can re-run the exact command and see how
busy the machine was (these machines are shared and noisy)."""
from __future__ import annotations

import os
import sys
import time


def header(title: str, module: str, argv: list[str], flush: bool = False) -> None:
    print(title)
    print(f"command: {sys.executable} -m {module} " + " ".join(argv))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, cores: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.2f}", flush=flush)
