"""``warrenctl checksystem`` and ``warrenctl version``.

Kernel features are probed for real, in a throw-away network namespace (no
packet is sent, nothing on the host changes): veth, vxlan and ipip devices,
an ipset, an iptables rule with conntrack and set matches. Then the
environment Warren depends on: IPv6, dockerd and the plugin socket, etcd
(and TLS when configured), ExaBGP. Each line is ✔ or ✘ with a fix (``!`` for
a warning); the exit status is non-zero when something required is missing.
ipip and vxlan are required only when a pool uses them (otherwise a missing
one is a warning). An etcd member that is not on loopback and is reached
without TLS and a client certificate is a warning (issue 12): whoever
reaches it on the network can rewrite every record; Warren keeps workloads
off it (:mod:`profiles.controlplane`), but nothing else does.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from datastore import DatastoreError
from ipam import PoolStore
from plugin import server

from .output import as_json


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _run(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def kernel_checks(encaps: set[str]) -> list[Check]:
    ns = "wcs" + secrets.token_hex(4)
    if _run(["ip", "netns", "add", ns]).returncode:
        return [Check("network namespaces", False, "cannot create a network namespace",
                      "run as root on a kernel with CONFIG_NET_NS")]
    try:
        def inside(*argv: str) -> subprocess.CompletedProcess:
            return _run(["ip", "netns", "exec", ns, *argv])
        checks = []
        veth = inside("ip", "link", "add", "cs0", "type", "veth", "peer", "name", "cs1")
        checks.append(Check("veth", veth.returncode == 0, veth.stderr.strip() or "veth pairs work",
                            "enable CONFIG_VETH"))
        vxlan = inside("ip", "link", "add", "csvx", "type", "vxlan", "id", "42", "dstport", "4789")
        checks.append(Check("vxlan", vxlan.returncode == 0, vxlan.stderr.strip() or "vxlan devices work",
                            "enable CONFIG_VXLAN", required="vxlan" in encaps))
        _run(["modprobe", "ipip"])
        ipip = inside("ip", "link", "add", "csip", "type", "ipip", "local", "192.0.2.1")
        has_tunl0 = inside("ip", "link", "show", "tunl0").returncode == 0
        checks.append(Check("ipip", ipip.returncode == 0 or has_tunl0,
                            "tunl0 is available" if has_tunl0 or ipip.returncode == 0
                            else "no IP-in-IP support (CONFIG_NET_IPIP is not set)",
                            "use a kernel with CONFIG_NET_IPIP, or --vxlan pools", required="ipip" in encaps))
        ipset = inside("ipset", "create", "warren-cs", "hash:net", "family", "inet")
        checks.append(Check("ipset", ipset.returncode == 0, ipset.stderr.strip() or "hash:net sets work",
                            "apt-get install ipset; enable CONFIG_IP_SET"))
        rule = inside("iptables", "-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED",
                      "-m", "set", "--match-set", "warren-cs", "src", "-j", "ACCEPT")
        backend = _run(["iptables", "--version"]).stdout.strip()
        checks.append(Check("iptables + conntrack + set match", rule.returncode == 0,
                            f"{backend}" if rule.returncode == 0 else rule.stderr.strip(),
                            "apt-get install iptables; enable conntrack and xt_set"))
        return checks
    finally:
        _run(["ip", "netns", "del", ns])


LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
TLS_FIX = ("serve etcd over https with client certificates and set WARREN_ETCD_ENDPOINTS=https://... "
           "and WARREN_ETCD_CA, WARREN_ETCD_CERT, WARREN_ETCD_KEY")


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def etcd_tls_check(config) -> Check:
    """Warn about etcd members off loopback reached without TLS or without a client certificate."""
    remote = [e.url for e in config.endpoints if not _loopback(e.host)]
    if not remote:
        return Check("etcd TLS", True, "etcd is on loopback only", required=False)
    if not config.tls:
        return Check("etcd TLS", False, f"{', '.join(remote)} is not on loopback and not TLS: anyone who "
                     "reaches it can read and rewrite Warren's records", TLS_FIX, required=False)
    if not config.cert:
        return Check("etcd TLS", False, "TLS without a client certificate: etcd cannot tell Warren from "
                     "anyone else", TLS_FIX, required=False)
    return Check("etcd TLS", True, "TLS with a client certificate", required=False)


def environment_checks(ctx, socket_path: str) -> tuple[list[Check], set[str]]:
    checks, encaps = [], set()
    checks.append(Check("IPv6", os.path.exists("/proc/sys/net/ipv6"), "IPv6 is enabled",
                        "boot without ipv6.disable=1", required=False))
    try:
        ctx.store.revision()
        tls = " over TLS" if ctx.store.config.tls else ""
        checks.append(Check("etcd", True, f"reachable at {', '.join(ctx.store.config.urls)}{tls}"))
        checks.append(etcd_tls_check(ctx.store.config))
        encaps = {p.encap for p in PoolStore(ctx.store).list()}
    except (DatastoreError, ValueError) as exc:
        checks.append(Check("etcd", False, str(exc), "start etcd (scripts/local-etcd start) or set "
                            "WARREN_ETCD_ENDPOINTS / the WARREN_ETCD_CA/CERT/KEY files"))
    exabgp = os.path.join(os.path.dirname(sys.executable), "exabgp")
    out = _run([exabgp, "version"])
    checks.append(Check("ExaBGP", out.returncode == 0 and " 5.0" in out.stdout,
                        (out.stdout.splitlines() or [out.stderr.strip() or "not found"])[0],
                        "pip install 'exabgp>=5.0.15,<5.1' into Warren's environment"))
    docker = shutil.which("docker")
    dv = _run([docker, "version", "--format", "{{.Server.Version}}"]) if docker else None
    checks.append(Check("dockerd", bool(dv) and dv.returncode == 0,
                        f"server {dv.stdout.strip()}" if dv and dv.returncode == 0 else
                        "dockerd does not answer", "start dockerd (systemctl start docker)", required=False))
    try:
        status, answer = server.call(socket_path, "Plugin.Activate", timeout=2)
        ok = status == 200 and "IpamDriver" in answer.get("Implements", [])
        checks.append(Check("plugin", ok, f"{socket_path} answers", "warrenctl node start", required=False))
    except OSError as exc:
        checks.append(Check("plugin", False, f"{socket_path}: {exc.strerror or exc}",
                            "warrenctl node start", required=False))
    return checks, encaps


def checksystem(args, ctx) -> int:
    env, encaps = environment_checks(ctx, args.socket)
    checks = kernel_checks(encaps) + env
    if args.json:
        as_json([c.__dict__ for c in checks])
    else:
        for c in checks:
            mark = "✔" if c.ok else ("✘" if c.required else "!")
            line = f"{mark} {c.name}: {c.detail}"
            if not c.ok and c.fix:
                line += f"  -> {c.fix}"
            print(line)
    missing = [c.name for c in checks if c.required and not c.ok]
    if missing and not args.json:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def show_version(args, ctx) -> int:
    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    print(f"warren {v('warren')}")
    for dep in ("exabgp", "pyroute2", "flask", "prometheus_client"):
        print(f"  {dep} {v(dep)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("checksystem", help="check kernel features and dependencies")
    check.add_argument("--socket", default=os.environ.get("WARREN_PLUGIN_SOCKET",
                                                          "/run/docker/plugins/warren.sock"))
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=checksystem)
    ver = sub.add_parser("version", help="versions of warren and its parts")
    ver.set_defaults(func=show_version)
