"""Network namespaces made by tests: uniquely named, always deleted."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import traceback
import uuid


@contextlib.contextmanager
def temp_netns(prefix: str = "wt"):
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _child(name, fn, args, conn):
    try:
        from pyroute2 import netns
        netns.setns(name)
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # report anything to the parent
        conn.send(("err", f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()
        os._exit(0)


def run_in_netns(name: str, fn, *args, timeout: float = 60):
    """Run ``fn(*args)`` in a forked child that entered netns ``name``; return its result."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(name, fn, args, child))
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.kill()
        raise TimeoutError(f"{fn.__name__} did not finish in netns {name}")
    status, value = parent.recv()
    proc.join(5)
    if status == "err":
        raise AssertionError(value)
    return value


def sh(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=check, timeout=60)
