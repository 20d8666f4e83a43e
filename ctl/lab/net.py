"""Network namespaces, veths and root-namespace guard routes.

Every link is created directly inside its two target namespaces
(``ip link add A netns X type veth peer name B netns Y``), so nothing is ever
attached to the root netns. The only change made to the root netns is a set
of blackhole guard routes: with them, a lab address used by mistake from the
root netns fails locally instead of leaving the machine via its default
route. Each lab's guards carry ``proto 147`` and the lab's own metric; a
lab removes exactly the routes with its metric.

``in_netns`` runs a Python function in a short-lived thread that has joined a
netns with setns(2): sockets it opens, and /proc/sys/net files, belong to that
netns (how the lab polls etcd and sets sysctls without a client in the root
netns and without a subprocess).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import threading
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class NetError(Exception):
    """An ``ip`` command or namespace operation failed."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {res.stderr.strip() or 'exit %d' % res.returncode}")
    return res


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def netns_inode(name: str) -> int | None:
    """Inode of the live netns named ``name`` (None when absent or not mounted)."""
    try:
        st = os.stat(netns_path(name))
        if st.st_dev != os.stat("/proc/self/ns/net").st_dev:  # a stale plain file
            return None
        return st.st_ino
    except OSError:
        return None


def netns_add(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def netns_del(name: str) -> None:
    if os.path.lexists(netns_path(name)):
        res = ip("netns", "del", name, check=False)
        if res.returncode != 0 and os.path.lexists(netns_path(name)):
            raise NetError(f"ip netns del {name}: {res.stderr.strip()}")


def list_netns(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    ip("link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)


def in_netns(name: str, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new thread that has joined netns ``name``."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    t = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)


def set_sysctls(netns: str, values: dict[str, str]) -> None:
    in_netns(netns, _write_sysctls, values)


# --- guard routes in the root netns -----------------------------------------

def _family(prefix: str) -> str:
    return "-6" if ":" in prefix else "-4"


def add_guards(prefixes: tuple[str, ...], proto: int, metric: int) -> None:
    for p in prefixes:
        res = ip(_family(p), "route", "add", "blackhole", p, "proto", str(proto),
                 "metric", str(metric), check=False)
        if res.returncode != 0 and "File exists" not in res.stderr:
            raise NetError(f"adding guard route {p}: {res.stderr.strip()}")


def list_guards(proto: int, metric: int | None = None) -> list[str]:
    """Blackhole routes in the root netns with ``proto`` (and ``metric``)."""
    found = []
    for fam in ("-4", "-6"):
        res = ip("-j", fam, "route", "show", "proto", str(proto), check=False)
        try:
            routes = json.loads(res.stdout or "[]")
        except ValueError:
            routes = []
        for r in routes:
            if r.get("type") == "blackhole" and (metric is None or r.get("metric") == metric):
                found.append(r["dst"])
    return found


def remove_guards(proto: int, metric: int) -> None:
    for p in list_guards(proto, metric):
        res = ip(_family(p), "route", "del", "blackhole", p, "proto", str(proto),
                 "metric", str(metric), check=False)
        if res.returncode != 0:
            log.warning("could not remove guard route %s: %s", p, res.stderr.strip())
