"""The background name lookup, with a stand-in for dockerd's API."""
import time

import docker.errors

from datastore import codec, keys
from plugin.names import NameResolver
from plugin.records import Network

NET = "a" * 64


class FakeDocker:
    def __init__(self, appears_after: int):
        self.calls = 0
        self.appears_after = appears_after
        self.networks = self

    def get(self, network_id):
        self.calls += 1
        if self.calls <= self.appears_after:
            raise docker.errors.NotFound("not yet")
        return type("N", (), {"name": "frontend"})()


def test_name_is_learned_after_the_network_appears(store):
    store.put(keys.network(NET), codec.dumps(Network(id=NET, pools_v4=["10.20.10.0/24"])))
    fake = FakeDocker(appears_after=2)
    resolver = NameResolver(store, client_factory=lambda: fake, timeout=5)
    assert resolver._resolve(NET) == "frontend"
    record = codec.loads(Network, store.get(keys.network(NET)).value)
    assert record.name == "frontend" and record.pools_v4 == ["10.20.10.0/24"]
    assert fake.calls == 3


def test_gives_up_quietly_when_docker_never_answers(store):
    store.put(keys.network(NET), codec.dumps(Network(id=NET)))
    resolver = NameResolver(store, client_factory=lambda: FakeDocker(appears_after=10**6), timeout=0.5)
    start = time.monotonic()
    assert resolver._resolve(NET) is None
    assert time.monotonic() - start < 3
    assert codec.loads(Network, store.get(keys.network(NET)).value).name is None
