"""The probe: 10 pings a second from a container on one host to one on the other.

:mod:`tests.e2e.faults.pinger` runs inside the source container's network
namespace (``nsenter -t PID -n``, so neither dockerd nor ``docker exec`` is
needed while it runs); its events are kept here and judged per time window:
a request without reply within ``REPLY_TIMEOUT`` s is lost.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ctl.lab import Lab

from .common import HarnessError, docker

PINGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinger.py")
INTERVAL = 0.1            # 10 pings a second
REPLY_TIMEOUT = 1.0       # a request without reply within this is lost


@dataclass
class PingStats:
    sent: int
    answered: int
    lost: int
    longest_outage: float       # seconds of the longest run of lost requests
    recovered_after: float | None  # from the window's start to the first reply after the last loss

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.lost == 0


class Probe:
    """The pinger in ``container``'s netns on ``host``; its events, kept in memory."""

    def __init__(self, lab: Lab, host: str, container: str, dst: str):
        self.lab, self.host, self.container, self.dst = lab, host, container, dst
        self.sent: dict[int, float] = {}
        self.replies: dict[int, float] = {}
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> "Probe":
        pid = docker(self.lab, self.host, "inspect", "-f", "{{.State.Pid}}", self.container).stdout.strip()
        if not pid.isdigit() or pid == "0":
            raise HarnessError(f"{self.container} on {self.host} is not running")
        self.proc = subprocess.Popen(["nsenter", "-t", pid, "-n", sys.executable, "-I", "-S", PINGER, self.dst,
                                      str(INTERVAL)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, name="probe", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            kind, n, t = line.split()
            with self._lock:
                (self.sent if kind == "s" else self.replies)[int(n)] = float(t)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader:
            self._reader.join(5)

    def __enter__(self) -> "Probe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_answering(self, streak: int = 10, timeout: float = 90.0) -> float:
        """Until ``streak`` requests in a row were answered; the time that was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise HarnessError("the pinger exited")
            with self._lock:
                last = sorted(self.sent)[-streak - 10:-10] if len(self.sent) > streak + 10 else []
                if len(last) == streak and all(n in self.replies for n in last):
                    return self.sent[last[-1]]
            time.sleep(0.2)
        raise HarnessError(f"{self.dst} not answering {self.container}'s pings within {timeout:.0f}s")

    def stats(self, start: float, end: float) -> PingStats:
        """Requests sent in [start, end] (wait REPLY_TIMEOUT after ``end`` before asking)."""
        with self._lock:
            seqs = sorted(n for n, t in self.sent.items() if start <= t <= end)
            lost = [n for n in seqs if n not in self.replies or self.replies[n] - self.sent[n] > REPLY_TIMEOUT]
            sent = dict(self.sent)
        longest, run_start, prev = 0.0, None, None
        lost_set = set(lost)
        for n in seqs:
            if n in lost_set:
                if run_start is None:
                    run_start = sent[n]
                prev = sent[n]
                longest = max(longest, prev - run_start + INTERVAL)
            else:
                run_start = None
        recovered = None
        if not lost:
            recovered = 0.0
        else:
            after = [n for n in seqs if n > lost[-1] and n not in lost_set]
            if after:
                recovered = self.replies[after[0]] - start
        return PingStats(len(seqs), len(seqs) - len(lost), len(lost), round(longest, 2),
                         None if recovered is None else round(recovered, 2))
