"""IPv6 details of the workload plumbing in a real kernel: slot gateways, Docker 26's order, disable_ipv6."""
from __future__ import annotations

from plugin.dataplane import Dataplane, gateway_v6
from tests.support.netns import run_in_netns, sh, temp_netns

EP = "0123456789abcdef" * 4


def _create(peer_ns, gateway6, peer_name=None):
    dp = Dataplane()
    dp.ensure_forwarding()
    return dp.create_workload(EP, ["10.20.10.5", "fd00:20::5"], "02:11:22:33:44:55", 1500,
                              peer_netns=peer_ns, peer_name=peer_name, gateway6=gateway6)


def _host_with_a_default_route(host_ns):
    sh(host_ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    sh(host_ns, "ip", "link", "set", "up1", "up")
    sh(host_ns, "ip", "link", "set", "up0", "up")
    sh(host_ns, "ip", "-6", "route", "add", "default", "dev", "up0")
    sh(host_ns, "ip", "-6", "addr", "add", "2001:db8::1/128", "dev", "lo")


def test_second_slot_gateway_in_docker_26_order():
    """What libnetwork 26 does with Join's answer, step by step and without waiting:
    connected routes right after link-up, then `route get` of the gateway, then the default."""
    gateway = gateway_v6(2)
    with temp_netns("wsh") as host_ns, temp_netns("wsc") as ctr_ns:
        host, tmp = run_in_netns(host_ns, _create, f"/run/netns/{ctr_ns}", gateway)
        assert f"inet6 {gateway}/128" in sh(host_ns, "ip", "-6", "addr", "show", "dev", host).stdout
        sh(ctr_ns, "ip", "link", "set", tmp, "name", "eth1")
        sh(ctr_ns, "ip", "-6", "addr", "add", "fd00:20::5/128", "dev", "eth1", "nodad")
        sh(ctr_ns, "ip", "link", "set", "eth1", "up")
        sh(ctr_ns, "ip", "-6", "route", "add", f"{gateway}/128", "dev", "eth1", "scope", "link")
        got = sh(ctr_ns, "ip", "-6", "route", "get", gateway)       # programGateway's RouteGet
        assert "dev eth1" in got.stdout and " via " not in got.stdout
        sh(ctr_ns, "ip", "-6", "route", "add", "default", "via", gateway, "dev", "eth1")
        _host_with_a_default_route(host_ns)
        ping = sh(ctr_ns, "busybox", "ping6", "-c", "1", "-W", "3", "2001:db8::1", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr  # the host side answers for fe80::1:2
        run_in_netns(host_ns, Dataplane().remove_workload, EP)


def test_container_add_enables_ipv6_on_its_interface():
    """Docker 26+ leaves disable_ipv6=1 in containers without IPv6; new interfaces inherit it."""
    with temp_netns("wsh") as host_ns, temp_netns("wsc") as ctr_ns:
        sh(ctr_ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        sh(ctr_ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        path = f"/run/netns/{ctr_ns}"
        run_in_netns(host_ns, _create, path, gateway_v6(1), "eth1")
        assert sh(ctr_ns, "sysctl", "-n", "net.ipv6.conf.eth1.disable_ipv6").stdout.strip() == "1"
        run_in_netns(host_ns, Dataplane().configure_peer, path, "eth1", ["10.20.10.5", "fd00:20::5"])
        assert sh(ctr_ns, "sysctl", "-n", "net.ipv6.conf.eth1.disable_ipv6").stdout.strip() == "0"
        assert "fd00:20::5/128" in sh(ctr_ns, "ip", "-6", "addr", "show", "dev", "eth1").stdout
        assert "default via fe80::ecee:eeff:feee:eeee dev eth1" in sh(ctr_ns, "ip", "-6", "route").stdout
        # the host's own sysctl was not touched by the thread that entered the container
        assert sh(host_ns, "sysctl", "-n", "net.ipv6.conf.default.disable_ipv6").stdout.strip() == "0"
        run_in_netns(host_ns, Dataplane().remove_workload, EP)
