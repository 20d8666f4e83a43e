"""One lab for the operations tests: two Warren nodes on a 3-member etcd cluster with TLS.

Package-scoped so the failover, TLS and diags modules share it (a lab with
nodes costs tens of seconds on two busy cores). Tests that fail a member bring
it back in ``finally``; each module removes only the containers and networks it
made.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass

import pytest

from ctl.lab import Lab, procs
from tests.e2e.helpers import dk


@pytest.fixture(scope="package")
def ops_lab():
    lab = Lab("o" + secrets.token_hex(3))
    try:
        lab.up(2, node=True, etcd_members=3, etcd_tls=True)
        yield lab
    finally:
        lab.down()


def remove(lab: Lab, host: str, containers: list[str] = (), networks: list[str] = ()) -> None:
    """Remove the named containers and networks on ``host`` (best effort: test clean-up)."""
    if containers:
        dk(lab, host, "rm", "-f", *containers, check=False)
    if networks:
        dk(lab, host, "network", "rm", *networks, check=False)


@dataclass(frozen=True)
class PrivateNetns:
    name: str
    inode: int


@pytest.fixture
def private_netns():
    """A fresh network namespace (lo up) for a test that runs a whole node in it; on teardown
    everything still running in it is ours (it did not exist before) and is stopped."""
    name = "wop" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True)
    inode = os.stat(f"/run/netns/{name}").st_ino
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield PrivateNetns(name, inode)
    finally:
        procs.terminate(procs.find(net_inodes=[inode]), timeout=10)  # only what runs in our netns
        subprocess.run(["ip", "netns", "del", name], check=False)
