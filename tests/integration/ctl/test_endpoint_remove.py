"""``warrenctl endpoint remove``: refuses a joined endpoint of a running container unless
--force, removes record, gateway slot and addresses (a fake dockerd, a real etcd)."""
from __future__ import annotations

from datastore import keys
from tests.integration.ctl.test_ipam_check import (  # noqa: F401 (fixtures)
    CREATED, FOREIGN, HOST, LIVE, LOST, assigned, ctl, dockerd, seed)
from tests.integration.profiles.test_cli import error, ok


def test_remove_an_orphan(ctl, store):
    addresses = seed(store)
    assert ok(ctl("endpoint", "remove", LOST[:12])) == \
        f"Removed endpoint {LOST[:12]} of host {HOST}; released {addresses[LOST]}\n"
    assert store.get(keys.endpoint(HOST, LOST)) is None and not assigned(store, addresses[LOST])
    assert store.get(keys.sandbox_slot(HOST, f"/var/run/docker/netns/{LOST[:12]}", 1)) is None
    assert error(ctl("endpoint", "remove", LOST[:12])) == f"endpoint {LOST[:12]} does not exist"


def test_a_joined_endpoint_of_a_running_container_needs_force(ctl, store):
    addresses = seed(store)
    assert error(ctl("endpoint", "remove", LIVE[:8])) == (
        f"endpoint {LIVE[:12]} is joined to running container {'c' * 12}: "
        "remove the container, or use --force")
    assert store.get(keys.endpoint(HOST, LIVE)) is not None and assigned(store, addresses[LIVE])
    ok(ctl("endpoint", "remove", LIVE[:8], "--force"))
    assert store.get(keys.endpoint(HOST, LIVE)) is None and not assigned(store, addresses[LIVE])


def test_another_hosts_joined_endpoint_needs_force(ctl, store):
    seed(store)
    assert "joined to a container on host h2" in error(ctl("endpoint", "remove", FOREIGN[:8]))
    ok(ctl("endpoint", "remove", "--force", FOREIGN[:8]))
    assert store.get(keys.endpoint("h2", FOREIGN)) is None


def test_unjoined_endpoints_go_without_asking(ctl, store, dockerd):
    seed(store)
    dockerd.dockerd.down = True
    ok(ctl("endpoint", "remove", CREATED[:8]))


def test_without_dockerd_a_joined_endpoint_needs_force(ctl, store, dockerd):
    import os
    seed(store)
    dockerd.shutdown()
    dockerd.server_close()
    os.unlink(dockerd.path)
    message = error(ctl("endpoint", "remove", LOST[:8]))
    assert message.startswith(f"endpoint {LOST[:12]} is joined and dockerd cannot say to what")
    assert message.endswith("use --force")


def test_usage_errors_are_one_line(ctl, store):
    seed(store)
    assert "endpoint remove takes one <ENDPOINT_ID>" in error(ctl("endpoint", "remove"))
    assert "endpoint remove takes one <ENDPOINT_ID>" in error(ctl("endpoint", "remove", "a", "b"))
    assert "too short" in error(ctl("endpoint", "remove", "ab"))
