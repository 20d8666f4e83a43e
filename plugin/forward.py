"""Let routed workload traffic through the host's FORWARD chain.

dockerd (with its default ``--iptables=true``) may set the FORWARD policy to
DROP, which would blackhole every packet routed to or from a workload veth.
The node owns one chain, ``WARREN-FORWARD``, jumped to first from FORWARD,
that accepts traffic on ``wrn+`` interfaces. (The profiles agent will own
policy; this chain only keeps routing alive.) The rules are generated as
iptables-restore text by a pure function and applied atomically.
"""
from __future__ import annotations

import shutil
import subprocess

from .dataplane import HOST_PREFIX

CHAIN = "WARREN-FORWARD"


def rules() -> str:
    return "\n".join([
        "*filter",
        f":{CHAIN} - [0:0]",
        f"-F {CHAIN}",
        f"-A {CHAIN} -i {HOST_PREFIX}+ -j ACCEPT",
        f"-A {CHAIN} -o {HOST_PREFIX}+ -j ACCEPT",
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
