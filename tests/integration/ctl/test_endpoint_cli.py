"""``warrenctl endpoint ...`` as a subprocess against a real etcd."""
from __future__ import annotations

from datastore import codec, keys
from ipam.workloads import Endpoint, Network, WorkloadStore
from profiles import Profile, ProfileStore
from tests.integration.profiles.test_cli import ctl, error, ok, rows  # noqa: F401 (fixture)

NET = Network("n" * 64, ["10.0.0.0/24"], name="web")
A = Endpoint("a1" + "0" * 62, NET.id, "h1", ["10.0.0.1"], mac="02:00:00:00:00:01")
B = Endpoint("b2" + "0" * 62, "", "h2", ["10.0.0.2"], container="c" * 64, ifname="eth1", profiles=[],
             ports=[{"proto": "tcp", "host_port": 8080, "container_port": 80, "host_ip": ""}], published=True)


def seed(store) -> None:
    store.put(keys.network(NET.id), codec.dumps(NET))
    for e in (A, B):
        store.put(keys.endpoint(e.host, e.id), codec.dumps(e))
    for name in ("web", "db", "ops"):
        ProfileStore(store).add(Profile.new(name))


def test_show(ctl, store):
    seed(store)
    assert rows(ok(ctl("endpoint", "show"))) == [["Hostname", "Number of Endpoints"], ["h1", "1"], ["h2", "1"]]
    detailed = rows(ok(ctl("endpoint", "show", "--detailed", "--host=h1")))
    assert detailed[1] == ["h1", "network web", A.id[:12], A.iface, "10.0.0.1", A.mac, "web", "-"]
    assert len(detailed) == 2
    b = rows(ok(ctl("endpoint", "show", "--detailed", "--host=h2")))[1]
    assert b[1] == f"container {'c' * 12}"
    assert b[-1].startswith("0.0.0.0:8080->80/tcp")   # the Ports column, as docker ps writes it
    assert rows(ok(ctl("endpoint", "show", "--host", "h2", "--detailed")))[1][1] == f"container {'c' * 12}"


def test_profile_verbs_start_from_the_networks_profile(ctl, store):
    seed(store)
    assert rows(ok(ctl("endpoint", "a100", "profile", "show"))) == [["Name"], ["web"]]
    assert ok(ctl("endpoint", "a100", "profile", "append", "db", "ops")) == \
        "Profiles of endpoint a100: web, db, ops\n"
    assert WorkloadStore(store).find(A.id).profiles == ["web", "db", "ops"]
    ok(ctl("endpoint", A.id, "profile", "remove", "web"))
    assert rows(ok(ctl("endpoint", A.id[:12], "profile", "show"))) == [["Name"], ["db"], ["ops"]]
    ok(ctl("endpoint", "a100", "profile", "set", "ops"))
    assert WorkloadStore(store).find("a100").profiles == ["ops"]
    assert ok(ctl("endpoint", "b200", "profile", "set")) == \
        "Profiles of endpoint b200: none (all traffic is dropped)\n"


def test_errors_are_one_line(ctl, store):
    seed(store)
    assert error(ctl("endpoint", "a100", "profile", "append", "nope")) == "profile nope does not exist"
    assert error(ctl("endpoint", "a100", "profile", "append", "web")) == "the endpoint already has profile web"
    assert error(ctl("endpoint", "zzzz", "profile", "show")) == "endpoint zzzz does not exist"
    assert "too short" in error(ctl("endpoint", "a", "profile", "show"))
    assert "unknown profile verb" in error(ctl("endpoint", "a100", "profile", "prepend", "db"))
    assert "unknown endpoint command" in error(ctl("endpoint", "a100", "tag"))
    assert "--host=<HOST>" in error(ctl("endpoint", "show", "--hostx"))
    assert WorkloadStore(store).find("a100").profiles is None  # nothing changed


def test_profile_show_detailed_and_remove_check_use_effective_profiles(ctl, store):
    seed(store)
    ok(ctl("endpoint", "b200", "profile", "set", "db"))
    table = rows(ok(ctl("profile", "show", "--detailed")))
    assert ["db", "db", "h2", B.id[:12], "10.0.0.2"] in table
    assert ["web", "web", "h1", A.id[:12], "10.0.0.1"] in table
    assert "in use by 1 endpoint" in error(ctl("profile", "remove", "db"))
