import pytest

from plugin.errors import PluginError
from plugin.ports import dnat_rules, parse_portmap
from plugin.records import Endpoint


def test_parse_portmap():
    got = parse_portmap([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                         {"Proto": 17, "Port": 53, "HostIP": "192.0.2.1", "HostPort": 5353}])
    assert [(m.proto, m.host_port, m.container_port, m.host_ip) for m in got] == [
        ("tcp", 8080, 80, ""), ("udp", 5353, 53, "192.0.2.1")]
    assert parse_portmap(None) == []


@pytest.mark.parametrize("bad, message", [
    ([{"Proto": 6, "Port": 80, "HostPort": 0}], "explicit host port"),
    ([{"Proto": 1, "Port": 80, "HostPort": 80}], "protocol"),
    ([{"Proto": 6, "Port": 80, "HostPort": 8000, "HostPortEnd": 8010}], "ranges"),
    ([{"Proto": 6, "Port": 0, "HostPort": 80}], "container port"),
    ([{"Proto": 6, "Port": 80, "HostPort": 80, "HostIP": "nope"}], "host address"),
    ("x", "list"),
])
def test_bad_portmaps(bad, message):
    with pytest.raises(PluginError, match=message):
        parse_portmap(bad)


def test_dnat_rules_for_published_endpoints():
    ep = Endpoint(id="a" * 64, network="n", host="h", ipv4=["10.20.10.5"], ipv6=["fd00::5"],
                  ports=[{"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": ""},
                         {"proto": "udp", "host_port": 53, "container_port": 53, "host_ip": "192.0.2.1"}],
                  published=True)
    v4 = dnat_rules([ep], 4)
    assert v4.startswith("*nat\n:WARREN-DNAT - [0:0]\n-F WARREN-DNAT\n") and v4.endswith("COMMIT\n")
    assert ('-A WARREN-DNAT -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 '
            '-m comment --comment "warren aaaaaaaaaaaa" -j DNAT --to-destination 10.20.10.5:80') in v4
    assert "-d 192.0.2.1 -m udp --dport 53" in v4
    v6 = dnat_rules([ep], 6)
    assert "--to-destination [fd00::5]:80" in v6 and "192.0.2.1" not in v6
    assert dnat_rules([], 4).count("-A ") == 0
