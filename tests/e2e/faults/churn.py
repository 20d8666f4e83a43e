"""The churn: ``docker run -d`` and ``docker rm -f`` of containers on one host, on a thread.

Every operation is kept (start, end, success, the CLI's error) so the harness
can tell when the first run after a fault succeeded. A failed run's container
is removed at once (it may exist, created); at the end every name the churn
used is removed.
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

from ctl.lab import IMAGE, Lab

from .common import NET, HarnessError, docker

CHURN_WINDOW = 3          # churn containers alive at a time


def one_line(stderr: str) -> str:
    """The docker CLI's error without its usage hint."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Run '")]
    return lines[-1] if lines else ""


@dataclass
class Op:
    verb: str
    name: str
    started: float
    ended: float
    ok: bool
    error: str = ""


class Churn:
    """``docker run -d`` then ``docker rm -f`` of containers on ``host`` (``window`` alive at a time)
    on a thread, until ``count`` runs succeeded (or ``deadline`` s); everything is removed at the end."""

    def __init__(self, lab: Lab, host: str, tag: str, count: int, window: int = CHURN_WINDOW,
                 deadline: float = 300.0):
        self.lab, self.host, self.tag, self.count, self.window = lab, host, tag, count, window
        self.deadline = deadline
        self.ops: list[Op] = []
        self.names: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight: tuple[str, float] | None = None   # (verb, start) of the call running now
        self._thread = threading.Thread(target=self._loop, name=f"churn-{tag}", daemon=True)

    def _do(self, verb: str, name: str, *args: str) -> bool:
        t0 = time.monotonic()
        with self._lock:
            self._in_flight = (verb, t0)
        try:
            res = docker(self.lab, self.host, *args, timeout=180, check=False)
            ok, err = res.returncode == 0, one_line(res.stderr)
        except subprocess.TimeoutExpired as exc:
            ok, err = False, f"timed out: {exc}"
        with self._lock:
            self.ops.append(Op(verb, name, t0, time.monotonic(), ok, err[-300:]))
            self._in_flight = None
        return ok

    def _loop(self) -> None:
        alive: list[str] = []
        start, i = time.monotonic(), 0
        while (self.runs_ok() < self.count and not self._stop.is_set()
               and time.monotonic() - start < self.deadline):
            name = f"fc{self.tag}{i}"
            i += 1
            with self._lock:
                self.names.append(name)
            if self._do("run", name, "run", "-d", "--init", "--name", name, "--net", NET, IMAGE, "sleep", "600"):
                alive.append(name)
            else:
                self._do("rm", name, "rm", "-f", name)
                time.sleep(0.5)
            while len(alive) > self.window:
                self._do("rm", alive[0], "rm", "-f", alive[0])
                alive.pop(0)
        for name in alive:
            self._do("rm", name, "rm", "-f", name)

    def start(self) -> "Churn":
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(300)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(300)

    def runs_ok(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.verb == "run" and op.ok)

    def runs_started(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.verb == "run") + (1 if self._thread.is_alive() else 0)

    def wait_runs(self, n: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.runs_ok() < n:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise HarnessError(f"churn: {self.runs_ok()} of {n} runs succeeded; last: {self.failures()[-3:]}")
            time.sleep(0.1)

    def wait_in_flight(self, verb: str, into: float, timeout: float = 60.0) -> None:
        """Until a ``verb`` call has been running for ``into`` s (a fault then hits it mid-way,
        if it takes that long); returns at once when the churn has stopped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            with self._lock:
                current = self._in_flight
            if current and current[0] == verb and time.monotonic() - current[1] >= into:
                return
            time.sleep(0.01)

    def failures(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if not op.ok]

    def first_run_ok_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the end of the first run started at or after ``t`` that succeeded."""
        with self._lock:
            ends = [op.ended for op in self.ops if op.verb == "run" and op.ok and op.started >= t]
        return round(min(ends) - t, 2) if ends else None

    def remove_everything(self) -> None:
        """Every container the churn ever named is gone (clean-up; also after failures)."""
        with self._lock:
            names = list(self.names)
        for i in range(0, len(names), 50):
            docker(self.lab, self.host, "rm", "-f", *names[i:i + 50], check=False, timeout=300)
