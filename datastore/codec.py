"""Records stored in etcd are dataclasses serialised as compact JSON.

A record class may define ``to_dict``/``from_dict`` for nested data;
otherwise its fields are written as they are. Unknown fields in stored JSON
are ignored, so older code can read records written by newer code.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from .errors import DatastoreError

R = TypeVar("R")


def dumps(record: Any) -> bytes:
    data = record.to_dict() if hasattr(record, "to_dict") else dataclasses.asdict(record)
    return json.dumps(data, separators=(",", ":")).encode()


def loads(cls: type[R], raw: bytes | str) -> R:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DatastoreError(f"corrupt {cls.__name__} record in etcd: {exc}") from None
    if hasattr(cls, "from_dict"):
        return cls.from_dict(data)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
