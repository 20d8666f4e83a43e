"""The managed (v2) plugin, made by scripts/build-plugin from the node image, end to end.

On both lab hosts: ``docker plugin create`` (by the script), ``docker plugin set`` of the
environment and mounts, ``docker plugin enable`` (which fails past Docker's ~10 s start budget),
then networks with ``-d/--ipam-driver warren/warren:<version>`` whose containers ping on one host
and across hosts (routes from the ExaBGP speakers inside the plugins), and finally a clean
disable and removal: no process, socket directory or cgroup of the plugin left.
"""
from __future__ import annotations

import glob
import os
import time

import pytest

from tests.e2e.helpers import E2E, dk, network_name, pings, run

from .common import (PLUGIN_NAME, activates, container_address, nodes, remove_containers_and_networks,
                     script, wait_for)
from .conftest import HOSTS

pytestmark = E2E


def plugin_processes(plugin_id: str) -> list[int]:
    """Processes in the plugin's cgroups (dockerd names them after the plugin id)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cgroup") as f:
                    if plugin_id in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def plugin_cgroups(plugin_id: str) -> list[str]:
    return [p for depth in range(1, 6)
            for p in glob.glob("/sys/fs/cgroup/" + "*/" * depth + plugin_id)]


def remove_plugin(lab, host: str, ref: str) -> None:
    """Best-effort clean-up after a failure: force-disable and remove, drop empty cgroups."""
    plugin_id = dk(lab, host, "plugin", "inspect", "-f", "{{.Id}}", ref, check=False).stdout.strip()
    dk(lab, host, "plugin", "disable", "-f", ref, check=False)
    dk(lab, host, "plugin", "rm", "-f", ref, check=False)
    if plugin_id:
        for path in sorted(plugin_cgroups(plugin_id), key=len, reverse=True):
            try:
                os.rmdir(path)
            except OSError:
                pass


@pytest.fixture(scope="module")
def plugin(lab, image):
    """warren/warren:<version> created, configured and enabled on every host."""
    ref = f"{PLUGIN_NAME}:{image['version']}"
    info = {"ref": ref, "enable_seconds": {}, "ids": {}}
    try:
        for host in HOSTS:
            result = script(lab, host, "build-plugin")
            assert result.returncode == 0, f"{host}: scripts/build-plugin: {result.stderr}"
            assert result.stdout.split() == [ref]
            h = lab.host(host)
            os.makedirs(h.path("etc-warren"), exist_ok=True)
            dk(lab, host, "plugin", "set", ref, f"WARREN_ETCD_ENDPOINTS={h.lab.etcd_endpoint}",
               f"WARREN_NODE_IP6={h.ipv6}", f"docker-socket.source={h.docker_sock}",
               f"etcd-tls.source={h.path('etc-warren')}")
            start = time.monotonic()
            dk(lab, host, "plugin", "enable", ref)
            info["enable_seconds"][host] = time.monotonic() - start
            info["ids"][host] = dk(lab, host, "plugin", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
        print(f"plugin enable: {info['enable_seconds']}")
        yield info
    finally:
        remove_containers_and_networks(lab, HOSTS)
        for host in HOSTS:
            remove_plugin(lab, host, ref)


def socket_of(lab, host: str, plugin_id: str) -> str:
    """The plugin's socket as dockerd sees it: /run/docker/plugins/<id>/warren.sock on the host."""
    return lab.host(host).path("run", "docker", "plugins", plugin_id, "warren.sock")


def test_enabled_plugin_answers_as_network_and_ipam_driver(lab, plugin):
    for host in HOSTS:
        assert dk(lab, host, "plugin", "inspect", "-f", "{{.Enabled}}", plugin["ref"]).stdout.strip() == "true"
        assert activates(socket_of(lab, host, plugin["ids"][host]))
    registry = nodes(lab)
    for host in HOSTS:   # registered under the hostname, underlay address from the default route
        assert registry[host]["ipv4"] == lab.host(host).ipv4


def test_containers_on_plugin_networks_ping_on_one_host_and_across(lab, plugin):
    ref = plugin["ref"]
    ids = {}
    for host in HOSTS:
        ids[host] = dk(lab, host, "network", "create", "-d", ref, "--ipam-driver", ref,
                       "--subnet", "10.20.62.0/24", "plg62").stdout.strip()
    run(lab, "host1", "pa", "plg62")
    run(lab, "host1", "pb", "plg62")
    run(lab, "host2", "pc", "plg62")
    local, remote = (container_address(lab, "host1", "pb", "plg62"),
                     container_address(lab, "host2", "pc", "plg62"))
    assert local.startswith("10.20.62.") and remote.startswith("10.20.62.")
    assert pings(lab, "host1", "pa", local)
    wait_for("cross-host ping through the plugins' BGP speakers",
             lambda: pings(lab, "host1", "pa", remote), timeout=60, step=0.5)
    # the docker-socket mount lets the plugin learn the network's name in the background
    wait_for("network name in etcd", lambda: network_name(lab, ids["host1"]) == "plg62", timeout=60, step=0.5)


def test_build_plugin_refuses_to_replace_an_existing_plugin(lab, plugin):
    result = script(lab, "host1", "build-plugin", timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip() == f"build-plugin: plugin {plugin['ref']} already exists (use --force to replace it)"
    missing = script(lab, "host1", "build-plugin", "warren/nothing:here", timeout=120)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    assert "image warren/nothing:here not found" in missing.stderr


def test_disable_and_remove_leave_nothing_behind(lab, plugin):
    ref = plugin["ref"]
    dk(lab, "host1", "network", "create", "-d", ref, "--ipam-driver", ref, "--subnet", "10.20.63.0/24", "plg63")
    busy = dk(lab, "host1", "plugin", "disable", ref, check=False)
    assert busy.returncode != 0 and "in use" in busy.stderr
    remove_containers_and_networks(lab, HOSTS)
    for host in HOSTS:
        plugin_id = plugin["ids"][host]
        dk(lab, host, "plugin", "disable", ref)
        dk(lab, host, "plugin", "rm", ref)
        assert dk(lab, host, "plugin", "ls", "-q").stdout.strip() == ""
        wait_for(f"{host}: plugin processes gone", lambda: not plugin_processes(plugin_id), timeout=30)
        assert not os.path.exists(os.path.dirname(socket_of(lab, host, plugin_id)))
        assert plugin_cgroups(plugin_id) == []
        # every workload veth went with its container (Leave deletes them just after it answers)
        wait_for(f"{host}: no workload veth", lambda: " wrn" not in lab.exec(host, ["ip", "-o", "link", "show"]).stdout,
                 timeout=10)
