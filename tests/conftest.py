"""Shared fixtures: a real etcd for the session, and a clean keyspace per test."""
from __future__ import annotations

import shutil

import pytest

from datastore import keys
from tests.support.etcd import datastore_for, start_etcd


@pytest.fixture(scope="session")
def etcd_server():
    server = start_etcd("session")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
def store(etcd_server):
    """A Datastore on the session etcd; Warren's keys are wiped after each test."""
    ds = datastore_for(etcd_server)
    ds.delete_prefix(keys.PREFIX)
    try:
        yield ds
    finally:
        ds.delete_prefix(keys.PREFIX)
        ds.close()


@pytest.fixture
def private_etcd():
    """An etcd of this test's own, for tests that stop or kill it."""
    server = start_etcd("private")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
