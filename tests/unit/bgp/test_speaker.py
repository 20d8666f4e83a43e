"""The speaker supervisor without ExaBGP sessions: config rendering against a real etcd (and
ExaBGP's own ``validate``), refused renders, watch loops that survive, and processes that die
with their supervisor."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from bgp import speaker as spk
from bgp.settings import BgpSettings, PeerRecord, add_peer, load_speaker_state, save_settings
from datastore import codec, keys
from ipam.nodes import Node

WAIT = 10.0  # s, generous: never a timing assertion


def wait_for(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def nodes(store):
    for node in (Node("n1", "198.19.0.11"), Node("n2", "198.19.0.12"), Node("n3", "198.19.0.13")):
        store.put(keys.node(node.name), codec.dumps(node))
    return store


@pytest.fixture
def speaker(nodes, tmp_path):
    return spk.Speaker("n1", nodes, str(tmp_path), str(tmp_path))


def conf(speaker):
    return open(speaker.conf_path).read()


def test_config_is_checked_by_exabgp_and_written(speaker):
    assert os.path.exists(speaker.exabgp), "ExaBGP is installed in the venv"
    add_peer(speaker.store, PeerRecord("198.19.0.50", 65000, "it's \"quoted\""))
    config, changed = speaker.write_config()
    assert changed and {p.address for p in config.peers} == {"198.19.0.12", "198.19.0.13", "198.19.0.50"}
    assert speaker.check_file(speaker.conf_path) is None  # ExaBGP reads it
    assert speaker.state.config_ok and speaker.state.skipped == []
    assert speaker.write_config()[1] is False  # unchanged: not rewritten


def test_bad_peer_records_written_directly_are_left_out_not_rendered(speaker):
    speaker.write_config()
    before = conf(speaker)
    store = speaker.store
    store.put(keys.bgp_peer("198.19.0.60"), json.dumps({"address": "198.19.0.60", "as_number": 2**32}).encode())
    store.put(keys.bgp_peer("198.19.0.61"), json.dumps({"address": "198.19.0.61", "as_number": 0}).encode())
    store.put(keys.bgp_peer("198.19.0.12"), codec.dumps(PeerRecord("198.19.0.12", 65099)))  # node n2's address
    store.put(keys.bgp_peer("0.0.0.0"), json.dumps({"address": "0.0.0.0", "as_number": 65099}).encode())
    store.put(keys.node_bgp_peer("n1", "198.19.0.62"),
              json.dumps({"address": "198.19.0.62", "as_number": 65000, "password": "caf\u00e9"}).encode())
    store.put(keys.node("x"), b"{}")
    store.put(keys.BGP_CONFIG, json.dumps({"default_as": 0}).encode())
    config, changed = speaker.write_config()
    assert not changed and conf(speaker) == before
    assert {(p.address, p.as_number, p.kind) for p in config.peers} == {
        ("198.19.0.12", 64512, "mesh"), ("198.19.0.13", 64512, "mesh")}
    assert speaker.state.config_ok
    skipped = speaker.state.skipped
    assert "global peer 198.19.0.12: the address of node n2" in skipped
    for key in (keys.bgp_peer("198.19.0.60"), keys.bgp_peer("198.19.0.61"), keys.bgp_peer("0.0.0.0"),
                keys.node_bgp_peer("n1", "198.19.0.62"), keys.node("x"), keys.BGP_CONFIG):
        assert any(f" at {key}: " in s for s in skipped), (key, skipped)
    assert len(skipped) == 7


def test_a_refused_render_keeps_the_working_config(speaker, monkeypatch):
    speaker.write_config()
    before = conf(speaker)
    speaker.store.put(keys.node("n1"), json.dumps({"name": "n1", "ipv4": "198.19.0.11", "as_number": 0}).encode())
    with pytest.raises(spk.ConfigRefused):
        speaker.write_config()
    assert conf(speaker) == before
    assert not speaker.state.config_ok and speaker.state.render_failures == 1
    speaker.store.put(keys.node("n1"), codec.dumps(Node("n1", "198.19.0.11", as_number=65001)))
    # something our grammar lets through but ExaBGP does not: ExaBGP's check refuses it
    monkeypatch.setattr(spk, "render", lambda config: "neighbor 198.19.0.12 { md5-password \"it's\"; }\n")
    with pytest.raises(spk.ConfigRefused, match="exabgp validate refused"):
        speaker.write_config()
    assert conf(speaker) == before and not os.path.exists(speaker.conf_path + ".new")
    assert speaker.state.render_failures == 2 and "invalid syntax" in speaker.state.config_error
    speaker.publish()
    published = load_speaker_state(speaker.store, "n1")
    assert published is not None and not published.config_ok and published.render_failures == 2
    monkeypatch.undo()
    assert speaker.write_config()[1] and speaker.state.config_ok and "local-as 65001;" in conf(speaker)


def test_the_watch_loop_survives_unexpected_errors(speaker, monkeypatch):
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RuntimeError("boom")
        return None, False

    monkeypatch.setattr(speaker, "write_config", flaky)
    monkeypatch.setattr(speaker.stop, "wait", lambda timeout=None: speaker.stop.is_set())  # no backoff sleep
    thread = threading.Thread(target=speaker.follow, args=(keys.NODES,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(calls) >= 3)  # failed twice, then watching
        count = len(calls)
        speaker.store.put(keys.node("n4"), codec.dumps(Node("n4", "198.19.0.14")))
        wait_for(lambda: len(calls) > count)
        assert thread.is_alive()
    finally:
        speaker.stop.set()
        thread.join(WAIT)


def test_settings_change_reloads(speaker):
    speaker.write_config()
    save_settings(speaker.store, BgpSettings(default_as=65123))
    assert speaker.write_config()[1] and "local-as 65123;" in conf(speaker)


# --- processes ----------------------------------------------------------------------------

SUPERVISOR = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    from bgp.speaker import die_with_parent
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            preexec_fn=die_with_parent(os.getpid()))
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
    print(proc.pid, flush=True)
    time.sleep(600)
""")


def test_a_child_dies_with_its_killed_supervisor():
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
    try:
        child = int(supervisor.stdout.readline())
        assert spk._alive(child)
        supervisor.kill()  # kill -9
        supervisor.wait()
        wait_for(lambda: not spk._alive(child))
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def fake_exabgp(tmp_path, conf_path):
    """A process whose command line is ``python .../exabgp server CONF``, not our child."""
    script = tmp_path / "exabgp"
    script.write_text("import time\ntime.sleep(600)\n")
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" "{script}" server "{conf_path}" >/dev/null 2>&1 & '
                          'echo $!'], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    wait_for(lambda: spk._is_speaker(pid, conf_path))
    return pid


def test_a_speaker_left_by_an_earlier_agent_is_killed_before_starting(tmp_path):
    conf_path = str(tmp_path / "exabgp.conf")
    pid_path = str(tmp_path / "exabgp.pid")
    orphan = fake_exabgp(tmp_path, conf_path)
    other = fake_exabgp(tmp_path, str(tmp_path / "other.conf"))  # another node's: left alone
    try:
        assert spk.leftover_speakers(conf_path) == [orphan]
        assert spk.kill_leftovers(pid_path, conf_path) == [orphan]
        assert not spk._alive(orphan) and spk._alive(other)
        # found through the pid file as well
        again = fake_exabgp(tmp_path, conf_path)
        spk._write_pid(pid_path, again)
        assert spk.kill_leftovers(pid_path, conf_path) == [again]
        assert spk.kill_leftovers(pid_path, conf_path) == []
    finally:
        for pid in (orphan, other):
            if spk._alive(pid):
                os.kill(pid, signal.SIGKILL)
