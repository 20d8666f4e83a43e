"""The node image, built from the Dockerfile, runs a complete node in lab hosts.

Each host runs the image as docs/packaging.md says (host network, CAP_NET_ADMIN, writable
/proc/sys, /run/docker/plugins bind-mounted) instead of the lab's own ``warrenctl node start``;
the hosts' dockerds then use the plugin socket the containers serve, and containers on a warren
network ping each other on one host and across hosts (routes from the image's BGP speakers).
"""
from __future__ import annotations

import pytest

from tests.e2e.helpers import E2E, dk, pings, run

from .common import (NODE_CONTAINER, NODE_IMAGE, activates, container_address, nodes,
                     remove_containers_and_networks, wait_for)
from .conftest import HOSTS

pytestmark = E2E

IMAGE_SIZE_GOAL = 250_000_000


def node_run_args(lab, host: str, *env: str) -> list[str]:
    """``docker run`` arguments of a node container, as documented (docs/packaging.md)."""
    h = lab.host(host)
    args = ["--net", "host", "--cap-add", "NET_ADMIN", "--security-opt", "systempaths=unconfined",
            "-v", "/run/docker/plugins:/run/docker/plugins",
            "-v", f"{h.docker_sock}:/var/run/docker.sock",        # /var/run/docker.sock elsewhere
            "-v", f"{h.path('log')}:/var/log/warren",
            "-e", f"WARREN_ETCD_ENDPOINTS={h.lab.etcd_endpoint}",
            "-e", f"WARREN_NODE_IP6={h.ipv6}"]
    for item in env:
        args += ["-e", item]
    return args


@pytest.fixture(scope="module")
def node_containers(lab, image):
    try:
        for host in HOSTS:
            dk(lab, host, "run", "-d", "--name", NODE_CONTAINER, *node_run_args(lab, host), NODE_IMAGE)
        for host in HOSTS:
            sock = lab.host(host).path("run/docker/plugins/warren.sock")
            wait_for(f"{host}: plugin socket from the image", lambda: activates(sock), timeout=90,
                     detail=lambda: dk(lab, host, "logs", NODE_CONTAINER, check=False).stderr[-1500:])
        yield
    finally:
        remove_containers_and_networks(lab, HOSTS)
        for host in HOSTS:
            dk(lab, host, "rm", "-f", NODE_CONTAINER, check=False)


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_containers_and_networks(lab, HOSTS, keep=(NODE_CONTAINER,))


def test_image_is_lean_and_versioned(lab, image):
    print(f"image {image['tag']}: {image['size'] / 1e6:.0f} MB, built in {image['build_seconds']:.1f}s")
    assert image["size"] <= IMAGE_SIZE_GOAL
    label = dk(lab, "host1", "image", "inspect", "-f",
               '{{index .Config.Labels "org.opencontainers.image.version"}}', NODE_IMAGE).stdout.strip()
    assert label == image["version"]
    # warrenctl, ExaBGP and the system tools the node runs are all inside
    tools = "warrenctl --help >/dev/null && exabgp version && ip -V && iptables -V && command -v ipset"
    result = dk(lab, "host1", "run", "--rm", "--net", "none", "--entrypoint", "/bin/sh", NODE_IMAGE,
                "-c", tools)
    assert "ExaBGP" in result.stdout and "iptables v" in result.stdout


def test_node_from_image_registers_and_serves_docker(lab, node_containers):
    registry = nodes(lab)
    for host in HOSTS:   # named after the host (the container shares its hostname), underlay found
        assert registry[host]["ipv4"] == lab.host(host).ipv4
        assert registry[host]["ipv6"] == lab.host(host).ipv6
    for host in HOSTS:
        dk(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
           "--subnet", "10.20.61.0/24", "img61")
    run(lab, "host1", "ia", "img61")
    run(lab, "host1", "ib", "img61")
    run(lab, "host2", "ic", "img61")
    assert pings(lab, "host1", "ia", container_address(lab, "host1", "ib", "img61"))
    remote = container_address(lab, "host2", "ic", "img61")
    wait_for("cross-host ping through the image's BGP speakers",
             lambda: pings(lab, "host1", "ia", remote), timeout=60, step=0.5)


def test_node_from_image_rejects_bad_input_in_one_line(lab, image):
    result = dk(lab, "host1", "run", "--rm", "--name", "badnode",
                *node_run_args(lab, "host1", "WARREN_NODE_IP=192.0.2.7", "WARREN_NODE_NAME=badnode"),
                NODE_IMAGE, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["warrenctl: error: 192.0.2.7 is not an address of this host"]
