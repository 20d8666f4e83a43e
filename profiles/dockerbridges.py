"""Which interfaces of this host are Docker's bridges (the policy agent's WARREN-DOCKER input).

Traffic between a Warren workload and a container on one of Docker's bridge
networks may cross only through a published port (see
:mod:`profiles.generator`), so the agent must know every bridge dockerd
made. Three sources, united, because each alone has a gap:

* ``docker0``, Docker's default bridge (always, also while dockerd is down);
* the kernel: every bridge interface named the way Docker names the bridge of
  a user-defined network, ``br-`` and the first 12 hex digits of its id
  (``/sys/class/net/NAME/bridge`` exists). This needs no dockerd, so it also
  covers a bridge dockerd restores at start before its API answers; the
  pattern is exact enough not to catch a host's own ``br-lan`` or ``br-ex``;
* dockerd's API (``GET /networks`` of driver ``bridge``): the only source of a
  bridge named with ``-o com.docker.network.bridge.name=NAME``. A failed
  call keeps what dockerd said last (a restart must not open the boundary);
  a name no interface can have is ignored.

:class:`DockerBridges` polls the kernel and dockerd every ``poll`` seconds
(a directory listing and one local HTTP GET) and calls ``on_change(bridges)``
when the set changes, and also when dockerd answers again after not
answering: both are moments when dockerd has just rewritten FORWARD (a
network was created, or dockerd restarted), so the agent rewrites
WARREN-DOCKER and puts its jumps first again at once. So
a new bridge is known within about ``poll`` seconds of its creation; its
network has no containers yet at that moment.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

log = logging.getLogger(__name__)

DEFAULT_BRIDGES = frozenset({"docker0"})
AUTO_NAME = re.compile(r"^br-[0-9a-f]{12}$")
NAME_OPTION = "com.docker.network.bridge.name"
NETWORKS_PATH = "/networks?filters=" + quote(json.dumps({"driver": ["bridge"]}))
SYSFS_NET = "/sys/class/net"
POLL = 1.0
ERROR_BACKOFF_MAX = 30.0


IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # what a kernel interface name can be (IFNAMSIZ)


def bridge_name(network: Any) -> str | None:
    """The bridge interface of one network of ``GET /networks``; None if not a bridge network
    (or not an answer that makes sense: a name no interface can have)."""
    if not isinstance(network, Mapping) or network.get("Driver") != "bridge":
        return None
    options = network.get("Options")
    named = options.get(NAME_OPTION) if isinstance(options, Mapping) else None
    if named:
        return str(named) if IFNAME.match(str(named)) else None
    ident = str(network.get("Id") or "")
    name = f"br-{ident[:12]}" if len(ident) >= 12 else None
    return name if name and IFNAME.match(name) else None


def docker_bridges(networks: Iterable[Any]) -> set[str]:
    return {name for name in map(bridge_name, networks or ()) if name}


def kernel_bridges(sysfs: str = SYSFS_NET) -> set[str]:
    """Bridge interfaces of this netns named as Docker names a user-defined network's bridge."""
    try:
        entries = os.listdir(sysfs)
    except OSError:
        return set()
    return {name for name in entries
            if AUTO_NAME.match(name) and os.path.isdir(os.path.join(sysfs, name, "bridge"))}


class DockerBridges:
    """Follows Docker's bridges; see the module docstring."""

    def __init__(self, list_networks: Callable[[], Iterable[Mapping[str, Any]]],
                 on_change: Callable[[frozenset[str]], None],
                 sysfs: str = SYSFS_NET, poll: float = POLL):
        self._list = list_networks
        self._on_change = on_change
        self._sysfs = sysfs
        self.poll = poll
        self._from_docker: set[str] = set()
        self._answered: bool | None = None  # did dockerd answer the last poll (None: not asked yet)
        self.current: frozenset[str] = frozenset(DEFAULT_BRIDGES | kernel_bridges(sysfs))

    def poll_once(self) -> frozenset[str]:
        """Look once; tell ``on_change`` about a change (or dockerd's return). Returns the bridges."""
        came_back = False
        try:
            self._from_docker = docker_bridges(self._list())
            came_back = self._answered is False
            self._answered = True
        except Exception as exc:  # dockerd down or restarting: keep what it said last
            if self._answered is not False:
                log.info("dockerd does not answer (%s); keeping %d bridges it named", exc,
                         len(self._from_docker))
            self._answered = False
        bridges = frozenset(DEFAULT_BRIDGES | kernel_bridges(self._sysfs) | self._from_docker)
        if bridges != self.current or came_back:
            if bridges != self.current:
                log.info("Docker bridges: %s", " ".join(sorted(bridges)))
            self.current = bridges
            self._on_change(bridges)
        return bridges

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop``; an unexpected error is logged and polling resumes after a
        backoff (doubling up to ERROR_BACKOFF_MAX), never ending the thread."""
        wait = self.poll
        while True:
            try:
                self.poll_once()
                wait = self.poll
            except Exception:  # noqa: BLE001 - on_change failed, or dockerd said something odd
                wait = min(max(wait * 2, self.poll), ERROR_BACKOFF_MAX)
                log.exception("following Docker's bridges; again in %.0fs", wait)
            if stop.wait(wait):
                return
