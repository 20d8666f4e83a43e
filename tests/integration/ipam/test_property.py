"""Random assign/release sequences on a real etcd, checked against an in-memory model."""
from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 rule, run_state_machine_as_test)

from datastore import keys
from ipam import AddressInUse, Allocator, PoolExhausted, PoolStore, make_pool

from .helpers import check_consistency

POOL = "10.50.0.0/28"      # 16 addresses
BLOCK_SIZE = 30            # 4 blocks of 4: exhaustion and borrowing happen often
ADDRESSES = [str(ip) for ip in ipaddress.ip_network(POOL)]
HOSTS = ["h1", "h2", "h3"]
HANDLES = [f"ep{i}" for i in range(6)]


def test_allocator_matches_model(store):
    class IpamMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self):
            store.delete_prefix(keys.PREFIX)
            PoolStore(store).add([make_pool(POOL, block_size=BLOCK_SIZE)])
            self.allocators = {h: Allocator(store, h) for h in HOSTS}
            self.model: dict[str, str] = {}  # address -> handle

        @rule(host=st.sampled_from(HOSTS), handle=st.sampled_from(HANDLES))
        def assign(self, host, handle):
            try:
                got = self.allocators[host].assign(handle, pool=POOL)
            except PoolExhausted:
                assert len(self.model) == len(ADDRESSES), "refused while addresses were free"
                return
            assert got.address not in self.model, f"{got.address} handed out twice"
            self.model[got.address] = handle

        @rule(host=st.sampled_from(HOSTS), handle=st.sampled_from(HANDLES),
              address=st.sampled_from(ADDRESSES))
        def assign_specific(self, host, handle, address):
            holder = self.model.get(address)
            try:
                self.allocators[host].assign(handle, address=address)
            except AddressInUse:
                assert holder is not None and holder != handle
                return
            assert holder in (None, handle)
            self.model[address] = handle

        @rule(host=st.sampled_from(HOSTS), address=st.sampled_from(ADDRESSES))
        def release(self, host, address):
            released = self.allocators[host].release(address)
            assert released == (address in self.model)
            self.model.pop(address, None)

        @rule(host=st.sampled_from(HOSTS), handle=st.sampled_from(HANDLES))
        def release_handle(self, host, handle):
            released = self.allocators[host].release_handle(handle)
            expected = sorted(a for a, h in self.model.items() if h == handle)
            assert sorted(released) == expected
            for address in expected:
                del self.model[address]

        @invariant()
        def store_matches_model(self):
            if hasattr(self, "model"):
                assert check_consistency(store) == self.model

    run_state_machine_as_test(IpamMachine, settings=settings(
        max_examples=25, stateful_step_count=40, deadline=None,
        suppress_health_check=list(HealthCheck)))
