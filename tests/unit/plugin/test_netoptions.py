"""CreateNetwork options (plugin.netoptions) and Join answers (plugin.networks.join_answer), without etcd."""
from __future__ import annotations

import pytest

from ipam.workloads import Endpoint, Network
from plugin.errors import PluginError
from plugin.netoptions import parse
from plugin.networks import join_answer


def test_docker_labels_are_honoured_or_ignored():
    parsed = parse({"com.docker.network.enable_ipv4": True, "com.docker.network.enable_ipv6": "true",
                    "com.docker.network.internal": True, "com.docker.network.new_in_30": 1,
                    "something.else": "x",
                    "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400",
                                                   "com.docker.network.bridge.name": "br0"}})
    assert (parsed.mtu, parsed.internal, parsed.profile) == (1400, True, None)
    assert parsed.ignored == ("-o com.docker.network.bridge.name", "com.docker.network.new_in_30",
                              "something.else")


def test_no_options_at_all():
    assert parse({}) == parse({"com.docker.network.generic": None})
    assert parse({}).mtu is None and parse({}).internal is False


@pytest.mark.parametrize("generic, words", [
    ({"vlan": "3"}, ["-o vlan", "valid options: mtu=N, profile=NAME, com.docker.network.driver.mtu=N"]),
    ({"mtu": "x"}, ["-o mtu", "number"]),
    ({"mtu": "70000"}, ["between 576 and 65535"]),
    ({"mtu": "1400", "com.docker.network.driver.mtu": "1450"}, ["disagree"]),
    ({"mtu": 1400}, ["strings"]),
])
def test_bad_generic_options_are_one_line(generic, words):
    with pytest.raises(PluginError) as info:
        parse({"com.docker.network.generic": generic})
    message = str(info.value)
    assert all(w in message for w in words) and "\n" not in message


def test_bad_label_values():
    with pytest.raises(PluginError, match="true or false"):
        parse({"com.docker.network.internal": "perhaps"})
    with pytest.raises(PluginError, match="map"):
        parse({"com.docker.network.generic": ["mtu=1"]})


NET = Network(id="n", pools_v4=["10.0.0.0/24"], pools_v6=["fd00::/64"])


def test_join_answer_dual_stack_second_slot():
    ep = Endpoint(id="e", network="n", host="h", ipv4=["10.0.0.5"], ipv6=["fd00::5"])
    answer = join_answer("tmpe", 2, ep, NET)
    assert answer["Gateway"] == "169.254.1.2" and answer["GatewayIPv6"] == "fe80::1:2"
    assert answer["StaticRoutes"] == [
        {"Destination": "169.254.1.2/32", "RouteType": 1},
        {"Destination": "10.0.0.0/24", "RouteType": 0, "NextHop": "169.254.1.2"},
        {"Destination": "fe80::1:2/128", "RouteType": 1},
        {"Destination": "fd00::/64", "RouteType": 0, "NextHop": "fe80::1:2"}]


def test_join_answer_internal_v6_only_and_shared_pools():
    ep = Endpoint(id="e", network="n", host="h", ipv6=["fd00::5"])
    internal = Network(id="n", pools_v6=["fd00::/64"], internal=True)
    answer = join_answer("tmpe", 1, ep, internal)
    assert "Gateway" not in answer and "GatewayIPv6" not in answer
    assert answer["DisableGatewayService"] is True
    shared = join_answer("tmpe", 1, ep, NET, unrouted={"fd00::/64"})
    assert shared["StaticRoutes"] == [{"Destination": "fe80::ecee:eeff:feee:eeee/128", "RouteType": 1}]


def test_aux_addresses_of_ipam_data():
    import pytest

    from plugin.errors import PluginError
    from plugin.networks import aux_addresses

    assert aux_addresses(None) == [] and aux_addresses({}) == []
    assert aux_addresses({"b": "10.20.23.8/24", "a": "10.20.23.7/24"}) == ["10.20.23.7", "10.20.23.8"]
    assert aux_addresses({"v6": "fd00::7/64"}) == ["fd00::7"]
    with pytest.raises(PluginError, match="invalid auxiliary address"):
        aux_addresses({"x": "garbage"})
    with pytest.raises(PluginError, match="AuxAddresses"):
        aux_addresses(["10.0.0.1/24"])
