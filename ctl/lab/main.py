"""warren-lab: a multi-host Docker lab in network namespaces, for Warren's tests.

    warren-lab up --hosts N [--name LAB] [--no-node] [--etcd-members M] [--etcd-tls]
                  [--engine 20.10|26|28] [--docker-firewall on|off]
    warren-lab down [--name LAB]
    warren-lab status [--json] [--name LAB]
    warren-lab exec [--name LAB] HOST -- CMD...
    warren-lab docker [--name LAB] HOST ARGS...
    warren-lab attach [--name LAB] NETNS [--ipv4 A] [--ipv6 A] [--ifname IF]
    warren-lab etcd [--name LAB] start|stop|kill|pause|leader [MEMBER]

``--name`` may also come before the command; its default is $WARREN_LAB_NAME
or ``wl``. Expected failures are one line on stderr and exit 1; ``--debug``
adds logs and tracebacks. ``--engine`` defaults to $WARREN_LAB_ENGINE, else 28
(the newest); ``--docker-firewall`` to $WARREN_LAB_DOCKER_FIREWALL, else on. ``exec`` and ``docker`` replace this process with
the command, so its stdin/stdout and exit status pass straight through.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from ..cli import CliError, OneLineParser, run
from .lab import Lab, LabError
from .engines import ENGINES
from .hostengine import ENGINE_ENV, FIREWALL_ENV
from .layout import DEFAULT_NAME, MAX_ETCD_MEMBERS, MAX_HOSTS


def _default_name() -> str:
    return os.environ.get("WARREN_LAB_NAME") or DEFAULT_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="warren-lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=_default_name(), help="lab name (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress logs")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=OneLineParser)
    named = OneLineParser(add_help=False)
    named.add_argument("--name", default=argparse.SUPPRESS, help="lab name")

    p = sub.add_parser("up", parents=[named], help="create the lab")
    p.add_argument("--hosts", type=int, required=True, metavar="N", help=f"1..{MAX_HOSTS}")
    p.add_argument("--no-node", action="store_true", help="do not run 'warrenctl node start'")
    p.add_argument("--etcd-members", type=int, default=1, metavar="M",
                   help=f"run a static etcd cluster of M members (1..{MAX_ETCD_MEMBERS}; default 1)")
    p.add_argument("--etcd-tls", action=argparse.BooleanOptionalAction, default=None,
                   help="etcd over https with client certificates (a lab CA made with openssl; "
                        "default: $WARREN_LAB_ETCD_TLS on|off, else off)")
    p.add_argument("--engine", metavar="E",
                   help=f"Docker engine of every host: {' | '.join(ENGINES)} "
                        f"(default: ${ENGINE_ENV}, else the newest); fetched on first use")
    p.add_argument("--docker-firewall", metavar="on|off",
                   help=f"dockerd with Docker's own iptables rules and docker0 (default: "
                        f"${FIREWALL_ENV}, else on)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", parents=[named], help="remove the lab and everything it started")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", parents=[named], help="show the lab")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("exec", parents=[named], help="run a command on a host")
    p.add_argument("host", help="host1, h1 or 1")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("docker", parents=[named], help="run the docker CLI on a host")
    p.add_argument("host", help="host1, h1 or 1")
    p.add_argument("args", nargs=argparse.REMAINDER, help="docker arguments")
    p.set_defaults(func=cmd_docker)

    p = sub.add_parser("attach", parents=[named], help="connect a netns to the underlay bridge")
    p.add_argument("netns", help="netns name (created if missing, then deleted by down)")
    p.add_argument("--ipv4", help="address (default: next of .200..)")
    p.add_argument("--ipv6", help="address (default: next of ::200..)")
    p.add_argument("--ifname", default="eth0", help="interface name in the netns")
    p.add_argument("--default-route", action="store_true", help="default routes via the bridge")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("etcd", parents=[named], help="fail or restore etcd members, show the leader")
    p.add_argument("action", choices=("start", "stop", "kill", "pause", "leader"),
                   help="start (or resume) | stop (SIGTERM) | kill (SIGKILL) | pause (SIGSTOP) | leader")
    p.add_argument("member", nargs="?", help="etcd1, 2, ... (default: every member)")
    p.set_defaults(func=cmd_etcd)
    return parser


def _print_status(st: dict) -> None:
    print(f"lab {st['name']}: {st['phase']}, state {st['state_dir']}")
    print(f"  underlay {st['underlay_netns']} bridge {st['bridge']} "
          f"{st['subnet_v4']} {st['subnet_v6']}")
    tls = " (TLS, pki " + st["etcd_pki"] + ")" if st.get("etcd_tls") else ""
    for m in st.get("etcd_members", []):
        print(f"  etcd {m['name']} {m['endpoint']} {'up' if m['running'] else 'DOWN'} "
              f"pid {m['pid']}{'' if m['netns'] == st['underlay_netns'] else ' netns ' + m['netns']}{tls}")
    pkgs = ", ".join(f"{p} {v}" for p, v in sorted(st.get("engine_packages", {}).items()))
    print(f"  engine {st.get('engine')} ({pkgs or 'unknown'}), docker firewall "
          f"{'on' if st.get('docker_firewall') else 'off'}")
    print(f"  guards proto {st['guard_proto']} metric {st['guard_metric']}: "
          f"{' '.join(st['guard_routes']) or 'none'}")
    for h in st["hosts"]:
        print(f"  {h['name']}: netns {h['netns']} {h['ipv4']} {h['ipv6']} anchor {h['anchor_pid']} "
              f"dockerd {h.get('docker_version') or '?'} {'up' if h['dockerd_running'] else 'DOWN'} "
              f"{h['docker_host']}")
    for a in st["attachments"]:
        print(f"  attached {a['netns']}: {a['ifname']} {a['ipv4']} {a['ipv6']}")


def cmd_up(args: argparse.Namespace, lab: Lab) -> int:
    st = lab.up(args.hosts, node=not args.no_node, etcd_members=args.etcd_members,
                etcd_tls=args.etcd_tls, engine=args.engine, docker_firewall=args.docker_firewall)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
        print(f"up in {st['up_seconds']:.2f}s")
    return 0


def cmd_down(args: argparse.Namespace, lab: Lab) -> int:
    print(f"lab {lab.name} down" if lab.down() else f"lab {lab.name}: nothing to remove")
    return 0


def cmd_status(args: argparse.Namespace, lab: Lab) -> int:
    st = lab.status()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
    return 0


def _exec(lab: Lab, host: str, argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CliError("no command given (usage: warren-lab exec HOST -- CMD...)")
    h = lab.host(host)
    nsenter = lab.nsenter_argv(h, argv)
    env = lab.env(h)
    env["PWD"] = next(a for a in nsenter if a.startswith("--wd="))[len("--wd="):]  # see Lab.exec
    sys.stdout.flush()
    os.execvpe(nsenter[0], nsenter, env)
    return 127  # not reached


def cmd_exec(args: argparse.Namespace, lab: Lab) -> int:
    return _exec(lab, args.host, args.cmd)


def cmd_docker(args: argparse.Namespace, lab: Lab) -> int:
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return _exec(lab, args.host, [lab.docker_cli, *rest])


def cmd_attach(args: argparse.Namespace, lab: Lab) -> int:
    rec = lab.attach(args.netns, ipv4=args.ipv4, ipv6=args.ipv6, ifname=args.ifname,
                     default_route=args.default_route)
    print(json.dumps(rec))
    return 0


def cmd_etcd(args: argparse.Namespace, lab: Lab) -> int:
    if args.action == "leader":
        print(lab.etcd_leader() or "no leader")
        return 0
    if args.action == "start":
        lab.start_etcd(args.member)
    else:
        sig = {"stop": signal.SIGTERM, "kill": signal.SIGKILL, "pause": signal.SIGSTOP}[args.action]
        lab.stop_etcd(member=args.member, sig=sig)
    for m in lab.etcd_status():
        if args.member is None or m["name"] == lab.etcd_member(args.member).name:
            print(f"{m['name']} {m['endpoint']} {'up' if m['running'] else 'down'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Options after "exec HOST" / "docker HOST" belong to the command, not to us.
    head = argv[:next((i for i, a in enumerate(argv) if a in ("exec", "docker", "--")), len(argv))]
    debug = "--debug" in head
    verbose = "-v" in head or "--verbose" in head
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def action() -> int:
        args = build_parser().parse_args(argv)
        return args.func(args, Lab(args.name))
    return run("warren-lab", action, (LabError, ValueError, OSError), debug)


if __name__ == "__main__":
    sys.exit(main())
