"""The policy agent's hands: iptables-restore, ipset restore and the parent jumps.

A thin shell around the kernel tools, so the agent's decisions stay pure
(see :mod:`profiles.generator`). Every write is atomic: ``iptables-restore
--noflush`` commits a whole table at once (only the chains named in the
text change), ``ipset restore`` refills sets through ``swap``.

Parent jumps (``FORWARD -> WARREN-PROFILES-FORWARD``, ``INPUT ->
WARREN-PROFILES-INPUT``, and ``DOCKER-USER -> WARREN-PROFILES-FORWARD``
where dockerd made DOCKER-USER) must be the *first* rule of their chain:
dockerd inserts its own rules and jumps at the top of FORWARD (see
:mod:`profiles.generator` for what each engine does, and why a jump from
DOCKER-USER too), and plugin.forward's WARREN-FORWARD drops workload
traffic that no policy has judged, so policy has to see a packet before
any of them. :meth:`Kernel.ensure_first` inserts the jump at position 1
before removing any later copy, so there is never a moment without it.
"""
from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)

TIMEOUT = 60
TOOLS = {4: ("iptables", "iptables-restore", "iptables-save"),
         6: ("ip6tables", "ip6tables-restore", "ip6tables-save")}


class KernelError(Exception):
    """A kernel tool refused our input (one line, with the tool's own message)."""


def _run(argv: list[str], text: str | None = None, wrapper: list[str] | None = None) -> str:
    try:
        done = subprocess.run((wrapper or []) + argv, input=text, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(f"{argv[0]}: {exc}") from None
    if done.returncode:
        message = " ".join((done.stderr or done.stdout).split())[:400]
        raise KernelError(f"{' '.join(argv[:2])} failed: {message}")
    return done.stdout


class Kernel:
    """iptables/ip6tables filter table and ipsets of the namespace we run in.

    ``wrapper`` prefixes every command (tests: ``["ip", "netns", "exec", NAME]``).
    """

    def __init__(self, wrapper: list[str] | None = None):
        self.wrapper = list(wrapper or [])

    def _run(self, argv: list[str], text: str | None = None) -> str:
        return _run(argv, text, self.wrapper)

    def versions(self) -> list[int]:
        """IP versions whose tools exist (IPv6 is skipped without ip6tables)."""
        return [v for v, tools in TOOLS.items() if all(shutil.which(t) for t in tools)]

    def restore(self, version: int, text: str) -> None:
        self._run([TOOLS[version][1], "-w", "30", "--noflush"], text)

    def chains(self, version: int) -> set[str]:
        """Chains of the filter table now (``iptables-save`` headers)."""
        out = self._run([TOOLS[version][2], "-t", "filter"])
        return {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}

    def addresses(self) -> str:
        """``ip -j addr show`` of the namespace (JSON text; see profiles.controlplane)."""
        return self._run(["ip", "-j", "addr", "show"])

    def ipset_restore(self, text: str) -> None:
        self._run(["ipset", "restore"], text)

    def sets(self) -> set[str]:
        return set(self._run(["ipset", "list", "-n"]).split())

    def destroy_set(self, name: str) -> None:
        try:
            self._run(["ipset", "destroy", name])
        except KernelError as exc:  # still referenced somewhere: leave it, say why
            log.warning("cannot destroy ipset %s: %s", name, exc)

    def rules(self, version: int, chain: str) -> list[str]:
        """``-A`` lines of one built-in or existing chain."""
        out = self._run([TOOLS[version][0], "-w", "30", "-S", chain])
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def ensure_first(self, version: int, parent: str, target: str, optional: bool = False) -> bool:
        """Make ``-j target`` the first rule of ``parent``; True if anything changed.

        ``optional``: ``parent`` is someone else's chain (DOCKER-USER) that may not
        exist; then there is nothing to do (a failed listing means just that)."""
        tool = TOOLS[version][0]
        jump = f"-A {parent} -j {target}"
        try:
            rules = self.rules(version, parent)
        except KernelError:
            if optional:
                return False
            raise
        if rules[:1] == [jump] and rules.count(jump) == 1:
            return False
        if rules[:1] != [jump]:
            self._run([tool, "-w", "30", "-I", parent, "1", "-j", target])
            rules = [jump] + rules
        for _ in range(rules.count(jump) - 1):  # later copies: delete from the end
            position = len(rules) - rules[::-1].index(jump)
            self._run([tool, "-w", "30", "-D", parent, str(position)])
            del rules[position - 1]
        log.info("IPv%d: %s -> %s is first again", version, parent, target)
        return True
