"""Node liveness on etcd leases, against a real etcd."""
from __future__ import annotations

import time

import pytest

from ipam.nodes import Node, NodeConflict, alive, claim, keep_alive, release


def test_a_live_name_is_refused_to_another_address(store):
    lease = claim(store, Node("n1", ipv4="192.0.2.1"))
    assert set(alive(store)) == {"n1"}
    with pytest.raises(NodeConflict, match="in use by a running node at 192.0.2.1"):
        claim(store, Node("n1", ipv4="192.0.2.2"))
    # the same host starting again (after a crash) takes its name back on a new lease
    again = claim(store, Node("n1", ipv4="192.0.2.1"))
    assert again != lease and alive(store)["n1"].lease == again
    assert store.keep_alive(lease) == 0  # the old lease is gone
    release(store, "n1", again)
    assert alive(store) == {}
    claim(store, Node("n1", ipv4="192.0.2.2"))  # free now


def test_a_dead_node_expires_and_keep_alive_claims_again(store):
    node = Node("n2", ipv4="192.0.2.3")
    lease = claim(store, node, ttl=2)
    assert keep_alive(store, node, lease, ttl=2) == lease
    deadline = time.monotonic() + 15
    while "n2" in alive(store):
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.5)
    claim(store, Node("n2", ipv4="192.0.2.9"), ttl=2)  # another host may take the name now
    with pytest.raises(NodeConflict):
        keep_alive(store, node, lease, ttl=2)          # and the old one cannot take it back
