"""Every Docker endpoint through Flask's test client, on a real etcd with a fake dataplane."""
from __future__ import annotations

import ipaddress
import json

import pytest

from datastore import codec, keys
from ipam import Block, PoolStore, make_pool
from ipam.inventory import address_info
from ipam.workloads import Network
from plugin.config import PluginConfig
from plugin.dataplane import DataplaneError
from plugin.wsgi import build

NET = "a" * 64
EP = "b" * 64
EP2 = "c" * 64


class FakeDataplane:
    """Records what the plugin asks of the kernel."""

    def __init__(self):
        self.workloads: dict[str, dict] = {}
        self.fail = False
        self.mtu, self.mtu_reads = 1500, 0
        self.hold = None  # a threading.Event: deletes wait for it (Leave deletes in the background)
        self.removals = 0

    def create_workload(self, endpoint_id, addresses, mac, mtu, peer_netns=None,
                        gateway6="fe80::ecee:eeff:feee:eeee"):
        if self.fail:
            raise DataplaneError("simulated netlink failure")
        self.workloads[endpoint_id] = {"addresses": addresses, "mac": mac, "mtu": mtu}
        self.gateway6 = gateway6
        return "wrn" + endpoint_id[:11], "tmp" + endpoint_id[:11]

    def remove_workload(self, endpoint_id):
        if self.hold is not None:
            assert self.hold.wait(30), "the test never released the delete"
        self.removals += 1
        return self.workloads.pop(endpoint_id, None) is not None

    def default_route_interface(self):
        return "eth0"

    def interface_mtu(self, ifname):
        self.mtu_reads += 1
        return self.mtu


@pytest.fixture
def dataplane():
    return FakeDataplane()


@pytest.fixture
def drivers(monkeypatch):
    """The NetworkDriver instances build() makes (to wait for Leave's background deletes)."""
    import plugin.wsgi
    made = []
    real = plugin.wsgi.NetworkDriver
    monkeypatch.setattr(plugin.wsgi, "NetworkDriver", lambda **kw: made.append(real(**kw)) or made[-1])
    return made


STORE: list = [None]  # the test's store, for create_endpoint


@pytest.fixture(autouse=True)
def _remember_store(store):
    STORE[0] = store


@pytest.fixture
def client(store, dataplane, drivers):
    app = build(PluginConfig(host="host1"), store, dataplane)
    yield app.test_client()
    for driver in drivers:
        driver.wait_removals(30)


def call(client, name, body=None, raw=None):
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    response = client.post(f"/{name}", data=data)  # no Content-Type, like dockerd
    return response.status_code, response.get_json()


def ok(client, name, body=None):
    status, answer = call(client, name, body)
    assert status == 200, answer
    return answer


def err(client, name, body=None, raw=None):
    status, answer = call(client, name, body, raw)
    assert status == 500, answer
    assert set(answer) == {"Err"} and answer["Err"]
    return answer["Err"]


def snapshot(store):
    return [(kv.key, kv.value) for kv in store.get_prefix(keys.PREFIX)]


def make_network(client, subnet="10.20.10.0/24", options=None, v6=None):
    pool = ok(client, "IpamDriver.RequestPool", {"AddressSpace": "WarrenLocal", "Pool": subnet,
                                                 "Options": options or {}, "V6": False})
    v4 = [{"AddressSpace": "WarrenLocal", "Pool": pool["Pool"],
           "Gateway": pool["Data"]["com.docker.network.gateway"]}]
    v6data = []
    if v6:
        p6 = ok(client, "IpamDriver.RequestPool", {"Pool": v6, "V6": True})
        v6data = [{"Pool": p6["Pool"], "Gateway": p6["Data"]["com.docker.network.gateway"]}]
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "Options": {
        "com.docker.network.generic": {}, "com.docker.network.enable_ipv6": bool(v6)},
        "IPv4Data": v4, "IPv6Data": v6data})
    return pool


def create_endpoint(client, body):
    """What dockerd does for ``docker run``: RequestAddress for each address, then CreateEndpoint
    (CreateEndpoint refuses an address IPAM does not hold)."""
    for field, v6 in (("Address", False), ("AddressIPv6", True)):
        address = (body.get("Interface") or {}).get(field)
        if address:
            ip = ipaddress.ip_interface(address).ip
            if address_info(STORE[0], str(ip)).allocation is not None:
                continue  # requested already
            pool = next(p.cidr for p in PoolStore(STORE[0]).list() if ip in p.network)
            ok(client, "IpamDriver.RequestAddress", {"PoolID": pool, "Address": str(ip)})
    return ok(client, "NetworkDriver.CreateEndpoint", body)


def test_activate_and_capabilities_with_empty_bodies(client):
    assert ok(client, "Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert ok(client, "NetworkDriver.GetCapabilities") == {"Scope": "local", "ConnectivityScope": "global",
                                                           "GwAllocChecker": True}
    assert ok(client, "IpamDriver.GetCapabilities")["RequiresRequestReplay"] is False
    assert set(ok(client, "IpamDriver.GetDefaultAddressSpaces")) == {
        "LocalDefaultAddressSpace", "GlobalDefaultAddressSpace"}


def test_unknown_endpoint_is_404(client):
    status, answer = call(client, "NetworkDriver.ProgramSomethingNew", {})
    assert status == 404 and "Err" in answer


@pytest.mark.parametrize("name", ["NetworkDriver.CreateNetwork", "NetworkDriver.CreateEndpoint",
                                  "NetworkDriver.Join", "IpamDriver.RequestAddress",
                                  "IpamDriver.ReleaseAddress", "NetworkDriver.DeleteEndpoint"])
def test_malformed_bodies_fail_cleanly(client, store, name):
    before = snapshot(store)
    assert "JSON" in err(client, name, raw="{not json")
    assert "JSON" in err(client, name, raw="[1, 2]")
    assert "missing" in err(client, name, {})
    assert snapshot(store) == before


def test_wrong_types_fail_cleanly(client, store):
    before = snapshot(store)
    assert "string" in err(client, "IpamDriver.RequestPool", {"Pool": 10})
    assert "true or false" in err(client, "IpamDriver.RequestPool", {"Pool": "", "V6": "yes"})
    assert "object" in err(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "Options": []})
    assert "hexadecimal" in err(client, "NetworkDriver.CreateNetwork", {"NetworkID": "../../etc"})
    assert "strings" in err(client, "IpamDriver.RequestAddress", {"PoolID": "10.0.0.0/24", "Options": {"a": 1}})
    assert snapshot(store) == before


def test_request_pool_creates_the_warren_pool_and_is_idempotent(client, store):
    answer = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24", "Options": {"nat-outgoing": "true"}})
    assert answer == {"PoolID": "10.20.10.0/24", "Pool": "10.20.10.0/24",
                      "Data": {"com.docker.network.gateway": "169.254.1.1/32"}}
    assert ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"}) == answer
    pool = PoolStore(store).get("10.20.10.0/24")
    assert pool.nat_outgoing and pool.encap == "none"


def test_request_pool_options_and_conflicts(client, store):
    ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24",
                                          "Options": {"vxlan": "true", "block-size": "28"}})
    pool = PoolStore(store).get("10.20.10.0/24")
    assert (pool.encap, pool.block_size) == ("vxlan", 28)
    message = err(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24", "Options": {"ipip": "true"}})
    assert "already exists" in message
    message = err(client, "IpamDriver.RequestPool", {"Pool": "10.20.11.0/24", "Options": {"colour": "blue"}})
    assert "colour" in message and "nat-outgoing=true" in message and "block-size=N" in message
    assert "overlaps" in err(client, "IpamDriver.RequestPool", {"Pool": "10.20.0.0/16"})
    assert "host bits" in err(client, "IpamDriver.RequestPool", {"Pool": "10.20.12.1/24"})
    assert "--ip-range" in err(client, "IpamDriver.RequestPool", {"Pool": "10.20.13.0/24", "SubPool": "10.20.13.0/25"})
    assert PoolStore(store).get("10.20.11.0/24") is None


def test_default_pools(client, store):
    assert ok(client, "IpamDriver.RequestPool", {"Pool": ""})["Pool"] == "10.30.0.0/16"
    v6 = ok(client, "IpamDriver.RequestPool", {"Pool": "", "V6": True})
    assert v6["Pool"] == "fd00:30::/64"
    assert v6["Data"]["com.docker.network.gateway"].startswith("fe80::")


def test_addresses_are_slash_32_and_released(client, store):
    make_network(client)
    got = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24", "Address": "", "Options": {}})
    assert got["Address"].endswith("/32")
    pinned = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24", "Address": "10.20.10.50"})
    assert pinned["Address"] == "10.20.10.50/32"
    assert "in use" in err(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24", "Address": "10.20.10.50"})
    assert "--gateway" in err(client, "IpamDriver.RequestAddress", {
        "PoolID": "10.20.10.0/24", "Address": "10.20.10.1",
        "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    for address in (got["Address"], pinned["Address"]):
        ok(client, "IpamDriver.ReleaseAddress", {"PoolID": "10.20.10.0/24", "Address": address.split("/")[0]})
    ok(client, "IpamDriver.ReleaseAddress", {"PoolID": "10.20.10.0/24", "Address": "10.20.10.50"})  # idempotent
    blocks = [codec.loads(Block, kv.value) for kv in store.get_prefix(keys.BLOCKS)]
    assert sum(b.used for b in blocks) == 0
    assert store.get_prefix(keys.HANDLES).kvs == []


def test_pool_exhausted_message(client, store):
    make_network(client, subnet="10.20.10.0/30", options={"block-size": "30"})
    for _ in range(4):
        ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/30"})
    assert "no free address" in err(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/30"})


def test_create_network_validation(client, store):
    pool = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    before = snapshot(store)
    foreign = [{"Pool": "172.19.0.0/16", "Gateway": "172.19.0.1/16"}]
    assert "--ipam-driver warren" in err(client, "NetworkDriver.CreateNetwork",
                                         {"NetworkID": NET, "IPv4Data": foreign})
    good = [{"Pool": pool["Pool"], "Gateway": "169.254.1.1/32"}]
    message = err(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": good,
                                                          "Options": {"com.docker.network.generic": {"vlan": "3"}}})
    assert "-o vlan" in message and "mtu=N" in message and "com.docker.network.driver.mtu=N" in message
    assert "\n" not in message
    for generic in ({"mtu": "big"}, {"com.docker.network.driver.mtu": "9x"}, {"mtu": "100"},
                    {"mtu": "1400", "com.docker.network.driver.mtu": "1300"}, {"profile": " "}):
        assert "-o" in err(client, "NetworkDriver.CreateNetwork", {
            "NetworkID": NET, "IPv4Data": good, "Options": {"com.docker.network.generic": generic}})
    assert "true or false" in err(client, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "IPv4Data": good, "Options": {"com.docker.network.internal": "maybe"}})
    assert "IPv4 or an IPv6 subnet" in err(client, "NetworkDriver.CreateNetwork", {
        "NetworkID": NET, "Options": {"com.docker.network.enable_ipv4": False}})
    assert snapshot(store) == before


def network_record(store, network_id=NET) -> Network:
    return codec.loads(Network, store.get(keys.network(network_id)).value)


def test_docker_28_options_are_accepted(client, store):
    """28 sends enable_ipv4 on every network; any com.docker.network.* label is tolerated."""
    pool = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": [
        {"Pool": pool["Pool"], "Gateway": "169.254.1.1/32"}], "Options": {
        "com.docker.network.enable_ipv4": True, "com.docker.network.enable_ipv6": False,
        "com.docker.network.internal": False, "com.docker.network.some_future_label": {"x": 1},
        "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400",
                                       "com.docker.network.bridge.name": "br-x",
                                       "com.docker.network.enable_ipv6": "false"}}})
    record = network_record(store)
    assert (record.mtu, record.internal, record.pools_v4) == (1400, False, ["10.20.10.0/24"])


def test_mtu_options_agree(client, store):
    pool = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": [
        {"Pool": pool["Pool"], "Gateway": "169.254.1.1/32"}], "Options": {
        "com.docker.network.generic": {"com.docker.network.driver.mtu": "1300", "mtu": "1300",
                                       "profile": "web"}}})
    assert (network_record(store).mtu, network_record(store).profile) == (1300, "web")


def test_gw_alloc_check_skips_gateways_and_checks_options_first(client, store):
    before = snapshot(store)
    assert ok(client, "NetworkDriver.GwAllocCheck", {"Options": {
        "com.docker.network.enable_ipv4": True, "com.docker.network.generic": {"mtu": "1400"}}}) == {
        "SkipIPv4": True, "SkipIPv6": True}
    assert "-o vlan" in err(client, "NetworkDriver.GwAllocCheck", {"Options": {
        "com.docker.network.generic": {"vlan": "3"}}})
    assert snapshot(store) == before


def test_internal_network_is_stored_and_gets_no_default_route(client, store, dataplane):
    pool = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": [
        {"Pool": pool["Pool"], "Gateway": "169.254.1.1/32"}], "Options": {
        "com.docker.network.internal": True, "com.docker.network.enable_ipv4": True}})
    assert network_record(store).internal is True
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    joined = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    assert "Gateway" not in joined and "GatewayIPv6" not in joined
    assert joined["DisableGatewayService"] is True
    assert joined["StaticRoutes"] == [
        {"Destination": "169.254.1.1/32", "RouteType": 1},
        {"Destination": "10.20.10.0/24", "RouteType": 0, "NextHop": "169.254.1.1"}]
    ok(client, "NetworkDriver.ProgramExternalConnectivity", {"NetworkID": NET, "EndpointID": EP,
                                                             "Options": {}})
    before = snapshot(store)
    message = err(client, "NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]}})
    assert "--internal" in message and "-p" in message
    assert snapshot(store) == before


def test_endpoint_lifecycle(client, store, dataplane, drivers):
    make_network(client)
    address = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24"})["Address"]
    created = create_endpoint(client, {
        "NetworkID": NET, "EndpointID": EP, "Interface": {"Address": address}, "Options": {}})
    mac = created["Interface"]["MacAddress"]
    assert set(created["Interface"]) == {"MacAddress"}  # never echo what Docker supplied
    joined = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP,
                                               "SandboxKey": "/var/run/docker/netns/abc", "Options": {}})
    assert joined["InterfaceName"] == {"SrcName": "tmp" + EP[:11], "DstPrefix": "eth"}
    assert joined["Gateway"] == "169.254.1.1"
    assert joined["StaticRoutes"] == [{"Destination": "169.254.1.1/32", "RouteType": 1},
                                      {"Destination": "10.20.10.0/24", "RouteType": 0, "NextHop": "169.254.1.1"}]
    assert joined["DisableGatewayService"] is True
    assert dataplane.workloads[EP] == {"addresses": [address.split("/")[0]], "mac": mac, "mtu": 1500}
    assert ok(client, "NetworkDriver.EndpointOperInfo", {"NetworkID": NET, "EndpointID": EP})["Value"]["mac"] == mac
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})
    drivers[0].wait_removals(30)
    assert EP not in dataplane.workloads
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})  # idempotent
    ok(client, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})
    ok(client, "IpamDriver.ReleaseAddress", {"PoolID": "10.20.10.0/24", "Address": address.split("/")[0]})
    ok(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NET})
    assert store.get_prefix(keys.ENDPOINTS).kvs == [] and store.get_prefix(keys.NETWORKS).kvs == []
    assert store.get_prefix(keys.SANDBOXES).kvs == []


def test_user_mac_is_respected_and_not_echoed(client, dataplane):
    make_network(client)
    answer = create_endpoint(client, {
        "NetworkID": NET, "EndpointID": EP,
        "Interface": {"Address": "10.20.10.9/32", "MacAddress": "02:42:ac:11:00:09"}})
    assert answer == {}
    ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    assert dataplane.workloads[EP]["mac"] == "02:42:ac:11:00:09"


def test_mtu_option_and_encapsulation(client, dataplane):
    make_network(client, options={"vxlan": "true"})
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    assert dataplane.workloads[EP]["mtu"] == 1450  # underlay 1500 - vxlan 50


def test_derived_mtu_reads_the_pools_once_per_network_and_the_underlay_again_after_a_while(
        client, store, dataplane, monkeypatch):
    import plugin.networks
    make_network(client, options={"vxlan": "true"})
    pool_reads = []
    real_get = PoolStore.get
    monkeypatch.setattr(PoolStore, "get", lambda self, cidr: pool_reads.append(cidr) or real_get(self, cidr))

    def endpoint_mtu(endpoint_id, address):
        create_endpoint(client, {"NetworkID": NET, "EndpointID": endpoint_id,
                                                    "Interface": {"Address": address}})
        return json.loads(store.get(keys.endpoint("host1", endpoint_id)).value)["mtu"]

    assert endpoint_mtu(EP, "10.20.10.9/32") == 1450 and endpoint_mtu(EP2, "10.20.10.10/32") == 1450
    assert dataplane.mtu_reads == 1 and pool_reads == ["10.20.10.0/24"]
    dataplane.mtu = 9000  # the operator raises the NIC's MTU: seen once the cached read expired
    monkeypatch.setattr(plugin.networks, "UNDERLAY_MTU_TTL", 0.0)
    assert endpoint_mtu("d" * 64, "10.20.10.11/32") == 8950
    assert dataplane.mtu_reads == 2 and pool_reads == ["10.20.10.0/24"]  # the pools are not read again


def test_second_network_in_one_sandbox_gets_its_own_gateway(client, store, dataplane):
    make_network(client, v6="fd00:20::/64")
    other = "d" * 64
    ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.20.0/24"})
    ok(client, "IpamDriver.RequestPool", {"Pool": "fd00:21::/64", "V6": True})
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": other, "IPv4Data": [
        {"Pool": "10.20.20.0/24", "Gateway": "169.254.1.1/32"}], "IPv6Data": [
        {"Pool": "fd00:21::/64", "Gateway": "fe80::ecee:eeff:feee:eeee/128"}]})
    for ep, net, addr, addr6 in ((EP, NET, "10.20.10.9/32", "fd00:20::9/128"),
                                 (EP2, other, "10.20.20.9/32", "fd00:21::9/128")):
        create_endpoint(client, {"NetworkID": net, "EndpointID": ep,
                                                    "Interface": {"Address": addr, "AddressIPv6": addr6}})
    first = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    assert dataplane.gateway6 == "fe80::ecee:eeff:feee:eeee"
    second = ok(client, "NetworkDriver.Join", {"NetworkID": other, "EndpointID": EP2, "SandboxKey": "/sb"})
    assert dataplane.gateway6 == "fe80::1:2"  # the host side answers for it
    # every interface offers a gateway of each family: Docker's choice (gw-priority) decides
    assert (first["Gateway"], first["GatewayIPv6"]) == ("169.254.1.1", "fe80::ecee:eeff:feee:eeee")
    assert (second["Gateway"], second["GatewayIPv6"]) == ("169.254.1.2", "fe80::1:2")
    # ... and each network's pools are routed through its own interface, whichever has the default
    assert {"Destination": "10.20.10.0/24", "RouteType": 0, "NextHop": "169.254.1.1"} in first["StaticRoutes"]
    assert {"Destination": "fd00:20::/64", "RouteType": 0,
            "NextHop": "fe80::ecee:eeff:feee:eeee"} in first["StaticRoutes"]
    assert {"Destination": "10.20.20.0/24", "RouteType": 0, "NextHop": "169.254.1.2"} in second["StaticRoutes"]
    assert {"Destination": "fd00:21::/64", "RouteType": 0, "NextHop": "fe80::1:2"} in second["StaticRoutes"]
    assert {"Destination": "fe80::1:2/128", "RouteType": 1} in second["StaticRoutes"]
    destinations = [r["Destination"] for r in first["StaticRoutes"] + second["StaticRoutes"]]
    assert len(destinations) == len(set(destinations)), "no route may be installed twice"
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})
    third = "9" * 64  # a slot freed by Leave is reused
    create_endpoint(client, {"NetworkID": NET, "EndpointID": third,
                                                "Interface": {"Address": "10.20.10.10/32"}})
    assert ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": third,
                                             "SandboxKey": "/sb"})["Gateway"] == "169.254.1.1"


def test_a_pool_routed_by_another_interface_is_not_routed_twice(client, store):
    make_network(client)
    other = "d" * 64  # a second network on the same subnet
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": other, "IPv4Data": [
        {"Pool": "10.20.10.0/24", "Gateway": "169.254.1.1/32"}]})
    for ep, net, addr in ((EP, NET, "10.20.10.9/32"), (EP2, other, "10.20.10.10/32")):
        create_endpoint(client, {"NetworkID": net, "EndpointID": ep,
                                                    "Interface": {"Address": addr}})
    ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    second = ok(client, "NetworkDriver.Join", {"NetworkID": other, "EndpointID": EP2, "SandboxKey": "/sb"})
    assert second["StaticRoutes"] == [{"Destination": "169.254.1.2/32", "RouteType": 1}]


def test_ipv6_endpoint_gets_link_local_gateway_and_a_connected_route_to_it(client, dataplane):
    make_network(client, v6="fd00:20::/64")
    address = ok(client, "IpamDriver.RequestAddress", {"PoolID": "fd00:20::/64"})["Address"]
    assert address.endswith("/128")
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32", "AddressIPv6": address}})
    joined = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    assert joined["GatewayIPv6"] == "fe80::ecee:eeff:feee:eeee"
    # Docker 26 resolves the gateway right after link-up: the connected route must already be there
    assert {"Destination": "fe80::ecee:eeff:feee:eeee/128", "RouteType": 1} in joined["StaticRoutes"]
    assert address.split("/")[0] in dataplane.workloads[EP]["addresses"]


def test_ipv6_only_network(client, store, dataplane):
    """28's --ipv4=false: no IPv4Data; the endpoint gets only an IPv6 gateway and no gwbridge."""
    p6 = ok(client, "IpamDriver.RequestPool", {"Pool": "fd00:20::/64", "V6": True})
    ok(client, "NetworkDriver.GwAllocCheck", {"Options": {"com.docker.network.enable_ipv4": False,
                                                          "com.docker.network.enable_ipv6": True}})
    ok(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": [], "IPv6Data": [
        {"Pool": p6["Pool"], "Gateway": p6["Data"]["com.docker.network.gateway"]}], "Options": {
        "com.docker.network.enable_ipv4": False, "com.docker.network.enable_ipv6": True,
        "com.docker.network.generic": {}}})
    address = ok(client, "IpamDriver.RequestAddress", {"PoolID": "fd00:20::/64"})["Address"]
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"AddressIPv6": address}})
    joined = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    assert "Gateway" not in joined and joined["GatewayIPv6"] == "fe80::ecee:eeff:feee:eeee"
    assert joined["DisableGatewayService"] is True
    assert all(":" in r["Destination"] for r in joined["StaticRoutes"])
    assert dataplane.workloads[EP]["addresses"] == [address.split("/")[0]]


def test_docker_29_endpoint_name_is_kept_on_the_address(client, store):
    make_network(client)
    got = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24", "Options": {
        "com.docker.network.endpoint.name": "web-1"}})["Address"].split("/")[0]
    assert address_info(store, got).allocation.attrs["name"] == "web-1"
    plain = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24"})["Address"].split("/")[0]
    assert "name" not in address_info(store, plain).allocation.attrs


def test_join_failure_leaves_no_sandbox_and_no_interface(client, store, dataplane):
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    dataplane.fail = True
    assert "simulated" in err(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    kv = store.get(keys.endpoint("host1", EP))
    assert b'"sandbox":null' in kv.value and dataplane.workloads == {}


def test_unknown_network_and_endpoint(client):
    assert "unknown to warren" in err(client, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.20.10.9/32"}})
    assert "does not exist" in err(client, "NetworkDriver.Join", {
        "NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    ok(client, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})  # idempotent


def test_etcd_down_is_a_clear_error(store, dataplane, private_etcd):
    from tests.support.etcd import datastore_for
    app = build(PluginConfig(host="host1"), datastore_for(private_etcd, timeout=1), dataplane)
    private_etcd.stop()
    message = err(app.test_client(), "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    assert "unreachable" in message and "\n" not in message


def test_a_refused_network_leaves_no_pool(client, store):
    """dockerd releases the pools of a network the driver refused: a pool made for it goes too."""
    before = snapshot(store)
    pool = ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24", "Options": {"nat-outgoing": "true"}})
    err(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": [
        {"Pool": pool["Pool"], "Gateway": "169.254.1.1/32"}], "Options": {
        "com.docker.network.generic": {"vlan": "3"}}})
    ok(client, "IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})
    assert PoolStore(store).get("10.20.10.0/24") is None
    assert snapshot(store) == before


def test_pools_of_real_networks_and_of_the_user_are_kept(client, store):
    PoolStore(store).add([make_pool("10.20.20.0/24")])  # warrenctl pool add
    ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.20.0/24"})
    ok(client, "IpamDriver.ReleasePool", {"PoolID": "10.20.20.0/24"})
    assert PoolStore(store).get("10.20.20.0/24") is not None
    make_network(client)  # creates pool 10.20.10.0/24 and a network on it
    ok(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NET})
    ok(client, "IpamDriver.ReleasePool", {"PoolID": "10.20.10.0/24"})
    assert PoolStore(store).get("10.20.10.0/24") is not None


def test_default_pool_is_never_routed_per_interface(client):
    """Every network made without --subnet shares it: a route to it on the first interface
    would make libnetwork refuse the next interface's address ("conflicts with existing route")."""
    make_network(client, subnet="")
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.30.0.9/32"}})
    joined = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"})
    assert joined["StaticRoutes"] == [{"Destination": "169.254.1.1/32", "RouteType": 1}]
    assert joined["Gateway"] == "169.254.1.1"


def _endpoint_record(store, endpoint_id=EP):
    return json.loads(store.get(keys.endpoint("host1", endpoint_id)).value)


def _rewrite_profiles(store, profiles, endpoint_id=EP):
    """What `warrenctl endpoint ... profile` does: rewrite the record behind the plugin's back."""
    record = _endpoint_record(store, endpoint_id)
    record["profiles"] = profiles
    store.put(keys.endpoint("host1", endpoint_id), json.dumps(record))


class CountingStore:
    """The plugin's store with its etcd round trips counted."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name in ("get", "get_prefix", "put", "create", "cas", "delete", "txn", "get_many"):
            return lambda *a, **kw: self.calls.append(name) or attr(*a, **kw)
        return attr


def test_first_join_of_a_container_is_one_etcd_round_trip(store, dataplane):
    counting = CountingStore(store)
    client = build(PluginConfig(host="host1"), counting, dataplane).test_client()
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    counting.calls.clear()
    answer = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    assert counting.calls == ["txn"] and answer["Gateway"] == "169.254.1.1"
    record = _endpoint_record(store)
    assert record["sandbox"] == "/sb" and record["gateway_slot"] == 1
    assert store.get(keys.sandbox_slot("host1", "/sb", 1)).value.decode() == EP
    counting.calls.clear()
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})
    assert counting.calls == ["txn"]
    assert _endpoint_record(store)["sandbox"] is None and store.get(keys.sandbox_slot("host1", "/sb", 1)) is None


def test_join_and_leave_keep_a_profile_the_cli_wrote_meanwhile(client, store, dataplane):
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    _rewrite_profiles(store, ["web"])  # the plugin's kept record is stale now
    ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    record = _endpoint_record(store)
    assert record["profiles"] == ["web"] and record["sandbox"] == "/sb" and record["gateway_slot"] == 1
    _rewrite_profiles(store, ["web", "db"])
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})
    record = _endpoint_record(store)
    assert record["profiles"] == ["web", "db"] and record["sandbox"] is None
    assert store.get_prefix(keys.sandbox_prefix("host1", "/sb")).kvs == []


def test_join_takes_the_next_slot_when_the_first_is_held(client, store, dataplane):
    """The one-transaction guess (slot 1) fails as a whole; the retry picks slot 2."""
    make_network(client)
    store.put(keys.sandbox_slot("host1", "/sb", 1), "e" * 64)  # another network's interface
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    answer = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    assert answer["Gateway"] == "169.254.1.2" and _endpoint_record(store)["gateway_slot"] == 2
    assert store.get(keys.sandbox_slot("host1", "/sb", 1)).value.decode() == "e" * 64
    again = ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    assert again["Gateway"] == "169.254.1.2"  # a repeated Join keeps its slot
    assert len(store.get_prefix(keys.sandbox_prefix("host1", "/sb")).kvs) == 2


def test_join_of_an_endpoint_deleted_behind_the_plugin_fails_cleanly(client, store, dataplane):
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    store.delete(keys.endpoint("host1", EP))
    assert "does not exist" in err(client, "NetworkDriver.Join",
                                   {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    assert store.get_prefix(keys.sandbox_prefix("host1", "/sb")).kvs == [] and dataplane.workloads == {}


def test_leave_answers_before_the_veth_is_deleted_and_delete_endpoint_does_not_wait(
        client, store, dataplane, drivers):
    import threading
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": "10.20.10.9/32"}})
    ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    dataplane.hold = threading.Event()  # the kernel's delete "takes" until the test says
    ok(client, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP})
    assert EP in dataplane.workloads  # answered while the delete is still under way...
    assert _endpoint_record(store)["sandbox"] is None  # ...with the record already saying so
    assert store.get_prefix(keys.sandbox_prefix("host1", "/sb")).kvs == []
    ok(client, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})
    assert store.get(keys.endpoint("host1", EP)) is None and dataplane.removals == 0
    dataplane.hold.set()
    drivers[0].wait_removals(30)
    assert dataplane.workloads == {} and dataplane.removals == 1


# -- issue 12: nothing unchecked is stored --------------------------------------

def test_create_endpoint_refuses_addresses_that_do_not_parse_or_ipam_does_not_hold(client, store, dataplane):
    make_network(client, v6="fd00:20::/64")
    ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.20.0/24"})
    elsewhere = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.20.0/24"})["Address"]
    before = snapshot(store)
    body = lambda interface: {"NetworkID": NET, "EndpointID": EP, "Interface": interface}  # noqa: E731
    for interface, words in (
            ({"Address": "garbage/32"}, "not an address"),
            ({"Address": "10.20.10.9/garbage"}, "not an address"),
            ({"Address": 7}, "string"),
            ({"AddressIPv6": "10.20.10.9/32"}, "not an IPv6 address"),
            ({"Address": "fd00:20::9/128"}, "not an IPv4 address"),
            ({"Address": elsewhere}, "not in the network's pools"),          # held, but another pool
            ({"Address": "10.20.10.9/32"}, "not allocated by warren IPAM"),  # in the pool, never held
            ({"Address": "10.20.10.9/32", "MacAddress": "zz"}, "mac")):
        message = err(client, "NetworkDriver.CreateEndpoint", body(interface))
        assert words in message and "\n" not in message, message
    assert snapshot(store) == before and dataplane.workloads == {}


def test_create_endpoint_refuses_an_address_released_meanwhile(client, store):
    """The IPAM driver remembers its allocation; a release (by Docker or anyone) voids it."""
    from ipam import Allocator
    make_network(client)
    first = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24"})["Address"]
    ok(client, "IpamDriver.ReleaseAddress", {"PoolID": "10.20.10.0/24", "Address": first.split("/")[0]})
    second = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24"})["Address"]
    Allocator(store, "operator").release(second.split("/")[0])  # `warrenctl ipam release` behind our back
    before = snapshot(store)
    for address in (first, second):
        assert "not allocated" in err(client, "NetworkDriver.CreateEndpoint", {
            "NetworkID": NET, "EndpointID": EP, "Interface": {"Address": address}})
    assert snapshot(store) == before


def test_create_endpoint_costs_one_round_trip_after_request_address(store, dataplane):
    counting = CountingStore(store)
    client = build(PluginConfig(host="host1"), counting, dataplane).test_client()
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP2,  # the network's MTU is read once
                             "Interface": {"Address": "10.20.10.9/32"}})
    address = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24"})["Address"]
    counting.calls.clear()
    ok(client, "NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP,
                                                "Interface": {"Address": address}})
    assert counting.calls == ["txn"]  # as the put it replaces
    assert _endpoint_record(store)["ipv4"] == [address.split("/")[0]]


def test_create_endpoint_of_a_restarted_plugin_finds_the_allocation_in_etcd(client, store, dataplane):
    make_network(client)
    address = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24"})["Address"]
    fresh = build(PluginConfig(host="host1"), store, dataplane).test_client()  # remembers nothing
    ok(fresh, "NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP,
                                               "Interface": {"Address": address}})
    assert _endpoint_record(store)["ipv4"] == [address.split("/")[0]]


def test_create_network_needs_a_warren_pool(client, store):
    ok(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    before = snapshot(store)
    gateway = "169.254.1.1/32"
    for data, words in (
            ([{"Gateway": gateway}], "has no Pool"),
            ([{"Pool": None, "Gateway": gateway}], "has no Pool"),
            ([{"Pool": 5, "Gateway": gateway}], "has no Pool"),
            ([{"Pool": "garbage", "Gateway": gateway}], "not a subnet"),
            ([{"Pool": "10.20.10.1/24", "Gateway": gateway}], "not a subnet"),
            ([{"Pool": "fd00::/64", "Gateway": gateway}], "not an IPv4 subnet"),
            ([{"Pool": "10.20.99.0/24", "Gateway": gateway}], "not a warren pool")):
        message = err(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": data})
        assert words in message and "internal error" not in message and "\n" not in message, message
    assert snapshot(store) == before


def test_invalid_records_are_refused_with_one_line_and_deleted_on_request(client, store, dataplane, drivers):
    make_network(client)
    create_endpoint(client, {"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.20.10.9/32"}})
    store.put(keys.endpoint("host1", EP), '{"id": "%s", "ipv4": ["not-an-ip"]}' % EP)
    drivers[0]._records.clear()  # the kept copy would hide the bad one
    message = err(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"})
    assert "invalid Endpoint record" in message and "\n" not in message
    assert drivers[0].local_endpoints() == []  # listings skip it
    ok(client, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})
    assert store.get(keys.endpoint("host1", EP)) is None
    other = "d" * 64
    store.put(keys.network(other), '{"id": 5}')
    message = err(client, "NetworkDriver.CreateEndpoint", {"NetworkID": other, "EndpointID": EP2,
                                                           "Interface": {"Address": "10.20.10.10/32"}})
    assert "invalid Network record" in message and store.get(keys.endpoint("host1", EP2)) is None


def test_request_and_release_address_refuse_garbage(client, store):
    make_network(client)
    before = snapshot(store)
    assert "not an IP address" in err(client, "IpamDriver.RequestAddress",
                                      {"PoolID": "10.20.10.0/24", "Address": "10.20.10.x"})
    assert "not a valid CIDR" in err(client, "IpamDriver.RequestAddress", {"PoolID": "garbage"})
    assert "not an IP address" in err(client, "IpamDriver.ReleaseAddress",
                                      {"PoolID": "10.20.10.0/24", "Address": "../x"})
    assert snapshot(store) == before


def test_request_pool_refuses_a_new_pool_over_a_nodes_underlay_address(client, store):
    from ipam.nodes import Node, register
    register(store, Node(name="far", ipv4="10.20.10.7"))
    before = snapshot(store)
    message = err(client, "IpamDriver.RequestPool", {"Pool": "10.20.10.0/24"})
    assert "10.20.10.7 of node far" in message and "\n" not in message
    assert snapshot(store) == before
