"""A small, client-neutral vocabulary for etcd transactions.

Domain code builds transactions from these records; only
:mod:`datastore.client` (with :mod:`datastore.gateway`) turns them into
etcd requests, so the wire to etcd can be swapped without touching callers.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0


# --- comparisons --------------------------------------------------------

@dataclass(frozen=True)
class ModRevisionIs:
    """The key was last modified at ``revision``; 0 means the key is absent."""
    key: str
    revision: int


@dataclass(frozen=True)
class UnchangedSince:
    """No key under ``prefix`` was created or modified after ``revision``."""
    prefix: str
    revision: int


Compare = ModRevisionIs | UnchangedSince


# --- operations ---------------------------------------------------------

@dataclass(frozen=True)
class Put:
    key: str
    value: bytes | str
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Get:
    """Result: a :class:`KV` or None."""
    key: str


@dataclass(frozen=True)
class GetPrefix:
    """Result: a list of :class:`KV`."""
    prefix: str


Op = Put | Delete | Get | GetPrefix


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    # One entry per op of the branch that ran: KV | None for Get,
    # list[KV] for GetPrefix, None for Put and Delete.
    results: list
    revision: int  # the store revision after the transaction


@dataclass(frozen=True)
class Range:
    kvs: list[KV]
    revision: int  # the store revision the read saw

    def __iter__(self):
        return iter(self.kvs)

    def __len__(self) -> int:
        return len(self.kvs)


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: str
    value: bytes
    mod_revision: int
