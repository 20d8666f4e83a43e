"""The workload plumbing in a real kernel: a host namespace and a 'container' namespace."""
from __future__ import annotations

import pytest

from plugin.dataplane import (GATEWAY_V4, GATEWAY_V6, HOST_MAC, RTPROT_WARREN,
                              Dataplane, DataplaneError)
from tests.support.netns import run_in_netns, sh, temp_netns

EP = "0123456789abcdef" * 4


def _create(addresses, mac, mtu, peer_ns):
    dp = Dataplane()
    dp.ensure_forwarding()
    host, tmp = dp.create_workload(EP, addresses, mac, mtu, peer_netns=peer_ns)
    base = "/proc/sys/net"
    read = lambda p: open(p).read().strip()
    return {"host": host, "tmp": tmp, "routes": dp.workload_routes(),
            "interfaces": sorted(dp.workload_interfaces()),
            "proxy_arp": read(f"{base}/ipv4/conf/{host}/proxy_arp"),
            "proxy_delay": read(f"{base}/ipv4/neigh/{host}/proxy_delay"),
            "v6_forwarding": read(f"{base}/ipv6/conf/all/forwarding")}


def _remove():
    dp = Dataplane()
    first = dp.remove_workload(EP)
    return first, dp.remove_workload(EP), dp.workload_interfaces(), dp.workload_routes()


def test_workload_interface_routes_and_ping(tmp_path):
    with temp_netns("wth") as host_ns, temp_netns("wtc") as ctr_ns:
        got = run_in_netns(host_ns, _create, ["10.20.10.5", "fd00:20::5"],
                           "02:11:22:33:44:55", 1450, ctr_ns)
        assert got["host"] == "wrn" + EP[:11] and got["tmp"] == "tmp" + EP[:11]
        assert got["proxy_arp"] == "1" and got["proxy_delay"] == "0" and got["v6_forwarding"] == "1"
        assert set(got["routes"]) == {"10.20.10.5", "fd00:20::5"}
        links = sh(host_ns, "ip", "-o", "link", "show", got["host"]).stdout
        assert HOST_MAC in links and "mtu 1450" in links
        routes = sh(host_ns, "ip", "route", "show", "proto", str(RTPROT_WARREN)).stdout
        assert f"10.20.10.5 dev {got['host']} scope link" in routes
        # Play Docker: configure the container side the way libnetwork does after Join.
        tmp = got["tmp"]
        assert "02:11:22:33:44:55" in sh(ctr_ns, "ip", "-o", "link", "show", tmp).stdout
        sh(ctr_ns, "ip", "link", "set", tmp, "name", "eth0")
        sh(ctr_ns, "ip", "addr", "add", "10.20.10.5/32", "dev", "eth0")
        sh(ctr_ns, "ip", "-6", "addr", "add", "fd00:20::5/128", "dev", "eth0", "nodad")
        sh(ctr_ns, "ip", "link", "set", "eth0", "up")
        sh(ctr_ns, "ip", "route", "add", f"{GATEWAY_V4}/32", "dev", "eth0", "scope", "link")
        sh(ctr_ns, "ip", "route", "add", "default", "via", GATEWAY_V4, "dev", "eth0")
        sh(ctr_ns, "ip", "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", "eth0")
        # Like a real host: a default route (proxy ARP answers only for targets the host
        # routes through another interface) and an address of its own to ping.
        sh(host_ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")  # no dummy here
        sh(host_ns, "ip", "link", "set", "up1", "up")
        sh(host_ns, "ip", "link", "set", "up0", "up")
        sh(host_ns, "ip", "route", "add", "default", "dev", "up0")
        sh(host_ns, "ip", "-6", "route", "add", "default", "dev", "up0")
        sh(host_ns, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
        sh(host_ns, "ip", "-6", "addr", "add", "2001:db8::1/128", "dev", "lo")
        ping = sh(ctr_ns, "busybox", "ping", "-c", "1", "-W", "2", "192.0.2.1", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        ping6 = sh(ctr_ns, "busybox", "ping6", "-c", "1", "-W", "3", "2001:db8::1", check=False)
        assert ping6.returncode == 0, ping6.stdout + ping6.stderr
        first, second, interfaces, routes = run_in_netns(host_ns, _remove)
        assert (first, second) == (True, False)
        assert interfaces == {} and routes == {}
        assert "tmp" not in sh(ctr_ns, "ip", "-o", "link").stdout


def _create_twice():
    dp = Dataplane()
    dp.create_workload(EP, ["10.20.10.5"], "02:00:00:00:00:01", 1500)
    dp.create_workload(EP, ["10.20.10.6"], "02:00:00:00:00:01", 1500)  # a leftover is replaced
    return dp.workload_routes()


def test_leftover_interface_is_replaced():
    with temp_netns("wth") as host_ns:
        assert set(run_in_netns(host_ns, _create_twice)) == {"10.20.10.6"}


def _create_bad():
    dp = Dataplane()
    try:
        dp.create_workload(EP, ["10.20.10.5"], "not-a-mac", 1500)
    except DataplaneError as exc:
        return str(exc), dp.workload_interfaces()
    return None, dp.workload_interfaces()


def test_failure_rolls_back():
    with temp_netns("wth") as host_ns:
        message, interfaces = run_in_netns(host_ns, _create_bad)
        assert message and "wrn" in message
        assert interfaces == {}


def _create_in_threads(count):
    """The plugin's request threads share one Dataplane (one kept netlink socket)."""
    import threading
    dp = Dataplane()
    errors: list[str] = []

    def one(i):
        endpoint = f"{i:02x}" + EP[2:]
        try:
            for _ in range(3):
                dp.create_workload(endpoint, [f"10.20.10.{i + 1}"], "02:00:00:00:00:01", 1500)
                dp.remove_workload(endpoint)
            dp.create_workload(endpoint, [f"10.20.10.{i + 1}"], "02:00:00:00:00:01", 1500)
        except Exception as exc:  # reported to the test
            errors.append(repr(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, sorted(dp.workload_interfaces()), sorted(dp.workload_routes())


def test_request_threads_share_the_dataplane():
    with temp_netns("wth") as host_ns:
        errors, interfaces, routes = run_in_netns(host_ns, _create_in_threads, 6)
        assert errors == []
        assert interfaces == sorted("wrn" + f"{i:02x}" + EP[2:11] for i in range(6))
        assert routes == sorted(f"10.20.10.{i + 1}" for i in range(6))


def _blocked_then_fine(name_taken):
    dp = Dataplane()
    dp.create_workload("f" * 64, ["10.20.10.9"], "02:00:00:00:00:02", 1500, peer_name=name_taken)
    try:  # the peer's name is taken: not a leftover of ours, so nothing of it is deleted
        dp.create_workload(EP, ["10.20.10.5"], "02:00:00:00:00:01", 1500, peer_name=name_taken)
        message = None
    except DataplaneError as exc:
        message = str(exc)
    after_failure = sorted(dp.workload_interfaces())
    host, _ = dp.create_workload(EP, ["10.20.10.5"], "02:00:00:00:00:01", 1500)  # same Dataplane
    return message, after_failure, host, sorted(dp.workload_routes())


def test_a_refused_add_keeps_the_other_interface_and_the_next_join_works():
    with temp_netns("wth") as host_ns:
        message, after_failure, host, routes = run_in_netns(host_ns, _blocked_then_fine, "tmpclash")
        assert message and "wrn" + EP[:11] in message
        assert after_failure == ["wrn" + "f" * 11]
        assert host == "wrn" + EP[:11] and routes == ["10.20.10.5", "10.20.10.9"]
        # created up (no separate set-up request); the container side stays down for Docker
        assert ",UP" in sh(host_ns, "ip", "-o", "link", "show", host).stdout
        assert "UP" not in sh(host_ns, "ip", "-o", "link", "show", "tmp" + EP[:11]).stdout.split(">")[0]


def _remove_only():
    return Dataplane().remove_workload(EP)


def test_deleting_the_host_side_takes_the_pair_wherever_docker_moved_the_other_side():
    """Leave deletes in the background, while dockerd may be moving the container side back to
    the host (libnetwork's clearNetworkResources after Leave): the pair goes either way."""
    with temp_netns("wth") as host_ns, temp_netns("wtc") as ctr_ns:
        run_in_netns(host_ns, _create, ["10.20.10.5"], "02:11:22:33:44:55", 1500, ctr_ns)
        sh(ctr_ns, "ip", "link", "set", "tmp" + EP[:11], "name", "eth0")
        sh(ctr_ns, "ip", "link", "set", "eth0", "netns", host_ns)   # moved back, as dockerd does
        sh(host_ns, "ip", "link", "set", "eth0", "name", "tmp" + EP[:11])
        assert run_in_netns(host_ns, _remove_only) is True
        assert "tmp" not in sh(host_ns, "ip", "-o", "link").stdout
        assert "wrn" not in sh(host_ns, "ip", "-o", "link").stdout
