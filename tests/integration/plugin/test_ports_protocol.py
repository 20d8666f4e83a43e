"""Port publishing through the plugin's HTTP API as dockerd 20.10-29 calls it, on a real etcd.

The kernel side is faked (host port sockets and the nat rules); everything
else is the real app: records in etcd, the publisher's lock and re-reads,
Docker's message shapes. Docker 29 (moby#50283) programs an endpoint when it
becomes the IPv4 and/or IPv6 gateway - possibly twice, with
``no_proxy_6to4`` while another endpoint is the IPv6 gateway - and revokes
when it stops being either; no engine 29 runs here, so this is its test.
"""
from __future__ import annotations

import json

import pytest

from datastore import codec, keys
from plugin.config import PluginConfig
from plugin.hostports import HostPorts, PortTaken
from plugin.portplan import NO_PROXY_6TO4, PORTMAP
from plugin.ports import PortPublisher
from plugin.records import Endpoint
from plugin.wsgi import build

NET, A, B = "a" * 64, "b" * 64, "c" * 64


class FakeDataplane:
    def create_workload(self, endpoint_id, *args, **kw):
        return "wrn" + endpoint_id[:11], "tmp" + endpoint_id[:11]

    def remove_workload(self, endpoint_id):
        return True

    def default_route_interface(self):
        return "eth0"

    def interface_mtu(self, ifname):
        return 1500


class FakeKernel:
    def __init__(self):
        self.open: set[tuple] = set()
        self.busy: set[tuple] = set()
        self.rules: dict[str, list] = {}
        self.forgotten: list[set] = []

    def opener(self, m):
        if m.key in self.busy:
            raise PortTaken(f"failed to bind host port {m.show()}: address already in use")
        self.open.add(m.key)
        kernel = self

        class Sock:
            def close(self):
                kernel.open.discard(m.key)
        return Sock()

    def forget(self, ports):  # conntrack of the test machine is none of our business
        self.forgotten.append(ports)
        return 0

    def apply(self, published):
        self.rules = {e.id: sorted(m.key for m in ms) for e, ms in published if ms}


@pytest.fixture
def kernel():
    return FakeKernel()


@pytest.fixture
def client(store, kernel):
    ports = PortPublisher(hostports=HostPorts(opener=kernel.opener), apply=kernel.apply, host_v6=True,
                          ephemeral=(40000, 40009), forget=kernel.forget)
    return build(PluginConfig(host="host1"), store, FakeDataplane(), ports=ports).test_client()


def call(client, name, body):
    response = client.post(f"/{name}", data=json.dumps(body))
    return response.status_code, response.get_json()


def ok(client, name, body):
    status, answer = call(client, name, body)
    assert status == 200, answer
    return answer


def err(client, name, body) -> str:
    status, answer = call(client, name, body)
    assert status == 500 and set(answer) == {"Err"} and "\n" not in answer["Err"], answer
    return answer["Err"]


def snapshot(store):
    return [(kv.key, kv.value) for kv in store.get_prefix(keys.PREFIX)]


def record(store, eid) -> Endpoint:
    return codec.loads(Endpoint, store.get(keys.endpoint("host1", eid)).value)


def endpoint(client, eid, v6=False):
    """RequestAddress, CreateEndpoint and Join for one endpoint of the network."""
    v4 = ok(client, "IpamDriver.RequestAddress", {"PoolID": pools[4], "Options": {}})["Address"]
    interface = {"Address": v4}
    if v6:
        interface["AddressIPv6"] = ok(client, "IpamDriver.RequestAddress", {"PoolID": pools[6], "Options": {}})["Address"]
    ok(client, "NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": eid, "Interface": interface})
    ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": eid, "SandboxKey": f"/var/run/docker/netns/{eid[:12]}"})


pools: dict[int, str] = {}


@pytest.fixture
def network(client):
    p4 = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.50.0/24", "V6": False})
    p6 = ok(client, "IpamDriver.RequestPool", {"Pool": "fd00:50::/64", "V6": True})
    pools.update({4: p4["PoolID"], 6: p6["PoolID"]})
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "Options": {"com.docker.network.enable_ipv6": True},
                                               "IPv4Data": [{"Pool": p4["Pool"], "Gateway": p4["Data"]["com.docker.network.gateway"]}],
                                               "IPv6Data": [{"Pool": p6["Pool"], "Gateway": p6["Data"]["com.docker.network.gateway"]}]})
    return NET


def program(eid, *entries, **extra):
    options = {PORTMAP: [{"Proto": proto, "IP": "", "Port": port, "HostIP": host_ip, "HostPort": hp,
                          "HostPortEnd": hp} for proto, port, host_ip, hp in entries],
               "com.docker.network.endpoint.exposedports": [{"Proto": e[0], "Port": e[1]} for e in entries], **extra}
    return {"NetworkID": NET, "EndpointID": eid, "Options": options}


def portmap(client, eid):
    value = ok(client, "NetworkDriver.EndpointOperInfo", {"NetworkID": NET, "EndpointID": eid})["Value"]
    return sorted((b["HostIP"], b["HostPort"], b["Port"]) for b in value.get(PORTMAP, []))


def test_docker_29_gateway_changes_program_and_revoke(client, store, kernel, network):
    endpoint(client, A)  # IPv4 only: IPv6 host addresses would be proxied to it, unless another endpoint has IPv6
    ok(client, "NetworkDriver.ProgramExternalConnectivity", program(A, (6, 80, "", 0), **{NO_PROXY_6TO4: True}))
    assert portmap(client, A) == [("0.0.0.0", 40000, 80)]
    ok(client, "NetworkDriver.ProgramExternalConnectivity", program(A, (6, 80, "", 0)))  # now the IPv6 gateway too
    assert portmap(client, A) == [("0.0.0.0", 40000, 80), ("::", 40000, 80)]          # same port, v6 added
    ok(client, "NetworkDriver.ProgramExternalConnectivity", program(A, (6, 80, "", 0)))  # again: no change
    assert kernel.open == {("tcp", "0.0.0.0", 40000), ("tcp", "::", 40000)} and list(kernel.rules) == [A]
    ok(client, "NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NET, "EndpointID": A})
    assert portmap(client, A) == [] and kernel.open == set() and kernel.rules == {}
    ok(client, "NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NET, "EndpointID": A})  # idempotent
    ok(client, "NetworkDriver.ProgramExternalConnectivity", program(A, (6, 80, "", 8080), (17, 53, "127.0.0.1", 53)))
    assert portmap(client, A) == [("0.0.0.0", 8080, 80), ("127.0.0.1", 53, 53), ("::", 8080, 80)]
    assert kernel.forgotten == [{(4, 53)}]  # the first UDP mapping's flows
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": A})
    ok(client, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": A})  # no Revoke first: still cleaned
    assert kernel.open == set() and kernel.rules == {}


def test_refusals_are_one_line_and_leave_etcd_and_kernel_as_they_were(client, store, kernel, network):
    endpoint(client, A, v6=True)
    endpoint(client, B, v6=True)
    ok(client, "NetworkDriver.ProgramExternalConnectivity", program(A, (6, 80, "", 8080)))
    before, held, rules = snapshot(store), set(kernel.open), dict(kernel.rules)
    assert err(client, "NetworkDriver.ProgramExternalConnectivity",
               program(B, (17, 53, "", 53), (6, 80, "", 8080))) == "Bind for 0.0.0.0:8080 failed: port is already allocated"
    kernel.busy.add(("tcp", "0.0.0.0", 179))
    assert "address already in use" in err(client, "NetworkDriver.ProgramExternalConnectivity",
                                           program(B, (6, 80, "", 9000), (6, 179, "", 179)))
    assert "range 9-8" in err(client, "NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET, "EndpointID": B, "Options": {PORTMAP: [{"Proto": 6, "Port": 80, "HostPort": 9, "HostPortEnd": 8}]}})
    assert snapshot(store) == before and kernel.open == held and kernel.rules == rules
    assert not record(store, B).published
