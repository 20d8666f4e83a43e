"""Errors raised by the datastore.

Callers see exactly two kinds: :class:`DatastoreUnavailable` when no etcd
member answered in time (the message names every endpoint tried), and
:class:`DatastoreError` for everything else etcd refused. No socket, TLS or
HTTP exception ever leaves this package.
"""
from __future__ import annotations


class DatastoreError(Exception):
    """etcd answered, but the request failed (or the configuration is wrong)."""


class ConfigError(DatastoreError):
    """The etcd endpoints or TLS settings are unusable."""


class DatastoreUnavailable(DatastoreError):
    """No etcd member could be reached within the timeout."""

    def __init__(self, endpoints: list[str], reasons: list[str]):
        self.endpoints = endpoints
        self.reasons = reasons
        detail = "; ".join(reasons) if reasons else "no endpoint configured"
        super().__init__(
            f"etcd is unreachable at {', '.join(endpoints)} ({detail})")
