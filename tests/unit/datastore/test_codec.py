"""datastore.codec: every record read is checked against its dataclass; listings skip bad records."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from datastore import codec
from datastore.codec import InvalidRecord
from datastore.ops import KV


@dataclass
class Rec:
    name: str
    port: int = 0
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    on: bool = False
    extra: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")


def test_round_trip_and_unknown_fields_ignored():
    rec = Rec("a", 80, ["x"], None, True, {"k": 1})
    assert codec.loads(Rec, codec.dumps(rec)) == rec
    assert codec.loads(Rec, b'{"name":"a","future":1}') == Rec("a")


@pytest.mark.parametrize("raw, reason", [
    (b"garbage", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b"{}", "'name' is missing"),
    (b'{"name":5}', "'name' should be str"),
    (b'{"name":"a","port":"80"}', "'port' should be int"),
    (b'{"name":"a","port":true}', "'port' should be int"),
    (b'{"name":"a","tags":"x"}', "'tags' should be"),
    (b'{"name":"a","tags":[1]}', "'tags' should be"),
    (b'{"name":"a","note":[]}', "'note' should be"),
    (b'{"name":"a","on":1}', "'on' should be bool"),
    (b'{"name":"a","extra":{"k":"v"}}', "'extra' should be"),
    (b'{"name":"a","port":70000}', "port 70000 out of range"),
])
def test_invalid_records_raise_with_reason_and_key(raw, reason):
    with pytest.raises(InvalidRecord) as info:
        codec.loads(Rec, raw, "/warren/v1/x")
    assert reason in str(info.value)
    assert "/warren/v1/x" in str(info.value)


def test_load_all_skips_counts_and_reports(monkeypatch):
    seen = []
    monkeypatch.setattr(codec, "on_invalid", seen.append)
    before = codec.SKIPPED["Rec"]
    kvs = [KV("/k/1", b'{"name":"a"}', 1, 1), KV("/k/2", b"{}", 2, 2), KV("/k/3", b'{"name":"c"}', 3, 3)]
    assert [r.name for r in codec.load_all(Rec, kvs)] == ["a", "c"]
    assert codec.SKIPPED["Rec"] == before + 1
    assert seen == ["Rec"]


def test_a_failing_hook_does_not_break_the_reader(monkeypatch):
    def boom(_name):
        raise RuntimeError("metric down")
    monkeypatch.setattr(codec, "on_invalid", boom)
    assert codec.load_all(Rec, [KV("/k/1", b"1", 1, 1)]) == []


def test_invalid_record_is_a_datastore_error():
    from datastore import DatastoreError
    assert issubclass(InvalidRecord, DatastoreError)


def test_dumps_refuses_an_invalid_record():
    with pytest.raises(InvalidRecord, match="port 70000 out of range"):
        codec.dumps(Rec("a", 70000))
    assert codec.dumps(Rec("a", 80)) == b'{"name":"a","port":80,"tags":[],"note":null,"on":false,"extra":{}}'


@dataclass
class Keyed:
    name: str

    def check_key(self, key: str) -> None:
        if not key.endswith("/" + self.name):
            raise ValueError(f"{self.name} does not belong at {key}")


def test_check_key_only_when_the_key_is_known():
    assert codec.loads(Keyed, b'{"name":"a"}') == Keyed("a")
    assert codec.loads(Keyed, b'{"name":"a"}', "/k/a") == Keyed("a")
    with pytest.raises(InvalidRecord, match="a does not belong at /k/b"):
        codec.loads(Keyed, b'{"name":"a"}', "/k/b")


def test_load_one_treats_invalid_as_absent_and_counts():
    before = codec.SKIPPED["Rec"]
    assert codec.load_one(Rec, None) is None
    assert codec.load_one(Rec, KV("/k/1", b'{"name":"a"}', 1, 1)) == Rec("a")
    assert codec.load_one(Rec, KV("/k/2", b'{"name":1}', 1, 1)) is None
    assert codec.SKIPPED["Rec"] == before + 1


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"\xff\xfe", b"NaN", b'"x"', b"null"])
def test_hostile_bytes_are_just_invalid(raw):
    with pytest.raises(InvalidRecord):
        codec.loads(Rec, raw)


def test_an_unexpected_error_in_validate_is_the_records_fault():
    @dataclass
    class Fragile:
        items: list[int]

        def validate(self) -> None:
            self.items[5]  # IndexError on a short list: the record is invalid, the reader goes on

    with pytest.raises(InvalidRecord, match="Fragile"):
        codec.loads(Fragile, b'{"items":[1]}')
