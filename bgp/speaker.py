"""Run this node's ExaBGP speaker, supervised.

:class:`Speaker` runs inside the node agent (``ctl.agent``, started by
``warrenctl node start``); ``python -m bgp.speaker --node NAME`` runs it alone
(with nat-outgoing, which the node agent otherwise runs beside it):

* builds the speaker's configuration from etcd (full mesh: every other
  registered node is a peer; :func:`bgp.settings.plan_peers`). Invalid
  records (nodes, peers, settings) are skipped and counted by
  :mod:`datastore.codec`; peers that cannot be rendered are left out with the
  reason. The result is rendered to a temporary file, checked (our grammar in
  :mod:`bgp.config`, then ``exabgp validate``) and only then moved over the
  working config. A refused render keeps the previous config running; it is
  logged, counted and shown by ``node status``;
* watches the node registry and the BGP settings: when the peer set changes
  it rewrites the configuration and sends SIGUSR1, which ExaBGP applies
  without resetting the sessions that did not change (measured:
  shared/notes/exabgp.md). The watch loops never end on an error: anything
  unexpected is logged and the loop resumes with backoff;
* restarts ExaBGP with exponential backoff if it dies (it re-announces through
  its API process, and peers keep our routes meanwhile thanks to graceful restart);
* publishes its own state (:class:`bgp.settings.SpeakerState`: ExaBGP's pid,
  restarts, config accepted or refused, peers left out) for ``node status``;
* on stop (SIGTERM of the agent, ``node stop``) the API process withdraws our
  routes and ExaBGP is terminated, which closes its sessions with a Cease so
  peers drop our routes at once.

**ExaBGP dies with its supervisor.** It is started with
``PR_SET_PDEATHSIG = SIGKILL``: if the agent is killed (kill -9, a crash) the
kernel kills ExaBGP too, so no orphan keeps port 179 and the old sessions.
SIGKILL, not SIGTERM: a crashed agent must not make peers drop our routes
(SIGTERM would send a Cease); the sessions just close, peers keep our routes
as stale (graceful restart) and the next agent re-announces them - no
traffic is lost. The API process, ExaBGP's child, exits on stdin EOF (and has
its own death signal). The kernel sends the signal when the *thread* that
forked exits, so ExaBGP is only ever started from the thread that runs
:meth:`Speaker.run` (the agent's main thread), which lives exactly as long
as the supervision does. As a second line, ExaBGP's pid is kept in
``<run-dir>/exabgp.pid``: before starting, a speaker left by an earlier agent
(found through that file, or by its command line naming our config file, in
our network namespace) is killed, so the new one always gets port 179.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

from datastore import Datastore, DatastoreError, EtcdConfig, codec, keys
from ipam.nodes import Node

from .config import DEFAULT_HOLD, SpeakerConfig, check_hold_time, environment, render
from .natout import NatOutgoing
from .settings import (BgpSettings, SpeakerState, load_settings, peers as bgp_peers, plan_peers,
                       registered_nodes, save_speaker_state)

log = logging.getLogger("warren.bgp.speaker")

PID_FILE = "exabgp.pid"
CONF_FILE = "exabgp.conf"
VALIDATE_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1


class ConfigRefused(ValueError):
    """A rendered configuration failed its check; the previous one stays in use."""


class Speaker:
    def __init__(self, node: str, store: Datastore, run_dir: str, log_dir: str):
        self.node = node
        self.store = store
        self.conf_path = os.path.join(run_dir, CONF_FILE)
        self.pid_path = os.path.join(run_dir, PID_FILE)
        self.log_dir = log_dir
        self.exabgp = os.path.join(os.path.dirname(sys.executable), "exabgp")
        self.proc: subprocess.Popen | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()          # proc, state
        self.config_lock = threading.Lock()   # the config file (run and the two watches write it)
        self.good_config: SpeakerConfig | None = None  # the last config accepted by this process
        self.settings: BgpSettings | None = None  # the last valid cluster settings
        self.state = SpeakerState(state="starting", pid=os.getpid())
        self._state_dirty = threading.Event()

    # -- configuration ------------------------------------------------------------------

    def config(self) -> tuple[SpeakerConfig, list[str]]:
        """(this node's speaker config, peers left out and why) from etcd."""
        kv = self.store.get(keys.node(self.node))
        try:
            me = codec.loads(Node, kv.value, kv.key) if kv else None
        except codec.InvalidRecord as exc:  # keep the config we have
            raise ConfigRefused(f"this node's own record is invalid: {exc}") from None
        if me is None or not me.ipv4:
            raise DatastoreError(f"node {self.node} is not registered with an IPv4 address")
        api = (sys.executable, "-m", "bgp.api", "--node", self.node,
               "--log", os.path.join(self.log_dir, "bgp-api.log"))
        invalid: list[str] = []
        self.settings = settings = load_settings(self.store, self.settings, invalid)
        nodes = registered_nodes(self.store, invalid)
        global_peers, node_peers = bgp_peers(self.store, None, invalid), bgp_peers(self.store, self.node, invalid)
        peers, skipped = plan_peers(me, nodes, settings, global_peers, node_peers)
        skipped += invalid
        hold = os.environ.get("WARREN_BGP_HOLD_TIME", str(DEFAULT_HOLD))
        try:
            hold_time = check_hold_time(int(hold))
        except ValueError:
            raise ConfigRefused(f"WARREN_BGP_HOLD_TIME={hold!r}: use 3-65535 seconds") from None
        return SpeakerConfig(node=self.node, router_id=me.ipv4, as_number=me.as_number or settings.default_as,
                             peers=peers, api_argv=api, hold_time=hold_time), skipped

    def write_config(self) -> tuple[SpeakerConfig, bool]:
        """Render, check and install the config; (config, whether the file changed).
        Raises ConfigRefused (the working file untouched) or DatastoreError."""
        with self.config_lock:
            return self._write_config()

    def _write_config(self) -> tuple[SpeakerConfig, bool]:
        try:
            config, skipped = self.config()
            text = render(config)
        except ConfigRefused as exc:
            self._refused(str(exc))
            raise
        except ValueError as exc:  # render's grammar check
            self._refused(str(exc))
            raise ConfigRefused(str(exc)) from None
        for reason in sorted(set(skipped) - set(self.state.skipped)):
            log.warning("BGP peer left out: %s", reason)
        try:
            changed = open(self.conf_path).read() != text
        except OSError:
            changed = True
        if changed:
            tmp = self.conf_path + ".new"
            with open(tmp, "w") as f:
                f.write(text)
            error = self.check_file(tmp)
            if error:
                os.unlink(tmp)
                self._refused(error)
                raise ConfigRefused(error)
            os.replace(tmp, self.conf_path)
        self.good_config = config
        with self.lock:
            self.state = replace(self.state, config_ok=True, config_error="", skipped=sorted(skipped),
                                 config_time=time.time() if changed or not self.state.config_time
                                 else self.state.config_time)
        self._state_dirty.set()
        return config, changed

    def check_file(self, path: str) -> str | None:
        """ExaBGP's own parser on ``path``: None if it accepts it, else why not."""
        if not os.path.exists(self.exabgp):
            return None  # no ExaBGP next to our Python (unit tests): our grammar check stands
        try:
            result = subprocess.run([self.exabgp, "validate", path], capture_output=True, text=True,
                                    timeout=VALIDATE_TIMEOUT, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("cannot run exabgp validate (%s); trusting our own check", exc)
            return None
        if result.returncode == 0:
            return None
        lines = [ln.strip() for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("error message:")), lines[-1] if lines else "")
        return f"exabgp validate refused the new config: {detail or f'exit {result.returncode}'}"

    def _refused(self, reason: str) -> None:
        log.error("BGP configuration refused, the previous one stays in use: %s", reason)
        with self.lock:
            self.state = replace(self.state, config_ok=False, config_error=reason[:500],
                                 render_failures=self.state.render_failures + 1)
        self._state_dirty.set()

    # -- ExaBGP -------------------------------------------------------------------------

    def start_exabgp(self, config: SpeakerConfig) -> subprocess.Popen:
        """Start ExaBGP (from the thread running :meth:`run`: see the module docstring)."""
        kill_leftovers(self.pid_path, self.conf_path)
        env = dict(os.environ, **environment(config, os.path.join(self.log_dir, "exabgp.log"),
                                             os.path.dirname(self.conf_path)))
        log.info("starting ExaBGP for %s (router id %s, %d peers)", self.node, config.router_id,
                 len(config.peers))
        out = open(os.path.join(self.log_dir, "exabgp.out"), "ab")
        try:
            proc = subprocess.Popen([self.exabgp, "server", self.conf_path], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent(os.getpid()))
        finally:
            out.close()
        _write_pid(self.pid_path, proc.pid)
        return proc

    def follow(self, prefix: str) -> None:
        """Rewrite the config and reload ExaBGP when what ``prefix`` holds changes
        the peer set (nodes, BGP settings, peers). SIGUSR1 keeps unchanged sessions.
        Returns only when ``stop`` is set: every failure is logged and retried."""
        backoff = 1.0
        while not self.stop.is_set():
            try:
                revision = self.store.get_prefix(prefix, keys_only=True).revision
                watch = self.store.watch_prefix(prefix, start_revision=revision + 1).until(self.stop)
                self.reload()  # what changed while no watch ran
                for _ in watch:
                    self.reload()
                    backoff = 1.0
            except (DatastoreError, ConfigRefused) as exc:
                log.warning("following %s: %s; retrying", prefix, exc)
            except Exception:  # never die: a dead watch would freeze the peer set for good
                log.exception("following %s failed; retrying", prefix)
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 30)

    def reload(self) -> None:
        try:
            _, changed = self.write_config()
        except ConfigRefused:
            return  # logged and published; the running config stays
        with self.lock:
            if changed and self.proc and self.proc.poll() is None:
                log.info("peers changed: reloading ExaBGP")
                self.proc.send_signal(signal.SIGUSR1)

    def withdraw_before_exit(self, proc: subprocess.Popen, timeout: float = 3.0) -> None:
        """Ask the API process to withdraw our routes, then let ExaBGP go."""
        api = _children_with(proc.pid, b"bgp.api")
        for pid in api:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while api and time.monotonic() < deadline and any(_alive(p) for p in api):
            time.sleep(0.05)

    def _set_state(self, **changes) -> None:
        with self.lock:
            self.state = replace(self.state, **changes)
        self._state_dirty.set()

    def publish(self) -> None:
        """Write the state to etcd if it changed (best effort: retried on the next tick)."""
        if not self._state_dirty.is_set():
            return
        self._state_dirty.clear()
        with self.lock:
            state = replace(self.state, updated=time.time())
        try:
            save_speaker_state(self.store, self.node, state)
        except Exception as exc:  # etcd down: the next tick tries again
            log.debug("cannot publish the speaker state: %s", exc)
            self._state_dirty.set()

    def run(self) -> int:
        for prefix in (keys.NODES, keys.BGP):
            threading.Thread(target=self.follow, args=(prefix,), name=f"follow-{prefix}",
                             daemon=True).start()
        backoff = 1.0
        try:
            while not self.stop.is_set():
                try:
                    config, _ = self.write_config()
                except (DatastoreError, ValueError) as exc:
                    config = self.good_config  # refused: the last accepted config runs on
                    if config is None:
                        log.warning("cannot build the BGP configuration: %s; retrying", exc)
                        self.publish()
                        self.stop.wait(backoff)
                        backoff = min(backoff * 2, 30)
                        continue
                with self.lock:
                    self.proc = self.start_exabgp(config)
                self._set_state(state="running", exabgp_pid=self.proc.pid, since=time.time())
                started = time.monotonic()
                while self.proc.poll() is None and not self.stop.is_set():
                    self.publish()
                    self.stop.wait(0.5)
                if self.stop.is_set():
                    break
                code = self.proc.returncode
                log.warning("ExaBGP exited with %s; restarting in %.0fs", code, backoff)
                self._set_state(state="restarting", exabgp_pid=None, since=time.time(),
                                restarts=self.state.restarts + 1, last_exit=_describe_exit(code))
                self.publish()
                if time.monotonic() - started > 60:
                    backoff = 1.0
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        with self.lock:
            proc = self.proc
        if proc and proc.poll() is None:
            self.withdraw_before_exit(proc)
            proc.terminate()  # ExaBGP closes its sessions with a Cease
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _remove_pid(self.pid_path, proc.pid if proc else None)
        self._set_state(state="stopped", exabgp_pid=None, since=time.time())
        self.publish()


# --- process handling ------------------------------------------------------------------

_libc = None


def die_with_parent(parent: int):
    """A ``preexec_fn``: the child gets SIGKILL when the forking thread (of ``parent``) ends."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
    prctl = _libc.prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
    return preexec


def kill_leftovers(pid_path: str, conf_path: str, timeout: float = 10.0) -> list[int]:
    """Kill an ExaBGP running our config file in our network namespace that is not ours
    (left by a killed agent of an older version, or if the death signal was lost), with
    its API process; returns their pids. SIGKILL: its peers keep our routes (graceful
    restart) until the new speaker re-announces them."""
    found = set(leftover_speakers(conf_path))
    try:
        pid = int(open(pid_path).read().strip())
        if _is_speaker(pid, conf_path):
            found.add(pid)
    except (OSError, ValueError):
        pass
    killed = []
    for pid in sorted(found):
        victims = [pid] + _children_with(pid, b"bgp.api")
        log.warning("killing the ExaBGP left by an earlier agent (pid %d) and its API process %s",
                    pid, victims[1:])
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            except OSError:
                pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def leftover_speakers(conf_path: str) -> list[int]:
    """ExaBGP processes (not our children) serving ``conf_path`` in our network namespace."""
    mine = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != mine and _is_speaker(int(entry), conf_path):
            out.append(int(entry))
    return out


def _is_speaker(pid: int, conf_path: str) -> bool:
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        same_netns = os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
        parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    if parent == os.getpid() or not same_netns or not _alive(pid):
        return False
    return any(a.endswith(b"exabgp") for a in argv[:2]) and b"server" in argv and conf_path.encode() in argv


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _write_pid(path: str, pid: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def _remove_pid(path: str, pid: int | None) -> None:
    try:
        if pid is None or int(open(path).read().strip()) == pid:
            os.unlink(path)
    except (OSError, ValueError):
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return ""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


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
