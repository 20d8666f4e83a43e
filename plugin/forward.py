"""The node's backstop in FORWARD: workload traffic that no policy judged is dropped.

Every packet to or from a workload veth (``wrn+``) gets its verdict from the
policy agent's chains (:mod:`profiles.generator`), jumped to first from
FORWARD and from Docker's DOCKER-USER. This chain, ``WARREN-FORWARD``, is
what such a packet meets if that jump is not there (yet): before the
node's agent wrote its first rules, or after someone removed them. It
drops, for three reasons: a workload with no policy must not talk to
anything (fail closed, as an endpoint without a profile does); accepting
here would also accept traffic to and from Docker's bridge networks, which
only the agent knows how to keep apart; and what comes after it in FORWARD
is Docker's (its ``-i br ! -o br -j ACCEPT`` would let bridge containers
in) or the FORWARD policy (DROP or ACCEPT depending on who turned
forwarding on first). The agent writes its rules within a second of the
node starting.

The rules are generated as iptables-restore text by a pure function and
applied atomically; the jump is inserted first in FORWARD once (the agent's
own jump goes above it).
"""
from __future__ import annotations

import shutil
import subprocess

from .dataplane import HOST_PREFIX

CHAIN = "WARREN-FORWARD"


def rules() -> str:
    note = '-m comment --comment "warren: no policy installed for this workload"'
    return "\n".join([
        "*filter",
        f":{CHAIN} - [0:0]",
        f"-F {CHAIN}",
        f"-A {CHAIN} -i {HOST_PREFIX}+ {note} -j DROP",
        f"-A {CHAIN} -o {HOST_PREFIX}+ {note} -j DROP",
        "COMMIT",
        "",
    ])


def install() -> list[str]:
    """Apply for IPv4 and IPv6; returns the tools used (skips a missing one)."""
    used = []
    for tool in ("iptables", "ip6tables"):
        if shutil.which(f"{tool}-restore") is None:
            continue
        subprocess.run([f"{tool}-restore", "--noflush"], input=rules(), text=True,
                       check=True, capture_output=True, timeout=30)
        jump = ["FORWARD", "-j", CHAIN]
        if subprocess.run([tool, "-w", "-C", *jump], capture_output=True, timeout=30).returncode:
            subprocess.run([tool, "-w", "-I", *jump[:1], "1", *jump[1:]], check=True,
                           capture_output=True, timeout=30)
        used.append(tool)
    return used
