"""PortPublisher and Publishing: port choice, all-or-nothing claims, restore, Docker 29 re-programming.

The kernel is faked (HostPorts' opener, the rules writer), except in the
tests of real sockets and the proxy, which bind only on loopback.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import replace

import pytest

from plugin.errors import PluginError
from plugin.hostports import HostPorts, PortTaken, open_socket
from plugin.portplan import NO_PROXY_6TO4, PORTMAP, Mapping, Request, stored
from plugin.portproxy import PortProxy
from plugin.ports import PortPublisher
from plugin.publishing import Publishing
from plugin.records import Endpoint

A, B = "a" * 64, "b" * 64


class FakeKernel:
    """Bind succeeds unless another process "holds" the (proto, address, port)."""

    def __init__(self, busy=()):
        self.busy = set(busy)
        self.open: dict[tuple, object] = {}

    def __call__(self, m: Mapping):
        if m.key in self.busy:
            raise PortTaken(f"failed to bind host port {m.show()}: address already in use")
        sock = FakeSocket(self, m.key)
        self.open[m.key] = sock
        return sock


class FakeSocket:
    def __init__(self, kernel, key):
        self.kernel, self.key = kernel, key

    def close(self):
        self.kernel.open.pop(self.key, None)


class Rules:
    def __init__(self):
        self.published = None
        self.fail = False

    def __call__(self, published):
        if self.fail:
            raise PluginError("iptables failed: simulated")
        self.published = {e.id: sorted(m.key for m in ms) for e, ms in published}


def endpoint(eid=A, v6=True, **kw):
    return Endpoint(id=eid, network="n", host="h", ipv4=["10.20.10.5"], ipv6=["fd00::5"] if v6 else [], **kw)


@pytest.fixture
def kernel():
    return FakeKernel()


@pytest.fixture
def rules():
    return Rules()


def publisher(kernel, rules, records=None, **kw):
    kw.setdefault("forget", lambda ports: 0)
    p = PortPublisher(hostports=HostPorts(opener=kernel), apply=rules, host_v6=True, ephemeral=(40000, 40004), **kw)
    if records is not None:
        p.load = lambda: list(records.values())
    return p


def test_explicit_port_is_held_and_a_second_claim_is_refused_with_dockers_words(kernel, rules):
    p = publisher(kernel, rules)
    mappings, _ = p.claim(endpoint(), [Request("tcp", 80, "", 8080, 8080)])
    assert [m.key for m in mappings] == [("tcp", "0.0.0.0", 8080), ("tcp", "::", 8080)]
    assert set(kernel.open) == {("tcp", "0.0.0.0", 8080), ("tcp", "::", 8080)}
    with pytest.raises(PluginError, match=r"^Bind for 0.0.0.0:8080 failed: port is already allocated$"):
        p.claim(endpoint(B), [Request("tcp", 80, "", 8080, 8080)])
    with pytest.raises(PluginError, match="port is already allocated"):
        p.claim(endpoint(B), [Request("tcp", 80, "127.0.0.1", 8080, 8080)])  # 0.0.0.0 covers it
    mine, _ = p.claim(endpoint(B), [Request("udp", 80, "", 8080, 8080)])     # another protocol
    assert len(mine) == 2 and len(kernel.open) == 4


def test_a_refusal_leaves_nothing_bound(kernel, rules):
    kernel.busy.add(("tcp", "::", 179))  # e.g. the node's BGP listening on [::]:179
    p = publisher(kernel, rules)
    with pytest.raises(PluginError, match=r"failed to bind host port \[::\]:179/tcp: address already in use"):
        p.claim(endpoint(), [Request("tcp", 80, "", 8080, 8080), Request("tcp", 179, "", 179, 179)])
    assert kernel.open == {} and p.hostports.keys() == []
    with pytest.raises(PluginError, match="port is already allocated"):  # the same port twice in one run
        p.claim(endpoint(), [Request("tcp", 80, "", 8080, 8080), Request("tcp", 81, "", 8080, 8080)])
    assert kernel.open == {}
    with pytest.raises(PluginError, match="no IPv4 address"):
        p.claim(replace(endpoint(), ipv4=[]), [Request("tcp", 80, "", 1, 1), Request("tcp", 80, "127.0.0.1", 2, 2)])
    assert kernel.open == {}


def test_any_port_walks_the_ephemeral_range_round_robin_and_skips_taken_ports(kernel, rules):
    kernel.busy.add(("tcp", "0.0.0.0", 40000))
    p = publisher(kernel, rules)
    first, _ = p.claim(endpoint(), [Request("tcp", 80)])
    assert {m.host_port for m in first} == {40001}
    second, _ = p.claim(endpoint(B), [Request("tcp", 80), Request("udp", 53)])
    assert [m.host_port for m in second] == [40002, 40002, 40003, 40003]
    third, _ = p.claim(endpoint("c" * 64), [Request("tcp", 1)])
    assert {m.host_port for m in third} == {40004}  # udp 40003 does not hold tcp 40003
    with pytest.raises(PluginError, match="all ports are allocated"):
        p.claim(endpoint("d" * 64), [Request("tcp", 1), Request("tcp", 2)])  # 40003 is the last tcp one
    assert len(kernel.open) == 8  # the failed claim's first port was given back


def test_a_range_takes_its_first_free_port(kernel, rules):
    p = publisher(kernel, rules)
    p.claim(endpoint(), [Request("tcp", 80, "", 8001, 8001)])
    got, _ = p.claim(endpoint(B), [Request("tcp", 80, "", 8000, 8002), Request("tcp", 81, "", 8000, 8002)])
    assert sorted({m.host_port for m in got}) == [8000, 8002]
    with pytest.raises(PluginError, match="all ports are allocated.*8000-8002"):
        p.claim(endpoint("c" * 64), [Request("tcp", 80, "", 8000, 8002)])


def test_undo_closes_only_what_the_claim_bound(kernel, rules):
    p = publisher(kernel, rules)
    held, _ = p.claim(endpoint(), [Request("tcp", 80, "", 8080, 8080)])
    again, undo = p.claim(replace(endpoint(), ports=[vars(m) for m in held], published=True),
                          [Request("tcp", 80, "", 8080, 8080), Request("tcp", 81, "", 8081, 8081)])
    undo()
    assert set(kernel.open) == {m.key for m in held}


class FakeDriver:
    def __init__(self, *endpoints):
        self.records = {e.id: e for e in endpoints}
        self.fail_save = False
        self.reads = 0

    def endpoint(self, eid):
        self.reads += 1
        if eid not in self.records:
            raise PluginError(f"endpoint {eid[:12]} does not exist on host h")
        return self.records[eid]

    def save(self, e):
        if self.fail_save:
            raise PluginError("etcd is unreachable")
        self.records[e.id] = e

    def local_endpoints(self):
        return list(self.records.values())


def portmap(*entries):
    return {PORTMAP: [dict(zip(("Proto", "Port", "HostIP", "HostPort", "HostPortEnd"), e)) for e in entries]}


def test_program_records_real_ports_and_revoke_gives_them_back(kernel, rules):
    driver = FakeDriver(endpoint(), endpoint(B))
    p = publisher(kernel, rules, driver.records)
    pub = Publishing(driver, p)
    pub.program(A, portmap((6, 80, "", 0, 0), (17, 53, "127.0.0.1", 5353, 5353)))
    record = driver.records[A]
    assert record.published and stored(record) == [
        Mapping("tcp", 40000, 80, "0.0.0.0"), Mapping("tcp", 40000, 80, "::"), Mapping("udp", 5353, 53, "127.0.0.1")]
    assert rules.published == {A: sorted(m.key for m in stored(record))}
    value = pub.oper_info(A)["Value"]
    assert [(b["HostIP"], b["HostPort"]) for b in value[PORTMAP]] == [("0.0.0.0", 40000), ("::", 40000),
                                                                      ("127.0.0.1", 5353)]
    with pytest.raises(PluginError, match="Bind for 0.0.0.0:5353 failed: port is already allocated"):
        pub.program(B, portmap((17, 53, "", 5353, 5353)))
    assert not driver.records[B].published and len(kernel.open) == 3
    pub.revoke(A)
    assert not driver.records[A].published and kernel.open == {} and rules.published == {}
    pub.revoke(A)  # idempotent
    pub.revoke("f" * 64)


def test_a_failed_save_or_rule_write_leaves_nothing_behind(kernel, rules):
    driver = FakeDriver(endpoint())
    pub = Publishing(driver, publisher(kernel, rules, driver.records))
    driver.fail_save = True
    with pytest.raises(PluginError, match="etcd is unreachable"):
        pub.program(A, portmap((6, 80, "", 8080, 8080)))
    assert kernel.open == {} and not driver.records[A].published
    driver.fail_save, rules.fail = False, True
    with pytest.raises(PluginError, match="iptables failed"):
        pub.program(A, portmap((6, 80, "", 8080, 8080)))
    assert kernel.open == {} and driver.records[A] == endpoint()


def test_docker_29_programs_again_keeping_ports_and_no_proxy_6to4_drops_ipv6(kernel, rules):
    driver = FakeDriver(endpoint(v6=False))
    pub = Publishing(driver, publisher(kernel, rules, driver.records))
    options = portmap((6, 80, "", 0, 0))
    pub.program(A, {**options, NO_PROXY_6TO4: True})     # IPv4 gateway; IPv6 is another endpoint's
    assert [m.key for m in stored(driver.records[A])] == [("tcp", "0.0.0.0", 40000)]
    pub.program(A, options)                              # now the IPv6 gateway too: same port, v6 added
    assert [m.key for m in stored(driver.records[A])] == [("tcp", "0.0.0.0", 40000), ("tcp", "::", 40000)]
    pub.program(A, {**options, NO_PROXY_6TO4: True})
    assert set(kernel.open) == {("tcp", "0.0.0.0", 40000)}
    reads = driver.reads
    pub.program(A, {})                                   # no port map: nothing to do, not even a read
    assert set(kernel.open) == {("tcp", "0.0.0.0", 40000)} and driver.reads == reads
    pub.revoke(A)                                        # no longer any gateway: all given back
    assert kernel.open == {} and not driver.records[A].published
    reads = driver.reads
    pub.revoke(A)                                        # known unpublished since the last sync: no read
    assert driver.reads == reads


def test_restart_restores_reservations_from_the_records_and_skips_a_port_taken_meanwhile(kernel, rules):
    driver = FakeDriver(endpoint(), endpoint(B))
    pub = Publishing(driver, publisher(kernel, rules, driver.records))
    pub.program(A, portmap((6, 80, "", 8080, 8080)))
    pub.program(B, portmap((6, 80, "", 9090, 9090)))
    kernel.open.clear()                                  # the plugin process died: sockets gone
    kernel.busy.add(("tcp", "0.0.0.0", 9090))            # a host process took one port meanwhile
    restarted = publisher(kernel, rules, driver.records)
    restarted.sync()
    assert set(kernel.open) == {("tcp", "0.0.0.0", 8080), ("tcp", "::", 8080), ("tcp", "::", 9090)}
    assert rules.published[B] == [("tcp", "::", 9090)]  # the taken one is not DNATed: no stealing
    with pytest.raises(PluginError, match="already allocated"):
        restarted.claim(endpoint("c" * 64), [Request("tcp", 80, "", 8080, 8080)])
    kernel.busy.clear()
    restarted.sync()                                     # free again: published again
    assert ("tcp", "0.0.0.0", 9090) in kernel.open and len(rules.published[B]) == 2


def test_sync_rereads_records_so_a_stale_list_cannot_drop_a_fresh_reservation(kernel, rules):
    driver = FakeDriver(endpoint(), endpoint(B))
    p = publisher(kernel, rules, driver.records)
    pub = Publishing(driver, p)
    stale = driver.local_endpoints()                     # read by a delete_endpoint before A published
    pub.program(A, portmap((6, 80, "", 8080, 8080)))
    p.sync(stale)
    assert ("tcp", "0.0.0.0", 8080) in kernel.open


def test_udp_flows_are_forgotten_when_a_port_changes_hands(kernel, rules):
    forgotten = []
    driver = FakeDriver(endpoint(), endpoint(B, v6=False))
    pub = Publishing(driver, publisher(kernel, rules, driver.records, forget=lambda ports: forgotten.append(ports)))
    pub.program(A, portmap((17, 53, "", 5353, 5353), (6, 80, "", 8080, 8080)))
    assert forgotten == [{(4, 5353), (6, 5353)}]      # first sync: every UDP port (also after a restart)
    pub.program(A, portmap((17, 53, "", 5353, 5353), (6, 80, "", 8080, 8080)))
    assert len(forgotten) == 1                       # nothing changed
    pub.revoke(A)
    pub.program(B, portmap((17, 53, "", 5353, 5353)))
    assert forgotten[1:] == [{(4, 5353), (6, 5353)}, {(4, 5353), (6, 5353)}]  # given up, then to B (v6 proxied)


def test_without_a_publisher_ports_are_refused_and_nothing_else_is():
    driver = FakeDriver(endpoint())
    pub = Publishing(driver, None)
    with pytest.raises(PluginError, match="not available"):
        pub.program(A, portmap((6, 80, "", 8080, 8080)))
    pub.program(A, {})
    pub.revoke(A)


def test_rules_only_publisher_writes_every_record(rules):
    p = PortPublisher(apply=rules, host_v6=True, forget=lambda ports: 0)
    e = endpoint(ports=[{"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": "0.0.0.0"}],
                 published=True)
    p.sync([e, endpoint(B)])
    assert rules.published == {A: [("tcp", "0.0.0.0", 8080)]}
    with pytest.raises(PluginError, match="not available"):
        p.claim(e, [Request("tcp", 80)])


# -- real sockets and the proxy, on loopback only ------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_sockets_refuse_a_port_a_host_process_listens_on_and_hold_their_own():
    host_service = socket.socket()
    host_service.bind(("127.0.0.1", 0))
    host_service.listen()
    port = host_service.getsockname()[1]
    try:
        with pytest.raises(PortTaken, match=f"failed to bind host port 127.0.0.1:{port}/tcp: address already in use"):
            open_socket(Mapping("tcp", port, 80, "127.0.0.1"))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(PortTaken, match="address already in use"):
            open_socket(Mapping("udp", udp.getsockname()[1], 53, "127.0.0.1"))
        udp.close()
    finally:
        host_service.close()
    held = open_socket(Mapping("tcp", port, 80, "127.0.0.1"))
    try:
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))    # what Docker's bridge would meet
        other.close()
    finally:
        held.close()


def echo_server(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        s.listen()

    def serve():
        while True:
            try:
                if kind == socket.SOCK_STREAM:
                    conn, _ = s.accept()
                    with conn:
                        data = conn.recv(100)
                        conn.sendall(b"echo:" + data)
                else:
                    data, peer = s.recvfrom(100)
                    s.sendto(b"echo:" + data, peer)
            except OSError:
                return
    threading.Thread(target=serve, daemon=True).start()
    return s


def test_proxy_relays_tcp_and_udp_from_the_held_socket_to_the_container():
    proxy = PortProxy()
    ports = HostPorts(proxy)
    tcp_backend, udp_backend = echo_server(socket.SOCK_STREAM), echo_server(socket.SOCK_DGRAM)
    tcp = Mapping("tcp", free_port(), 80, "127.0.0.1")
    udp = Mapping("udp", free_port(), 53, "127.0.0.1")
    try:
        ports.bind(tcp, A, tcp_backend.getsockname())
        ports.bind(udp, A, udp_backend.getsockname())
        with socket.create_connection(("127.0.0.1", tcp.host_port), timeout=5) as c:
            c.sendall(b"hi")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b"echo:hi"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(b"ping", ("127.0.0.1", udp.host_port))
            assert c.recvfrom(100)[0] == b"echo:ping"
        assert proxy.serving() == 2
        ports.release(tcp.key)
        ports.release(udp.key)
        assert proxy.serving() == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", tcp.host_port), timeout=5)
    finally:
        for key in ports.keys():
            ports.release(key)
        tcp_backend.close()
        udp_backend.close()
