"""Run this node's ExaBGP speaker, supervised.

:class:`Speaker` runs inside the node agent (``ctl.agent``, started by
``warrenctl node start``); ``python -m bgp.speaker --node NAME`` runs it alone
(with nat-outgoing, which the node agent otherwise runs beside it):

* builds the speaker's configuration from etcd (full mesh: every other
  registered node is a peer), validates it, writes it, and runs
  ``exabgp server`` with the API process :mod:`bgp.api`;
* watches the node registry: when the peer set changes it rewrites the
  configuration and sends SIGUSR1, which ExaBGP applies without resetting the
  sessions that did not change (measured: shared/notes/exabgp.md);
* restarts ExaBGP with exponential backoff if it dies (it re-announces through
  its API process, and peers keep our routes meanwhile thanks to graceful restart);
* on SIGTERM stops ExaBGP, which closes its sessions with a Cease so peers
  drop our routes at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from datastore import Datastore, DatastoreError, EtcdConfig, keys
from ipam.nodes import get_node, list_nodes

from .config import DEFAULT_HOLD, SpeakerConfig, environment, render
from .natout import NatOutgoing
from .settings import load_settings, peers as bgp_peers, peers_for

log = logging.getLogger("warren.bgp.speaker")


class Speaker:
    def __init__(self, node: str, store: Datastore, run_dir: str, log_dir: str):
        self.node = node
        self.store = store
        self.conf_path = os.path.join(run_dir, "exabgp.conf")
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def config(self) -> SpeakerConfig:
        me = get_node(self.store, self.node)
        if me is None or not me.ipv4:
            raise DatastoreError(f"node {self.node} is not registered with an IPv4 address")
        api = (sys.executable, "-m", "bgp.api", "--node", self.node,
               "--log", os.path.join(self.log_dir, "bgp-api.log"))
        settings = load_settings(self.store)
        peers = peers_for(me, list_nodes(self.store), settings, bgp_peers(self.store),
                          bgp_peers(self.store, self.node))
        return SpeakerConfig(node=self.node, router_id=me.ipv4,
                             as_number=me.as_number or settings.default_as, peers=peers, api_argv=api,
                             hold_time=int(os.environ.get("WARREN_BGP_HOLD_TIME", DEFAULT_HOLD)))

    def write_config(self) -> tuple[SpeakerConfig, bool]:
        config = self.config()
        text = render(config)
        try:
            changed = open(self.conf_path).read() != text
        except OSError:
            changed = True
        if changed:
            tmp = self.conf_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.conf_path)
        return config, changed

    def start_exabgp(self, config: SpeakerConfig) -> subprocess.Popen:
        env = dict(os.environ, **environment(config, os.path.join(self.log_dir, "exabgp.log"),
                                             os.path.dirname(self.conf_path)))
        exabgp = os.path.join(os.path.dirname(sys.executable), "exabgp")
        log.info("starting ExaBGP for %s (router id %s, %d peers)", self.node, config.router_id,
                 len(config.peers))
        out = open(os.path.join(self.log_dir, "exabgp.out"), "ab")
        try:
            return subprocess.Popen([exabgp, "server", self.conf_path], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

    def follow(self, prefix: str) -> None:
        """Rewrite the config and reload ExaBGP when what ``prefix`` holds changes
        the peer set (nodes, BGP settings, peers). SIGUSR1 keeps unchanged sessions."""
        while not self.stop.is_set():
            try:
                revision = self.store.get_prefix(prefix, keys_only=True).revision
                watch = self.store.watch_prefix(prefix, start_revision=revision + 1).until(self.stop)
                for _ in watch:
                    _, changed = self.write_config()
                    with self.lock:
                        if changed and self.proc and self.proc.poll() is None:
                            log.info("peers changed: reloading ExaBGP")
                            self.proc.send_signal(signal.SIGUSR1)
            except (DatastoreError, ValueError) as exc:
                log.warning("node registry: %s; retrying", exc)
                self.stop.wait(2)

    def withdraw_before_exit(self, timeout: float = 3.0) -> None:
        """Ask the API process to withdraw our routes, then let ExaBGP go."""
        api = _children_with(self.proc.pid, b"bgp.api")
        for pid in api:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while api and time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in api):
            time.sleep(0.05)

    def run(self) -> int:
        for prefix in (keys.NODES, keys.BGP):
            threading.Thread(target=self.follow, args=(prefix,), name=f"follow-{prefix}",
                             daemon=True).start()
        backoff = 1.0
        while not self.stop.is_set():
            try:
                config, _ = self.write_config()
            except (DatastoreError, ValueError) as exc:
                log.warning("cannot build the BGP configuration: %s; retrying", exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30)
                continue
            with self.lock:
                self.proc = self.start_exabgp(config)
            started = time.monotonic()
            while self.proc.poll() is None and not self.stop.is_set():
                self.stop.wait(0.5)
            if self.stop.is_set():
                break
            log.warning("ExaBGP exited with %s; restarting in %.0fs", self.proc.returncode, backoff)
            if time.monotonic() - started > 60:
                backoff = 1.0
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 30)
        with self.lock:
            if self.proc and self.proc.poll() is None:
                self.withdraw_before_exit()
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        return 0


def _children_with(pid: int, mark: bytes) -> list[int]:
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []
    found = []
    for child in map(int, children):
        try:
            if mark in open(f"/proc/{child}/cmdline", "rb").read():
                found.append(child)
        except OSError:
            pass
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="warren-bgp-speaker")
    ap.add_argument("--node", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--log-dir", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(filename=os.path.join(args.log_dir, "bgp-speaker.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    speaker = Speaker(args.node, Datastore(EtcdConfig.from_env()), args.run_dir, args.log_dir)
    threading.Thread(target=NatOutgoing().follow, args=(speaker.store, speaker.stop),
                     name="nat-outgoing", daemon=True).start()  # the node agent does this itself
    signal.signal(signal.SIGTERM, lambda *_: speaker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: speaker.stop.set())
    return speaker.run()


if __name__ == "__main__":
    sys.exit(main())
