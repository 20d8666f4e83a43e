"""``warrenctl node start|stop|show``: this host's Warren node.

``start`` registers the node in etcd, makes sure routed workload traffic may
be forwarded, reconciles this host's veths and routes with etcd, starts the
node agent (:mod:`ctl.agent`: policy, nat-outgoing and the BGP speaker), then
runs the plugin server (plugin.wsgi on the plugin socket) - in the background
with a pid file and a log under a per-node directory, or in the foreground
with ``--foreground`` (for containers and systemd). It returns once the
socket answers ``Plugin.Activate``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from pyroute2 import IPRoute

from bgp import fabric
from ipam import Allocator, InvalidRequest, PoolStore
from ipam.nodes import Node, alive, check_free, claim, list_nodes, register, release
from plugin import forward, server
from plugin.config import DEFAULT_SOCKET
from plugin.dataplane import Dataplane
from plugin.errors import PluginError
from plugin.networks import NetworkDriver
from plugin.ports import PortPublisher
from plugin.reconcile import reconcile

from .agent import HOST_POLICY_ENV, MULTIPROC_ENV
from .bgpcmd import add_peer_commands
from .output import as_json, table
from .status import node_status

RUN_DIR = os.environ.get("WARREN_RUN_DIR", "/run/warren")
LOG_DIR = os.environ.get("WARREN_LOG_DIR", "/var/log/warren")


class NodeError(Exception):
    pass


def register_commands(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="run this host's Warren node")
    verbs = node.add_subparsers(dest="verb", required=True, metavar="{start,stop,show,status,bgp}")
    start = verbs.add_parser("start", help="register this host and start its node")
    start.add_argument("--name", help="node name (default: $WARREN_NODE_NAME or the hostname)")
    start.add_argument("--ip", help="this host's underlay IPv4 address (default: of the default route)")
    start.add_argument("--ip6", help="this host's underlay IPv6 address")
    start.add_argument("--socket", default=os.environ.get("WARREN_PLUGIN_SOCKET", DEFAULT_SOCKET))
    start.add_argument("--foreground", action="store_true", help="run the plugin in this process")
    start.add_argument("--no-bgp", action="store_true", help="do not run a BGP speaker (single host)")
    start.add_argument("--workload-to-host", choices=("drop", "accept"),
                       default=os.environ.get(HOST_POLICY_ENV) or "drop",
                       help="traffic from workloads to this host: drop unless a profile's outbound "
                            "rule names the host's address (default), or accept")
    start.set_defaults(func=node_start)
    stop = verbs.add_parser("stop", help="stop this host's node")
    stop.add_argument("--name")
    stop.set_defaults(func=node_stop)
    show = verbs.add_parser("show", help="list registered nodes")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=node_show)
    status = verbs.add_parser("status", help="this node's BGP sessions")
    status.add_argument("--name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=node_status)
    bgp = verbs.add_parser("bgp", help="BGP peers of this node")
    add_peer_commands(bgp.add_subparsers(dest="bgp_verb", required=True, metavar="{peer}"), node_scope=True)


def _paths(name: str) -> dict[str, str]:
    run, logs = os.path.join(RUN_DIR, name), os.path.join(LOG_DIR, name)
    return {"run": run, "logs": logs, "pid": os.path.join(run, "plugin.pid"),
            "log": os.path.join(logs, "plugin.log"), "agent_pid": os.path.join(run, "agent.pid"),
            "agent_out": os.path.join(logs, "agent.out")}


PLUGIN_MARK, AGENT_MARK = b"plugin.wsgi", b"ctl.agent"


def _running_pid(pidfile: str, mark: bytes = PLUGIN_MARK) -> int | None:
    """The pid in ``pidfile`` if that process is still ours (its command line has ``mark``)."""
    try:
        pid = int(open(pidfile).read().strip())
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
    except (OSError, ValueError):
        return None
    return pid if mark in cmdline else None


def _stop(pidfile: str, mark: bytes, timeout: float = 15.0) -> bool:
    pid = _running_pid(pidfile, mark)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running_pid(pidfile, mark) == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running_pid(pidfile, mark) == pid:
        os.kill(pid, signal.SIGKILL)
    return True


def _start_agent(name: str, paths: dict[str, str], env: dict[str, str], bgp: bool, lease: int,
                 ipv4: str | None) -> int:
    argv = [sys.executable, "-m", "ctl.agent", "--node", name, "--lease", str(lease),
            "--run-dir", paths["run"], "--log-dir", paths["logs"]] + ([] if bgp else ["--no-bgp"])
    argv += ["--ip", ipv4] if ipv4 else []
    with open(paths["agent_out"], "ab") as out:
        inherit = env.get("WARREN_LOG_STDERR") == "1"  # foreground: our stdout/stderr
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=None if inherit else out,
                                stderr=None if inherit else subprocess.STDOUT, start_new_session=True)
    with open(paths["agent_pid"], "w") as f:
        f.write(str(proc.pid))
    return proc.pid


def _underlay(ipv4: str | None) -> tuple[str | None, str | None]:
    """(address, interface): the given address's interface, or the default route's."""
    with IPRoute() as ipr:
        if ipv4:
            for addr in ipr.get_addr(family=2, address=ipv4):
                return ipv4, ipr.get_links(addr["index"])[0].get_attr("IFLA_IFNAME")
            raise InvalidRequest(f"{ipv4} is not an address of this host")
        for route in ipr.get_default_routes(family=2):
            index = route.get_attr("RTA_OIF")
            if index:
                addrs = ipr.get_addr(family=2, index=index)
                name = ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
                return (addrs[0].get_attr("IFA_ADDRESS") if addrs else None), name
    return None, None


def _setup_fabric(store, name: str, ipv4: str | None, iface: str | None) -> str | None:
    """Encapsulation devices before the speaker starts; returns the VTEP MAC (or None)."""
    pools = PoolStore(store).list()
    encaps = {p.encap for p in pools}
    underlay_mtu = Dataplane().interface_mtu(iface) if iface else 1500
    mac = None
    if ipv4 and iface:
        try:
            fabric.ensure_vxlan(ipv4, iface, fabric.vtep_mac(name), underlay_mtu - fabric.OVERHEAD["vxlan"])
            mac = fabric.vtep_mac(name)
        except fabric.FabricError as exc:
            if "vxlan" in encaps:
                raise NodeError(str(exc)) from None
    if "ipip" in encaps:
        try:
            fabric.check_ipip()
        except fabric.FabricError as exc:
            raise NodeError(str(exc)) from None
        fabric.set_mtu(fabric.IPIP_DEV, underlay_mtu - fabric.OVERHEAD["ipip"])
        fabric.set_tunnel_address(_tunnel_address(store, name, pools))
    return mac


def _tunnel_address(store, name: str, pools) -> str:
    """This node's tunnel address: kept across restarts (one handle per node)."""
    allocator = Allocator(store, name)
    handle = f"tunnel-{name}"
    ipip = [p for p in pools if p.encap == "ipip" and not p.disabled]
    held = [a for a in allocator.addresses(handle) if any(p.contains(a) for p in ipip)]
    if held:
        return held[0]
    return allocator.assign(handle, pool=ipip[0].cidr, attrs={"purpose": "tunnel"}).address


def _env(name: str, args, ctx, iface: str | None) -> dict[str, str]:
    """The environment of the node's processes."""
    env = dict(os.environ, WARREN_NODE_NAME=name, WARREN_PLUGIN_SOCKET=args.socket)
    env[HOST_POLICY_ENV] = args.workload_to_host
    env[MULTIPROC_ENV] = os.path.join(RUN_DIR, name, "metrics")
    if ctx.endpoints:
        env["WARREN_ETCD_ENDPOINTS"] = ctx.endpoints
    if iface:
        env.setdefault("WARREN_UNDERLAY_IFACE", iface)
    return env


def node_start(args, ctx) -> int:
    name = args.name or ctx.host
    paths = _paths(name)
    ipv4, iface = _underlay(args.ip)
    check_free(ctx.store, Node(name=name, ipv4=ipv4))  # before anything: the name may be another's
    if _running_pid(paths["pid"]):
        if _running_pid(paths["agent_pid"], AGENT_MARK) or args.foreground:
            raise NodeError(f"node {name} is already running (pid file {paths['pid']})")
        # the plugin serves but the node agent died: start the agent alone (it resyncs)
        lease = claim(ctx.store, Node(name=name, ipv4=ipv4))
        pid = _start_agent(name, paths, _env(name, args, ctx, iface), bgp=not args.no_bgp,
                           lease=lease, ipv4=ipv4)
        print(f"Node {name} is running; restarted its agent (pid {pid}), log {paths['logs']}/agent.log")
        return 0
    lease = claim(ctx.store, Node(name=name, ipv4=ipv4))  # refuses a name another live node holds
    try:
        return _start(name, args, ctx, paths, ipv4, iface, lease)
    except BaseException:
        _stop(paths["agent_pid"], AGENT_MARK)  # it would keep the name alive
        release(ctx.store, name, lease)
        raise


def _start(name: str, args, ctx, paths: dict[str, str], ipv4: str | None, iface: str | None,
           lease: int) -> int:
    mac = _setup_fabric(ctx.store, name, ipv4, iface)
    register(ctx.store, Node(name=name, ipv4=ipv4, ipv6=args.ip6, vtep_mac=mac))
    try:
        forward.install()
    except subprocess.CalledProcessError as exc:
        raise NodeError(f"cannot install the {forward.CHAIN} rules: {(exc.stderr or '').strip()}") from None
    dataplane = Dataplane()
    dataplane.ensure_forwarding()
    driver = NetworkDriver(store=ctx.store, host=name, dataplane=dataplane, underlay_mtu=lambda: 1500)
    endpoints = driver.local_endpoints()
    reconcile(dataplane, endpoints)
    try:
        PortPublisher().sync(endpoints)  # -p rules as etcd says, also after a crash
    except PluginError as exc:
        raise NodeError(str(exc)) from None
    os.makedirs(os.path.dirname(args.socket), exist_ok=True)
    if os.path.exists(args.socket):
        os.unlink(args.socket)  # a stale socket makes dockerd wait for a dead plugin
    for d in (paths["run"], paths["logs"]):
        os.makedirs(d, mode=0o700, exist_ok=True)
    if os.path.exists(paths["pid"]):
        os.unlink(paths["pid"])  # stale (checked above)
    env = _env(name, args, ctx, iface)
    argv = server.server_argv(args.socket, paths["pid"], paths["log"])
    _stop(paths["agent_pid"], AGENT_MARK)  # an agent left from a killed node
    shutil.rmtree(env[MULTIPROC_ENV], ignore_errors=True)  # counters start again with the node
    os.makedirs(env[MULTIPROC_ENV], mode=0o700)
    if args.foreground:
        env["WARREN_LOG_STDERR"] = "1"  # the agent logs to its file and to our stderr
    _start_agent(name, paths, env, bgp=not args.no_bgp, lease=lease, ipv4=ipv4)
    if args.foreground:
        return _foreground(name, paths, argv, env,
                           lambda: _start_agent(name, paths, env, bgp=not args.no_bgp, ipv4=ipv4,
                                                lease=claim(ctx.store, Node(name=name, ipv4=ipv4))))
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server.wait_ready(args.socket, alive=lambda: proc.poll() is None)
    except RuntimeError as exc:
        if proc.poll() is None:
            proc.terminate()
        raise NodeError(f"{exc}; see {paths['log']}") from None
    print(f"Node {name} started: plugin on {args.socket} (pid {proc.pid}), log {paths['log']}")
    return 0


def _foreground(name: str, paths: dict[str, str], argv: list[str], env: dict[str, str],
                restart_agent) -> int:
    """``node start --foreground``: stay PID 1 (of a container, a plugin, a systemd unit).

    Runs the plugin server as a child and watches both node processes: a
    dead agent is restarted (with backoff); a dead server ends the node
    (exit 1: the container or unit restarts). SIGTERM/SIGINT stop it as
    ``node stop`` does: the agent first (peers withdraw our routes, the
    liveness lease goes), then the server.
    """
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _: stopping.append(signum))
    server_proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    socket_path = env["WARREN_PLUGIN_SOCKET"]
    try:
        server.wait_ready(socket_path, alive=lambda: server_proc.poll() is None and not stopping)
        _sd_notify("READY=1")  # a Type=notify unit: docker.service may start now
    except RuntimeError as exc:
        print(f"warren-node {name}: {exc}", file=sys.stderr, flush=True)
    backoff, next_check = 1.0, time.monotonic() + 1.0
    while server_proc.poll() is None and not stopping:
        time.sleep(0.2)
        reap_orphans(keep=server_proc.pid)
        if time.monotonic() < next_check:
            continue
        next_check = time.monotonic() + 1.0
        if _running_pid(paths["agent_pid"], AGENT_MARK):
            continue
        print(f"warren-node {name}: the node agent died; restarting it", file=sys.stderr, flush=True)
        try:
            restart_agent()
            backoff = 1.0
        except Exception as exc:  # etcd down, name taken...: try again later
            print(f"warren-node {name}: cannot restart the agent: {exc}", file=sys.stderr, flush=True)
            backoff = min(backoff * 2, 30.0)
            next_check = time.monotonic() + backoff
    _stop(paths["agent_pid"], AGENT_MARK)
    if server_proc.poll() is None:
        server_proc.terminate()
        try:
            server_proc.wait(15)
        except subprocess.TimeoutExpired:
            server_proc.kill()
            server_proc.wait()
    if stopping:
        return 0
    print(f"warren-node {name}: the plugin server exited with {server_proc.returncode}", file=sys.stderr)
    return 1


def reap_orphans(keep: int) -> list[int]:
    """Reap every exited child except ``keep`` (which its Popen waits for); return their pids.

    As PID 1 of a container we inherit every orphan: an ExaBGP whose agent was
    killed, a restarted agent's predecessor. Nobody else waits for them, so
    without this they stay zombies. ``WNOWAIT`` peeks first, so ``keep``'s
    exit status is left for ``server_proc.poll()``.
    """
    reaped = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # no children at all
            return reaped
        if info is None or info.si_pid == keep:
            return reaped
        os.waitpid(info.si_pid, 0)
        reaped.append(info.si_pid)


def _sd_notify(state: str) -> None:
    """Tell systemd (``$NOTIFY_SOCKET``, when a unit runs us) our state; a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            print(f"warren-node: cannot notify systemd: {exc}", file=sys.stderr)


def node_stop(args, ctx) -> int:
    name = args.name or ctx.host
    paths = _paths(name)
    agent = _stop(paths["agent_pid"], AGENT_MARK)  # first: peers withdraw our routes at once
    plugin = _stop(paths["pid"], PLUGIN_MARK)
    print(f"Node {name} stopped" if agent or plugin else f"Node {name} is not running")
    return 0


def node_show(args, ctx) -> int:
    nodes = list_nodes(ctx.store)
    up = alive(ctx.store)
    if args.json:
        as_json([{"name": n.name, "ipv4": n.ipv4, "ipv6": n.ipv6, "as": n.as_number, "alive": n.name in up}
                 for n in nodes])
        return 0
    table(["Name", "IPv4", "IPv6", "AS", "State"],
          [(n.name, n.ipv4 or "-", n.ipv6 or "-", n.as_number or "-", "up" if n.name in up else "down")
           for n in nodes])
    return 0
