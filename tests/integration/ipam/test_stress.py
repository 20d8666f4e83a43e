"""2 simulated hosts x 4 processes allocate and release concurrently from one small pool."""
from __future__ import annotations

import multiprocessing
import random

from datastore import keys
from ipam import Allocator, PoolExhausted, PoolStore, make_pool
from tests.support.etcd import datastore_for

from .helpers import check_consistency

POOL = "10.60.0.0/26"   # 64 addresses in 8 blocks of 8 for 8 workers holding up to 12 each
ROUNDS = 150


def worker(endpoint: str, host: str, worker_id: int, results) -> None:
    store = datastore_for(type("S", (), {"endpoint": endpoint})(), timeout=5)
    allocator = Allocator(store, host, rng=random.Random(worker_id))
    rng = random.Random(worker_id)
    held: list[tuple[str, str]] = []
    exhausted = 0
    for i in range(ROUNDS):
        if held and (len(held) >= 12 or rng.random() < 0.35):
            address, handle = held.pop(rng.randrange(len(held)))
            assert allocator.release(address, handle), f"lost {address}"
            continue
        handle = f"w{worker_id}-{i}"
        try:
            held.append((allocator.assign(handle, pool=POOL).address, handle))
        except PoolExhausted:
            exhausted += 1
    results.put((worker_id, held, exhausted))


def test_concurrent_hosts_never_share_an_address(store, etcd_server):
    PoolStore(store).add([make_pool(POOL, block_size=29)])
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(etcd_server.endpoint, f"host{w % 2}", w, results))
             for w in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    expected = {address: handle for _, held, _ in outcomes for address, handle in held}
    assert sum(len(held) for _, held, _ in outcomes) == len(expected), "an address held twice"
    assert check_consistency(store) == expected  # exact accounting, nothing leaked
    assert sum(ex for *_, ex in outcomes) > 0, "the pool should have run out at least once"
    blocks = store.get_prefix(keys.BLOCKS)
    assert len(blocks) == 8, "every block claimed"
