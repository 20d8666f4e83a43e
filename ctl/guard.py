"""Guarded loops: no thread of a node process can die silently.

Every long-running loop of the node agent (policy, Docker's bridges,
nat-outgoing, the liveness lease, the BGP speaker) runs through
:func:`run_guarded` (in the calling thread) or :func:`start_guarded` (in a
new daemon thread). A loop is a callable ``loop(stop)`` that returns only once
``stop`` is set. When it raises instead, or returns early:

* the exception is logged with its traceback (``log.exception``: the agent's
  log, not only the stray ``agent.out``), and ``on_crash(name)`` is called
  (the agent counts it: ``warren_agent_loop_crashes_total{loop}``);
* ``Policy.RESTART`` (the default): the loop is called again after a backoff
  that doubles from ``first_backoff`` up to ``max_backoff`` and starts again at
  ``first_backoff`` once a run lasted ``healthy_after`` seconds. Each loop
  resyncs from etcd and the kernel when it starts, so a fresh call is a clean
  recovery;
* ``Policy.EXIT``: ``on_fatal(name)`` ends the process (default
  :func:`exit_process`: log, flush, ``os._exit``) so that its supervisor
  (:mod:`ctl.supervisor`) starts a fresh one - for a loop whose state cannot be
  rebuilt inside the process (the speaker owns a child ExaBGP).

``BaseException`` that is not an ``Exception`` (``SystemExit`` raised in a
thread, ``KeyboardInterrupt``) is always fatal: it means "stop", and a
thread cannot stop the process any other way.

:func:`install_excepthooks` is the safety net for threads started elsewhere
(a library's, or one started without this helper): their uncaught exceptions
go to the log with a traceback too.
"""
from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import time
from typing import Callable

log = logging.getLogger("warren.guard")

FATAL_EXIT = 70  # EX_SOFTWARE: the supervisor restarts a process that exits with it


class Policy(enum.Enum):
    RESTART = "restart"
    EXIT = "exit"


def exit_process(name: str, code: int = FATAL_EXIT) -> None:
    """End this process at once (no clean shutdown: that would withdraw the host's routes)."""
    log.critical("loop %s cannot go on: exiting (status %d) so the supervisor restarts the process",
                 name, code)
    logging.shutdown()  # flush the log first
    sys.stderr.flush()
    os._exit(code)


def run_guarded(name: str, loop: Callable[[threading.Event], object], stop: threading.Event, *,
                policy: Policy = Policy.RESTART, first_backoff: float = 1.0, max_backoff: float = 30.0,
                healthy_after: float = 60.0, on_crash: Callable[[str], None] | None = None,
                on_fatal: Callable[[str], None] = exit_process,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Run ``loop(stop)`` until ``stop`` is set; see the module docstring."""
    backoff = first_backoff
    while not stop.is_set():
        started = clock()
        try:
            loop(stop)
        except Exception:
            log.exception("loop %s failed", name)
        except BaseException:
            log.exception("loop %s ended by an exception that means stop", name)
            _count(on_crash, name)
            on_fatal(name)
            return
        else:
            if stop.is_set():
                return
            log.error("loop %s returned although the process is not stopping", name)
        _count(on_crash, name)
        if policy is Policy.EXIT:
            on_fatal(name)
            return
        if clock() - started >= healthy_after:
            backoff = first_backoff
        log.warning("restarting loop %s in %.1fs", name, backoff)
        if stop.wait(backoff):
            return
        backoff = min(backoff * 2, max_backoff)


def start_guarded(name: str, loop: Callable[[threading.Event], object], stop: threading.Event,
                  **options) -> threading.Thread:
    """:func:`run_guarded` in a new daemon thread called ``name`` (started; returned)."""
    thread = threading.Thread(target=run_guarded, args=(name, loop, stop), kwargs=options, name=name,
                              daemon=True)
    thread.start()
    return thread


def install_excepthooks() -> None:
    """Log uncaught exceptions of any thread (and of the main thread) with their traceback."""
    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        log.critical("thread %s died", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def main_hook(exc_type, exc_value, traceback) -> None:
        log.critical("uncaught exception", exc_info=(exc_type, exc_value, traceback))

    threading.excepthook = thread_hook
    sys.excepthook = main_hook


def _count(on_crash: Callable[[str], None] | None, name: str) -> None:
    if on_crash is None:
        return
    try:
        on_crash(name)
    except Exception:  # a broken counter must not stop the recovery
        log.exception("counting the failure of loop %s", name)
