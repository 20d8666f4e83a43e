"""ProfileStore against a real etcd: create-if-absent, CAS updates, concurrent writers."""
from __future__ import annotations

import threading

import pytest

from datastore import codec, keys
from profiles import Profile, ProfileError, ProfileExists, ProfileNotFound, ProfileStore
from profiles.grammar import parse_rule


def rule(text: str):
    return parse_rule(text.split())


@pytest.fixture
def profiles(store):
    return ProfileStore(store)


def test_add_get_list_remove(profiles, store):
    profiles.add(Profile.new("web"))
    profiles.add(Profile.new("db"))
    assert profiles.get("web") == Profile.new("web")
    assert profiles.names() == ["db", "web"]
    assert [p.name for p in profiles.list()] == ["db", "web"]
    assert store.get(keys.profile("web")) is not None
    profiles.remove("web")
    assert profiles.find("web") is None and profiles.names() == ["db"]


def test_add_refuses_a_duplicate_and_keeps_the_original(profiles):
    changed = Profile("web", ["web", "x"])
    profiles.add(changed)
    with pytest.raises(ProfileExists, match="profile web already exists"):
        profiles.add(Profile.new("web"))
    assert profiles.get("web") == changed


def test_missing_profiles(profiles):
    with pytest.raises(ProfileNotFound, match="profile nope does not exist"):
        profiles.get("nope")
    with pytest.raises(ProfileNotFound):
        profiles.remove("nope")
    with pytest.raises(ProfileNotFound):
        profiles.add_tag("nope", "t")
    with pytest.raises(ProfileError, match="invalid profile name"):
        profiles.get("a/b")


def test_tags(profiles):
    profiles.add(Profile.new("web"))
    assert profiles.add_tag("web", "frontend") is True
    assert profiles.add_tag("web", "frontend") is False
    assert profiles.get("web").tags == ["frontend", "web"]
    profiles.remove_tag("web", "web")
    assert profiles.get("web").tags == ["frontend"]
    with pytest.raises(ProfileError, match="tag web is not on profile web"):
        profiles.remove_tag("web", "web")
    with pytest.raises(ProfileError, match="invalid tag"):
        profiles.add_tag("web", "a b")


def test_rules_positions_duplicates_and_removal(profiles):
    profiles.add(Profile.new("web"))
    ssh, http = rule("deny tcp to ports 22"), rule("allow tcp to ports 80")
    assert profiles.add_rule("web", "inbound", ssh, position=1) == 1
    assert profiles.add_rule("web", "inbound", http) == 3
    assert profiles.add_rule("web", "inbound", http, position=1) is None  # already there
    assert profiles.get("web").inbound_rules == [ssh, rule("allow from tag web"), http]
    with pytest.raises(ProfileError, match="position 5 is out of range: inbound rules of web take 1-4"):
        profiles.add_rule("web", "inbound", rule("deny udp"), position=5)
    with pytest.raises(ProfileError, match="position 0 is out of range"):
        profiles.add_rule("web", "inbound", rule("deny udp"), position=0)

    assert profiles.remove_rule("web", "inbound", rule=http) == (3, http)
    assert profiles.remove_rule("web", "inbound", position=1) == (1, ssh)
    with pytest.raises(ProfileError, match="profile web has no such inbound rule"):
        profiles.remove_rule("web", "inbound", rule=http)
    with pytest.raises(ProfileError, match="position 2 is out of range: inbound rules of web are 1-1"):
        profiles.remove_rule("web", "inbound", position=2)
    profiles.remove_rule("web", "outbound", position=1)
    with pytest.raises(ProfileError, match="there are no rules"):
        profiles.remove_rule("web", "outbound", position=1)
    assert profiles.get("web").outbound_rules == []


def test_set_rules_keeps_tags(profiles):
    profiles.add(Profile("web", ["a", "b"]))
    profiles.set_rules("web", [rule("allow")], [rule("deny icmp")])
    p = profiles.get("web")
    assert (p.tags, p.inbound_rules, p.outbound_rules) == (["a", "b"], [rule("allow")], [rule("deny icmp")])


def test_update_retries_when_another_writer_wins(profiles, store):
    profiles.add(Profile.new("web"))
    calls = []

    def change(p: Profile) -> Profile:
        calls.append(list(p.tags))
        if len(calls) == 1:  # someone else writes between our read and our CAS
            store.put(keys.profile("web"), codec.dumps(Profile("web", ["web", "theirs"])))
        return Profile(p.name, p.tags + ["ours"], p.inbound_rules, p.outbound_rules)
    profiles.update("web", change)
    assert calls == [["web"], ["theirs", "web"]]
    assert profiles.get("web").tags == ["ours", "theirs", "web"]


def test_concurrent_writers_lose_nothing(profiles):
    profiles.add(Profile.new("web"))
    errors = []

    def work(i: int) -> None:
        try:
            profiles.add_tag("web", f"t{i}")
            profiles.add_rule("web", "outbound", rule(f"deny tcp to ports {1000 + i}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    p = profiles.get("web")
    assert set(p.tags) == {"web", *(f"t{i}" for i in range(8))}
    assert {r.dst_ports[0] for r in p.outbound_rules[1:]} == set(range(1000, 1008))
