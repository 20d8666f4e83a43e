"""``warrenctl node start|stop|show``: this host's Warren node.

``start`` registers the node in etcd, makes sure routed workload traffic may
be forwarded, reconciles this host's veths and routes with etcd, then hands
the node's two processes - the node agent (:mod:`ctl.agent`: policy,
nat-outgoing, the BGP speaker) and the plugin server (plugin.wsgi on the
plugin socket) - to the node supervisor (:mod:`ctl.supervisor`), which
restarts each of them alone when it dies or (the server) stops answering.
The supervisor runs detached with a pid file and a log under a per-node
directory, or in this process with ``--foreground`` (containers, systemd).
``start`` returns once the socket answers ``Plugin.Activate``.

Faults stay local: ``start`` on a node that runs never stops a healthy
process. With the supervisor alive it only asks it (SIGUSR1) to start what
is missing now; with the supervisor gone but an agent or a server still
running (the supervisor was killed) it starts a supervisor that adopts them
and starts only what is missing. Only a node with nothing running gets the
full start. ``stop`` ends the supervisor (agent first: peers withdraw this
host's routes at once), then anything still running from its pid files, and
what killed agents left in their recorded process groups (an ExaBGP whose
agent was killed -9).

``start`` warns (one line) when etcd is plain HTTP at a non-loopback address.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys

from pyroute2 import IPRoute

from bgp import fabric
from ipam import Allocator, InvalidRequest, PoolStore
from ipam.nodes import Node, alive, check_free, claim, list_nodes, register, release
from plugin import forward, server
from plugin.config import DEFAULT_SOCKET, setup_logging
from plugin.dataplane import Dataplane
from plugin.errors import PluginError
from plugin.networks import NetworkDriver
from plugin.ports import PortPublisher
from plugin.reconcile import reconcile

from .agent import HOST_POLICY_ENV, MULTIPROC_ENV
from .bgpcmd import add_peer_commands
from .output import as_json, table
from .status import node_status
from .supervisor import (SUPERVISOR_MARKS, Child, Supervisor, reap_orphans, running_pid, stop_groups,
                         stop_pids, write_spec)

__all__ = ["register_commands", "reap_orphans", "NodeError"]

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
    start.add_argument("--foreground", action="store_true", help="supervise the node from this process (systemd, containers)")
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
            "agent_out": os.path.join(logs, "agent.out"), "groups": os.path.join(run, "agent.groups"),
            "supervisor_pid": os.path.join(run, "supervisor.pid"),
            "supervisor_log": os.path.join(logs, "supervisor.log"),
            "spec": os.path.join(run, "supervisor.json")}


PLUGIN_MARK, AGENT_MARK = b"plugin.wsgi", b"ctl.agent"


def _running_pid(pidfile: str, mark: bytes | tuple[bytes, ...] = PLUGIN_MARK) -> int | None:
    """The pid in ``pidfile`` if that process is still ours (its command line has ``mark``)."""
    return running_pid(pidfile, mark)


def _stop(pidfile: str, mark: bytes | tuple[bytes, ...], timeout: float = 15.0) -> bool:
    pid = _running_pid(pidfile, mark)
    if pid is None:
        return False
    stop_pids([pid], timeout)
    return True


def _children(name: str, args, paths: dict[str, str], lease: int, ipv4: str | None,
              foreground: bool) -> list[Child]:
    """What the supervisor runs: the node agent and the plugin server."""
    agent = [sys.executable, "-m", "ctl.agent", "--node", name, "--lease", str(lease),
             "--run-dir", paths["run"], "--log-dir", paths["logs"]] + (["--no-bgp"] if args.no_bgp else [])
    agent += ["--ip", ipv4] if ipv4 else []
    return [Child("agent", agent, paths["agent_pid"], AGENT_MARK.decode(),
                  out=None if foreground else paths["agent_out"], group_file=paths["groups"]),
            Child("plugin", server.server_argv(args.socket, paths["pid"], paths["log"]), paths["pid"],
                  PLUGIN_MARK.decode(), out=None if foreground else paths["log"], socket=args.socket,
                  writes_pidfile=True)]


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
    warn_plaintext_etcd(ctx.store.config)  # once the input is good: a refusal stays one line
    supervisor = _running_pid(paths["supervisor_pid"], SUPERVISOR_MARKS)
    plugin, agent = _running_pid(paths["pid"], PLUGIN_MARK), _running_pid(paths["agent_pid"], AGENT_MARK)
    if supervisor:
        if args.foreground or (plugin and agent):
            raise NodeError(f"node {name} is already running (pid file {paths['supervisor_pid']})")
        missing = " and ".join(n for n, pid in (("plugin server", plugin), ("agent", agent)) if not pid)
        os.kill(supervisor, signal.SIGUSR1)  # start what is missing now, whatever its backoff
        if not plugin:
            _wait_plugin(args.socket, paths,
                         lambda: bool(_running_pid(paths["supervisor_pid"], SUPERVISOR_MARKS)))
        print(f"Node {name} is running; its supervisor (pid {supervisor}) restarted the {missing}")
        return 0
    if plugin or agent:  # the supervisor was killed; the node serves on: adopt, start what is missing
        return _resume(name, args, ctx, paths, ipv4, iface, plugin, agent)
    lease = claim(ctx.store, Node(name=name, ipv4=ipv4))  # refuses a name another live node holds
    try:
        return _start(name, args, ctx, paths, ipv4, iface, lease)
    except BaseException:
        _stop(paths["supervisor_pid"], SUPERVISOR_MARKS)
        _stop(paths["agent_pid"], AGENT_MARK)  # it would keep the name alive
        release(ctx.store, name, lease)
        raise


def _resume(name: str, args, ctx, paths: dict[str, str], ipv4: str | None, iface: str | None,
            plugin: int | None, agent: int | None) -> int:
    """A supervisor for node processes that outlived theirs: nothing running is stopped
    (stopping the agent would withdraw this host's routes)."""
    lease = 0 if agent else claim(ctx.store, Node(name=name, ipv4=ipv4))  # 0: the agent claims again
    children = _children(name, args, paths, lease, ipv4, args.foreground)
    env = _env(name, args, ctx, iface)
    started = " and ".join(n for n, pid in (("plugin server", plugin), ("agent", agent)) if not pid)
    print(f"Node {name}: adopting its running {'agent' if agent else 'plugin server'}"
          + (f", starting the {started}" if started else ""), flush=True)
    return _supervise(name, args, paths, children, env)


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
    stop_groups(paths["groups"])  # what a killed node left (an orphaned ExaBGP holds port 179)
    shutil.rmtree(env[MULTIPROC_ENV], ignore_errors=True)  # counters start again with the node
    os.makedirs(env[MULTIPROC_ENV], mode=0o700)
    return _supervise(name, args, paths, _children(name, args, paths, lease, ipv4, args.foreground), env)


def _supervise(name: str, args, paths: dict[str, str], children: list[Child], env: dict[str, str]) -> int:
    """Run the supervisor: in this process (``--foreground``) or detached; wait for the socket."""
    for d in (paths["run"], paths["logs"]):
        os.makedirs(d, mode=0o700, exist_ok=True)
    if args.foreground:
        env["WARREN_LOG_STDERR"] = "1"  # the node's processes log to their files and to our stderr
        return _foreground(paths, children, env)
    write_spec(paths["spec"], children)
    argv = [sys.executable, "-m", "ctl.supervisor", paths["spec"], "--pid", paths["supervisor_pid"],
            "--log", paths["supervisor_log"]]
    with open(paths["supervisor_log"], "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _wait_plugin(args.socket, paths, lambda: proc.poll() is None)
    print(f"Node {name} started: plugin on {args.socket} (pid {_running_pid(paths['pid'])}, "
          f"supervisor pid {proc.pid}), log {paths['log']}")
    return 0


def _wait_plugin(socket_path: str, paths: dict[str, str], alive) -> None:
    try:
        server.wait_ready(socket_path, alive=alive, timeout=30.0)
    except RuntimeError as exc:
        raise NodeError(f"{exc}; see {paths['log']} and {paths['supervisor_log']}") from None


def _foreground(paths: dict[str, str], children: list[Child], env: dict[str, str]) -> int:
    """``node start --foreground``: stay the main process (of a container, a plugin, a systemd unit).

    Runs :class:`ctl.supervisor.Supervisor` here: each of the plugin server
    and the agent is restarted alone when it dies (with backoff), and orphans
    are reaped (PID 1). ``READY=1`` goes to systemd once the socket answers.
    SIGTERM/SIGINT stop it as ``node stop`` does: the agent first (peers
    withdraw our routes, the liveness lease goes), then the server; exit 0.
    """
    setup_logging(paths["supervisor_log"], env)  # its file, and stderr (the journal)
    _write_pid(paths["supervisor_pid"])
    try:
        return Supervisor(children, env=env).run(reap=True, on_ready=lambda: _sd_notify("READY=1"))
    finally:
        _remove_own_pid(paths["supervisor_pid"])


def _write_pid(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def _remove_own_pid(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass


def warn_plaintext_etcd(config) -> list[str]:
    """One line on stderr when etcd is reached over plain HTTP at a non-loopback address:
    anyone on that network (a workload, without the failsafe rules) can read and write Warren's
    records. Returns the endpoints concerned."""
    plain = plaintext_remote(config)
    if plain:
        print(f"warrenctl: warning: etcd at {', '.join(plain)} is plain HTTP off this host: anyone who "
              "reaches it can rewrite the network; use https:// with WARREN_ETCD_CA, WARREN_ETCD_CERT "
              "and WARREN_ETCD_KEY", file=sys.stderr, flush=True)
    return plain


def plaintext_remote(config) -> list[str]:
    """The etcd endpoints of ``config`` (an EtcdConfig) that are http:// and not loopback."""
    found = []
    for endpoint in config.endpoints:
        if endpoint.scheme != "http":
            continue
        try:
            loopback = ipaddress.ip_address(endpoint.host).is_loopback
        except ValueError:
            loopback = endpoint.host == "localhost"
        if not loopback:
            found.append(endpoint.url)
    return found


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
    """Stop the supervisor (it stops the agent, then the server), then whatever it did not:
    node processes it never adopted, and what killed agents left in their recorded groups."""
    name = args.name or ctx.host
    paths = _paths(name)
    supervisor = _stop(paths["supervisor_pid"], SUPERVISOR_MARKS, timeout=40.0)
    agent = _stop(paths["agent_pid"], AGENT_MARK)  # first: peers withdraw our routes at once
    left = stop_groups(paths["groups"])
    plugin = _stop(paths["pid"], PLUGIN_MARK)
    print(f"Node {name} stopped" if supervisor or agent or plugin or left else f"Node {name} is not running")
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
