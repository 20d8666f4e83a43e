"""A lab's persistent record: ``STATE_ROOT/NAME/state.json``.

It is written before anything is created, so ``down`` can always find the
lab's index (hence its guard-route metric) even after a half-failed ``up``.
Lab indexes are allocated under an flock on ``STATE_ROOT/.lock``: the lowest
index no other lab's state file claims.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import time
from typing import Any, Iterator

from .layout import MAX_INDEX, STATE_ROOT, Layout


class StateError(Exception):
    pass


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def state_path(name: str, root: str = STATE_ROOT) -> str:
    return os.path.join(root, name, "state.json")


def load(name: str, root: str = STATE_ROOT) -> dict[str, Any] | None:
    try:
        with open(state_path(name, root)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StateError(f"{state_path(name, root)} is corrupt: {exc}") from None


def save(state: dict[str, Any], root: str = STATE_ROOT) -> None:
    path = state_path(state["name"], root)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.write("\n")
    os.rename(tmp, path)


def create(name: str, root: str = STATE_ROOT) -> dict[str, Any]:
    """Claim an index and the state dir for a new lab ``name``."""
    with locked(os.path.join(root, ".lock")):
        labdir = os.path.join(root, name)
        if os.path.exists(labdir):
            raise StateError(f"lab {name!r} already exists ({labdir}); "
                             f"run 'warren-lab down --name {name}' first")
        used = set()
        for path in glob.glob(os.path.join(root, "*", "state.json")):
            try:
                with open(path) as f:
                    used.add(int(json.load(f)["index"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        free = [i for i in range(MAX_INDEX + 1) if i not in used]
        if not free:
            raise StateError("no free lab index: too many labs")
        os.makedirs(labdir, mode=0o755)
        state = {"name": name, "index": free[0], "root": root, "phase": "creating",
                 "created": time.time(), "hosts": {}, "attachments": [], "node": False}
        save(state, root)
        return state


def layout_of(state: dict[str, Any]) -> Layout:
    etcd = state.get("etcd") or {}
    return Layout(state["name"], int(state["index"]), state.get("root", STATE_ROOT),
                  etcd_members=int(etcd.get("members", 1)), etcd_tls=bool(etcd.get("tls", False)))
