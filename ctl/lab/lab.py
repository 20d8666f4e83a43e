"""``Lab``: bring a multi-host Docker lab up and down, and run things on its hosts.

Design (see /work/shared/notes/multihost-lab.md for the recipe and its traps):

* an **underlay** netns ``LAB-ul`` with bridge ``br0`` (IPv4 + IPv6) and etcd
  listening on the bridge address, port 2379; or, with ``etcd_members=N``, a
  static N-member etcd cluster, each member in a netns of its own on the
  bridge, and with ``etcd_tls=True`` client-certificate TLS (``etcd.py``,
  ``pki.py``); hosts get every endpoint (and the TLS files) in their
  environment;
* per host ``hostI``: netns ``LAB-hI`` whose ``eth0`` is a veth created directly
  between that netns and the underlay (nothing touches the root netns); an
  *anchor* process (``anchor.py``) holding a private mount ns (fresh sysfs,
  own /run and /etc/docker) and a UTS ns (hostname ``hostI``); and a
  ``dockerd`` of the lab's **engine** (``20.10``, ``26`` or ``28``: Debian's
  docker.io of bookworm, trixie or sid, fetched into a cache on demand by
  ``engines.py``) started inside those namespaces with every path under
  ``STATE/hostI``, and with Docker's own firewall on (Docker's defaults:
  iptables rules and ``docker0`` inside the host netns) unless
  ``docker_firewall`` is off (then no Docker rules and no docker0); see
  ``hostengine.py``. The engine and the firewall
  choice are recorded in ``state.json``; ``docker``/``Lab.docker`` use the
  engine's own CLI and, through ``DOCKER_CONFIG``, its compose plugin;
* the image ``warren-lab/busybox:latest`` imported on every host;
* unless ``node=False``, ``warrenctl node start`` on every host;
* blackhole guard routes in the root netns while the lab exists.

State lives in ``STATE_ROOT/LAB`` (default ``/var/lib/warren-lab/LAB``):
``state.json``, ``etcd/`` and ``etcd.log``, and per host ``anchor.log``,
``dockerd.log``, ``node-start.log``, ``log/`` (``$WARREN_LOG_DIR`` on the host,
e.g. the Warren plugin's log), ``docker.sock``, ``run/`` (the host's /run),
``data/`` and ``exec/`` (dockerd's roots).

``down`` never relies on the daemons being healthy: it removes containers if
dockerd answers, then kills by namespace, cgroup and command line (never by
name), deletes the netns and cgroups, removes only this lab's guard routes
(matched by metric) and the state dir. It is idempotent, and ``up`` calls it
itself when it fails midway.
"""
from __future__ import annotations

import concurrent.futures
import glob
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Mapping

from . import dockerapi, engines, etcd, hostengine, image, net, procs, state
from .layout import (DEFAULT_NAME, FIRST_ATTACH_OCTET, GUARD_PROTO, IMAGE, MAX_ETCD_MEMBERS,
                     MAX_HOSTS, STATE_ROOT, EtcdMemberLayout, HostLayout, Layout, check_name)

log = logging.getLogger(__name__)

ANCHOR_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anchor.py")
DOCKERD = "/usr/sbin/dockerd"
DOCKER_READY_TIMEOUT = 30.0
NODE_START_TIMEOUT = 90.0
ANCHOR_TIMEOUT = 10.0
FALLBACK_TOOLS = ("ping", "ping6", "traceroute", "traceroute6", "arping", "nc", "wget", "telnet")


class LabError(Exception):
    """An expected lab failure, reported as one line."""


def preferred_docker() -> str:
    """The docker CLI matching the engine (20.10) when installed, else the one on PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def default_warrenctl() -> str:
    """``warrenctl`` of the same venv as the running Python."""
    return os.path.join(os.path.dirname(sys.executable), "warrenctl")


def _anchor_needle(h: HostLayout) -> str:
    """What an anchor's command line contains (see ``_spawn_anchor``)."""
    return f"anchor.py {h.dir} {h.name}"


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            text = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _parallel(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """Run ``fn`` on every item in threads; re-raise the first failure."""
    items = list(items)
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        return [f.result() for f in futures]


class Lab:
    """One lab, by name. Cheap to construct; all state is on disk."""

    def __init__(self, name: str = DEFAULT_NAME, *, root: str = STATE_ROOT,
                 warrenctl: str | None = None, docker: str | None = None,
                 dockerd: str | None = None, etcd: str = "etcd", busybox: str = image.BUSYBOX):
        """``docker``/``dockerd`` override the engine's CLI and daemon (normally left out)."""
        self.name = check_name(name)
        self.root = root
        self.warrenctl = warrenctl or default_warrenctl()
        self._docker_cli = docker
        self._dockerd = dockerd
        self.etcd_bin = etcd
        self.busybox = busybox

    # --- the engine ---------------------------------------------------------------

    @property
    def engine(self) -> engines.Engine | None:
        """The engine this lab runs (from its state; None while no lab exists)."""
        st = self._load()
        return hostengine.from_state(st) if st else None

    @property
    def docker_cli(self) -> str:
        """The docker CLI for this lab's hosts: the engine's own."""
        if self._docker_cli:
            return self._docker_cli
        eng = self.engine
        return eng.docker if eng else preferred_docker()

    @property
    def dockerd(self) -> str:
        if self._dockerd:
            return self._dockerd
        eng = self.engine
        return eng.dockerd if eng else DOCKERD

    @property
    def docker_firewall(self) -> bool:
        st = self._load()
        return bool(st.get("docker_firewall", False)) if st else hostengine.choose_firewall()

    # --- state -----------------------------------------------------------------

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.name)

    def _load(self) -> dict[str, Any] | None:
        try:
            return state.load(self.name, self.root)
        except state.StateError as exc:
            raise LabError(str(exc)) from None

    def _update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with state.locked(os.path.join(self.dir, ".state.lock")):
            st = self._load()
            if st is None:
                raise LabError(f"lab {self.name!r} vanished while being changed")
            change(st)
            state.save(st, self.root)
            return st

    def _require(self) -> tuple[dict[str, Any], Layout]:
        st = self._load()
        if st is None:
            raise LabError(f"lab {self.name!r} is not up (no {state.state_path(self.name, self.root)})")
        return st, state.layout_of(st)

    def exists(self) -> bool:
        return os.path.exists(state.state_path(self.name, self.root))

    @property
    def layout(self) -> Layout:
        return self._require()[1]

    def hosts(self) -> list[HostLayout]:
        st, lay = self._require()
        return [lay.host(int(h[4:])) for h in sorted(st["hosts"], key=lambda n: int(n[4:]))]

    def host(self, which: str | int) -> HostLayout:
        """A host by name (``host1``), short name (``h1``) or number (``1``)."""
        st, lay = self._require()
        m = re.fullmatch(r"(?:host|h)?(\d+)", str(which))
        name = f"host{int(m.group(1))}" if m else str(which)
        if name not in st["hosts"]:
            raise LabError(f"lab {self.name!r} has no host {which!r} "
                           f"(hosts: {', '.join(sorted(st['hosts'])) or 'none'})")
        return lay.host(int(name[4:]))

    # --- running things on a host ------------------------------------------------

    def anchor_pid(self, host: HostLayout) -> int:
        pid = procs.read_pidfile(host.path("anchor.pid"))
        if not procs.matches(pid, _anchor_needle(host)):
            raise LabError(f"{host.name} of lab {self.name!r} is not running (its anchor is gone); "
                           f"run 'warren-lab down --name {self.name}'")
        return pid  # type: ignore[return-value]

    def env(self, host: str | int | HostLayout, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of commands run on ``host``."""
        h = host if isinstance(host, HostLayout) else self.host(host)
        env = dict(os.environ if base is None else base)
        for var in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            env.pop(var, None)
        for var in ("WARREN_ETCD_CA", "WARREN_ETCD_CERT", "WARREN_ETCD_KEY"):
            env.pop(var, None)
        env.update(h.lab.etcd_client_env)
        env.update(WARREN_NODE_NAME=h.name, DOCKER_HOST=h.docker_host, WARREN_LOG_DIR=h.path("log"),
                   DOCKER_CONFIG=hostengine.docker_config(h))
        # The venv's warrenctl first, then the engine's docker, dockerd, containerd,
        # runc...; busybox stand-ins for missing tools last.
        venv_bin = os.path.dirname(sys.executable)
        path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        path = hostengine.host_path(path, self.engine)
        if venv_bin not in path.split(":"):
            path = f"{venv_bin}:{path}"
        env["PATH"] = f"{path}:{os.path.join(h.lab.dir, 'bin')}"
        return env

    def nsenter_argv(self, host: str | int | HostLayout, argv: list[str],
                     cwd: str | None = None) -> list[str]:
        """``nsenter`` into the host's net, mount and UTS namespaces (cwd kept by default)."""
        h = host if isinstance(host, HostLayout) else self.host(host)
        if cwd is None:
            try:
                cwd = os.getcwd()
            except OSError:
                cwd = "/"
        return ["nsenter", "-t", str(self.anchor_pid(h)), "-m", "-u", "-n", f"--wd={cwd}",
                "--", *argv]

    def exec(self, host: str | int | HostLayout, argv: list[str], *, input: Any = None,
             capture: bool = True, check: bool = False, timeout: float | None = None,
             text: bool = True, **popen: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` on ``host``; returns the CompletedProcess (stdout/stderr captured).

        ``cwd`` (default: ours) is the working directory on the host; other
        keyword arguments go to ``subprocess.run``.
        """
        h = host if isinstance(host, HostLayout) else self.host(host)
        cwd = popen.pop("cwd", None)
        if capture and "stdout" not in popen and "stderr" not in popen:
            popen["capture_output"] = True
        argv_ns = self.nsenter_argv(h, argv, cwd=cwd)
        env = self.env(h)
        # nsenter's --wd leaves a cwd that getcwd() calls unreachable (it was opened in our
        # mount ns); Go programs (docker, compose) then trust $PWD when it names the same dir.
        env["PWD"] = next(a for a in argv_ns if a.startswith("--wd="))[len("--wd="):]
        res = subprocess.run(argv_ns, env=env, input=input, text=text, timeout=timeout, **popen)
        if check and res.returncode != 0:
            err = (res.stderr or "").strip().splitlines() if capture and text else []
            raise LabError(f"{h.name}: {' '.join(argv)}: exit {res.returncode}"
                           + (f": {err[-1]}" if err else ""))
        return res

    def docker(self, host: str | int | HostLayout, args: list[str], **kw: Any) -> subprocess.CompletedProcess:
        return self.exec(host, [self.docker_cli, *args], **kw)

    # --- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st, lay = self._require()

        hosts = self.hosts()

        eng = hostengine.from_state(st)

        def host_status(h: HostLayout) -> dict[str, Any]:
            anchor = procs.read_pidfile(h.path("anchor.pid"))
            dpid = procs.read_pidfile(h.path("dockerd.pid"))
            return {
                "engine": eng.name if eng else None,
                "docker_version": hostengine.docker_version(h.docker_sock),
                "docker_firewall": bool(st.get("docker_firewall", False)),
                "name": h.name, "netns": h.netns, "hostname": h.name,
                "anchor_pid": anchor, "anchor_running": procs.matches(anchor, _anchor_needle(h)),
                "ipv4": h.ipv4, "ipv6": h.ipv6, "underlay_ifname": "eth0",
                "docker_socket": h.docker_sock, "docker_host": h.docker_host,
                "dockerd_pid": dpid, "dockerd_running": dockerapi.ping(h.docker_sock),
                "state_dir": h.dir, "cgroup_parent": "/" + h.cgroup,
            }

        members = self.etcd_status()
        return {
            "name": self.name, "phase": st.get("phase"), "index": lay.index, "state_dir": lay.dir,
            "underlay_netns": lay.ul_netns, "bridge": lay.bridge,
            "subnet_v4": lay.subnet_v4, "subnet_v6": lay.subnet_v6,
            "gateway_v4": lay.gateway_v4, "gateway_v6": lay.gateway_v6,
            "etcd_endpoint": lay.etcd_endpoint, "etcd_pid": members[0]["pid"],
            "etcd_running": all(m["running"] for m in members),
            "etcd_endpoints": lay.etcd_endpoints, "etcd_tls": lay.etcd_tls,
            "etcd_pki": lay.pki_dir if lay.etcd_tls else None, "etcd_members": members,
            "guard_proto": GUARD_PROTO, "guard_metric": lay.guard_metric,
            "guard_routes": net.list_guards(GUARD_PROTO, lay.guard_metric),
            "image": IMAGE, "node": bool(st.get("node")),
            "engine": eng.name if eng else None,
            "engine_packages": eng.packages if eng else {},
            "docker_firewall": bool(st.get("docker_firewall", False)),
            "docker_cli": self.docker_cli, "dockerd": self.dockerd,
            "up_seconds": st.get("up_seconds"),
            "attachments": st.get("attachments", []),
            "hosts": _parallel(host_status, hosts),
        }

    # --- extra namespaces on the underlay ------------------------------------------

    def attach(self, netns: str, *, ipv4: str | None = None, ipv6: str | None = None,
               ifname: str = "eth0", default_route: bool = False) -> dict[str, Any]:
        """Connect netns ``netns`` (created if missing) to the underlay bridge.

        Without addresses it gets the next free 198.19.K.200+ / ...::200+.
        A netns created here is deleted by ``down``, together with every
        process in it.
        """
        _, lay = self._require()
        if len(ifname) > 15:
            raise LabError(f"interface name {ifname!r} is longer than 15 characters")
        record: dict[str, Any] = {}

        def claim(st: dict[str, Any]) -> None:
            n = len(st["attachments"]) + 1
            octet = FIRST_ATTACH_OCTET + n - 1
            if octet > 254:
                raise LabError("no free attachment address on the underlay")
            if any(a["netns"] == netns for a in st["attachments"]):
                raise LabError(f"{netns} is already attached to lab {self.name!r}")
            record.update(netns=netns, ifname=ifname, ul_ifname=f"x{n}",
                          ipv4=(ipv4 or lay.addr_v4(octet)).split("/")[0],
                          ipv6=(ipv6 or lay.addr_v6(octet)).split("/")[0],
                          prefixlen_v4=24, prefixlen_v6=64,
                          created=not net.netns_exists(netns))
            st["attachments"].append(dict(record))

        self._update(claim)
        try:
            if record["created"]:
                net.netns_add(netns)
            net.add_veth(lay.ul_netns, record["ul_ifname"], netns, ifname)
            net.ip("link", "set", record["ul_ifname"], "master", lay.bridge, "up", netns=lay.ul_netns)
            net.ip("addr", "add", f"{record['ipv4']}/24", "dev", ifname, netns=netns)
            net.ip("addr", "add", f"{record['ipv6']}/64", "dev", ifname, "nodad", netns=netns)
            net.ip("link", "set", ifname, "up", netns=netns)
            if default_route:
                net.ip("route", "add", "default", "via", lay.gateway_v4, netns=netns)
                net.ip("-6", "route", "add", "default", "via", lay.gateway_v6, netns=netns)
        except net.NetError as exc:
            raise LabError(f"attach {netns}: {exc}") from None
        return record

    # --- up ----------------------------------------------------------------------------

    def _check_tools(self, node: bool, tls: bool, eng: engines.Engine) -> None:
        missing = [t for t in ("ip", "nsenter", "unshare", "setsid", self.etcd_bin,
                               *(["openssl"] if tls else []))
                   if shutil.which(t) is None]
        missing += [p for p in (self._dockerd or eng.dockerd, self._docker_cli or eng.docker,
                                self.busybox)
                    if not os.access(p, os.X_OK) and shutil.which(p) is None]
        if node and not os.access(self.warrenctl, os.X_OK):
            missing.append(self.warrenctl)
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)}")
        if os.geteuid() != 0:
            raise LabError("warren-lab must run as root")

    def up(self, hosts: int, *, node: bool = True, etcd_members: int = 1,
           etcd_tls: bool | str | None = None, engine: str | None = None,
           docker_firewall: bool | str | None = None) -> dict[str, Any]:
        """Create the lab with ``hosts`` hosts; on any failure tear down and raise LabError.

        ``etcd_members`` > 1 runs a static etcd cluster of that size instead of
        one etcd; ``etcd_tls`` makes etcd require client certificates (https; default
        ``$WARREN_LAB_ETCD_TLS`` on/off, else off).
        ``engine`` (``20.10``, ``26``, ``28``; default ``$WARREN_LAB_ENGINE``, else
        ``28``) is fetched first if it is not cached; ``docker_firewall`` (True/False
        or ``on``/``off``; default ``$WARREN_LAB_DOCKER_FIREWALL``, else on) runs
        dockerd with Docker's own iptables rules and docker0, as on a real host.
        """
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}")
        if not 1 <= etcd_members <= MAX_ETCD_MEMBERS:
            raise LabError(f"--etcd-members must be between 1 and {MAX_ETCD_MEMBERS}")
        try:
            engine_name = hostengine.choose_engine(engine)
            firewall = hostengine.choose_firewall(docker_firewall)
            etcd_tls = hostengine.choose_etcd_tls(etcd_tls)
            eng = engines.ensure(engine_name)
        except (hostengine.ChoiceError, engines.EngineError) as exc:
            raise LabError(str(exc)) from None
        self._check_tools(node, etcd_tls, eng)
        t0 = time.monotonic()
        try:
            state.create(self.name, self.root)
        except (state.StateError, OSError) as exc:
            raise LabError(str(exc)) from None

        def record_hosts(s: dict[str, Any]) -> None:
            s["node"] = node
            s["engine"] = eng.to_json()
            s["docker_firewall"] = firewall
            s["etcd"] = {"members": etcd_members, "tls": etcd_tls}
            s["hosts"] = {f"host{i}": {} for i in range(1, hosts + 1)}
        lay = state.layout_of(self._update(record_hosts))
        layouts = [lay.host(i) for i in range(1, hosts + 1)]
        try:
            self._up(lay, layouts, node)
        except BaseException as exc:
            log.debug("up failed, tearing down", exc_info=True)
            try:
                self.down()
            except Exception as cleanup:  # report the first failure, log the second
                log.error("cleanup after the failed up also failed: %s", cleanup)
            if isinstance(exc, (LabError, KeyboardInterrupt, SystemExit)):
                raise
            raise LabError(f"up failed: {exc}") from exc
        elapsed = time.monotonic() - t0

        def done(s: dict[str, Any]) -> None:
            s["phase"], s["up_seconds"] = "up", round(elapsed, 2)
        self._update(done)
        log.info("lab %s up with %d hosts in %.2fs", self.name, hosts, elapsed)
        return self.status()

    # --- etcd ----------------------------------------------------------------------------

    def etcd_member(self, which: str | int) -> EtcdMemberLayout:
        """A member by name (``etcd2``; the lab's name without a cluster), number or endpoint."""
        _, lay = self._require()
        for m in lay.etcd:
            if str(which) in (m.name, str(m.index), m.endpoint, m.ipv4):
                return m
        raise LabError(f"lab {self.name!r} has no etcd member {which!r} "
                       f"(members: {', '.join(m.name for m in lay.etcd)})")

    def _etcd_pid(self, st: dict[str, Any], m: EtcdMemberLayout) -> int | None:
        pids = st.get("etcd_pids") or {}
        return pids.get(m.name, st.get("etcd_pid") if m.index == 1 else None)

    def _members(self, member: str | int | None) -> tuple[dict[str, Any], list[EtcdMemberLayout]]:
        st, lay = self._require()
        return st, (lay.etcd if member is None else [self.etcd_member(member)])

    def etcd_status(self) -> list[dict[str, Any]]:
        st, lay = self._require()

        def one(m: EtcdMemberLayout) -> dict[str, Any]:
            pid = self._etcd_pid(st, m)
            return {"name": m.name, "netns": m.netns, "ipv4": m.ipv4, "endpoint": m.endpoint,
                    "peer_url": m.peer_url, "data_dir": m.data_dir, "log": m.log_path, "pid": pid,
                    "process": etcd.is_ours(m, pid), "running": etcd.healthy(m)}
        return _parallel(one, lay.etcd)

    def stop_etcd(self, timeout: float = 15.0, member: str | int | None = None,
                  sig: int = signal.SIGTERM) -> None:
        """Stop the lab's etcd, or one ``member`` of its cluster (a failure, for tests).

        ``sig``: SIGTERM (then SIGKILL after ``timeout``), SIGKILL (a crash) or
        SIGSTOP (a hung member: connections stay open, nothing answers).
        ``start_etcd`` brings it back.
        """
        st, members = self._members(member)
        for m in members:
            etcd.stop(m, self._etcd_pid(st, m), sig, timeout)

    def start_etcd(self, member: str | int | None = None, timeout: float = 30.0) -> None:
        """Start (or resume, after SIGSTOP) the lab's etcd members that are not running."""
        st, members = self._members(member)
        started: dict[EtcdMemberLayout, int | None] = {}
        for m in members:
            pid = self._etcd_pid(st, m)
            if etcd.is_ours(m, pid):
                procs.signal_pids([pid], signal.SIGCONT)  # type: ignore[list-item]
                started[m] = pid
            else:
                started[m] = etcd.start(m, self.etcd_bin)
        self._record_etcd_pids(started)
        try:
            etcd.wait_ready(started, timeout)
        except etcd.EtcdError as exc:
            raise LabError(str(exc)) from None

    def _record_etcd_pids(self, pids: dict[EtcdMemberLayout, int | None]) -> None:
        def change(s: dict[str, Any]) -> None:
            s.setdefault("etcd_pids", {}).update({m.name: p for m, p in pids.items()})
            for m, p in pids.items():
                if m.index == 1:
                    s["etcd_pid"] = p
        self._update(change)

    def etcd_leader(self) -> str | None:
        """Name of the member that leads the cluster now (None during an election)."""
        _, lay = self._require()
        lead = etcd.leader(lay)
        return lead.name if lead else None

    def move_etcd_leader(self, member: str | int, timeout: float = 20.0) -> None:
        _, lay = self._require()
        try:
            etcd.move_leader(lay, self.etcd_member(member), timeout)
        except etcd.EtcdError as exc:
            raise LabError(str(exc)) from None

    def etcd_connections(self, host: str | int | HostLayout) -> dict[str, int]:
        """Established TCP connections from ``host`` to each etcd member (by name)."""
        h = host if isinstance(host, HostLayout) else self.host(host)
        _, lay = self._require()
        by_addr = {m.ipv4: m.name for m in lay.etcd}
        if not net.netns_exists(h.netns):
            raise LabError(f"{h.name}: netns {h.netns} is gone")
        out = subprocess.run(["nsenter", f"--net={net.netns_path(h.netns)}", "--", "ss", "-Htn",
                              "state", "established", "( dport = :2379 )"],
                             capture_output=True, text=True, timeout=30)
        counts = {m.name: 0 for m in lay.etcd}
        for line in out.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                addr = fields[3].rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")  # v4-mapped
                if addr in by_addr:
                    counts[by_addr[addr]] += 1
        return counts

    def _up(self, lay: Layout, layouts: list[HostLayout], node: bool) -> None:
        t = time.monotonic()
        net.add_guards(lay.guard_prefixes, GUARD_PROTO, lay.guard_metric)
        self._make_fallback_bin(lay)
        self._make_underlay(lay)
        if lay.etcd_tls:
            from .pki import PkiError, make_lab_pki
            try:
                make_lab_pki(lay.pki_dir, lay.name, {f"etcd{m.index}": m.ipv4 for m in lay.etcd})
            except PkiError as exc:
                raise LabError(str(exc)) from None
        for m in lay.etcd:
            etcd.make_netns(m)
        etcd_pids: dict[EtcdMemberLayout, int | None] = {m: etcd.start(m, self.etcd_bin) for m in lay.etcd}
        self._record_etcd_pids(etcd_pids)
        firewall = self.docker_firewall
        for h in layouts:
            self._make_host_net(h, forwarding=not firewall)
        anchors = {h.name: self._spawn_anchor(h) for h in layouts}
        self._update(lambda s: [s["hosts"][n].update(anchor_pid=p) for n, p in anchors.items()])
        for h in layouts:
            self._wait_anchor(h, anchors[h.name])
        log.debug("namespaces ready in %.2fs", time.monotonic() - t)

        eng = self.engine
        for h in layouts:
            hostengine.prepare_host(h, eng)
        dockerds = {h.name: self._spawn_dockerd(h) for h in layouts}
        self._update(lambda s: [s["hosts"][n].update(dockerd_pid=p) for n, p in dockerds.items()])
        rootfs = image.rootfs_tar(self.busybox)

        def ready_host(h: HostLayout) -> None:
            self._wait_dockerd(h, dockerds[h.name])
            res = self.docker(h, image.import_argv(self.docker_cli, IMAGE)[1:], input=rootfs,
                              text=False, timeout=60)
            if res.returncode != 0:
                raise LabError(f"{h.name}: docker import failed: "
                               f"{res.stderr.decode(errors='replace').strip()}")
        _parallel(ready_host, layouts)
        log.debug("dockerd ready and image imported at %.2fs", time.monotonic() - t)
        try:
            etcd.wait_ready(etcd_pids)
        except etcd.EtcdError as exc:
            raise LabError(str(exc)) from None
        log.debug("etcd ready at %.2fs", time.monotonic() - t)
        if node:
            _parallel(self._start_node, layouts)
            log.debug("nodes started at %.2fs", time.monotonic() - t)

    def _make_fallback_bin(self, lay: Layout) -> None:
        """``STATE/bin``: busybox links for network tools this machine lacks (last on PATH)."""
        bindir = os.path.join(lay.dir, "bin")
        os.makedirs(bindir, exist_ok=True)
        for tool in FALLBACK_TOOLS:
            if shutil.which(tool) is None:
                os.symlink(self.busybox, os.path.join(bindir, tool))

    def _make_underlay(self, lay: Layout) -> None:
        ul = lay.ul_netns
        net.netns_add(ul)
        net.ip("link", "add", lay.bridge, "type", "bridge", netns=ul)
        net.ip("addr", "add", f"{lay.gateway_v4}/24", "dev", lay.bridge, netns=ul)
        net.ip("addr", "add", f"{lay.gateway_v6}/64", "dev", lay.bridge, "nodad", netns=ul)
        net.ip("link", "set", lay.bridge, "up", netns=ul)

    def _make_host_net(self, h: HostLayout, forwarding: bool = True) -> None:
        """The host's netns and underlay link. Without ``forwarding`` the netns starts
        with forwarding off, as a real host boots: with its firewall on,
        dockerd then enables IPv4 forwarding itself and sets FORWARD's policy to
        DROP, and Warren's node enables what it needs."""
        lay, ns = h.lab, h.netns
        net.netns_add(ns)
        # A new netns copies IPv4's setting from the root netns: set both explicitly.
        on = "1" if forwarding else "0"
        net.set_sysctls(ns, {"net.ipv4.ip_forward": on, "net.ipv6.conf.all.forwarding": on})
        net.add_veth(lay.ul_netns, h.ul_veth, ns, "eth0")
        net.ip("link", "set", h.ul_veth, "master", lay.bridge, "up", netns=lay.ul_netns)
        net.ip("addr", "add", f"{h.ipv4}/24", "dev", "eth0", netns=ns)
        net.ip("addr", "add", f"{h.ipv6}/64", "dev", "eth0", "nodad", netns=ns)
        net.ip("link", "set", "eth0", "up", netns=ns)
        net.ip("route", "add", "default", "via", lay.gateway_v4, netns=ns)
        net.ip("-6", "route", "add", "default", "via", lay.gateway_v6, netns=ns)

    def _spawn_anchor(self, h: HostLayout) -> int:
        for sub in ("run/docker/plugins", "run/containerd", "run/lock", "etc-docker/plugins",
                    "usr-lib-docker-plugins", "data", "exec", "cgsave"):
            os.makedirs(h.path(sub), exist_ok=True)
        os.chmod(h.path("run/lock"), 0o1777)
        if not os.path.lexists(h.path("run/shm")):
            os.symlink("/dev/shm", h.path("run/shm"))
        argv = ["nsenter", f"--net={net.netns_path(h.netns)}", "--",
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                sys.executable, "-I", "-S", ANCHOR_PY, h.dir, h.name]
        return procs.spawn_daemon(argv, h.path("anchor.log"))

    def _wait_anchor(self, h: HostLayout, pid: int) -> None:
        deadline = time.monotonic() + ANCHOR_TIMEOUT
        while procs.read_pidfile(h.path("anchor.pid")) != pid:
            if not procs.is_alive(pid):
                raise LabError(f"{h.name}: anchor failed: {_tail(h.path('anchor.log')) or 'no output'}")
            if time.monotonic() > deadline:
                raise LabError(f"{h.name}: anchor not ready after {ANCHOR_TIMEOUT:.0f}s")
            time.sleep(0.01)

    def restart_dockerd(self, host: str | int | HostLayout, timeout: float = 30.0) -> None:
        """Stop a host's dockerd (SIGTERM, as systemd would) and start it again."""
        h = host if isinstance(host, HostLayout) else self.host(host)
        pid = procs.read_pidfile(h.path("dockerd.pid"))
        if procs.matches(pid, self.dockerd):
            procs.signal_pids([pid], signal.SIGTERM)
            if procs.wait_gone([pid], timeout):
                raise LabError(f"{h.name}: dockerd did not stop within {timeout:.0f}s")
        new = self._spawn_dockerd(h)
        self._update(lambda s: s["hosts"][h.name].update(dockerd_pid=new))
        self._wait_dockerd(h, new)

    def _spawn_dockerd(self, h: HostLayout) -> int:
        argv = self.nsenter_argv(h, hostengine.dockerd_argv(h, self.dockerd, self.docker_firewall),
                                 cwd="/")
        env = self.env(h)
        env.pop("DOCKER_HOST", None)
        return procs.spawn_daemon(argv, h.path("dockerd.log"), env=env)

    def _wait_dockerd(self, h: HostLayout, pid: int) -> None:
        deadline = time.monotonic() + DOCKER_READY_TIMEOUT
        while not dockerapi.ping(h.docker_sock):
            if not procs.is_alive(pid):
                raise LabError(f"{h.name}: dockerd exited: {_tail(h.path('dockerd.log'))}")
            if time.monotonic() > deadline:
                raise LabError(f"{h.name}: dockerd not ready after {DOCKER_READY_TIMEOUT:.0f}s "
                               f"(see {h.path('dockerd.log')})")
            time.sleep(0.05)

    def restart_node(self, host: str | int | HostLayout) -> None:
        """``warrenctl node stop`` then ``node start`` on ``host``: fresh node processes
        (e.g. connected to the first etcd endpoint again)."""
        h = host if isinstance(host, HostLayout) else self.host(host)
        res = self.exec(h, [self.warrenctl, "node", "stop", "--name", h.name], timeout=60,
                        stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise LabError(f"{h.name}: warrenctl node stop failed: {res.stderr.strip()}")
        self._start_node(h)

    def _start_node(self, h: HostLayout) -> None:
        argv = [self.warrenctl, "node", "start", "--name", h.name, "--ip", h.ipv4, "--ip6", h.ipv6]
        logpath = h.path("node-start.log")
        # Output to a file, not a pipe: the daemon it leaves behind may keep the pipe open.
        with open(logpath, "ab") as out:
            try:
                res = self.exec(h, argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, capture=False, timeout=NODE_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise LabError(f"{h.name}: '{' '.join(argv[1:])}' did not return within "
                               f"{NODE_START_TIMEOUT:.0f}s (see {logpath})") from None
        if res.returncode != 0:
            raise LabError(f"{h.name}: warrenctl node start failed (exit {res.returncode}): "
                           f"{_tail(logpath, 1) or 'no output'} (see {logpath})")

    # --- down --------------------------------------------------------------------------

    def _known_hosts(self, st: dict[str, Any] | None, lay: Layout) -> list[HostLayout]:
        idx: set[int] = set()
        if st:
            idx.update(int(n[4:]) for n in st.get("hosts", {}))
        if os.path.isdir(self.dir):
            idx.update(int(d[4:]) for d in os.listdir(self.dir) if re.fullmatch(r"host\d+", d))
        for ns in net.list_netns(f"{self.name}-h"):
            m = re.fullmatch(rf"{self.name}-h(\d+)", ns)
            if m:
                idx.add(int(m.group(1)))
        return [lay.host(i) for i in sorted(i for i in idx if 1 <= i <= MAX_HOSTS)]

    def down(self) -> bool:
        """Tear everything down; True if there was anything to remove."""
        t0 = time.monotonic()
        try:
            st = self._load()
        except LabError as exc:
            log.warning("%s; cleaning up by naming convention", exc)
            st = None
        lay = state.layout_of(st) if st else Layout(self.name, 0, self.root)
        hosts = self._known_hosts(st, lay)
        attachments = st.get("attachments", []) if st else []
        own_netns = [a["netns"] for a in attachments if a.get("created")]
        own_netns += sorted({m.netns for m in lay.etcd if m.own_netns}
                            | set(net.list_netns(f"{self.name}-e")))
        all_netns = [h.netns for h in hosts] + own_netns + [lay.ul_netns]
        guards = net.list_guards(GUARD_PROTO, lay.guard_metric) if st else []
        if not (st or os.path.exists(self.dir) or guards
                or any(net.netns_exists(n) for n in all_netns)):
            return False

        # 1. Containers, while dockerd (and a Warren node) can still clean up after them.
        def remove_containers(h: HostLayout) -> None:
            containerd = procs.read_pidfile(h.path("exec/containerd/containerd.pid"))
            if not (procs.matches(containerd, h.dir) and dockerapi.ping(h.docker_sock)):
                return  # without both, dockerd cannot stop containers: the sweep will
            try:
                ids = dockerapi.container_ids(h.docker_sock)
                _parallel(lambda cid: dockerapi.remove_container(h.docker_sock, cid), ids)
            except OSError as exc:
                log.warning("%s: removing containers: %s", h.name, exc)
        _parallel(remove_containers, hosts)

        # 2. Host processes: dockerd, containerd, shims, node, anything in the
        #    anchors' mount ns or the hosts' netns, container leftovers in the cgroups.
        anchors = [p for h in hosts for p in [procs.read_pidfile(h.path("anchor.pid"))]
                   if procs.matches(p, _anchor_needle(h))]
        mnt = {i for i in (procs.ns_inode(p, "mnt") for p in anchors) if i}
        host_net = {i for i in (net.netns_inode(h.netns) for h in hosts) if i}
        # Containers still running now have no dockerd able to stop them, and a
        # container's PID 1 ignores SIGTERM: SIGKILL them straight away.
        procs.signal_pids([p for h in hosts for p in procs.cgroup_pids(h.cgroup)], signal.SIGKILL)
        self._sweep(lambda: procs.find(host_net, mnt, [h.dir for h in hosts])
                    + [p for h in hosts for p in procs.cgroup_pids(h.cgroup)], timeout=6.0)
        for h in hosts:
            left = procs.remove_cgroup(h.cgroup)
            if left:
                log.warning("%s: cgroups not removed: %s", h.name, ", ".join(left))

        # 3. etcd, processes in the underlay and in namespaces attach() created, stragglers.
        other_net = {i for i in (net.netns_inode(n) for n in own_netns + [lay.ul_netns]) if i}
        needle = self.dir + "/"
        self._sweep(lambda: procs.find(other_net | host_net, mnt, [needle]), timeout=5.0)

        # 4. Namespaces, guard routes, mounts, files.
        for ns in all_netns:
            try:
                net.netns_del(ns)
            except net.NetError as exc:
                log.warning("%s", exc)
        if st:
            net.remove_guards(GUARD_PROTO, lay.guard_metric)
        self._remove_dir()
        for d in [lay.etcd_dir] + glob.glob(lay.etcd_dir + "[0-9]*"):
            shutil.rmtree(d, ignore_errors=True)  # on tmpfs, outside the state dir
        left = procs.find(needles=[needle])
        if left:
            log.warning("processes still mention %s: %s", self.dir, left)
        log.info("lab %s down in %.2fs", self.name, time.monotonic() - t0)
        return True

    @staticmethod
    def _sweep(find: Callable[[], list[int]], timeout: float) -> None:
        """TERM what ``find`` returns, KILL after ``timeout``; repeat for late arrivals."""
        for attempt in range(3):
            pids = sorted(set(find()))
            if not pids:
                return
            log.debug("terminating %s", pids)
            procs.terminate(pids, timeout if attempt == 0 else 1.0)

    def _remove_dir(self) -> None:
        """Remove the state dir, first detaching any mount below it in this mount ns."""
        if not os.path.isdir(self.dir):
            return
        prefix = self.dir + "/"
        for _ in range(3):
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
            ours = [p for p in points if p.startswith(prefix) or p == self.dir]
            if not ours:
                break
            for p in reversed(ours):
                subprocess.run(["umount", "-l", p], capture_output=True)
        else:
            raise LabError(f"mounts remain under {self.dir}; not removing it")
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.exists(self.dir):
            raise LabError(f"could not remove {self.dir}")
