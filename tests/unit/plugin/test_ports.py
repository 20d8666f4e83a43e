"""Port publishing's pure parts: parsing Docker's port map, host addresses, port choice, DNAT text."""
import pytest

from plugin.errors import PluginError
from plugin.portplan import (EXPOSED_PORTS, PORTMAP, Mapping, Request, conflicts, dnat_rules, host_addresses,
                             oper_value, parse_portmap, ports_column, port_candidates, proxy_target, stored)
from plugin.records import Endpoint

ID = "a" * 64


def ep(ipv4=("10.20.10.5",), ipv6=("fd00::5",), ports=(), published=True):
    return Endpoint(id=ID, network="n", host="h", ipv4=list(ipv4), ipv6=list(ipv6),
                    ports=[dict(p) for p in ports], published=published)


def test_parse_portmap():
    got = parse_portmap([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                         {"Proto": 17, "Port": 53, "HostIP": "192.0.2.1", "HostPort": 5353},
                         {"Proto": 6, "Port": 443, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
                         {"Proto": 6, "Port": 81, "HostPort": 8000, "HostPortEnd": 8010},
                         {"Proto": 6, "Port": 82, "HostIP": "0.0.0.0", "HostPort": 82},
                         {"Proto": 6, "Port": 83, "HostIP": "::ffff:127.0.0.1", "HostPort": 83},
                         {"Proto": 132, "Port": 84, "HostIP": "::1", "HostPort": 84}])
    assert got == [Request("tcp", 80, "", 8080, 8080), Request("udp", 53, "192.0.2.1", 5353, 5353),
                   Request("tcp", 443, "", 0, 0), Request("tcp", 81, "", 8000, 8010),
                   Request("tcp", 82, "0.0.0.0", 82, 82), Request("tcp", 83, "127.0.0.1", 83, 83),
                   Request("sctp", 84, "::1", 84, 84)]
    assert parse_portmap(None) == []


@pytest.mark.parametrize("bad, message", [
    ([{"Proto": 1, "Port": 80, "HostPort": 80}], "protocol"),
    ([{"Proto": 6, "Port": 80, "HostPort": 8010, "HostPortEnd": 8000}], "range 8010-8000"),
    ([{"Proto": 6, "Port": 80, "HostPort": 0, "HostPortEnd": 8000}], "range 0-8000"),
    ([{"Proto": 6, "Port": 80, "HostPort": 70000}], "host port 70000"),
    ([{"Proto": 6, "Port": 80, "HostPort": "80"}], "host port '80'"),
    ([{"Proto": 6, "Port": 0, "HostPort": 80}], "container port"),
    ([{"Proto": 6, "Port": True, "HostPort": 80}], "container port"),
    ([{"Proto": 6, "Port": 80, "HostPort": 80, "HostIP": "nope"}], "host address"),
    ([{"Proto": 6, "Port": 80, "HostPort": 80, "HostIP": 7}], "host address"),
    (["x"], "object"),
    ("x", "list"),
])
def test_bad_portmaps(bad, message):
    with pytest.raises(PluginError, match=message):
        parse_portmap(bad)


def test_host_addresses_follow_the_container_and_docker_29():
    every = Request("tcp", 80)
    assert host_addresses(every, True, True) == ["0.0.0.0", "::"]
    assert host_addresses(every, True, False) == ["0.0.0.0", "::"]   # v6 proxied to the v4 address
    assert host_addresses(every, False, True) == ["::"]
    assert host_addresses(every, True, True, host_v6=False) == ["0.0.0.0"]
    assert host_addresses(every, True, True, no_v6=True) == ["0.0.0.0"]  # another endpoint has IPv6
    assert host_addresses(Request("tcp", 80, "127.0.0.1"), True, False) == ["127.0.0.1"]
    assert host_addresses(Request("tcp", 80, "::1"), True, True, no_v6=True) == []
    with pytest.raises(PluginError, match="no IPv4 address"):
        host_addresses(Request("tcp", 80, "127.0.0.1"), False, True)
    with pytest.raises(PluginError, match="this host has no IPv6"):
        host_addresses(Request("tcp", 80, "::1"), True, True, host_v6=False)


def test_port_candidates():
    assert list(port_candidates(Request("tcp", 80, "", 8080, 8080))) == [8080]
    assert list(port_candidates(Request("tcp", 80, "", 8000, 8003))) == [8000, 8001, 8002, 8003]
    assert list(port_candidates(Request("tcp", 80, "", 8000, 8003), held=8002)) == [8002, 8000, 8001, 8003]
    assert list(port_candidates(Request("tcp", 80, "", 8000, 8003), held=9000)) == [8000, 8001, 8002, 8003]
    any_port = Request("tcp", 80)
    assert list(port_candidates(any_port, ephemeral=(100, 104))) == [100, 101, 102, 103, 104]
    assert list(port_candidates(any_port, start=103, ephemeral=(100, 104))) == [103, 104, 100, 101, 102]
    assert list(port_candidates(any_port, start=200, ephemeral=(100, 102))) == [100, 101, 102]
    assert list(port_candidates(any_port, held=5000, start=101, ephemeral=(100, 102))) == [5000, 101, 102, 100]


def test_conflicts():
    assert conflicts(("tcp", "0.0.0.0", 80), ("tcp", "127.0.0.1", 80))
    assert conflicts(("tcp", "127.0.0.1", 80), ("tcp", "127.0.0.1", 80))
    assert not conflicts(("tcp", "127.0.0.1", 80), ("tcp", "127.0.0.2", 80))
    assert not conflicts(("tcp", "0.0.0.0", 80), ("tcp", "::", 80))
    assert not conflicts(("tcp", "0.0.0.0", 80), ("udp", "0.0.0.0", 80))
    assert not conflicts(("tcp", "0.0.0.0", 80), ("tcp", "0.0.0.0", 81))
    assert conflicts(("udp", "::", 53), ("udp", "::1", 53))


def test_stored_expands_records_of_older_versions():
    old = ep(ports=[{"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": ""}])
    assert stored(old) == [Mapping("tcp", 8080, 80, "0.0.0.0"), Mapping("tcp", 8080, 80, "::")]
    assert stored(ep(ipv6=(), ports=old.ports)) == [Mapping("tcp", 8080, 80, "0.0.0.0")]


def test_targets():
    both, v4only = ep(), ep(ipv6=())
    assert proxy_target(Mapping("tcp", 8080, 80, "::"), both) == ("fd00::5", 80)
    assert proxy_target(Mapping("tcp", 8080, 80, "::"), v4only) == ("10.20.10.5", 80)  # 6 to 4
    assert proxy_target(Mapping("tcp", 8080, 80, "127.0.0.1"), ep(ipv4=())) is None    # never 4 to 6


def test_dnat_rules_for_published_endpoints():
    maps = [Mapping("tcp", 8080, 80, "0.0.0.0"), Mapping("tcp", 8080, 80, "::"),
            Mapping("udp", 53, 53, "192.0.2.1"), Mapping("tcp", 9000, 90, "127.0.0.1"),
            Mapping("tcp", 9001, 91, "::1")]
    v4 = dnat_rules([(ep(), maps)], 4)
    assert v4.startswith("*nat\n:WARREN-DNAT - [0:0]\n:WARREN-HAIRPIN - [0:0]\n-F WARREN-DNAT\n-F WARREN-HAIRPIN\n"
                         "-A WARREN-DNAT -d 127.0.0.0/8 -j RETURN\n") and v4.endswith("COMMIT\n")
    assert ('-A WARREN-DNAT -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 '
            '-m comment --comment "warren aaaaaaaaaaaa" -j DNAT --to-destination 10.20.10.5:80') in v4
    assert "-p udp -d 192.0.2.1 -m udp --dport 53" in v4
    assert ('-A WARREN-HAIRPIN -s 10.20.10.5 -d 10.20.10.5 -p tcp -m tcp --dport 80 '
            '-m comment --comment "warren aaaaaaaaaaaa" -j MASQUERADE') in v4
    assert v4.count("WARREN-HAIRPIN -s") == 2  # tcp 80 and udp 53: one each, not one per host address
    assert "9000" not in v4  # loopback: the proxy serves it, never DNAT
    v6 = dnat_rules([(ep(), maps)], 6)
    assert "-A WARREN-DNAT -d ::1/128 -j RETURN" in v6
    assert "--dport 8080 " in v6 and "--to-destination [fd00::5]:80" in v6
    assert "192.0.2.1" not in v6 and "9001" not in v6
    assert "8080" not in dnat_rules([(ep(ipv6=()), maps)], 6)  # 6 to 4 is the proxy's
    assert "-A WARREN-HAIRPIN -s fd00::5 -d fd00::5 -p tcp" in v6
    assert dnat_rules([], 4).count("-A ") == 1


def test_oper_value_reports_real_host_ports_in_dockers_shape():
    e = ep(ports=[{"proto": "tcp", "host_port": 32768, "container_port": 80, "host_ip": "0.0.0.0"},
                  {"proto": "tcp", "host_port": 32768, "container_port": 80, "host_ip": "::"},
                  {"proto": "udp", "host_port": 53, "container_port": 53, "host_ip": "127.0.0.1"}])
    value = oper_value(e)
    assert value[PORTMAP] == [
        {"Proto": 6, "IP": "10.20.10.5", "Port": 80, "HostIP": "0.0.0.0", "HostPort": 32768, "HostPortEnd": 32768},
        {"Proto": 6, "IP": "fd00::5", "Port": 80, "HostIP": "::", "HostPort": 32768, "HostPortEnd": 32768},
        {"Proto": 17, "IP": "10.20.10.5", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 53, "HostPortEnd": 53}]
    assert value[EXPOSED_PORTS] == [{"Proto": 6, "Port": 80}, {"Proto": 17, "Port": 53}]
    assert oper_value(ep(ports=e.ports, published=False)) == {}


def test_ports_column_as_docker_ps_shows_it():
    e = ep(ports=[{"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": "0.0.0.0"},
                  {"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": "::"},
                  {"proto": "udp", "host_port": 53, "container_port": 53, "host_ip": "127.0.0.1"}])
    assert ports_column(e) == "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 127.0.0.1:53->53/udp"
    assert ports_column(ep(ports=e.ports, published=False)) == ""
