"""Which interfaces are Docker's bridges: dockerd's answer, the kernel's bridges, docker0."""
from __future__ import annotations

import os

import pytest

from profiles import dockerbridges as db

DEFAULT = {"Name": "bridge", "Id": "f" * 64, "Driver": "bridge",
           "Options": {"com.docker.network.bridge.name": "docker0"}}
USER = {"Name": "brnet", "Id": "0123456789abcdef" * 4, "Driver": "bridge", "Options": {}}
NAMED = {"Name": "custom", "Id": "a" * 64, "Driver": "bridge",
         "Options": {"com.docker.network.bridge.name": "mybr0"}}
WARREN = {"Name": "w", "Id": "b" * 64, "Driver": "warren", "Options": {}}


def sysfs(tmp_path, bridges=(), others=()):
    for name in bridges:
        os.makedirs(tmp_path / name / "bridge")
    for name in others:
        os.makedirs(tmp_path / name)
    return str(tmp_path)


def test_bridge_names_as_docker_picks_them():
    assert db.bridge_name(DEFAULT) == "docker0"
    assert db.bridge_name(USER) == "br-0123456789ab"
    assert db.bridge_name(NAMED) == "mybr0"
    assert db.bridge_name(WARREN) is None
    assert db.bridge_name({"Driver": "bridge", "Id": "short"}) is None
    assert db.docker_bridges([DEFAULT, USER, NAMED, WARREN]) == {"docker0", "br-0123456789ab", "mybr0"}


def test_kernel_bridges_are_only_those_named_like_dockers(tmp_path):
    path = sysfs(tmp_path, bridges=["br-0123456789ab", "br-lan", "br-ex", "br0"],
                 others=["br-fedcba987654", "eth0", "wrn0123456789a"])
    assert db.kernel_bridges(path) == {"br-0123456789ab"}
    assert db.kernel_bridges(str(tmp_path / "missing")) == set()


def test_the_query_asks_for_bridge_networks_only():
    assert db.NETWORKS_PATH == "/networks?filters=%7B%22driver%22%3A%20%5B%22bridge%22%5D%7D"


class Dockerd:
    def __init__(self, *networks):
        self.networks = list(networks)
        self.up = True

    def __call__(self):
        if not self.up:
            raise OSError("connection refused")
        return self.networks


def test_changes_and_dockerd_coming_back_are_reported(tmp_path):
    path = sysfs(tmp_path, bridges=["br-0123456789ab"])
    dockerd, seen = Dockerd(DEFAULT), []
    watcher = db.DockerBridges(dockerd, seen.append, sysfs=path)
    assert watcher.current == {"docker0", "br-0123456789ab"}          # before dockerd is asked
    watcher.poll_once()
    assert seen == []                                                 # nothing new
    dockerd.networks.append(NAMED)
    watcher.poll_once()
    assert seen == [{"docker0", "br-0123456789ab", "mybr0"}]
    dockerd.up = False                                                # restarting: keep its names
    watcher.poll_once()
    assert len(seen) == 1 and watcher.current == seen[0]
    dockerd.up = True                                                 # back: reorder even if unchanged
    watcher.poll_once()
    assert seen == [seen[0], seen[0]]
    watcher.poll_once()
    assert len(seen) == 2
    dockerd.networks.remove(NAMED)
    os.rmdir(tmp_path / "br-0123456789ab" / "bridge")
    watcher.poll_once()
    assert seen[-1] == {"docker0"}


def test_a_failing_callback_does_not_end_the_watch(tmp_path):
    import threading

    calls = []

    def boom(bridges):
        calls.append(bridges)
        raise RuntimeError("kernel said no")

    stop = threading.Event()
    watcher = db.DockerBridges(Dockerd(NAMED), boom, sysfs=sysfs(tmp_path), poll=0.01)
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if calls:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert calls and not thread.is_alive()


@pytest.mark.parametrize("answer", [[], [WARREN]])
def test_docker0_is_always_there(tmp_path, answer):
    watcher = db.DockerBridges(Dockerd(*answer), lambda b: None, sysfs=sysfs(tmp_path))
    assert watcher.poll_once() == {"docker0"}


def test_answers_no_interface_can_match_are_ignored(tmp_path):
    odd = [None, "x", {"Driver": "bridge", "Options": "nope", "Id": "0123456789abcdef"},
           {"Driver": "bridge", "Options": {db.NAME_OPTION: "has space; -j ACCEPT"}, "Id": "f" * 64},
           {"Driver": "bridge", "Id": "short"}]
    assert db.docker_bridges(odd) == {"br-0123456789ab"}
    watcher = db.DockerBridges(lambda: odd, lambda b: None, sysfs=sysfs(tmp_path))
    assert watcher.poll_once() == {"docker0", "br-0123456789ab"}


def test_errors_back_off_and_the_loop_goes_on(tmp_path, monkeypatch):
    import threading

    waits = []

    class Stop(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return len(waits) >= 5

    def failing():
        raise RuntimeError("a bug")
    watcher = db.DockerBridges(lambda: [], lambda b: None, sysfs=sysfs(tmp_path), poll=1.0)
    monkeypatch.setattr(watcher, "poll_once", failing)
    watcher.run(Stop())
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0]
