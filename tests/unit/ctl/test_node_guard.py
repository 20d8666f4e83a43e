"""ctl.guard: a node loop that raises or returns early is logged with its traceback and restarted
with backoff, or ends the process; it never disappears silently."""
from __future__ import annotations

import logging
import subprocess
import sys
import threading

from ctl import guard


class RecordingStop(threading.Event):
    """A stop event that records the backoff waits instead of sleeping."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None):
        if timeout is not None:
            self.waits.append(timeout)
            return self.is_set()
        return super().wait()


class Script:
    """A loop that plays ``steps`` (an exception to raise, "return", or "stop") one per call."""

    def __init__(self, steps, clock=None, durations=None):
        self.steps, self.calls = list(steps), 0
        self.clock, self.durations = clock, list(durations or [])

    def __call__(self, stop):
        self.calls += 1
        if self.clock is not None and self.durations:
            self.clock.now += self.durations.pop(0)
        step = self.steps.pop(0)
        if step == "stop":
            stop.set()
            return
        if step == "return":
            return
        raise step


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_a_raising_loop_is_logged_with_traceback_counted_and_restarted(caplog):
    stop, crashes = RecordingStop(), []
    loop = Script([ValueError("bad record"), KeyError("x"), "stop"])
    with caplog.at_level(logging.INFO, logger="warren.guard"):
        guard.run_guarded("policy", loop, stop, on_crash=crashes.append, first_backoff=1, max_backoff=30)
    assert loop.calls == 3
    assert crashes == ["policy", "policy"]
    failed = [r for r in caplog.records if r.getMessage() == "loop policy failed"]
    assert len(failed) == 2 and all(r.exc_info for r in failed)
    assert "ValueError: bad record" in caplog.text and "Traceback" in caplog.text
    assert stop.waits == [1, 2]
    assert "restarting loop policy in 1.0s" in caplog.text


def test_a_loop_that_returns_before_stop_is_restarted(caplog):
    stop = RecordingStop()
    loop = Script(["return", "stop"])
    guard.run_guarded("nat-outgoing", loop, stop, first_backoff=0.5)
    assert loop.calls == 2 and stop.waits == [0.5]
    assert "loop nat-outgoing returned although the process is not stopping" in caplog.text


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run():
    clock, stop = Clock(), RecordingStop()
    errors = [RuntimeError(str(i)) for i in range(7)]
    # runs 1-5 crash at once; run 6 lasted 100 s (healthy) before crashing; run 7 crashes at once
    loop = Script([*errors, "stop"], clock=clock, durations=[0, 0, 0, 0, 0, 100, 0, 0])
    guard.run_guarded("speaker", loop, stop, first_backoff=1, max_backoff=8, healthy_after=60, clock=clock)
    assert stop.waits == [1, 2, 4, 8, 8, 1, 2]


def test_exit_policy_ends_the_process_instead_of_restarting(caplog):
    stop, fatal, crashes = RecordingStop(), [], []
    loop = Script([OSError("exabgp gone"), "stop"])
    guard.run_guarded("speaker", loop, stop, policy=guard.Policy.EXIT, on_fatal=fatal.append,
                      on_crash=crashes.append)
    assert loop.calls == 1 and fatal == ["speaker"] and crashes == ["speaker"] and stop.waits == []
    assert "OSError: exabgp gone" in caplog.text


def test_system_exit_in_a_loop_is_fatal_even_with_restart():
    stop, fatal = RecordingStop(), []
    guard.run_guarded("liveness", Script([SystemExit(3)]), stop, on_fatal=fatal.append)
    assert fatal == ["liveness"]


def test_a_clean_stop_logs_nothing(caplog):
    stop, crashes = RecordingStop(), []
    guard.run_guarded("docker-bridges", Script(["stop"]), stop, on_crash=crashes.append)
    assert crashes == [] and not [r for r in caplog.records if r.name == "warren.guard"]


def test_a_stop_during_the_backoff_ends_the_loop():
    stop = threading.Event()
    calls = []

    def loop(ev):
        calls.append(1)
        threading.Timer(0.05, ev.set).start()
        raise RuntimeError("once")

    guard.run_guarded("policy", loop, stop, first_backoff=30)  # would wait 30 s without the stop
    assert calls == [1]


def test_a_broken_crash_counter_does_not_stop_the_recovery():
    stop = RecordingStop()
    loop = Script([RuntimeError("a"), "stop"])

    def counter(name):
        raise RuntimeError("counter broken")

    guard.run_guarded("policy", loop, stop, on_crash=counter)
    assert loop.calls == 2


def test_start_guarded_runs_the_loop_in_a_named_daemon_thread():
    stop = threading.Event()
    seen = []

    def loop(ev):
        seen.append(threading.current_thread().name)
        if len(seen) < 3:
            raise RuntimeError("again")
        ev.wait()

    thread = guard.start_guarded("metrics", loop, stop, first_backoff=0.01)
    assert thread.daemon and thread.name == "metrics"
    for _ in range(500):
        if len(seen) >= 3:
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and seen == ["metrics"] * 3


PROCESS = r'''
import logging, sys, threading
from ctl import guard
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
guard.install_excepthooks()
t = threading.Thread(target=lambda: 1 / 0, name="unguarded")
t.start(); t.join()
stop = threading.Event()
def loop(ev):
    raise LookupError("no way on")
guard.run_guarded("speaker", loop, stop, policy=guard.Policy.EXIT)
print("not reached")
'''


def test_exit_process_logs_and_exits_with_the_fatal_status(tmp_path):
    logfile = tmp_path / "agent.log"
    out = subprocess.run([sys.executable, "-c", PROCESS, str(logfile)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == guard.FATAL_EXIT and "not reached" not in out.stdout
    text = logfile.read_text()
    assert "thread unguarded died" in text and "ZeroDivisionError" in text   # the excepthook's net
    assert "LookupError: no way on" in text
    assert "loop speaker cannot go on: exiting (status 70)" in text

