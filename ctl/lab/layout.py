"""Names, addresses and paths of a lab, all derived from its name and index.

A lab ``NAME`` with index ``K`` (0..255, allocated when the lab comes up so
that concurrent labs never share one) gets:

* state dir ``$WARREN_LAB_ROOT/NAME`` (default ``/var/lib/warren-lab/NAME``).
  Not under /run: every host bind-mounts a private /run, and paths such as
  the dockerd socket must be the same inside the hosts and outside. Only the
  root dir and its ``.lock`` (index allocation) outlive ``down``;
* underlay netns ``NAME-ul`` holding bridge ``br0`` with 198.19.K.1/24 and
  2001:db8:1ab:K::1/64 (K in hex), and etcd on ``http://198.19.K.1:2379``;
* hosts ``host1..hostN``: netns ``NAME-hI``, ``eth0`` = 198.19.K.(10+I)/24 and
  2001:db8:1ab:K::(10+I)/64, state in ``STATE/hostI``, cgroup parent
  ``/warren-lab-NAME-hostI``;
* extra attached namespaces get 198.19.K.200 and up;
* blackhole guard routes in the root netns with ``proto 147`` and the
  per-lab metric ``4242420000 + K``, so labs never remove each other's guards.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

DEFAULT_NAME = "wl"
STATE_ROOT = os.environ.get("WARREN_LAB_ROOT", "/var/lib/warren-lab")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
MAX_INDEX = 255
MAX_HOSTS = 50
FIRST_ATTACH_OCTET = 200
GUARD_PROTO = 147
GUARD_METRIC_BASE = 4242420000
POOL_GUARDS = ("10.20.0.0/16", "10.30.0.0/16", "2001:db8::/32", "fd00::/8")
BRIDGE = "br0"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
IMAGE = "warren-lab/busybox:latest"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"invalid lab name {name!r}: use 1-10 of [a-z0-9], starting with a letter")
    return name


@dataclass(frozen=True)
class Layout:
    name: str
    index: int
    root: str = STATE_ROOT

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.name)

    @property
    def ul_netns(self) -> str:
        return f"{self.name}-ul"

    @property
    def bridge(self) -> str:
        return BRIDGE

    @property
    def subnet_v4(self) -> str:
        return f"198.19.{self.index}.0/24"

    @property
    def subnet_v6(self) -> str:
        return str(ipaddress.IPv6Network(f"2001:db8:1ab:{self.index:x}::/64"))

    def addr_v4(self, last: int) -> str:
        return f"198.19.{self.index}.{last}"

    def addr_v6(self, last: int) -> str:
        # The last group is written with the same digits as the v4 octet.
        return str(ipaddress.IPv6Address(f"2001:db8:1ab:{self.index:x}::{last}"))

    @property
    def gateway_v4(self) -> str:
        return self.addr_v4(1)

    @property
    def gateway_v6(self) -> str:
        return self.addr_v6(1)

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.gateway_v4}:{ETCD_CLIENT_PORT}"

    @property
    def etcd_dir(self) -> str:
        """On tmpfs when there is one: etcd fsyncs every write, and a busy disk can
        stall it past clients' timeouts; lab data need not survive a reboot."""
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            return os.path.join("/dev/shm", f"warren-lab-{self.name}-etcd")
        return os.path.join(self.dir, "etcd")

    @property
    def guard_metric(self) -> int:
        return GUARD_METRIC_BASE + self.index

    @property
    def guard_prefixes(self) -> tuple[str, ...]:
        return (self.subnet_v4, self.subnet_v6, *POOL_GUARDS)

    def host(self, i: int) -> "HostLayout":
        if not 1 <= i <= MAX_HOSTS:
            raise ValueError(f"host index {i} out of range 1..{MAX_HOSTS}")
        return HostLayout(self, i)


@dataclass(frozen=True)
class HostLayout:
    lab: Layout
    index: int

    @property
    def name(self) -> str:
        return f"host{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.lab.name}-h{self.index}"

    @property
    def ul_veth(self) -> str:
        return f"h{self.index}"

    @property
    def ipv4(self) -> str:
        return self.lab.addr_v4(10 + self.index)

    @property
    def ipv6(self) -> str:
        return self.lab.addr_v6(10 + self.index)

    @property
    def dir(self) -> str:
        return os.path.join(self.lab.dir, self.name)

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def docker_sock(self) -> str:
        return self.path("docker.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_sock}"

    @property
    def cgroup(self) -> str:
        return f"warren-lab-{self.lab.name}-{self.name}"
