"""No address is ever held twice (issue 12 item 6), with real dockerd in a 1-host warren-lab.

``warrenctl pool remove --force`` under running containers keeps their addresses
allocated (as Calico did); after the pool is added again, new containers get other
addresses, the old ones keep working, and when they go their addresses (and the blocks
kept for them) go too.
"""
from __future__ import annotations

import json

import pytest

from ctl.lab import IMAGE
from tests.e2e.helpers import E2E, address, ctl, dk, lab_fixture, pings, remove_all, run

pytestmark = E2E

lab = lab_fixture("d2p", 1)

POOL = "10.20.40.0/26"  # four /28 blocks: the second wave must reuse the kept ones' ranges


@pytest.fixture(autouse=True)
def clean(lab):
    yield
    remove_all(lab, ("host1",))
    ctl(lab, "host1", "pool", "remove", POOL, "--force", check=False)


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
