"""What every part of the fault harness shares: the fabric's names, and docker and warrenctl in a lab host.

The victim ``host1`` gets the faults and the churn; ``host2`` holds the
probe's source. ``fnet`` (``10.20.71.0/24``) is the one Warren network.
"""
from __future__ import annotations

import os
import subprocess

from ctl.lab import Lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

VICTIM, PEER = "host1", "host2"
HOSTS = (VICTIM, PEER)
NET, SUBNET = "fnet", "10.20.71.0/24"
DST_IP = "10.20.71.10"
SRC, DST = "fp-src", "fp-dst"


class HarnessError(Exception):
    pass


def docker(lab: Lab, host: str, *args: str, timeout: float = 120, check: bool = True
           ) -> subprocess.CompletedProcess:
    res = lab.docker(host, list(args), timeout=timeout)
    if check and res.returncode != 0:
        raise HarnessError(f"{host}: docker {' '.join(args)}: {res.stderr.strip()}")
    return res


def warrenctl(lab: Lab, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return lab.exec(host, ["warrenctl", *args], timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)
