"""The plugin server: the Flask app on the plugin's unix socket, in one process.

``python -m plugin.wsgi --socket PATH --pid FILE [--log FILE]`` (the argv comes
from :func:`plugin.server.server_argv`; ``warrenctl node start`` runs it).

Why not gunicorn: its master process costs ~23 MiB resident and its import
~11 MiB more in the worker, about a sixth of a node's memory, for features a
plugin socket does not need - dockerd is the only client, one host's
requests are few and short, and the dataplane never depends on the plugin
being alive. So one process serves, with werkzeug's threaded server (already
loaded by Flask): a thread per connection, HTTP/1.0 - one request per
connection, so no idle keep-alive connection can race with dockerd reusing
it - and a socket timeout so a silent client cannot hold a thread for long.
The socket is created with umask 077 (root only). SIGTERM stops accepting,
lets the requests in flight finish, removes the socket and the pid file.
Given up with gunicorn's master: a new worker after a crash (an exception in
a request is answered with an error by Flask and does not end the process)
and a heartbeat timeout (a gthread worker's heartbeat did not cover a hung
request either).

``create()`` stays gunicorn-compatible (``gunicorn 'plugin.wsgi:create()'``):
the datastore drops pooled connections in a forked child. ``create()`` reads
etcd once, to hold this host's published ports again (:func:`restore_ports`:
the sockets that reserve them live in the serving process), so it must run
in that process (gunicorn without ``--preload``), as ``serve()`` does. It
also starts the janitor's thread (:mod:`plugin.janitor`: records, addresses,
veths and ports no container owns, compared with dockerd's view at start,
after a dockerd restart and every ``WARREN_JANITOR_INTERVAL`` s): it lives in
the serving process, so the plugin stays the one writer of veths and ports.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass

from flask import Flask

from datastore import Datastore, EtcdConfig
from ipam import Allocator, PoolStore

from .app import create_app
from .config import PluginConfig, setup_logging
from .dataplane import Dataplane
from .ipamdriver import IpamDriver
from .janitor import INTERVAL_ENV, Janitor
from .janitor import settings as janitor_settings
from .metrics import ETCD_ERRORS
from .names import NameResolver
from .networks import NetworkDriver
from .ports import PortPublisher

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = 10.0  # s of silence from a client before its connection is dropped


@dataclass
class Plugin:
    """What ``assemble`` made: the app, and the driver the janitor removes endpoints with."""
    app: Flask
    network: NetworkDriver


def build(config: PluginConfig, store: Datastore, dataplane: Dataplane,
          ports: PortPublisher | None = None, names: NameResolver | None = None) -> Flask:
    return assemble(config, store, dataplane, ports, names).app


def assemble(config: PluginConfig, store: Datastore, dataplane: Dataplane,
             ports: PortPublisher | None = None, names: NameResolver | None = None) -> Plugin:
    pools = PoolStore(store)

    def underlay_mtu() -> int:  # read again at most every networks.UNDERLAY_MTU_TTL s
        iface = config.underlay_iface or dataplane.default_route_interface()
        return dataplane.interface_mtu(iface) if iface else 1500

    def pool_encap(cidr: str) -> str:  # read once per network (NetworkDriver._derived_mtu)
        pool = pools.get(cidr)
        return pool.encap if pool else "none"

    network = NetworkDriver(store=store, host=config.host, dataplane=dataplane,
                            underlay_mtu=underlay_mtu, pool_encap=pool_encap, ports=ports,
                            names=names)
    if ports is not None and ports.load is None:
        ports.load = network.local_endpoints  # sync re-reads the records under its lock
    ipam = IpamDriver(Allocator(store, config.host),
                      {4: config.default_pool_v4, 6: config.default_pool_v6})
    return Plugin(create_app(network, ipam, scope=config.scope), network)


def create() -> Flask:
    setup_logging(None)
    config = PluginConfig.from_env()
    interval, grace = janitor_settings()  # a bad value stops the server here, not later
    dataplane = Dataplane()
    dataplane.ensure_forwarding()
    store = Datastore(EtcdConfig.from_env())
    store.on_error = lambda kind: ETCD_ERRORS.labels("plugin", kind).inc()
    ports = PortPublisher(reserve=True)
    plugin = assemble(config, store, dataplane, ports, NameResolver(store))
    restore_ports(ports)
    if interval > 0:
        Janitor(store, config.host, plugin.network, dataplane, ports,
                interval=interval, grace=grace).start()
    else:
        log.info("janitor off (%s=%s)", INTERVAL_ENV, os.environ.get(INTERVAL_ENV))
    return plugin.app


def restore_ports(ports: PortPublisher) -> None:
    """Hold this host's published ports again (the sockets died with the last plugin process).

    Before serving, so no new -p can be handed a port a running container
    still has. If etcd is unreachable now, the next -p call's sync does it.
    """
    try:
        ports.sync()
    except Exception as exc:
        log.warning("could not restore published ports yet: %s", exc)


def make_server(socket_path: str, app):
    """A threaded WSGI server bound to ``socket_path`` (replaced if it exists), mode 0700."""
    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.0"  # set here, so werkzeug does not switch to keep-alive
        timeout = CLIENT_TIMEOUT

        def log_request(self, code="-", size="-") -> None:
            log.debug("%s %s", self.requestline, code)

    class Server(ThreadedWSGIServer):
        daemon_threads = False  # server_close() waits for the requests in flight
        block_on_close = True

    old = os.umask(0o077)
    try:
        return Server(f"unix://{socket_path}", 0, app, handler=Handler)
    finally:
        os.umask(old)


def _write_pid(pidfile: str) -> None:
    tmp = f"{pidfile}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, pidfile)


def _remove_own(pidfile: str, socket_path: str) -> None:
    try:
        if open(pidfile).read().strip() == str(os.getpid()):
            os.unlink(pidfile)
    except OSError:
        pass
    try:
        os.unlink(socket_path)
    except OSError:
        pass


def serve(socket_path: str, pidfile: str, app=None) -> int:
    """Serve the plugin on ``socket_path`` until SIGTERM/SIGINT."""
    app = app if app is not None else create()
    server = make_server(socket_path, app)
    _write_pid(pidfile)

    def stop(signum, _frame) -> None:
        log.info("signal %d: stopping the plugin server", signum)
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("plugin server pid %d serving on %s", os.getpid(), socket_path)
    try:
        server.serve_forever(poll_interval=0.5)  # werkzeug closes the server when it returns
    finally:
        _remove_own(pidfile, socket_path)
    log.info("plugin server stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="warren-plugin", description="Warren's Docker plugin server")
    ap.add_argument("--socket", required=True, help="the unix socket to serve on")
    ap.add_argument("--pid", required=True, help="pid file, removed on exit")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    try:
        return serve(args.socket, args.pid)
    except OSError as exc:
        log.error("plugin server: %s", exc)
        print(f"plugin server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
