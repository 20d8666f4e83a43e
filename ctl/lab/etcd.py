"""etcd for a lab: ``LocalEtcd``'s flags, run inside the underlay netns.

The server listens on the bridge address (``http://198.19.K.1:2379``) of the
lab's underlay namespace, so every host reaches it over the underlay and the
root netns cannot. It is started detached (see ``procs.spawn_daemon``) so it
outlives ``warren-lab up``; readiness is polled with an HTTP ``/health``
request made from a thread inside the underlay netns.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from datastore.localetcd import LocalEtcd

from . import procs
from .net import in_netns, netns_path
from .probe import etcd_healthy


class EtcdError(Exception):
    pass


@dataclass
class UnderlayEtcd(LocalEtcd):
    netns: str = ""
    pid: int | None = field(default=None, init=False)

    def command(self) -> list[str]:
        return ["nsenter", f"--net={netns_path(self.netns)}", "--", *super().command()]

    def start(self, timeout: float = 20.0) -> "UnderlayEtcd":  # type: ignore[override]
        """Start detached; call ``wait_ready`` before using it."""
        os.makedirs(self.data_dir, exist_ok=True)
        self.pid = procs.spawn_daemon(self.command(), self.log_path or "/dev/null")
        return self

    def healthy(self) -> bool:
        return in_netns(self.netns, etcd_healthy, self.host, self.client_port)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.pid is not None and not procs.is_alive(self.pid):
                raise EtcdError(f"etcd exited at start (see {self.log_path})")
            if time.monotonic() > deadline:
                raise EtcdError(f"etcd at {self.endpoint} not ready after {timeout:.0f}s "
                                f"(see {self.log_path})")
            time.sleep(0.1)
