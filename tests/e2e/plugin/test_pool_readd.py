"""No address is ever held twice (issue 12 item 6), with real dockerd in a 1-host warren-lab.

``warrenctl pool remove --force`` under running containers keeps their addresses
allocated (as Calico did); after the pool is added again, new containers get other
addresses, the old ones keep working, and when they go their addresses (and the blocks
kept for them) go too. An address a leftover endpoint record names is never handed out.
"""
from __future__ import annotations

import json
import sys

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import REPO, E2E, address, ctl, dk, lab_fixture, pings, remove_all, run

pytestmark = E2E

lab = lab_fixture("d2p", 1)

POOL = "10.20.40.0/26"  # four /28 blocks: the second wave must reuse the kept ones' ranges


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, ("host1",))
    for pool in (POOL, "10.20.41.0/28"):
        ctl(lab, "host1", "pool", "remove", pool, "--force", check=False)


def blocks(lab) -> list[dict]:
    return json.loads(ctl(lab, "host1", "ipam", "show", "--json").stdout)


def test_remove_and_re_add_a_pool_under_running_containers(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", POOL,
       "--ipam-opt", "block-size=28", "netre")
    first = [f"old{i}" for i in range(6)]
    for name in first:
        run(lab, "host1", name, "netre")
    old = {name: address(lab, "host1", name, "netre") for name in first}
    assert len(set(old.values())) == len(old)

    refused = ctl(lab, "host1", "pool", "remove", POOL, check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    removed = ctl(lab, "host1", "pool", "remove", POOL, "--force").stdout
    assert f"Removed pool {POOL}" in removed and "6 allocated addresses stay allocated" in removed
    assert POOL not in ctl(lab, "host1", "pool", "show").stdout
    assert pings(lab, "host1", "old0", old["old1"])  # the containers keep working meanwhile

    ctl(lab, "host1", "pool", "add", POOL, "--block-size", "28")
    second = [f"new{i}" for i in range(10)]
    for name in second:
        run(lab, "host1", name, "netre")
    new = {name: address(lab, "host1", name, "netre") for name in second}
    everything = list(old.values()) + list(new.values())
    assert len(set(everything)) == len(everything), f"an address is held twice: {sorted(everything)}"
    taken = dk(lab, "host1", "run", "--rm", "--init", "--net", "netre", "--ip", old["old2"], IMAGE, "true",
               check=False)
    assert taken.returncode != 0 and "already in use" in taken.stderr
    for name in ("old3", "new0"):  # old and new containers reach each other
        target = new["new1"] if name.startswith("old") else old["old4"]
        assert pings(lab, "host1", name, target)
    for name in second:
        info = ctl(lab, "host1", "ipam", "info", new[name]).stdout
        assert "purpose=docker" in info

    dk(lab, "host1", "rm", "-f", *first, *second)
    assert sum(b["used"] for b in blocks(lab)) == 0


def test_blocks_kept_for_a_removed_pool_go_with_their_last_address(lab):
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", POOL,
       "--ipam-opt", "block-size=28", "netgone")
    run(lab, "host1", "lone", "netgone")
    assert address(lab, "host1", "lone", "netgone").startswith("10.20.40.")
    ctl(lab, "host1", "pool", "remove", POOL, "--force")
    kept = [b for b in blocks(lab) if b["used"]]
    assert len(kept) == 1 and kept[0]["used"] == 1
    dk(lab, "host1", "rm", "-f", "lone")  # dockerd's ReleaseAddress finds the pool-less block
    assert blocks(lab) == []


LEFTOVER = "f" * 64


def etcd_python(lab, code: str) -> str:
    result = lab.exec("host1", [sys.executable, "-c",
                                "from datastore import Datastore, EtcdConfig, codec, keys; "
                                "from ipam.workloads import Endpoint; "
                                "store = Datastore(EtcdConfig.from_env()); " + code], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_address_a_leftover_record_names_is_never_handed_out(lab):
    """The isolation break of issue 12: a record outlived its container (here: of a host that
    died), its address was released, and the next container with that address got the old
    record's network tag. Now IPAM keeps the address for the record instead."""
    small = "10.20.41.0/28"  # 16 addresses, one block
    dk(lab, "host1", "network", "create", "-d", "warren", "--ipam-driver", "warren", "--subnet", small,
       "--ipam-opt", "block-size=28", "netleft")
    run(lab, "host1", "first", "netleft")
    named = address(lab, "host1", "first", "netleft")
    try:
        # a record of a host that is gone naming that address (the janitor of host1 leaves other
        # hosts' records alone), then the container goes and dockerd releases the address
        etcd_python(lab, f"store.put(keys.endpoint('ghost', '{LEFTOVER}'), codec.dumps(Endpoint("
                         f"id='{LEFTOVER}', network='', host='ghost', ipv4=['{named}'], profiles=['other'])))")
        dk(lab, "host1", "rm", "-f", "first")
        taken = dk(lab, "host1", "run", "--rm", "--init", "--net", "netleft", "--ip", named, IMAGE, "true",
                   check=False)
        assert taken.returncode != 0 and "still names it" in taken.stderr
        names = [f"fill{i}" for i in range(15)]
        for name in names:
            run(lab, "host1", name, "netleft")
        got = [address(lab, "host1", name, "netleft") for name in names]
        assert named not in got and len(set(got)) == 15
        full = dk(lab, "host1", "run", "--rm", "--init", "--net", "netleft", IMAGE, "true", check=False)
        assert full.returncode != 0 and "no free address" in full.stderr
        info = ctl(lab, "host1", "ipam", "info", named).stdout
        assert f"endpoint-{LEFTOVER}" in info and "purpose=record" in info
    finally:
        etcd_python(lab, f"store.delete(keys.endpoint('ghost', '{LEFTOVER}'))")
        ctl(lab, "host1", "ipam", "release", named, check=False)
