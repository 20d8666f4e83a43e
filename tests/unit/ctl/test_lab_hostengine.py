"""warren-lab's host engine choices and dockerd command line (ctl/lab/hostengine.py), without a kernel."""
from __future__ import annotations

import os

import pytest

from ctl.lab import hostengine
from ctl.lab.engines import Engine
from ctl.lab.hostengine import ChoiceError
from ctl.lab.layout import Layout


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(hostengine.ENGINE_ENV, raising=False)
    monkeypatch.delenv(hostengine.FIREWALL_ENV, raising=False)


def engine(tmp_path, compose: bool = True) -> Engine:
    return Engine("28", str(tmp_path / "28"), "sid", "http://m.example/debian", {"docker.io": "28.5.2"},
                  str(tmp_path / "28/root/usr/sbin/dockerd"), str(tmp_path / "28/root/usr/bin/docker"),
                  str(tmp_path / "28/root/compose") if compose else None, "Docker version 28.5.2")


def test_engine_defaults_to_env_then_newest(monkeypatch):
    assert hostengine.choose_engine() == "28"
    monkeypatch.setenv(hostengine.ENGINE_ENV, "20.10")
    assert hostengine.choose_engine() == "20.10" and hostengine.choose_engine("") == "20.10"
    assert hostengine.choose_engine("26") == "26"   # an explicit choice wins


def test_bad_engine_names_its_source(monkeypatch):
    with pytest.raises(ChoiceError, match=r"^unknown engine '27': choose one of 20.10, 26, 28$"):
        hostengine.choose_engine("27")
    monkeypatch.setenv(hostengine.ENGINE_ENV, "latest")
    with pytest.raises(ChoiceError, match=r"'latest' \(from \$WARREN_LAB_ENGINE\)"):
        hostengine.choose_engine()


def test_firewall_defaults_on_env_and_values(monkeypatch):
    assert hostengine.choose_firewall() is True
    assert hostengine.choose_firewall(False) is False and hostengine.choose_firewall("OFF") is False
    monkeypatch.setenv(hostengine.FIREWALL_ENV, "off")
    assert hostengine.choose_firewall() is False and hostengine.choose_firewall("on") is True
    monkeypatch.setenv(hostengine.FIREWALL_ENV, "yes")
    with pytest.raises(ChoiceError, match=r"not 'yes' \(from \$WARREN_LAB_DOCKER_FIREWALL\)"):
        hostengine.choose_firewall()


def test_dockerd_argv_keeps_paths_under_the_host_and_firewall_flags():
    h = Layout("t1", 3, root="/x").host(2)
    on = hostengine.dockerd_argv(h, "/e/dockerd", True)
    off = hostengine.dockerd_argv(h, "/e/dockerd", False)
    assert on[0] == "/e/dockerd" and off[:len(on)] == on
    assert off[len(on):] == ["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"]
    assert not any(a.startswith(("--bridge", "--iptables", "--ip6tables", "--ip-masq")) for a in on)
    paths = [a for a in on if a.startswith("/") and a != "/e/dockerd"]
    assert paths and all(p.startswith(("/x/t1/host2/", "/warren-lab-t1-host2")) for p in paths)
    assert on[on.index("-H") + 1] == "unix:///x/t1/host2/docker.sock"


def test_host_path_puts_the_engine_first_once(tmp_path):
    eng = engine(tmp_path)
    path = hostengine.host_path(f"/venv/bin:{eng.bin_dir}:/usr/bin", eng)
    assert path == f"{eng.bin_dir}:/venv/bin:/usr/bin"
    assert hostengine.host_path("/usr/bin", None) == "/usr/bin"


def test_docker_config_links_compose_plugin(tmp_path):
    h = Layout("t1", 3, root=str(tmp_path)).host(1)
    eng = engine(tmp_path)
    hostengine.prepare_host(h, eng)
    hostengine.prepare_host(h, eng)   # idempotent
    link = os.path.join(hostengine.docker_config(h), "cli-plugins")
    assert os.readlink(link) == os.path.join(eng.dir, "cli-plugins")
    h2 = Layout("t1", 3, root=str(tmp_path)).host(2)
    hostengine.prepare_host(h2, engine(tmp_path, compose=False))
    assert os.listdir(hostengine.docker_config(h2)) == []


def test_engine_from_state_round_trip(tmp_path):
    eng = engine(tmp_path)
    assert hostengine.from_state({"engine": eng.to_json()}) == eng
    assert hostengine.from_state({}) is None


def test_docker_version_of_nothing_is_none(tmp_path):
    assert hostengine.docker_version(str(tmp_path / "no.sock")) is None
