"""Names, addresses and paths of a lab, all derived from its name and index.

A lab ``NAME`` with index ``K`` (0..255, allocated when the lab comes up so
that concurrent labs never share one) gets:

* state dir ``$WARREN_LAB_ROOT/NAME`` (default ``/var/lib/warren-lab/NAME``).
  Not under /run: every host bind-mounts a private /run, and paths such as
  the dockerd socket must be the same inside the hosts and outside. Only the
  root dir and its ``.lock`` (index allocation) outlive ``down``;
* underlay netns ``NAME-ul`` holding bridge ``br0`` with 198.19.K.1/24 and
  2001:db8:1ab:K::1/64 (K in hex), and etcd on ``http://198.19.K.1:2379``;
* with ``etcd_members`` > 1, a static etcd cluster instead: member I in netns
  ``NAME-eI`` on the bridge with 198.19.K.(1+I), data in
  ``/dev/shm/warren-lab-NAME-etcdI`` (see ``EtcdMemberLayout``); with
  ``etcd_tls`` every member serves https with client-certificate auth, the
  PKI in ``STATE/pki``;
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
MAX_ETCD_MEMBERS = 7   # 198.19.K.2 .. K.8, below the hosts' K.11+


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"invalid lab name {name!r}: use 1-10 of [a-z0-9], starting with a letter")
    return name


@dataclass(frozen=True)
class Layout:
    name: str
    index: int
    root: str = STATE_ROOT
    etcd_members: int = 1
    etcd_tls: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.etcd_members <= MAX_ETCD_MEMBERS:
            raise ValueError(f"etcd members must be between 1 and {MAX_ETCD_MEMBERS}")

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
    def etcd_scheme(self) -> str:
        return "https" if self.etcd_tls else "http"

    @property
    def etcd_endpoint(self) -> str:
        """The first member's client URL (the only one without a cluster)."""
        return self.etcd_endpoints[0]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [m.endpoint for m in self.etcd]

    @property
    def etcd(self) -> list["EtcdMemberLayout"]:
        return [EtcdMemberLayout(self, i) for i in range(1, self.etcd_members + 1)]

    @property
    def etcd_cluster(self) -> bool:
        return self.etcd_members > 1

    @property
    def etcd_data_root(self) -> str:
        """On tmpfs when there is one: etcd fsyncs every write, and a busy disk can
        stall it past clients' timeouts; lab data need not survive a reboot."""
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
        return self.dir

    @property
    def etcd_dir(self) -> str:
        """The single etcd's data (without a cluster)."""
        if self.etcd_data_root == self.dir:
            return os.path.join(self.dir, "etcd")
        return os.path.join(self.etcd_data_root, f"warren-lab-{self.name}-etcd")

    @property
    def pki_dir(self) -> str:
        return os.path.join(self.dir, "pki")

    def pki(self, name: str) -> str:
        """``ca.crt``, ``client.crt``, ``client.key``, ``etcdI.crt``... in the PKI dir."""
        return os.path.join(self.pki_dir, name)

    @property
    def etcd_client_env(self) -> dict[str, str]:
        """What a client in the lab needs: all endpoints, and the TLS files if any."""
        env = {"WARREN_ETCD_ENDPOINTS": ",".join(self.etcd_endpoints)}
        if self.etcd_tls:
            env.update(WARREN_ETCD_CA=self.pki("ca.crt"), WARREN_ETCD_CERT=self.pki("client.crt"),
                       WARREN_ETCD_KEY=self.pki("client.key"))
        return env

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


@dataclass(frozen=True)
class EtcdMemberLayout:
    """One etcd server of a lab. Without a cluster the only member runs in the
    underlay netns on the gateway address, named after the lab (as it always
    did); cluster members get a netns of their own, so killing or isolating
    one is a member failure and nothing else."""
    lab: Layout
    index: int

    @property
    def name(self) -> str:
        return f"etcd{self.index}" if self.lab.etcd_cluster else self.lab.name

    @property
    def own_netns(self) -> bool:
        return self.lab.etcd_cluster

    @property
    def netns(self) -> str:
        return f"{self.lab.name}-e{self.index}" if self.own_netns else self.lab.ul_netns

    @property
    def ul_veth(self) -> str:
        return f"e{self.index}"

    @property
    def ipv4(self) -> str:
        return self.lab.addr_v4(1 + self.index) if self.own_netns else self.lab.gateway_v4

    @property
    def endpoint(self) -> str:
        return f"{self.lab.etcd_scheme}://{self.ipv4}:{ETCD_CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"{self.lab.etcd_scheme}://{self.ipv4}:{ETCD_PEER_PORT}"

    @property
    def data_dir(self) -> str:
        if not self.own_netns:
            return self.lab.etcd_dir
        root = self.lab.etcd_data_root
        leaf = f"etcd{self.index}" if root == self.lab.dir else f"warren-lab-{self.lab.name}-etcd{self.index}"
        return os.path.join(root, leaf)

    @property
    def log_path(self) -> str:
        return os.path.join(self.lab.dir, "etcd.log" if not self.own_netns else f"etcd{self.index}.log")

    @property
    def cert(self) -> str:
        return self.lab.pki(f"etcd{self.index}.crt")

    @property
    def key(self) -> str:
        return self.lab.pki(f"etcd{self.index}.key")
