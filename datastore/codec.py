"""Records stored in etcd are dataclasses serialised as compact JSON, checked where they are read.

Writing: :func:`dumps`. A record class may define ``to_dict``/``from_dict``
for nested data; otherwise its fields are written as they are. A record is
validated before it is written too (its ``validate()``): our own code can
never store a record our readers would skip; :func:`dumps` raises
:class:`InvalidRecord` instead.

Reading is the datastore boundary of every record type, so it is where a
record is validated (etcd is shared: any client with access can write
anything, and one bad record must never stop a node):

* :func:`loads` decodes one record and raises :class:`InvalidRecord` (a
  :class:`DatastoreError`) when it is not JSON, not an object, a field has the
  wrong type (checked against the dataclass's annotations: ``str``, ``int``,
  ``bool``, ``float``, ``list[...]``, ``dict[str, ...]``, ``X | None``), a
  required field is missing, or the class's own ``validate()`` (semantic
  checks: addresses, CIDRs, ranges; :mod:`datastore.fields` has the usual
  ones) raises (``ValueError`` with a one-line reason; any other exception a
  check trips on also marks the record invalid, never the reader), or, given the key it was read
  from, the class's ``check_key(key)`` refuses it (a record must sit under
  the key its own fields name: ``endpoints/h1/E`` holds endpoint E of h1).
  Unknown fields are ignored, so older code reads records newer code wrote.
* :func:`load_each` decodes the values of a listing, *skipping* the invalid
  ones: each skip is logged once per key and revision and counted
  (:data:`SKIPPED`, and :data:`on_invalid` so a process can feed a metric:
  :mod:`datastore.metrics`, installed by default in node processes).
  Readers that list a prefix use it; a reader of one key decides itself:
  treat it as absent (:func:`load_one`, also counted) or refuse the request
  with the error (:func:`loads`).

What a record may contain is defined once, by its dataclass and its
``validate()``; :mod:`ctl.records` (``warrenctl status``, ``diags``) scans
every prefix with the same classes to report what readers skip.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import types
import typing
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, TypeVar

from .errors import DatastoreError

log = logging.getLogger(__name__)

R = TypeVar("R")


class InvalidRecord(DatastoreError):
    """A stored record that does not match its schema."""

    def __init__(self, cls_name: str, reason: str, key: str | None = None):
        self.cls_name = cls_name
        self.reason = reason
        self.key = key
        where = f" at {key}" if key else ""
        super().__init__(f"invalid {cls_name} record{where}: {reason}")


SKIPPED: Counter[str] = Counter()          # record class name -> records skipped by this process
on_invalid: Callable[[str], None] | None = None  # called with the class name on every skip
_logged: set[tuple[str, int]] = set()
_lock = threading.Lock()


def dumps(record: Any) -> bytes:
    """The record as compact JSON; :class:`InvalidRecord` if its ``validate()`` refuses it."""
    validate = getattr(record, "validate", None)
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidRecord(type(record).__name__, str(exc) or type(exc).__name__) from None
    data = record.to_dict() if hasattr(record, "to_dict") else dataclasses.asdict(record)
    return json.dumps(data, separators=(",", ":")).encode()


def loads(cls: type[R], raw: bytes | str, key: str | None = None) -> R:
    """Decode and validate one record of ``cls``; :class:`InvalidRecord` if it is not one."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidRecord(cls.__name__, f"not JSON ({exc})", key) from None
    if not isinstance(data, dict):
        raise InvalidRecord(cls.__name__, f"not a JSON object but {type(data).__name__}", key)
    try:
        if hasattr(cls, "from_dict"):
            record = cls.from_dict(data)  # type: ignore[attr-defined]
        else:
            record = cls(**_checked_fields(cls, data))
        validate = getattr(record, "validate", None)
        if validate is not None:
            validate()
        check_key = getattr(record, "check_key", None)
        if key is not None and check_key is not None:
            check_key(key)
    except InvalidRecord:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the data makes a check trip on, it is the data's fault
        raise InvalidRecord(cls.__name__, str(exc) or type(exc).__name__, key) from None
    return record


def load_each(cls: type[R], kvs: Iterable[Any]) -> Iterator[tuple[Any, R]]:
    """``(kv, record)`` for each valid record among ``kvs`` (etcd KVs); invalid ones skipped and counted."""
    for kv in kvs:
        try:
            yield kv, loads(cls, kv.value, kv.key)
        except InvalidRecord as exc:
            skipped(exc, getattr(kv, "mod_revision", 0))


def load_one(cls: type[R], kv: Any) -> R | None:
    """The record at ``kv`` (an etcd KV or None), or None when absent or invalid (skipped and counted)."""
    if kv is None:
        return None
    try:
        return loads(cls, kv.value, kv.key)
    except InvalidRecord as exc:
        skipped(exc, getattr(kv, "mod_revision", 0))
        return None


def load_all(cls: type[R], kvs: Iterable[Any]) -> list[R]:
    """The valid records among ``kvs``, in order (see :func:`load_each`)."""
    return [record for _, record in load_each(cls, kvs)]


def skipped(exc: InvalidRecord, revision: int = 0) -> None:
    """Count a record a reader skipped; log it once per key and revision."""
    with _lock:
        SKIPPED[exc.cls_name] += 1
        first = (exc.key or "", revision) not in _logged
        if first:
            if len(_logged) > 10_000:
                _logged.clear()
            _logged.add((exc.key or "", revision))
    if first:
        log.warning("skipped %s", exc)
    if on_invalid is None:
        _install_default_hook()
    hook = on_invalid
    if hook is not None:
        try:
            hook(exc.cls_name)
        except Exception:  # a metric must never break a reader
            log.exception("on_invalid hook failed")


def _install_default_hook() -> None:
    try:
        from .metrics import install_default  # a node process counts skips even if it did not ask
        install_default()
    except Exception:  # prometheus_client missing or broken: the reader goes on regardless
        log.debug("no skipped-records metric", exc_info=True)


# --- type checks against the dataclass annotations ---------------------------------

def _checked_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"field {f.name!r} is missing")
            continue
        value = data[f.name]
        hint = hints.get(f.name, Any)
        if not _matches(value, hint):
            raise ValueError(f"field {f.name!r} should be {_describe(hint)}, not {json.dumps(value)[:60]}")
        out[f.name] = value
    return out


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return isinstance(value, dict) and (not args or all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()))
    return True  # a nested type with no declared check: its from_dict/validate decides


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
