"""Run a private etcd server: for tests, benchmarks, labs and single-host nodes.

``LocalEtcd`` starts Debian's ``etcd`` binary on loopback (or a given
address) with its own data directory, waits until it answers, and stops only
the process it started (by PID). Ports default to free ones picked from the
kernel so two instances never collide.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from .client import Datastore
from .config import EtcdConfig, parse_endpoint
from .errors import DatastoreError

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel to SIGKILL us when the parent dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalEtcd:
    data_dir: str
    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    name: str = "warren"
    binary: str = "etcd"
    log_path: str | None = None
    extra_args: list[str] = field(default_factory=list)
    # Kill etcd if the process that started it dies (tests, labs): nothing leaks
    # even when the test runner itself is killed.
    die_with_parent: bool = False
    # Run inside this network namespace (a name under /run/netns); readiness is
    # then probed from inside it too, since its addresses are not reachable here.
    netns: str | None = None
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        probe_host = "127.0.0.1" if self.netns else self.host  # ports are per namespace anyway
        self.client_port = self.client_port or free_port(probe_host)
        self.peer_port = self.peer_port or free_port(probe_host)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        return [*prefix, self.binary, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.endpoint,
                "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}",
                "--initial-cluster-state", "new",
                "--log-level", "warn", *self.extra_args]

    def start(self, timeout: float = 20.0) -> "LocalEtcd":
        if shutil.which(self.binary) is None:
            raise DatastoreError(
                f"{self.binary} not found: install Debian's etcd-server package")
        os.makedirs(self.data_dir, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent if self.die_with_parent else None)
        finally:
            if self.log_path:
                out.close()
        self.wait_ready(timeout)
        return self

    def _probe_in_netns(self) -> bool:
        probe = ["nsenter", f"--net=/run/netns/{self.netns}", "etcdctl",
                 "--endpoints", self.endpoint, "--dial-timeout", "1s", "endpoint", "health"]
        return subprocess.run(probe, capture_output=True, env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "")},
                              timeout=10).returncode == 0

    def wait_ready(self, timeout: float = 20.0) -> None:
        if self.netns:
            deadline = time.monotonic() + timeout
            while not self._probe_in_netns():
                if self.proc is not None and self.proc.poll() is not None:
                    raise DatastoreError(f"etcd exited with status {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise DatastoreError(f"etcd in netns {self.netns} not ready after {timeout:.0f}s")
                time.sleep(0.1)
            return
        store = Datastore(EtcdConfig((parse_endpoint(self.endpoint),), timeout=1.0))
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise DatastoreError(
                        f"etcd exited with status {self.proc.returncode} "
                        f"(see {self.log_path or 'its output'})")
                try:
                    store.revision()
                    return
                except DatastoreError:
                    if time.monotonic() > deadline:
                        raise DatastoreError(
                            f"etcd at {self.endpoint} not ready after {timeout:.0f}s") from None
                    time.sleep(0.1)
        finally:
            store.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the process this object started (and only that one)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()
