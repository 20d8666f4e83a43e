"""``warrenctl ipam check`` compares this host's endpoint records with dockerd (a fake one on a
unix socket of the test's own), as a subprocess against a real etcd."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from datastore import codec, keys
from ipam import Allocator, PoolStore, make_pool
from ipam.inventory import address_info
from ipam.workloads import Endpoint, Network
from tests.integration.profiles.test_cli import ROOT, error, ok, rows
from tests.support.unixhttp import json_server

HOST = "h1"
NET, OTHER_NET = "n" * 64, "o" * 64
LIVE, LOST, FOREIGN, CREATED = "1" * 64, "2" * 64, "3" * 64, "4" * 64
RUNNING, STOPPED = "c" * 64, "d" * 64
OLD = str(int(time.time()) - 3600)


class Dockerd:
    """What the fake dockerd answers: networks with their endpoints, containers."""

    def __init__(self):
        self.networks = {NET: {CONTAINER_KEY: {"EndpointID": LIVE}}}
        self.containers = {RUNNING: True, STOPPED: False}
        self.down = False

    def answer(self, path):
        if self.down:
            return 500, {"message": "simulated failure"}
        if path == "/networks":
            return 200, [{"Id": n} for n in self.networks]
        if path.startswith("/networks/") and path[len("/networks/"):] in self.networks:
            return 200, {"Id": path.rsplit("/", 1)[1], "Containers": self.networks[path.rsplit("/", 1)[1]]}
        if path == "/containers/json?all=1":
            return 200, [{"Id": c, "State": "running" if r else "exited"} for c, r in self.containers.items()]
        if path.startswith("/containers/") and path.endswith("/json"):
            cid = path.split("/")[2]
            if cid in self.containers:
                return 200, {"Id": cid, "State": {"Running": self.containers[cid]}}
        if path == "/version":
            return 200, {"Version": "28.5.2"}
        return 404, {"message": f"No such object: {path}"}


CONTAINER_KEY = RUNNING


@pytest.fixture
def dockerd(tmp_path):
    fake = Dockerd()
    with json_server(str(tmp_path / "docker.sock"), fake.answer) as server:
        server.dockerd = fake
        yield server


@pytest.fixture
def ctl(etcd_server, store, dockerd):
    """warrenctl as host h1, its dockerd the fake one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "DOCKER_"))}
    env.update(WARREN_NODE_NAME=HOST, DOCKER_HOST=f"unix://{dockerd.path}")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ctl.main", "--etcd-endpoints", etcd_server.endpoint, *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    return run


def seed(store) -> dict[str, str]:
    """Endpoints: LIVE (dockerd has it), LOST (it does not), CREATED (on a network dockerd does
    not have), FOREIGN (another host's: never judged here). Returns id -> address."""
    PoolStore(store).add([make_pool("10.20.10.0/24")])
    store.put(keys.network(NET), codec.dumps(Network(NET, ["10.20.10.0/24"], name="web")))
    alloc = Allocator(store, HOST)
    addresses = {}
    for eid, host, net in ((LIVE, HOST, NET), (LOST, HOST, NET), (CREATED, HOST, OTHER_NET),
                           (FOREIGN, "h2", NET)):
        a = alloc.assign(f"docker-{eid[:8]}", pool="10.20.10.0/24",
                         attrs={"purpose": "docker", "since": OLD}).address
        sandbox = None if eid == CREATED else f"/var/run/docker/netns/{eid[:12]}"
        store.put(keys.endpoint(host, eid), codec.dumps(Endpoint(eid, net, host, [a], sandbox=sandbox)))
        if sandbox:
            store.put(keys.sandbox_slot(host, sandbox, 1), eid)
        addresses[eid] = a
    return addresses


def assigned(store, address) -> bool:
    return address_info(store, address).allocation is not None


def test_check_reports_orphans_and_repair_removes_them(ctl, store):
    addresses = seed(store)
    out = error_or_out(ctl("ipam", "check"), code=1)
    table = rows(out)
    assert sorted(r[2] for r in table[1:]) == [f"endpoint {LOST[:12]}", f"endpoint {CREATED[:12]}"]
    assert all(r[0] == "orphan-endpoint" for r in table[1:])
    assert "2 problem(s)" in out

    out = ok(ctl("ipam", "check", "--repair"))
    assert "Repaired 2 of 2" in out
    assert store.get(keys.endpoint(HOST, LOST)) is None and store.get(keys.endpoint(HOST, CREATED)) is None
    assert not assigned(store, addresses[LOST]) and not assigned(store, addresses[CREATED])
    assert store.get(keys.sandbox_slot(HOST, f"/var/run/docker/netns/{LOST[:12]}", 1)) is None
    for kept in (LIVE, FOREIGN):   # dockerd owns it; another host's is not judged here
        assert assigned(store, addresses[kept])
        assert store.get(keys.endpoint(HOST if kept == LIVE else "h2", kept)) is not None
    assert "consistent" in ok(ctl("ipam", "check"))


def test_young_orphans_are_spared(ctl, store):
    seed(store)
    out = ok(ctl("ipam", "check", "--grace", str(10 * 3600)))
    assert "consistent" in out


def test_without_dockerd_the_records_are_trusted_and_it_says_so(ctl, store, dockerd):
    seed(store)
    dockerd.shutdown()
    dockerd.server_close()
    os.unlink(dockerd.path)
    out = ok(ctl("ipam", "check"))
    assert out.startswith("note: dockerd does not answer") and "not compared with dockerd" in out
    assert "consistent" in out
    assert store.get(keys.endpoint(HOST, LOST)) is not None


def test_an_address_leaked_without_record_is_still_found(ctl, store):
    seed(store)
    a = Allocator(store, HOST).assign("docker-gone", pool="10.20.10.0/24",
                                      attrs={"purpose": "docker", "since": OLD}).address
    table = rows(error_or_out(ctl("ipam", "check"), code=1))
    assert ["leaked", a, "docker-gone"] in [r[:3] for r in table]


def error_or_out(result, code):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


__all__ = ["Dockerd", "dockerd", "ctl", "seed", "error", "HOST"]
