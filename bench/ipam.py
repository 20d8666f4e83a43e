"""IPAM allocation benchmark against one private, real etcd.

Run from the repository root::

    python -m bench.ipam [--iterations 1000] [--rounds 3] [--total 10000]
                         [--hosts 2] [--processes-per-host 4]

It starts its own etcd (``LocalEtcd`` on free loopback ports, data dir on
/dev/shm when writable), measures, and always stops that etcd and removes
its data dir. Nothing else is touched; only 127.0.0.1 is used.

What it measures (all in one run, against the same etcd):

1. **Baseline** - the raw rate of single-key compare-and-swap transactions
   made with Warren's own client (``Datastore.txn``), one thread, with a value
   as large as a real block record that is half allocated.
2. **Owned-block allocation** - ``Allocator.assign`` in a block this host
   already owns (the hot path: one transaction per address). Reported as a
   ratio to the baseline, because the machine is noisy: baseline and
   allocator are measured in interleaved rounds and the medians compared.
3. **Concurrent allocation** - H simulated hosts x P processes each
   (multiprocessing "spawn"), all released at once, allocating ``--total``
   addresses from one fresh pool with default /26 blocks. Afterwards the
   results are checked: no duplicate address, and etcd agrees exactly
   (allocations in blocks and handle index entries).

This is a report, not a test: a missed goal still exits 0. It exits non-zero
only on a real error (duplicates, etcd state disagreeing, a worker failing).
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import math
import multiprocessing
import os
import platform
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter

from datastore import Datastore, EtcdConfig, Get, ModRevisionIs, Put, codec, keys
from datastore.config import parse_endpoint
from datastore.localetcd import LocalEtcd
from datastore.wire import Member
from ipam import Allocator, Block, Contention, PoolStore, make_pool

HOST = "bench-host"
RAW_KEY = "/warren-bench/raw-cas"
SINGLE_POOL = "10.{}.0.0/16"        # 10.100.0.0/16, 10.101.0.0/16, ... one per round
# The owned block is sized to hold twice --iterations, so a round fills it from
# empty to about half (2000 -> /20, 4096 addresses; 1000 -> /21, 2048).
CONCURRENT_POOL = "10.200.0.0/16"    # default /26 blocks
GOAL_RATIO = 0.5
GOAL_CONCURRENT = 300.0
CALL_TIMEOUT = 10.0                  # per etcd call; generous, 2 cores are shared
RAW_WARMUP = 50
WORKER_DEADLINE = 600.0
CONTENTION_RETRIES = 20              # a worker re-asks after ipam.Contention this often


class BenchError(Exception):
    """A real error: the benchmark's numbers cannot be trusted."""


class CountingDatastore(Datastore):
    """A Datastore that counts transactions, failed compare-and-swaps and
    prefix reads (the same tiny overhead for baseline and allocator)."""

    def __init__(self, config: EtcdConfig):
        super().__init__(config)
        self.txns = 0
        self.cas_txns = 0
        self.cas_failed = 0
        self.prefix_reads = 0

    def txn(self, compare, success, failure=None):
        result = super().txn(compare, success, failure)
        self.txns += 1
        if compare:
            self.cas_txns += 1
            if not result.succeeded:
                self.cas_failed += 1
        return result

    def get_prefix(self, prefix, keys_only=False):
        self.prefix_reads += 1
        return super().get_prefix(prefix, keys_only)

    def counters(self) -> dict[str, int]:
        return {"txns": self.txns, "cas_txns": self.cas_txns,
                "cas_failed": self.cas_failed, "prefix_reads": self.prefix_reads}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def tmpfs_dir(prefix: str) -> str:
    """A temp dir on tmpfs when there is one (etcd's fsyncs are then cheap)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def open_store(endpoint: str) -> CountingDatastore:
    return CountingDatastore(EtcdConfig((parse_endpoint(endpoint),), timeout=CALL_TIMEOUT))


def compact(etcd: LocalEtcd, store: Datastore) -> None:
    """Between measurements (untimed): drop etcd's history and defragment,
    so every phase starts from the same compact database. (Compaction alone
    leaves a large free list behind, which made later raw rounds ~30% slower
    than the first.)"""
    member = Member(parse_endpoint(etcd.endpoint), None, timeout=120)
    try:
        member.post("/v3/kv/compaction", {"revision": str(store.revision()), "physical": True})
        member.post("/v3/maintenance/defragment", {})
    finally:
        member.drop_idle()


# -- 1. baseline: raw CAS transactions --------------------------------------

def half_full_block(prefix: int, pool: str) -> Block:
    net = ipaddress.ip_network(pool)
    block = Block.new(f"{net.network_address}/{prefix}", pool, HOST)
    for i in range(block.size // 2):
        block.allocate(f"h{i}", HOST, {})
    return block


def measure_raw(store: CountingDatastore, n: int, value: bytes) -> dict:
    kv = store.get(RAW_KEY)
    rev = kv.mod_revision if kv else 0
    failed = 0

    def cas(rev: int) -> int:
        nonlocal failed
        result = store.txn([ModRevisionIs(RAW_KEY, rev)], [Put(RAW_KEY, value)], [Get(RAW_KEY)])
        if result.succeeded:
            return result.revision  # the key's new mod_revision
        failed += 1
        current = result.results[0]
        return current.mod_revision if current else 0

    for _ in range(RAW_WARMUP):
        rev = cas(rev)
    failed = 0
    t0 = time.perf_counter()
    for _ in range(n):
        rev = cas(rev)
    elapsed = time.perf_counter() - t0
    if failed:
        raise BenchError(f"{failed} raw CAS transactions failed with a single writer")
    return {"rate": n / elapsed, "elapsed": elapsed}


# -- 2. single allocator in an owned block ----------------------------------

def measure_alloc(store: CountingDatastore, n: int, round_no: int, block_size: int) -> dict:
    """Time ``n`` assigns that all land in one owned block.

    A block smaller than ``n`` is filled, emptied again with untimed releases,
    and filled again, so the block keeps its realistic size (default /26).
    """
    pool = SINGLE_POOL.format(100 + round_no)
    PoolStore(store).add([make_pool(pool, block_size=block_size)])
    allocator = Allocator(store, HOST)
    warm = allocator.assign(f"warm-r{round_no}", pool=pool)  # loads caches, claims the block
    start_size = len(store.get(keys.block(warm.block)).value)
    capacity = ipaddress.ip_network(warm.block).num_addresses - 1
    counts = {"txns": 0, "cas_failed": 0, "prefix_reads": 0}
    elapsed, done, end_size = 0.0, 0, start_size
    while done < n:
        batch = min(capacity, n - done)
        before = store.counters()
        t0 = time.perf_counter()
        out = [allocator.assign(f"h{done + i}", pool=pool) for i in range(batch)]
        elapsed += time.perf_counter() - t0
        for key, value in delta(store.counters(), before).items():
            counts[key] = counts.get(key, 0) + value
        strays = [a for a in out if a.block != warm.block]
        if strays:
            raise BenchError(f"{len(strays)} assignments left the owned block {warm.block} "
                             f"(first: {strays[0].address} in {strays[0].block})")
        if len({a.address for a in out} | {warm.address}) != batch + 1:
            raise BenchError("the single allocator handed out a duplicate address")
        end_size = max(end_size, len(store.get(keys.block(warm.block)).value))
        for a in out:  # untimed: make room for the next batch in the same block
            allocator.release(a.address)
        done += batch
    return {"rate": n / elapsed, "elapsed": elapsed, "block": warm.block,
            "start_size": start_size, "end_size": end_size,
            "txns_per_assign": counts["txns"] / n, "conflicts": counts["cas_failed"],
            "prefix_reads": counts["prefix_reads"]}


# -- 3. concurrent hosts and processes --------------------------------------

def _worker(endpoint: str, host: str, proc: int, count: int, pool: str,
            start, results) -> None:
    """One simulated CNI/IPAM process: its own Datastore (built after spawn)."""
    wid = f"{host}/p{proc}"
    try:
        store = open_store(endpoint)
        store.revision()  # connect before the start signal
        allocator = Allocator(store, host)
        results.put(("ready", wid, None))
        start.wait()
        t_start = time.monotonic()
        pairs, latencies, conflicts = [], [], []
        contention = 0
        for i in range(count):
            handle = f"c-{host}-p{proc}-{i}"
            t0, failed0 = time.perf_counter(), store.cas_failed
            for _ in range(CONTENTION_RETRIES):
                try:
                    address = allocator.assign(handle, pool=pool).address
                    break
                except Contention:  # "try again": nothing was written
                    contention += 1
            else:
                raise BenchError(f"{handle}: Contention {CONTENTION_RETRIES} times in a row")
            latencies.append(time.perf_counter() - t0)
            conflicts.append(store.cas_failed - failed0)
            pairs.append((handle, address))
        t_end = time.monotonic()
        results.put(("done", wid, {"pairs": pairs, "t_start": t_start, "t_end": t_end,
                                   "latencies": latencies, "conflicts": conflicts,
                                   "contention": contention, **store.counters()}))
        store.close()
    except BaseException:  # report everything, the parent decides
        results.put(("error", wid, traceback.format_exc()))


def run_concurrent(etcd: LocalEtcd, store: CountingDatastore, hosts: int, per_host: int,
                   total: int) -> dict:
    PoolStore(store).add([make_pool(CONCURRENT_POOL)])
    n = hosts * per_host
    counts = [total // n + (1 if i < total % n else 0) for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    host_names = [f"bench-node{h + 1}" for h in range(hosts)]
    procs = []
    for h, host in enumerate(host_names):
        for p in range(per_host):
            proc = ctx.Process(target=_worker, daemon=True,
                               args=(etcd.endpoint, host, p, counts[h * per_host + p],
                                     CONCURRENT_POOL, start, results))
            proc.start()
            procs.append(proc)
    done: dict[str, dict] = {}
    errors: dict[str, str] = {}
    try:
        ready = 0
        t0 = None
        deadline = time.monotonic() + WORKER_DEADLINE
        while len(done) + len(errors) < n:
            if ready == n and t0 is None:
                t0 = time.monotonic()
                start.set()
            try:
                kind, wid, payload = results.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise BenchError(f"workers did not finish within {WORKER_DEADLINE:.0f}s")
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise BenchError(f"{len(dead)} worker(s) died (exit codes "
                                     f"{[p.exitcode for p in dead]})")
                continue
            if kind == "ready":
                ready += 1
            elif kind == "done":
                done[wid] = payload
            else:
                errors[wid] = payload
                if t0 is None:  # do not start a half-ready run
                    break
        if not errors:
            for p in procs:
                p.join(timeout=30)
    finally:
        for p in procs:  # only the processes this function started
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if errors:
        first = next(iter(errors.items()))
        raise BenchError(f"{len(errors)} worker(s) failed; {first[0]}:\n{first[1]}")
    t_end = max(d["t_end"] for d in done.values())
    elapsed = t_end - t0
    return {"elapsed": elapsed, "rate": total / elapsed, "workers": done,
            "hosts": host_names, "first_end": min(d["t_end"] for d in done.values()) - t0}


def verify_concurrent(store: Datastore, result: dict, total: int) -> dict:
    """Check the concurrent run against itself and against etcd. Returns facts
    and a list of problems (empty when everything agrees)."""
    problems = []
    pairs = [pair for d in result["workers"].values() for pair in d["pairs"]]
    addresses = [a for _, a in pairs]
    duplicates = len(addresses) - len(set(addresses))
    if len(pairs) != total:
        problems.append(f"processes returned {len(pairs)} addresses, expected {total}")
    if duplicates:
        problems.append(f"{duplicates} duplicate addresses across processes")
    expected = {a: h for h, a in pairs}

    blocks = [codec.loads(Block, kv.value) for kv in store.get_prefix(keys.BLOCKS)]
    in_etcd = {}
    borrowed = 0
    for b in blocks:
        if b.pool != CONCURRENT_POOL:
            problems.append(f"block {b.cidr} belongs to unexpected pool {b.pool}")
        for ordinal, a in b.allocations.items():
            in_etcd[b.address(ordinal)] = a.handle
            if a.host != b.affinity:
                borrowed += 1
    allocations = sum(b.used for b in blocks)
    if allocations != total:
        problems.append(f"etcd blocks hold {allocations} allocations, expected {total}")
    if in_etcd != expected:
        missing = len(expected.keys() - in_etcd.keys())
        extra = len(in_etcd.keys() - expected.keys())
        problems.append(f"etcd allocations differ from the processes' results "
                        f"({missing} missing, {extra} extra)")
    handle_keys = [keys.split_handle_key(kv.key)
                   for kv in store.get_prefix(keys.HANDLES, keys_only=True)]
    if len(handle_keys) != total:
        problems.append(f"{len(handle_keys)} handle keys in etcd, expected {total}")
    if set(handle_keys) != set(pairs):
        problems.append("handle index entries differ from the processes' results")
    affinity = store.get_prefix(keys.AFFINITY, keys_only=True)
    owned = Counter(b.affinity for b in blocks)
    if len(affinity) != sum(owned[h] for h in result["hosts"]):
        problems.append(f"{len(affinity)} affinity keys for {len(blocks)} blocks")
    workers = result["workers"].values()
    latencies = sorted(x for w in workers for x in w["latencies"])
    conflicts = [x for w in workers for x in w["conflicts"]]
    return {"problems": problems, "duplicates": duplicates, "addresses": len(pairs),
            "allocations": allocations, "handle_keys": len(handle_keys),
            "blocks": len(blocks), "blocks_per_host": dict(sorted(owned.items(), key=str)),
            "min_blocks": math.ceil(total / 64), "borrowed": borrowed,
            "cas_txns": sum(w["cas_txns"] for w in workers),
            "conflicts": sum(w["cas_failed"] for w in workers),
            "prefix_reads": sum(w["prefix_reads"] for w in workers),
            "contention": sum(w["contention"] for w in workers),
            "max_conflicts": max(conflicts),
            "latency_ms": {q: 1000 * latencies[min(len(latencies) - 1, int(f * len(latencies)))]
                           for q, f in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}}


# -- report -------------------------------------------------------------------

def etcd_version() -> str:
    try:
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        return out.splitlines()[0].split(":", 1)[1].strip()
    except Exception:
        return "unknown"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt_rates(rows: list[dict]) -> str:
    return ", ".join(f"{r['rate']:.0f}" for r in rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ipam", description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=1000,
                    help="transactions / assigns per timed round (default 1000; the owned "
                         "block holds 2x this, e.g. 2000 -> /20)")
    ap.add_argument("--block-size", type=int, default=26,
                    help="prefix length of the owned block for phase 2 (default 26, the product default)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved baseline/allocator rounds; medians are reported (default 3)")
    ap.add_argument("--total", type=int, default=10000,
                    help="addresses allocated in the concurrent phase (default 10000)")
    ap.add_argument("--hosts", type=int, default=2, help="simulated hosts (default 2)")
    ap.add_argument("--processes-per-host", type=int, default=4,
                    help="allocating processes per host (default 4)")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.rounds < 1 or args.total < 1 \
            or args.hosts < 1 or args.processes_per_host < 1:
        ap.error("all counts must be at least 1")
    if args.rounds > 99:
        ap.error("--rounds: at most 99 (one 10.1xx.0.0/16 pool per round)")
    if args.iterations + 1 > 65536:
        ap.error("--iterations: at most 65535 (the owned block holds at most 65536 addresses)")
    if args.total > 65536:
        ap.error("--total: at most 65536 (the pool is a /16)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = f"cd {shlex.quote(os.getcwd())} && " + shlex.join(
        [sys.executable, "-m", "bench.ipam", *argv])
    # The owned block must hold the warm-up address plus every timed assign.
    block_size = args.block_size

    def on_sigterm(signum, frame):  # run the finally below: stop etcd, remove its dir
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_sigterm)

    t_begin = time.monotonic()
    data_dir = tmpfs_dir("warren-bench-etcd-")
    etcd = LocalEtcd(data_dir, log_path=os.path.join(data_dir, "etcd.log"),
                     extra_args=["--quota-backend-bytes", str(8 << 30)])
    store = None
    status = 0
    try:
        # Quiet the "member failed" warnings while etcd is still coming up;
        # failovers during the measurements are still shown.
        client_log = logging.getLogger("datastore.client")
        level = client_log.level
        client_log.setLevel(logging.ERROR)
        try:
            etcd.start()
        finally:
            client_log.setLevel(level)
        store = open_store(etcd.endpoint)
        print(f"etcd {etcd_version()} at {etcd.endpoint}, data dir {data_dir}", flush=True)

        # 1 + 2: interleaved rounds.
        payload = codec.dumps(half_full_block(block_size, SINGLE_POOL.format(100)))
        raw_rows, alloc_rows = [], []
        for r in range(args.rounds):
            order = ("raw", "alloc") if r % 2 == 0 else ("alloc", "raw")
            for what in order:
                if what == "raw":
                    row = measure_raw(store, args.iterations, payload)
                    raw_rows.append(row)
                    print(f"round {r + 1}: raw CAS txn      {row['rate']:8.1f} ops/s", flush=True)
                else:
                    row = measure_alloc(store, args.iterations, r, block_size)
                    alloc_rows.append(row)
                    print(f"round {r + 1}: allocator assign {row['rate']:8.1f} ops/s", flush=True)
                compact(etcd, store)
        raw_med = statistics.median(r["rate"] for r in raw_rows)
        alloc_med = statistics.median(r["rate"] for r in alloc_rows)
        ratio = alloc_med / raw_med

        # 3: concurrent, on a clean store so etcd's state can be checked exactly.
        store.delete_prefix(keys.PREFIX)
        store.delete_prefix("/warren-bench/")
        compact(etcd, store)
        print(f"concurrent: {args.hosts} hosts x {args.processes_per_host} processes, "
              f"{args.total} addresses ...", flush=True)
        conc = run_concurrent(etcd, store, args.hosts, args.processes_per_host, args.total)
        check = verify_concurrent(store, conc, args.total)
        wall = time.monotonic() - t_begin

        a0 = alloc_rows[0]
        print()
        print("=" * 78)
        print("Warren IPAM benchmark")
        print("=" * 78)
        print(f"command : {command}")
        print(f"date    : {datetime.date.today().isoformat()}")
        print(f"machine : {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}; "
              f"Python {platform.python_version()}, etcd {etcd_version()} (v3 JSON gateway)")
        print(f"etcd    : one private member on 127.0.0.1, data dir on "
              f"{'tmpfs (/dev/shm)' if data_dir.startswith('/dev/shm') else 'disk'}")
        print()
        print(f"1. Baseline: raw CAS txn on one key, Datastore.txn, 1 thread, "
              f"value {len(payload):,} B")
        print(f"   (a /{block_size} block with half its slots allocated)")
        print(f"   rounds: {fmt_rates(raw_rows)} ops/s   median {raw_med:.1f} ops/s")
        print()
        print(f"2. Allocator.assign in an owned /{block_size} block, 1 process, "
              f"{args.iterations} assigns/round")
        print(f"   block record grows {a0['start_size']:,} B -> {a0['end_size']:,} B during a round")
        print(f"   txns per assign {statistics.mean(r['txns_per_assign'] for r in alloc_rows):.2f}, "
              f"CAS conflicts {sum(r['conflicts'] for r in alloc_rows)}, "
              f"prefix reads {sum(r['prefix_reads'] for r in alloc_rows)}")
        print(f"   rounds: {fmt_rates(alloc_rows)} ops/s   median {alloc_med:.1f} ops/s")
        print(f"   ratio alloc/raw = {ratio:.3f}   goal >= {GOAL_RATIO}   "
              f"{verdict(ratio >= GOAL_RATIO)}")
        print()
        print(f"3. Concurrent: {args.hosts} hosts x {args.processes_per_host} processes "
              f"(spawn), {args.total} addresses from {CONCURRENT_POOL} (/26 blocks)")
        print(f"   wall time {conc['elapsed']:.2f} s (start signal -> last finish; "
              f"first finish at {conc['first_end']:.2f} s)")
        print(f"   rate {conc['rate']:.1f} addresses/s   goal >= {GOAL_CONCURRENT:.0f}/s   "
              f"{verdict(conc['rate'] >= GOAL_CONCURRENT)}")
        print(f"   (the goal is absolute; for reference this is {conc['rate'] / raw_med:.2f} x the "
              f"single-writer baseline above)")
        print(f"   duplicates {check['duplicates']}; etcd: {check['allocations']} allocations, "
              f"{check['handle_keys']} handle keys, {check['blocks']} blocks "
              f"(minimum {check['min_blocks']}; per host {check['blocks_per_host']}), "
              f"{check['borrowed']} borrowed")
        print(f"   CAS txns {check['cas_txns']} for {check['addresses']} addresses: "
              f"{check['conflicts']} conflicts "
              f"({check['conflicts'] / max(check['cas_txns'], 1):.1%}); "
              f"prefix reads {check['prefix_reads']}")
        lat = check["latency_ms"]
        print(f"   assign latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
              f"max {lat['max']:.0f} ms; most conflicts for one address {check['max_conflicts']}")
        if check["contention"]:
            print(f"   WARNING: {check['contention']} assign call(s) FAILED with ipam.Contention "
                  f"(100 lost CAS attempts in a row):")
            print("   a caller would have seen an error. The benchmark re-asked (nothing had "
                  "been written);")
            print("   the figures above include those retries.")
        else:
            print("   ipam.Contention errors: 0")
        if check["problems"]:
            print("   VERIFICATION FAILED:")
            for p in check["problems"]:
                print(f"     - {p}")
            status = 1
        else:
            print("   verification: OK (results and etcd state agree exactly)")
        print()
        print(f"summary: ratio {ratio:.3f} ({verdict(ratio >= GOAL_RATIO)}), "
              f"concurrent {conc['rate']:.0f}/s ({verdict(conc['rate'] >= GOAL_CONCURRENT)}), "
              f"verification {'FAILED' if status else 'OK'}, "
              f"Contention errors {check['contention']}; whole run {wall:.0f} s")
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); stopping etcd", file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        if os.path.exists(etcd.log_path or ""):
            with open(etcd.log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            print(f"--- etcd log tail ---\n{tail}", file=sys.stderr)
        status = 1
    finally:
        if store is not None:
            store.close()
        etcd.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
