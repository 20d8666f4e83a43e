"""The background name lookup, and the dockerd API client, with stand-ins for dockerd."""
import time

import pytest

from datastore import codec, keys
from plugin.containers import docker_lookup
from plugin.errors import PluginError
from plugin.names import DockerError, DockerNotFound, NameResolver, docker_get, docker_pid, network_name
from plugin.records import Network
from tests.support.unixhttp import json_server

NET = "a" * 64


class FakeLookup:
    """network_name's stand-in: NotFound until the network "appears"."""

    def __init__(self, appears_after: int):
        self.calls = 0
        self.appears_after = appears_after

    def __call__(self, network_id):
        self.calls += 1
        if self.calls <= self.appears_after:
            raise DockerNotFound("not yet")
        return "frontend"


def test_name_is_learned_after_the_network_appears(store):
    store.put(keys.network(NET), codec.dumps(Network(id=NET, pools_v4=["10.20.10.0/24"])))
    fake = FakeLookup(appears_after=2)
    resolver = NameResolver(store, lookup=fake, timeout=5)
    assert resolver._resolve(NET) == "frontend"
    record = codec.loads(Network, store.get(keys.network(NET)).value)
    assert record.name == "frontend" and record.pools_v4 == ["10.20.10.0/24"]
    assert fake.calls == 3


def test_gives_up_quietly_when_docker_never_answers(store):
    store.put(keys.network(NET), codec.dumps(Network(id=NET)))
    resolver = NameResolver(store, lookup=FakeLookup(appears_after=10**6), timeout=0.5)
    start = time.monotonic()
    assert resolver._resolve(NET) is None
    assert time.monotonic() - start < 3
    assert codec.loads(Network, store.get(keys.network(NET)).value).name is None


# -- a fake dockerd on a unix socket of the test's own -----------------------------------

ANSWERS = {
    f"/networks/{NET}": (200, {"Name": "frontend", "Id": NET}),
    "/containers/web/json": (200, {"Id": "c" * 64, "Name": "/web", "State": {"Pid": 4242}}),
    "/containers/stopped/json": (200, {"Id": "d" * 64, "Name": "/stopped", "State": {"Pid": 0}}),
    "/containers/broken/json": (500, {"message": "something broke\nsecond line"}),
    "/version": (200, {"Version": "28.5.2"}),
}


def _answer(path):
    return ANSWERS.get(path, (404, {"message": f"No such object: {path}"}))


@pytest.fixture
def fake_dockerd(tmp_path, monkeypatch):
    with json_server(str(tmp_path / "docker.sock"), _answer) as server:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{server.path}")
        yield server


def test_network_name_from_dockerd(fake_dockerd):
    assert network_name(NET) == "frontend"
    with pytest.raises(DockerNotFound):
        network_name("b" * 64)
    assert fake_dockerd.paths == [f"/networks/{NET}", f"/networks/{'b' * 64}"]


def test_container_lookup_from_dockerd(fake_dockerd):
    c = docker_lookup("web")
    assert (c.id, c.name, c.pid, c.netns) == ("c" * 64, "web", 4242, "/proc/4242/ns/net")
    with pytest.raises(PluginError, match="^container nothere does not exist$"):
        docker_lookup("nothere")
    with pytest.raises(PluginError, match="^container stopped is not running$"):
        docker_lookup("stopped")
    with pytest.raises(PluginError) as err:
        docker_lookup("broken")
    assert str(err.value) == "cannot ask dockerd about broken: dockerd answered 500: something broke"
    with pytest.raises(PluginError):
        docker_lookup("../../networks/x")    # quoted: never another API path
    # refused before dockerd, or quoted: never an unescaped / in the container's segment
    assert all("/" not in p[len("/containers/"):-len("/json")] for p in fake_dockerd.paths)


def test_unreachable_dockerd_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    with pytest.raises(DockerError) as err:
        docker_get("/_ping", timeout=1)
    assert str(err.value).startswith("dockerd does not answer:") and "\n" not in str(err.value)
    monkeypatch.setenv("DOCKER_HOST", "ssh://somewhere")
    with pytest.raises(DockerError, match="unsupported DOCKER_HOST"):
        docker_get("/_ping")


def test_resolver_uses_dockerd_by_default(store, fake_dockerd):
    store.put(keys.network(NET), codec.dumps(Network(id=NET)))
    assert NameResolver(store, timeout=5)._resolve(NET) == "frontend"
    assert codec.loads(Network, store.get(keys.network(NET)).value).name == "frontend"
    assert fake_dockerd.paths == [f"/networks/{NET}"]


def test_docker_pid_is_the_sockets_peer(fake_dockerd, tmp_path, monkeypatch):
    """The fake dockerd serves from this process: its pid is ours (SO_PEERCRED)."""
    import os
    assert docker_pid() == os.getpid()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    with pytest.raises(DockerError):
        docker_pid(timeout=1)
