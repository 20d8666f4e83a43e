"""Where the plugin's time per container goes: per-stage timers around its real request path.

The plugin's Flask app (``plugin.wsgi.build``, the same object the node serves) runs
in-process inside a private network namespace with its own etcd (data on tmpfs), with
the real ``Dataplane`` (veths, routes, sysctls) and the real etcd client. For every
container it receives the calls dockerd sends for ``docker run --net N``, in dockerd's
order: IpamDriver.RequestAddress, NetworkDriver.CreateEndpoint, NetworkDriver.Join,
NetworkDriver.ProgramExternalConnectivity, NetworkDriver.EndpointOperInfo (and, with ``--teardown``, the calls of
``--rm``: RevokeExternalConnectivity, Leave, DeleteEndpoint, ReleaseAddress). After
Join the container side of the veth is moved into a second namespace, untimed, as
dockerd moves it into the container: the host namespace holds exactly what a real
host holds. Endpoint ids are random 64-hex ids as Docker's (the interface names are
derived from their first 11 characters, so sequential ids would all share one name).

Nothing in plugin/ is changed: the harness wraps, at run time and in its own
process only, the few functions every cost goes through, and attributes each timed
*leaf* to the Docker call running and to the plugin function that caused it (the
nearest caller frame outside datastore/ and pyroute2):

* ``etcd <op>``: ``Datastore._post``, one HTTP round trip to etcd (range, put, txn,
  deleterange), e.g. ``etcd range <- ipam.poolstore.PoolStore.get``;
* ``netlink <method> <command>``: pyroute2 ``IPRoute`` requests, and ``netlink
  IPRoute() open`` / ``close`` (pyroute2 0.9's sync ``IPRoute`` is a wrapper that
  creates an asyncio event loop per instance);
* ``sysctl write``: ``plugin.dataplane._write_sysctl``; ``subprocess``: ``subprocess.run``;
* ``python``: the rest of the plugin's ``dispatch`` (the span its latency histogram
  times: JSON, records, plugin logic) minus its leaves;
* ``flask``: the call's time inside ``app.wsgi_app`` outside ``dispatch`` (Flask's
  request handling; the served plugin also pays werkzeug's HTTP parsing, not timed).

The plugin runs with ``underlay_iface="eth0"``, as ``warrenctl node start`` configures it.

Leaves do not nest (a leaf inside a leaf is part of the outer one). ``--cprofile N``
additionally runs N more containers under cProfile and prints the top functions (the
timers' wrappers then show up too). ``Harness`` is the reusable part: one plugin in fresh
namespaces and etcd, driven a container at a time, optionally with changes patched in
(bench/plugin_whatif.py); container_start's part B drives two in turn.

    python -m bench.plugin_profile [--containers 50] [--teardown] [--cprofile 20]
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from bench.runinfo import header

START_CALLS = ("IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join",
               "NetworkDriver.ProgramExternalConnectivity")
OTHER_CALLS = ("NetworkDriver.EndpointOperInfo",)  # dockerd asks during the start, outside the goal's calls
STOP_CALLS = ("NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.Leave",
              "NetworkDriver.DeleteEndpoint", "IpamDriver.ReleaseAddress")
PYTHON = "python"  # the stage name of a call's time in the plugin's handler outside every leaf
FLASK = "flask"    # the call's time in Flask/werkzeug outside the plugin's dispatch (not in its histogram)
SKIP_FRAMES = (os.sep + "datastore" + os.sep, os.sep + "pyroute2" + os.sep, "plugin_profile.py",
               os.sep + "contextlib.py", os.sep + "subprocess.py")


# -- recording (pure: no kernel, no etcd) -------------------------------------------------

@dataclass
class Sample:
    """One container: seconds per Docker call, and per call the seconds and count of each stage."""
    calls: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, list]] = field(default_factory=dict)  # call -> stage -> [seconds, count]

    def add(self, call: str, stage: str, seconds: float, count: int = 1) -> None:
        cell = self.stages.setdefault(call, {}).setdefault(stage, [0.0, 0])
        cell[0] += seconds
        cell[1] += count

    def total(self, calls: tuple[str, ...] = START_CALLS) -> float:
        return sum(self.calls.get(c, 0.0) for c in calls)

    def to_dict(self) -> dict:
        return {"calls": self.calls, "stages": self.stages}

    @classmethod
    def from_dict(cls, data: dict) -> "Sample":
        return cls(dict(data["calls"]), {c: {s: list(v) for s, v in st.items()}
                                         for c, st in data["stages"].items()})


class Recorder:
    """Collects Samples: ``call(name)`` around one Docker call, ``leaf(stage)`` around a cost.

    Only the outermost leaf of a thread counts; a call's ``python`` stage is its time minus
    its leaves. Outside ``begin()``..``end()`` (network creation, warm-up) nothing is kept.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.samples: list[Sample] = []
        self._current: Sample | None = None
        self._local = threading.local()

    def begin(self) -> None:
        self._current = Sample()

    def end(self) -> Sample | None:
        sample, self._current = self._current, None
        if sample is not None:
            self.samples.append(sample)
        return sample

    @contextlib.contextmanager
    def call(self, name: str) -> Iterator[None]:
        local = self._local
        outer = getattr(local, "call", None)
        local.call, local.leaves, local.depth, local.handler = name, 0.0, 0, None
        start = self.clock()
        try:
            yield
        finally:
            elapsed = self.clock() - start
            sample = self._current
            if sample is not None and outer is None:
                sample.calls[name] = sample.calls.get(name, 0.0) + elapsed
                inside = elapsed if local.handler is None else local.handler
                if local.handler is not None:
                    sample.add(name, FLASK, max(elapsed - inside, 0.0), 0)
                sample.add(name, PYTHON, max(inside - local.leaves, 0.0), 0)
            local.call = outer

    @contextlib.contextmanager
    def handler(self) -> Iterator[None]:
        """Around the plugin's own dispatch inside a call: the rest of the call is ``flask``."""
        start = self.clock()
        try:
            yield
        finally:
            self._local.handler = self.clock() - start

    @contextlib.contextmanager
    def leaf(self, stage: str | Callable[[], str]) -> Iterator[None]:
        local = self._local
        if getattr(local, "call", None) is None or local.depth:
            local.depth = getattr(local, "depth", 0) + 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        local.depth = 1
        start = self.clock()
        try:
            yield
        finally:
            elapsed = self.clock() - start
            local.depth = 0
            local.leaves += elapsed
            if self._current is not None:
                self._current.add(local.call, stage() if callable(stage) else stage, elapsed)


def stage_table(samples: list[Sample], calls: tuple[str, ...] = START_CALLS) -> list[tuple[str, str, float, float, float]]:
    """(call, stage, mean ms per container, median ms per container, mean count per container),
    calls in ``calls`` order, stages by mean time, largest first; a ``total`` row per call."""
    rows = []
    n = len(samples)
    if not n:
        return rows
    for call in calls:
        names = sorted({s for sample in samples for s in sample.stages.get(call, {})})
        cells = []
        for stage in names:
            per = [sample.stages.get(call, {}).get(stage, [0.0, 0]) for sample in samples]
            ms = [p[0] * 1000 for p in per]
            cells.append((call, stage, sum(ms) / n, statistics.median(ms), sum(p[1] for p in per) / n))
        cells.sort(key=lambda r: -r[2])
        totals = [sample.calls.get(call, 0.0) * 1000 for sample in samples]
        rows.append((call, "total", sum(totals) / n, statistics.median(totals), 1.0))
        rows += cells
    return rows


def by_kind(samples: list[Sample], calls: tuple[str, ...] = START_CALLS) -> dict[str, tuple[float, float]]:
    """Stages summed over ``calls`` by kind (the text before `` <- ``, then the first word:
    etcd, netlink, sysctl, subprocess, python): kind -> (mean ms, mean count) per container."""
    out: dict[str, list[float]] = {}
    n = len(samples) or 1
    for sample in samples:
        for call in calls:
            for stage, (seconds, count) in sample.stages.get(call, {}).items():
                kind = stage.split(" <- ")[0].split(" ")[0]
                cell = out.setdefault(kind, [0.0, 0.0])
                cell[0] += seconds * 1000 / n
                cell[1] += count / n
    return {k: (v[0], v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][0])}


def caller(skip: tuple[str, ...] = SKIP_FRAMES, depth: int = 2) -> str:
    """``module.Qualname`` of the nearest frame whose file is not in ``skip``."""
    frame = sys._getframe(depth)
    while frame is not None:
        path = frame.f_code.co_filename
        if not any(s in path for s in skip):
            module = frame.f_globals.get("__name__", "?")
            name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            return f"{module}.{name}"
        frame = frame.f_back
    return "?"


# -- instrumentation (in the benchmark's own child process only) -----------------------------

def instrument(recorder: Recorder) -> Callable[[], None]:
    """Wrap the etcd client, pyroute2, sysctl writes and subprocess.run; returns the undo."""
    import pyroute2
    from datastore.client import Datastore
    import plugin.dataplane as dataplane

    undo: list[Callable[[], None]] = []

    def patch(owner, name, make):
        original = getattr(owner, name)
        had = name in vars(owner)
        setattr(owner, name, make(original))
        undo.append(lambda: setattr(owner, name, original) if had else delattr(owner, name))

    def post(original):
        def wrapped(self, path, payload, streamed=False):
            op = path.rsplit("/", 1)[-1]
            with recorder.leaf(lambda: f"etcd {op} <- {who}"):
                who = caller()
                return original(self, path, payload, streamed)
        return wrapped

    def rtnl(original):
        def wrapped(self, func, *argv, **kw):
            command = f" {argv[0]}" if argv and isinstance(argv[0], str) else ""
            name = getattr(func, "__name__", "?")
            with recorder.leaf(lambda: f"netlink {name}{command} <- {who}"):
                who = caller()
                return original(self, func, *argv, **kw)
        return wrapped

    def simple(label):
        def make(original):
            def wrapped(*a, **kw):
                with recorder.leaf(lambda: f"{label} <- {who}"):
                    who = caller()
                    return original(*a, **kw)
            return wrapped
        return make

    ipr = pyroute2.IPRoute
    patch(Datastore, "_post", post)
    patch(ipr, "_run_generic_rtnl", rtnl)
    patch(ipr, "_run_force_sync", rtnl)
    patch(ipr, "__init__", simple("netlink IPRoute() open"))
    patch(ipr, "close", simple("netlink IPRoute close"))
    patch(dataplane, "_write_sysctl", simple("sysctl write"))
    patch(subprocess, "run", simple("subprocess"))

    def restore() -> None:
        while undo:
            undo.pop()()
    return restore


# -- the run, in a private namespace --------------------------------------------------------

@dataclass
class Options:
    containers: int = 50
    teardown: bool = False
    cprofile: int = 0
    warmup: int = 3
    progress: bool = False


def _serve(ns: str, sink: str, endpoint: str, warmup: int, conn, what_if: tuple[str, ...] = ()) -> None:
    """The child, inside ``ns``: build the plugin, then do what the parent asks, one container at a time.
    ``what_if`` names changes (bench/plugin_whatif.py) patched into this process's plugin first."""
    try:
        from pyroute2 import IPRoute, netns
        netns.setns(ns)
        if what_if:
            from bench import plugin_whatif
            plugin_whatif.apply(what_if)
        from datastore import Datastore, EtcdConfig
        from plugin.config import PluginConfig
        from plugin.dataplane import Dataplane
        from plugin.ports import PortPublisher
        from plugin.wsgi import build
        from ipam.workloads import tmp_ifname

        dataplane = Dataplane()
        dataplane.ensure_forwarding()
        store = Datastore(EtcdConfig.from_env(env={}, endpoints=endpoint))
        # as `warrenctl node start` runs it: the underlay interface named (WARREN_UNDERLAY_IFACE)
        # and with the port publisher the served plugin has (plugin.wsgi.create)
        app = build(PluginConfig(host="bench", underlay_iface="eth0"), store, dataplane,
                    PortPublisher(reserve=True))
        recorder = Recorder()
        inner, dispatch = app.wsgi_app, app.view_functions["dispatch"]

        def timed(environ, start_response):
            with recorder.call(environ.get("PATH_INFO", "").lstrip("/")):
                return inner(environ, start_response)

        def handler(**kw):  # what the plugin's latency histogram times
            with recorder.handler():
                return dispatch(**kw)
        app.wsgi_app, app.view_functions["dispatch"] = timed, handler
        client = app.test_client()

        def call(name, body):
            response = client.post(f"/{name}", data=json.dumps(body))
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.get_json()}")
            return response.get_json()

        net = secrets.token_hex(32)
        pool = call("IpamDriver.RequestPool", {"Pool": "10.20.0.0/16", "Options": {}, "V6": False})
        call("NetworkDriver.CreateNetwork", {"NetworkID": net, "Options": {
            "com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "WarrenLocal", "Pool": pool["Pool"],
                          "Gateway": pool["Data"]["com.docker.network.gateway"]}]})
        mover = IPRoute()
        sink_fd = os.open(f"/run/netns/{sink}", os.O_RDONLY)

        def container(record: bool, teardown: bool) -> Sample | None:
            ep = secrets.token_hex(32)
            if record:
                recorder.begin()
            address = call("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                                         "Options": {}})["Address"]
            call("NetworkDriver.CreateEndpoint", {"NetworkID": net, "EndpointID": ep, "Options": {
                "com.docker.network.endpoint.exposedports": None, "com.docker.network.portmap": None},
                "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""}})
            joined = call("NetworkDriver.Join", {"NetworkID": net, "EndpointID": ep,
                                                 "SandboxKey": f"/var/run/docker/netns/{ep[:12]}",
                                                 "Options": {}})
            # dockerd's move into the container: between calls, so untimed
            mover.link("set", index=mover.link_lookup(ifname=joined["InterfaceName"]["SrcName"])[0],
                       net_ns_fd=sink_fd)
            call("NetworkDriver.ProgramExternalConnectivity", {"NetworkID": net, "EndpointID": ep, "Options": {
                "com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}})
            call("NetworkDriver.EndpointOperInfo", {"NetworkID": net, "EndpointID": ep})  # once on 28, twice on 20.10
            if teardown:
                call("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": net, "EndpointID": ep})
                call("NetworkDriver.Leave", {"NetworkID": net, "EndpointID": ep})
                call("NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep})
                call("IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": address.split("/")[0]})
                with IPRoute(netns=sink) as s:  # what dockerd's sandbox removal does
                    found = s.link_lookup(ifname=tmp_ifname(ep))
                    if found:
                        s.link("del", index=found[0])
            return recorder.end() if record else None

        for _ in range(warmup):  # first block claim, pool and network caches
            container(False, False)
        instrument(recorder)  # this process only, until it exits
        conn.send(("ready", None))
        while True:
            command, *args = conn.recv()
            if command == "container":
                sample = container(*args)
                conn.send(("ok", sample.to_dict() if sample else None))
            elif command == "cprofile":
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(args[0]):
                    container(False, args[1])
                prof.disable()
                out = io.StringIO()
                stats = pstats.Stats(prof, stream=out)
                stats.sort_stats("tottime").print_stats(25)
                stats.sort_stats("cumulative").print_stats(40)
                conn.send(("ok", out.getvalue()))
            else:
                conn.send(("ok", None))
                break
    except BaseException as exc:  # report to the parent
        import traceback
        try:
            conn.send(("error", f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"))
        except OSError:
            pass
    finally:
        conn.close()
        os._exit(0)


class Harness:
    """One plugin in fresh namespaces (a host and its containers' side) with a fresh etcd on tmpfs.

    ``with Harness() as h: h.container()`` - each call is one container's calls, in the child
    process that lives in the host namespace; several harnesses can be driven in turn.
    """

    def __init__(self, warmup: int = 3, timeout: float = 600, what_if: tuple[str, ...] = ()):
        self.warmup, self.timeout, self.what_if = warmup, timeout, tuple(what_if)
        tag = secrets.token_hex(3)
        self.ns, self.sink = f"bpp{tag}", f"bpps{tag}"
        self._made: list[str] = []
        self._data: str | None = None
        self._etcd = None
        self._proc = None
        self._conn = None

    def __enter__(self) -> "Harness":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        from datastore.localetcd import LocalEtcd
        ns, sink = self.ns, self.sink
        self._data = tempfile.mkdtemp(prefix="warren-bench-etcd-",
                                      dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        for name in (ns, sink):
            subprocess.run(["ip", "netns", "add", name], check=True)
            self._made.append(name)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # an underlay link and a default route, as every host has (the workload MTU comes from it)
        subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "ul0",
                        "netns", sink], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", sink, "link", "set", "ul0", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "198.18.0.2/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", "198.18.0.1"], check=True)
        self._etcd = LocalEtcd(self._data, netns=ns, die_with_parent=True).start()
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(ns, sink, self._etcd.endpoint, self.warmup, child,
                                                              self.what_if))
        self._proc.start()
        child.close()
        self._answer()

    def _answer(self):
        if not self._conn.poll(self.timeout):
            raise RuntimeError("plugin harness did not answer in time")
        status, value = self._conn.recv()
        if status == "error":
            raise RuntimeError(value)
        return value

    def container(self, record: bool = True, teardown: bool = False) -> Sample | None:
        self._conn.send(("container", record, teardown))
        value = self._answer()
        return Sample.from_dict(value) if value else None

    def cprofile(self, count: int, teardown: bool = False) -> str:
        self._conn.send(("cprofile", count, teardown))
        return self._answer()

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._conn.send(("stop",))
                self._conn.poll(10)
            except (OSError, EOFError):
                pass
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            self._proc = None
        if self._etcd is not None:
            self._etcd.stop()
            self._etcd = None
        if self._data:
            shutil.rmtree(self._data, ignore_errors=True)
            self._data = None
        while self._made:
            subprocess.run(["ip", "netns", "del", self._made.pop()], check=False)


def run(opts: Options) -> tuple[list[Sample], str]:
    """``opts.containers`` containers in one fresh harness; (samples, cProfile text)."""
    with Harness(opts.warmup) as harness:
        samples = []
        for i in range(opts.containers):
            samples.append(harness.container(True, opts.teardown))
            if opts.progress and (i + 1) % 100 == 0:
                print(f"   ... {i + 1} endpoints", file=sys.stderr, flush=True)
        text = harness.cprofile(opts.cprofile, opts.teardown) if opts.cprofile else ""
    return samples, text


# -- report -------------------------------------------------------------------------------------

def print_tables(samples: list[Sample], calls: tuple[str, ...], indent: str = "   ") -> None:
    totals = [s.total(calls) * 1000 for s in samples]
    inside = [t - sum(s.stages.get(c, {}).get(FLASK, [0.0])[0] for c in calls) * 1000
              for t, s in zip(totals, samples)]
    print(f"{indent}per container, {' + '.join(c.split('.')[-1] for c in calls)}: "
          f"median {statistics.median(totals):.2f} ms, mean {statistics.fmean(totals):.2f} ms "
          f"({len(samples)} containers); inside dispatch (as the plugin's histogram) "
          f"median {statistics.median(inside):.2f} ms")
    print(f"{indent}{'call / stage':86s} {'mean ms':>8s} {'median':>8s} {'count':>6s}")
    for call, stage, mean, med, count in stage_table(samples, calls):
        if stage == "total":
            print(f"{indent}{call:86s} {mean:8.2f} {med:8.2f}")
        else:
            shown = f"{count:6.2f}" if stage not in (PYTHON, FLASK) else ""
            print(f"{indent}  {stage[:84]:84s} {mean:8.2f} {med:8.2f} {shown}")
    print(f"{indent}by kind (all these calls):")
    for kind, (mean, count) in by_kind(samples, calls).items():
        shown = f"{count:.1f} per container" if kind not in (PYTHON, FLASK) else ""
        print(f"{indent}  {kind:12s} {mean:7.2f} ms  {shown}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--teardown", action="store_true", help="also time the calls of docker run --rm's end")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N",
                    help="then run N more containers under cProfile and print the top functions")
    args = ap.parse_args(argv)
    header("Warren plugin: time per container by stage", "bench.plugin_profile",
           sys.argv[1:] if argv is None else argv, flush=True)
    samples, text = run(Options(args.containers, args.teardown, args.cprofile))
    print("\nstart (the goal's calls):")
    print_tables(samples, START_CALLS)
    print("\nalso during the start:")
    print_tables(samples, OTHER_CALLS)
    if args.teardown:
        print("\nteardown (docker run --rm):")
        print_tables(samples, STOP_CALLS)
    if text:
        print(f"\ncProfile of {args.cprofile} more containers (cProfile's own overhead inflates Python time):")
        print(text)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
