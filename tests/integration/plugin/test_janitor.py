"""The janitor on a real etcd: records made by the plugin's own API, dockerd's view faked.

Endpoints are created through the plugin's Flask app (RequestAddress, CreateEndpoint,
Join, ProgramExternalConnectivity), so the records, allocations and gateway slots are
exactly what Docker's calls leave behind when the teardown calls never come.
"""
from __future__ import annotations

import threading
import time

import pytest

from datastore import Datastore, EtcdConfig, codec, keys
from ipam.inventory import address_info
from ipam.workloads import Endpoint, WorkloadStore, host_ifname
from plugin import janitor as janitor_mod
from plugin.config import PluginConfig
from plugin.janitor import DockerView, Janitor, forget
from plugin.names import DockerError
from plugin.wsgi import assemble
from tests.integration.plugin.test_api import NET, FakeDataplane, make_network, ok

HOST = "host1"


class Docker:
    """dockerd's view, as the test says; DockerError while ``down``."""

    def __init__(self):
        self.endpoints: set[str] = set()
        self.containers: dict[str, str] = {}
        self.down = False
        self.asked = 0

    def __call__(self, network_ids):
        self.asked += 1
        if self.down:
            raise DockerError("dockerd does not answer: connection refused")
        return DockerView(frozenset({NET}), frozenset(self.endpoints), dict(self.containers))


class KernelDataplane(FakeDataplane):
    """The fake dataplane, with the interface listing the janitor reads."""

    def workload_interfaces(self):
        return {host_ifname(e): i for i, e in enumerate(self.workloads, 1)}

    def remove_workload(self, endpoint_id):  # by interface name, as the kernel does
        self.removals += 1
        found = [e for e in self.workloads if host_ifname(e) == host_ifname(endpoint_id)]
        for e in found:
            del self.workloads[e]
        return bool(found)


class Ports:
    def __init__(self):
        self.syncs = 0

    def sync(self, endpoints=None):
        self.syncs += 1


@pytest.fixture
def world(store):
    dataplane, docker, ports = KernelDataplane(), Docker(), Ports()
    plugin = assemble(PluginConfig(host=HOST), store, dataplane)
    client = plugin.app.test_client()
    make_network(client)
    jan = Janitor(store, HOST, plugin.network, dataplane, ports, grace=60, view=docker,
                  pid=lambda: 1, clock=lambda: time.time() + 3600)  # every record is an hour old
    yield client, dataplane, docker, jan, plugin.network
    plugin.network.wait_removals(30)


def start(client, endpoint_id, join=True, address=""):
    got = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24", "Address": address,
                                                   "Options": {}})
    ok(client, "NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": endpoint_id,
                                                "Interface": {"Address": got["Address"]}, "Options": {}})
    if join:
        ok(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": endpoint_id,
                                          "SandboxKey": f"/var/run/docker/netns/{endpoint_id[:12]}",
                                          "Options": {}})
    return got["Address"].split("/")[0]


def assigned(store, address) -> bool:
    return address_info(store, address).allocation is not None


def test_orphans_go_with_everything_they_hold_and_owned_endpoints_stay(store, world):
    client, dataplane, docker, jan, _ = world
    kept, lost, created = "1" * 64, "2" * 64, "3" * 64
    a_kept, a_lost, a_created = start(client, kept), start(client, lost), start(client, created, join=False)
    docker.endpoints = {kept}
    slots_before = len(store.get_prefix(keys.SANDBOXES))
    assert slots_before == 2

    report = jan.run_once()
    assert sorted(report.endpoints) == [lost, created]
    assert sorted(report.released) == sorted([a_lost, a_created])
    assert [e.id for e in WorkloadStore(store).endpoints(HOST)] == [kept]
    assert assigned(store, a_kept) and not assigned(store, a_lost) and not assigned(store, a_created)
    assert list(dataplane.workloads) == [kept]              # the orphan's veth is gone
    assert len(store.get_prefix(keys.SANDBOXES)) == 1       # and its gateway slot
    assert jan.run_once().endpoints == []                   # nothing more to do


def test_nothing_is_touched_while_dockerd_does_not_answer(store, world):
    client, dataplane, docker, jan, _ = world
    start(client, "1" * 64)
    docker.down = True
    before = [(kv.key, kv.value) for kv in store.get_prefix(keys.PREFIX)]
    assert jan.run_once() is None
    assert [(kv.key, kv.value) for kv in store.get_prefix(keys.PREFIX)] == before
    assert list(dataplane.workloads) == ["1" * 64]


def test_nothing_is_touched_while_etcd_does_not_answer(store, world):
    client, dataplane, docker, jan, driver = world
    start(client, "1" * 64)
    jan.store = Datastore(EtcdConfig.from_env(endpoints="http://127.0.0.1:9"))  # nobody there
    assert jan.run_once() is None
    assert docker.asked == 0 and list(dataplane.workloads) == ["1" * 64]


def test_a_young_orphan_waits_for_its_grace(store, world):
    client, dataplane, docker, jan, _ = world
    start(client, "1" * 64)
    jan._clock = time.time  # the record is brand new: a CreateEndpoint could be in flight
    report = jan.run_once()
    assert report.endpoints == [] and report.waiting == 1
    assert len(WorkloadStore(store).endpoints(HOST)) == 1


def test_a_leaked_allocation_without_record_is_released(store, world):
    client, dataplane, docker, jan, _ = world
    got = ok(client, "IpamDriver.RequestAddress", {"PoolID": "10.20.10.0/24", "Address": "", "Options": {}})
    address = got["Address"].split("/")[0]
    assert jan.run_once().released == [address]
    assert not assigned(store, address)


def test_an_address_reused_by_a_newer_endpoint_stays_allocated(store, world):
    """The old record's address was released by Docker and handed out again (as IPAM did
    before it refused addresses a record names: the state such a leak left)."""
    client, dataplane, docker, jan, _ = world
    old, new = "1" * 64, "2" * 64
    address = start(client, old)
    ok(client, "IpamDriver.ReleaseAddress", {"PoolID": "10.20.10.0/24", "Address": address})
    kept = store.get(keys.endpoint(HOST, old))
    store.delete(kept.key)
    assert start(client, new, address=address) == address
    store.put(kept.key, kept.value)
    docker.endpoints = {new}
    report = jan.run_once()
    assert report.endpoints == [old] and report.released == []
    assert assigned(store, address)
    assert [e.id for e in WorkloadStore(store).endpoints(HOST)] == [new]


def test_stray_interfaces_go_at_the_second_round(store, world):
    client, dataplane, docker, jan, _ = world
    stray = "9" * 64
    dataplane.workloads[stray] = {}
    assert jan.run_once().interfaces == []      # container add makes its veth before its record
    assert jan.run_once().interfaces == [host_ifname(stray)]
    assert stray not in dataplane.workloads


def test_container_add_records_follow_their_container(store, world):
    client, dataplane, docker, jan, _ = world
    from ipam import Allocator
    eid, container = "7" * 64, "c" * 64
    address = Allocator(store, HOST).assign(f"container-{eid}", pool="10.20.10.0/24",
                                            attrs={"purpose": "container"}).address
    rec = Endpoint(eid, "", HOST, [address], sandbox="/proc/1/ns/net", container=container,
                   ifname="eth1", profiles=[])
    store.put(keys.endpoint(HOST, eid), codec.dumps(rec))
    dataplane.workloads[eid] = {}
    docker.containers = {container: "running"}
    assert jan.run_once().endpoints == []
    docker.containers = {container: "exited"}
    report = jan.run_once()
    assert report.endpoints == [eid] and report.released == [address]
    assert eid not in dataplane.workloads and store.get(keys.endpoint(HOST, eid)) is None


def test_forget_and_ports_follow_a_record_removed_behind_the_plugins_back(store, world):
    client, dataplane, docker, jan, _ = world
    eid, other = "1" * 64, "2" * 64
    address = start(client, eid)
    start(client, other)
    docker.endpoints = {eid, other}
    kv = store.get(keys.endpoint(HOST, eid))
    rec = codec.loads(Endpoint, kv.value)
    from dataclasses import replace
    store.put(kv.key, codec.dumps(replace(rec, published=True,
                                          ports=[{"proto": "tcp", "host_port": 8080,
                                                  "container_port": 80, "host_ip": ""}])))
    jan.run_once()
    syncs = jan.ports.syncs
    assert forget(store, rec) == [address]                  # what warrenctl does, from any host
    assert store.get(keys.endpoint(HOST, eid)) is None and not assigned(store, address)
    assert len(store.get_prefix(keys.SANDBOXES)) == 1       # its slot went, the other's stayed
    report = jan.run_once()                                 # the owning plugin's next round:
    assert jan.ports.syncs == syncs + 1                     # its ports are dropped
    assert report.interfaces == []                          # the veth: at the second round
    assert jan.run_once().interfaces == [host_ifname(eid)]


def test_the_thread_runs_at_start_and_when_dockerd_comes_back(store, world, monkeypatch):
    client, dataplane, docker, jan, _ = world
    monkeypatch.setattr(janitor_mod, "WATCH_INTERVAL", 0.02)
    pids = iter([1, DockerError("down"), DockerError("down"), 2] + [2] * 10_000)
    rounds = []
    ran = threading.Event()

    def pid():
        value = next(pids)
        if isinstance(value, Exception):
            raise value
        return value

    def run_once():
        rounds.append(time.monotonic())
        if len(rounds) == 2:
            ran.set()
        return None
    jan._pid, jan.run_once, jan.interval = pid, run_once, 3600
    jan.start()
    try:
        assert ran.wait(30), rounds   # once at start, once when dockerd answered again
    finally:
        jan.stop()
    assert len(rounds) == 2           # and not every watch tick (the interval is an hour)


def test_a_new_dockerd_pid_triggers_a_round(store, world, monkeypatch):
    """A restart faster than a watch tick: only the pid (SO_PEERCRED) tells."""
    client, dataplane, docker, jan, _ = world
    monkeypatch.setattr(janitor_mod, "WATCH_INTERVAL", 0.02)
    pids = iter([7, 7, 7, 8] + [8] * 10_000)
    rounds = []
    ran = threading.Event()

    def run_once():
        rounds.append(1)
        if len(rounds) == 2:
            ran.set()
    jan._pid, jan.run_once, jan.interval = (lambda: next(pids)), run_once, 3600
    jan.start()
    try:
        assert ran.wait(30), rounds
    finally:
        jan.stop()
    assert len(rounds) == 2


def test_a_network_record_this_host_made_goes_once_dockerd_has_it_no_more(store, world):
    """Network records say which host's dockerd made them (CreateNetwork through the API
    sets it); the janitor removes this host's records of networks dockerd no longer has."""
    from ipam.workloads import Network

    client, dataplane, docker, jan, driver = world
    assert codec.loads(Network, store.get(keys.network(NET)).value).host == HOST  # made by the API
    mine, theirs, unknown = "m" * 64, "t" * 64, "u" * 64
    for network_id, host in ((mine, HOST), (theirs, "h2"), (unknown, None)):
        store.put(keys.network(network_id), codec.dumps(Network(network_id, ["10.20.10.0/24"], host=host)))
    assert jan.run_once().networks == []          # gone for less than the grace period
    jan.grace = 0
    assert jan.run_once().networks == [mine]
    assert store.get(keys.network(mine)) is None
    assert store.get(keys.network(unknown)) is not None  # who made it is unknown: never removed
    assert store.get(keys.network(theirs)) is not None and store.get(keys.network(NET)) is not None
