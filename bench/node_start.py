"""Node start to plugin ready: managed plugin and node image against a plain ``warrenctl node start``.

"Ready" means the plugin socket answers ``Plugin.Activate`` (as a network and IPAM driver),
probed every 10 ms from outside. In one warren-lab host (its own dockerd, the lab's etcd), with
the image and the plugin built by ``scripts/build-image`` and ``scripts/build-plugin``, rounds of:

* baseline: ``warrenctl node start`` run on the host, from its launch to the answering socket
  (then ``warrenctl node stop``);
* plugin: ``docker plugin enable warren/warren:<version>``, from its launch to the answering
  socket (``/run/docker/plugins/<id>/warren.sock``); also when ``enable`` itself returned, which
  includes dockerd's own polling of the socket (a first dial after 0.5 s, then every 3 s);
* image: ``docker run -d`` of the node image with host networking, to the answering socket.

The kinds are interleaved (the first rotates each round). Reports medians, plugin/baseline and
image/baseline ratios, the plugin's figure against the 2 s goal, and the image size. Everything
runs in lab namespaces this script creates and removes.

    python -m bench.node_start [--runs 5]
"""
from __future__ import annotations

import argparse
import http.client
import os
import secrets
import statistics
import subprocess
import sys
import time

from ctl.lab import Lab
from plugin import server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_READY = 2.0
READY_TIMEOUT = 60.0
NODE_CONTAINER = "warren-node"


def answers(socket_path: str) -> bool:
    """``Plugin.Activate`` answered; the socket is reached through its directory's descriptor
    because a managed plugin's path is longer than AF_UNIX allows."""
    try:
        fd = os.open(os.path.dirname(socket_path), os.O_PATH)
    except OSError:
        return False
    try:
        status, body = server.call(f"/proc/self/fd/{fd}/{os.path.basename(socket_path)}",
                                   "Plugin.Activate", timeout=1.0)
        return status == 200 and "IpamDriver" in body.get("Implements", [])
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        os.close(fd)


def wait_ready(socket_path: str, start: float) -> float:
    while not answers(socket_path):
        if time.monotonic() - start > READY_TIMEOUT:
            raise RuntimeError(f"{socket_path} did not answer within {READY_TIMEOUT:.0f}s")
        time.sleep(0.01)
    return time.monotonic() - start


class Bench:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.h = lab.host("host1")
        self.env = dict(os.environ, DOCKER=lab.docker_cli, DOCKER_HOST=self.h.docker_host)

    def docker(self, *args: str, check: bool = True) -> str:
        result = self.lab.docker("host1", list(args), timeout=120)
        if check and result.returncode:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def script(self, name: str, *args: str) -> str:
        result = subprocess.run([os.path.join(REPO, "scripts", name), *args], env=self.env, cwd=REPO,
                                capture_output=True, text=True, timeout=1200)
        if result.returncode:
            raise RuntimeError(f"scripts/{name}: {result.stderr.strip()}")
        return result.stdout.strip()

    def prepare(self) -> tuple[str, int]:
        tag = self.script("build-image").split()[0]
        ref = self.script("build-plugin")
        os.makedirs(self.h.path("etc-warren"), exist_ok=True)
        self.docker("plugin", "set", ref, f"WARREN_ETCD_ENDPOINTS={self.h.lab.etcd_endpoint}",
                    f"docker-socket.source={self.h.docker_sock}", f"etcd-tls.source={self.h.path('etc-warren')}")
        self.ref, self.plugin_id = ref, self.docker("plugin", "inspect", "-f", "{{.Id}}", ref)
        return tag, int(self.docker("image", "inspect", "-f", "{{.Size}}", tag))

    # -- the three kinds: each returns (seconds to ready, extra figure or None) and stops again --

    def baseline(self) -> tuple[float, float | None]:
        sock = self.h.path("run/docker/plugins/warren.sock")
        argv = [sys.executable, "-m", "ctl.main", "node", "start", "--name", "host1",
                "--ip", self.h.ipv4, "--ip6", self.h.ipv6]
        start = time.monotonic()
        proc = subprocess.Popen(self.lab.nsenter_argv("host1", argv, cwd=REPO), env=self.lab.env("host1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ready = wait_ready(sock, start)
        finally:
            _, err = proc.communicate(timeout=120)
            if proc.returncode:
                raise RuntimeError(f"warrenctl node start: {err.strip()}")
        stop = self.lab.exec("host1", [sys.executable, "-m", "ctl.main", "node", "stop", "--name", "host1"],
                             cwd=REPO, timeout=60)
        if stop.returncode:
            raise RuntimeError(f"warrenctl node stop: {stop.stderr.strip()}")
        return ready, None

    def plugin(self) -> tuple[float, float | None]:
        sock = self.h.path("run", "docker", "plugins", self.plugin_id, "warren.sock")
        start = time.monotonic()
        proc = subprocess.Popen(self.lab.nsenter_argv("host1", [self.lab.docker_cli, "plugin", "enable", self.ref]),
                                env=self.lab.env("host1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        ready = wait_ready(sock, start)
        _, err = proc.communicate(timeout=120)
        enabled = time.monotonic() - start
        if proc.returncode:
            raise RuntimeError(f"docker plugin enable: {err.strip()}")
        self.docker("plugin", "disable", self.ref)
        return ready, enabled

    def image(self) -> tuple[float, float | None]:
        sock = self.h.path("run/docker/plugins/warren.sock")
        if os.path.exists(sock):
            os.unlink(sock)   # a stale socket from the previous round must not count as ready
        start = time.monotonic()
        self.docker("run", "-d", "--name", NODE_CONTAINER, "--net", "host", "--cap-add", "NET_ADMIN",
                    "--security-opt", "systempaths=unconfined", "-v", "/run/docker/plugins:/run/docker/plugins",
                    "-v", f"{self.h.docker_sock}:/var/run/docker.sock",
                    "-e", f"WARREN_ETCD_ENDPOINTS={self.h.lab.etcd_endpoint}", "warren/node:latest")
        ready = wait_ready(sock, start)
        self.docker("rm", "-f", NODE_CONTAINER)
        return ready, None

    def cleanup(self) -> None:
        self.docker("rm", "-f", NODE_CONTAINER, check=False)
        if getattr(self, "ref", None):
            self.docker("plugin", "disable", "-f", self.ref, check=False)
            self.docker("plugin", "rm", "-f", self.ref, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    print("Warren node start benchmark")
    print(f"command: {sys.executable} -m bench.node_start --runs {args.runs}")
    print(f"date: {time.strftime('%Y-%m-%d')}, cores: {os.cpu_count()}, "
          f"load average at start: {os.getloadavg()[0]:.1f}")
    lab = Lab("n" + secrets.token_hex(3))
    bench = None
    try:
        lab.up(1, node=False)
        bench = Bench(lab)
        t0 = time.monotonic()
        tag, size = bench.prepare()
        print(f"image {tag}: {size / 1e6:.0f} MB; image + plugin built in {time.monotonic() - t0:.1f}s")
        kinds = {"baseline": bench.baseline, "plugin": bench.plugin, "image": bench.image}
        for fn in kinds.values():   # warm-up: page cache, first etcd writes
            fn()
        ready: dict[str, list[float]] = {k: [] for k in kinds}
        enabled: list[float] = []
        order = list(kinds)
        for i in range(args.runs):
            for kind in order[i % 3:] + order[:i % 3]:
                seconds, extra = kinds[kind]()
                ready[kind].append(seconds)
                if extra is not None:
                    enabled.append(extra)
    finally:
        if bench:
            bench.cleanup()
        lab.down()
    med = {k: statistics.median(v) for k, v in ready.items()}
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"\nstart to Plugin.Activate answering, {args.runs} runs each, interleaved (seconds)")
    for kind in kinds:
        print(f"   {kind:8s} median {med[kind]:.2f}  (min {min(ready[kind]):.2f}, max {max(ready[kind]):.2f})")
    print(f"   docker plugin enable returned: median {statistics.median(enabled):.2f} "
          f"(min {min(enabled):.2f}, max {max(enabled):.2f})")
    print(f"   plugin/baseline = {med['plugin'] / med['baseline']:.2f}; "
          f"image/baseline = {med['image'] / med['baseline']:.2f}")
    ok = med["plugin"] <= GOAL_READY
    print(f"   plugin ready median {med['plugin']:.2f}s   goal <= {GOAL_READY}s   {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
