"""The IP-in-IP data path, proven in a kernel that has it.

This machine kind's kernel has no ``CONFIG_NET_IPIP``, so the data-path test
boots Debian's own kernel (unpacked, not installed) under QEMU/TCG with this
machine's filesystem as a read-only 9p root (``tests/ipip/guest.py``) and
runs ``tests/ipip/guest_ipip_check.py`` there with pytest: two hosts and two
containers as namespaces of the guest, set up by Warren's own tunl0, MTU,
workload and route code, then pings both ways, tcpdump on the underlay, the
1480-byte DF boundary, the route as the kernel and ``Fib().learned()`` read it.
The guest's whole console is printed when it fails.

The first run fetches and unpacks the kernel (~70 MB .deb) into the runner's
cache; later runs boot in ~4 s. The test is skipped only when qemu, a static
busybox, kmod or the kernel cannot be obtained, and says which.

Outside the guest, ``check_ipip`` on this host's own kernel must explain the
missing ``CONFIG_NET_IPIP`` (skipped where the host kernel has ipip).
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgp.fabric import FabricError, check_ipip
from tests.ipip import guest

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
RUNNER = REPO / "tests" / "ipip" / "guest.py"
CHECKS = "tests/ipip/guest_ipip_check.py"  # relative: the guest keeps the working directory
GUEST_TIMEOUT = 300  # s; a run takes ~20-40 s on a busy 2-core machine

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, 9p export of /)")


def guest_unavailable() -> str | None:
    """Why no guest can be started here (fetching the kernel once if needed), or None."""
    try:
        guest.require_tool(guest.QEMU, "qemu-system-x86")
        guest.require_tool("modprobe", "kmod")
        guest.static_busybox()
        kernel = guest.obtain_kernel()
    except guest.GuestUnavailable as exc:
        return str(exc)
    log.info("guest kernel %s from %s", kernel.version, kernel.root)
    return None


@pytest.fixture(scope="module")
def guest_ready() -> None:
    started = time.monotonic()
    reason = guest_unavailable()
    if reason:
        pytest.skip(f"cannot run the IPIP guest: {reason}")
    log.info("guest prerequisites ready in %.1f s", time.monotonic() - started)


def guest_command() -> list[str]:
    pytest_in_guest = ["env", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", sys.executable, "-m", "pytest",
                       "-p", "no:cacheprovider", "--noconftest", "-v", "-rxXs", "--log-level=INFO",
                       CHECKS]
    return [sys.executable, str(RUNNER), "--timeout", str(GUEST_TIMEOUT), "--", *pytest_in_guest]


def summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if re.match(r"^=+ .* in [\d.]+s", line)]
    return lines[-1] if lines else ""


@needs_root
@pytest.mark.e2e
@pytest.mark.slow
def test_ipip_data_path_in_a_guest_kernel(guest_ready):
    started = time.monotonic()
    result = subprocess.run(guest_command(), cwd=REPO, capture_output=True, text=True,
                            timeout=GUEST_TIMEOUT + 60)
    output = result.stdout + result.stderr
    print(output)  # the guest's console: shown by pytest when the test fails
    log.info("guest run: exit %d in %.1f s", result.returncode, time.monotonic() - started)
    assert result.returncode == 0, f"the in-guest checks failed (exit {result.returncode}):\n{output}"
    summary = summary_line(output)
    assert re.search(r"\d+ passed", summary), f"no passing checks reported:\n{output}"
    assert not re.search(r"\b(failed|errors?|skipped|xpassed)\b", summary), f"unexpected: {summary}"


def host_has_ipip() -> bool:
    """Whether this host's kernel has ipip, asked without loading it."""
    if os.path.exists("/sys/module/ipip"):
        return True
    try:
        return subprocess.run(["modprobe", "-n", "-q", "ipip"], timeout=10).returncode == 0
    except FileNotFoundError:  # no kmod: a module could not be loaded anyway
        return False


@needs_root
def test_check_ipip_explains_a_kernel_without_ipip():
    if host_has_ipip():
        pytest.skip("this host's kernel has ipip (the guest test covers the data path)")
    with pytest.raises(FabricError, match="CONFIG_NET_IPIP"):
        check_ipip()
