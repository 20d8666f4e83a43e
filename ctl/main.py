"""warrenctl: the command line (calicoctl v0.x verbs).

Each command group lives in its own module with a ``register(subparsers)``
function; handlers take ``(args, ctx)`` and return an exit code. Every
expected failure is one line on stderr and a non-zero exit; ``--debug``
adds the traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from dataclasses import dataclass
from functools import cached_property

from datastore import Datastore, DatastoreError, EtcdConfig
from ipam import IpamError
from plugin.errors import PluginError

from . import bgpcmd, checksystem, ipamcmd, node, pool, status
from . import containercmd, endpointcmd, profilecmd
from . import diags, records
from .cli import CliError, OneLineParser, run

__all__ = ["CliError", "build_parser", "main"]


@dataclass
class Context:
    endpoints: str | None
    host: str

    @cached_property
    def store(self) -> Datastore:
        return Datastore(EtcdConfig.from_env(endpoints=self.endpoints))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="warrenctl", description="Warren: routed container networking for Docker")
    parser.add_argument("--etcd-endpoints", metavar="URLS",
                        help="comma-separated etcd URLs (default: $WARREN_ETCD_ENDPOINTS or http://127.0.0.1:2379)")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=OneLineParser)
    pool.register(sub)
    ipamcmd.register(sub)
    node.register_commands(sub)
    bgpcmd.register(sub)
    status.register(sub)
    checksystem.register(sub)
    profilecmd.register(sub)
    endpointcmd.register(sub)
    containercmd.register(sub)
    diags.register(sub)
    records.register(sub)
    return parser


def default_host() -> str:
    return os.environ.get("WARREN_NODE_NAME") or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def action() -> int:
        args = build_parser().parse_args(argv)
        return args.func(args, Context(endpoints=args.etcd_endpoints, host=default_host()))
    errors = (IpamError, DatastoreError, ValueError, node.NodeError, PluginError, OSError)
    return run("warrenctl", action, errors, debug)


if __name__ == "__main__":
    sys.exit(main())
