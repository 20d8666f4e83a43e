"""``warrenctl diags``: one tarball with what a bug report about this node needs.

Design:

* **Collectors.** Each part (logs, etcd state, routes, netfilter, BGP status,
  versions) is a function that writes files into a staging directory. One that
  fails is recorded in ``manifest.json`` with its one-line error and the others
  still run: diagnostics are most needed when something is broken (etcd down,
  node stopped, a tool missing), so a broken part never costs the tarball.
* **etcd through ``datastore/``.** The node's record, its blocks and
  affinities, its endpoints, the networks, pools, BGP settings, peers and
  session status are read with the Datastore API (no etcdctl), and written as
  ``{key: decoded JSON}`` documents.
* **Invalid records.** ``etcd/invalid-records.json`` lists every record
  Warren's readers skip (:func:`ctl.records.scan`: key, kind, reason), and
  the manifest counts them, since what a skipped record says is ignored.
* **One command runner** (``Runner``), injectable, so tests can replace the
  system tools; each command has a timeout and its exit status is kept.
* **No secrets.** TLS key files are never opened (only their paths are
  recorded). BGP passwords are replaced in the records themselves, then every
  text file is scrubbed before archiving: each password seen in etcd, ExaBGP
  ``md5-password`` values, ``password|secret|token = ...`` pairs and PEM
  private-key blocks become ``<redacted>``. Files named ``*.key`` are skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from datastore import DatastoreError, keys

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
MAX_LOG_BYTES = 8 * 1024 * 1024     # the tail of each log file
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # of each command's output
COMMAND_TIMEOUT = 30.0

# Commands whose output goes into the tarball: (file, argv).
NET_COMMANDS = [
    ("net/ip-addr.txt", ["ip", "-d", "addr", "show"]),
    ("net/ip-link.txt", ["ip", "-d", "-s", "link", "show"]),
    ("net/ip-route.txt", ["ip", "route", "show", "table", "all"]),
    ("net/ip6-route.txt", ["ip", "-6", "route", "show", "table", "all"]),
    ("net/ip-rule.txt", ["ip", "rule", "show"]),
    ("net/ip6-rule.txt", ["ip", "-6", "rule", "show"]),
    ("net/ip-neigh.txt", ["ip", "neigh", "show"]),
    ("net/ip6-neigh.txt", ["ip", "-6", "neigh", "show"]),
]
NETFILTER_COMMANDS = [
    ("netfilter/iptables-save.txt", ["iptables-save", "-c"]),
    ("netfilter/ip6tables-save.txt", ["ip6tables-save", "-c"]),
    ("netfilter/ipset-list.txt", ["ipset", "list"]),
]
SYSCTLS = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/rp_filter",
           "net/ipv4/conf/all/proxy_arp"]

_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
_MD5 = re.compile(r'(md5-password\s+)("[^"]*"|\S+?)(\s*;|\s*$)', re.M)
_PAIR = re.compile(r'''(?i)((?:["']?)(?:[a-z0-9_-]*)(?:password|passwd|secret|token)["']?\s*[:=]\s*)'''
                   r'''("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;}\]]+)''')


class DiagsError(ValueError):
    """An expected failure (a ValueError, so warrenctl reports it as one line)."""


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[list[str], float], CommandResult]


def run_command(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """The default runner: never raises; a missing tool is exit 127, a timeout 124."""
    try:
        res = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return CommandResult(argv, res.returncode, res.stdout[:MAX_OUTPUT_BYTES].decode(errors="replace"),
                             res.stderr[:MAX_OUTPUT_BYTES].decode(errors="replace"))
    except FileNotFoundError:
        return CommandResult(argv, 127, "", f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return CommandResult(argv, 124, "", f"timed out after {timeout:.0f}s")
    except OSError as exc:
        return CommandResult(argv, 126, "", str(exc))


# --- redaction -------------------------------------------------------------------------

def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove private keys, password-like values and every known secret from ``text``."""
    text = _PEM_KEY.sub(f"-----{REDACTED} PRIVATE KEY-----", text)
    text = _MD5.sub(lambda m: f'{m.group(1)}"{REDACTED}"{m.group(3)}', text)

    def pair(m: re.Match) -> str:
        value = m.group(2)
        if value in ("null", "None", '""', f'"{REDACTED}"', REDACTED):
            return m.group(0)
        quote = value[0] if value[0] in "\"'" else ""
        return f"{m.group(1)}{quote}{REDACTED}{quote}"
    text = _PAIR.sub(pair, text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_record(value: Any) -> Any:
    """A decoded JSON document with every password-like field's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if _secret_field(k) and v not in (None, "") else redact_record(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_record(v) for v in value]
    return value


def _secret_field(name: str) -> bool:
    return any(word in name.lower() for word in ("password", "passwd", "secret", "token"))


def secrets_in(value: Any) -> set[str]:
    """Every string value of a password-like field in a decoded JSON document."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if _secret_field(k) and isinstance(v, str) and v:
                found.add(v)
            else:
                found |= secrets_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= secrets_in(v)
    return found


# --- the collection --------------------------------------------------------------------

@dataclass
class Diags:
    """Collect into ``staging``; ``archive`` makes the tarball. ``store`` is a Datastore
    (anything with ``get``, ``get_prefix`` and ``config``); ``bgp_status`` returns the
    ``node status --json`` document."""
    node: str
    store: Any
    staging: str
    log_dir: str
    run_dir: str
    runner: Runner = run_command
    bgp_status: Callable[[], Any] | None = None
    versions: Callable[[], str] | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    manifest: dict[str, Any] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)

    def path(self, rel: str) -> str:
        full = os.path.join(self.staging, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    def write(self, rel: str, text: str) -> None:
        with open(self.path(rel), "w", encoding="utf-8", errors="replace") as f:
            f.write(text)

    def write_json(self, rel: str, data: Any) -> None:
        self.write(rel, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def command(self, rel: str, argv: list[str]) -> None:
        res = self.runner(argv, COMMAND_TIMEOUT)
        text = res.stdout
        if res.returncode != 0:
            text += f"\n# exit {res.returncode}: {res.stderr.strip()}\n"
        self.write(rel, text)
        self.manifest.setdefault("commands", {})[rel] = {"argv": argv, "exit": res.returncode}

    # Each collector: one part of the tarball.

    def collect_etcd(self) -> None:
        cfg = self.store.config
        self.write_json("etcd/config.json", {
            "endpoints": cfg.urls, "timeout": cfg.timeout, "tls": cfg.tls,
            "ca_file": cfg.ca, "cert_file": cfg.cert,
            "key_file": f"{cfg.key} (not included)" if cfg.key else None})
        me = keys.segment(self.node, "node name")

        def documents(prefix: str, keep: Callable[[str], bool] = lambda k: True) -> dict[str, Any]:
            docs = {}
            for kv in self.store.get_prefix(prefix):
                if keep(kv.key):
                    docs[kv.key] = _decode(kv.value)
            return docs

        node = self.store.get(keys.node(me))
        self.write_json("etcd/node.json", {keys.node(me): _decode(node.value) if node else None})
        self.write_json("etcd/nodes.json", documents(keys.NODES))
        affinities = documents(keys.affinity_prefix(me))
        self.write_json("etcd/affinities.json", affinities)
        wanted = {keys.block(keys.cidr_of(k)) for k in affinities}
        blocks = documents(keys.BLOCKS, lambda k: k in wanted)
        self.write_json("etcd/blocks.json", blocks)
        self.write_json("etcd/endpoints.json", documents(keys.endpoint_prefix(me)))
        self.write_json("etcd/networks.json", documents(keys.NETWORKS))
        self.write_json("etcd/pools.json", documents(keys.POOLS))
        ipam_config = self.store.get(keys.IPAM_CONFIG)
        self.write_json("etcd/ipam-config.json", _decode(ipam_config.value) if ipam_config else None)
        bgp = documents(keys.BGP)
        self.secrets |= secrets_in(bgp)
        mine = keys.node_bgp_peers(me)
        self.write_json("etcd/bgp.json", redact_record({
            "config": bgp.get(keys.BGP_CONFIG),
            "global_peers": {k: v for k, v in bgp.items() if k.startswith(keys.BGP_PEERS)},
            "node_peers": {k: v for k, v in bgp.items() if k.startswith(mine)}}))
        status = self.store.get(keys.bgp_status(me))
        self.write_json("etcd/bgp-status.json", _decode(status.value) if status else None)

    def collect_records(self) -> None:
        from .records import scan
        invalid = scan(self.store)
        self.manifest["invalid_records"] = len(invalid)
        self.write_json("etcd/invalid-records.json", [i.as_dict() for i in invalid])

    def collect_logs(self) -> None:
        """The node's log directory (the tail of each file), and its ExaBGP config."""
        logs = os.path.join(self.log_dir, self.node)
        if not os.path.isdir(logs):
            raise DiagsError(f"no log directory {logs}")
        copied = 0
        for root, _dirs, files in os.walk(logs):
            for name in sorted(files):
                src = os.path.join(root, name)
                if name.endswith((".key", ".pem")) or not os.path.isfile(src) or os.path.islink(src):
                    continue
                rel = os.path.join("logs", os.path.relpath(src, logs))
                self.write(rel, _tail(src, MAX_LOG_BYTES))
                copied += 1
        self.manifest["log_files"] = copied
        conf = os.path.join(self.run_dir, self.node, "exabgp.conf")
        if os.path.isfile(conf):
            self.write("bgp/exabgp.conf", _tail(conf, MAX_LOG_BYTES))

    def collect_routes(self) -> None:
        for rel, argv in NET_COMMANDS:
            self.command(rel, argv)
        lines = []
        for key in SYSCTLS:
            try:
                with open(f"/proc/sys/{key}") as f:
                    lines.append(f"{key.replace('/', '.')} = {f.read().strip()}")
            except OSError as exc:
                lines.append(f"{key.replace('/', '.')}: {exc.strerror}")
        self.write("net/sysctl.txt", "\n".join(lines) + "\n")

    def collect_netfilter(self) -> None:
        for rel, argv in NETFILTER_COMMANDS:
            self.command(rel, argv)

    def collect_bgp(self) -> None:
        if self.bgp_status is None:
            raise DiagsError("no BGP status source")
        self.write_json("bgp/status.json", self.bgp_status())

    def collect_versions(self) -> None:
        parts = []
        if self.versions is not None:
            parts.append(self.versions().rstrip())
        for argv in ([os.path.join(os.path.dirname(sys.executable), "exabgp"), "version"],
                     ["docker", "version", "--format", "docker client {{.Client.Version}}, "
                      "dockerd {{.Server.Version}} (API {{.Server.APIVersion}})"],
                     ["uname", "-a"], ["iptables", "--version"], ["ipset", "--version"], ["ip", "-V"]):
            res = self.runner(argv, COMMAND_TIMEOUT)
            out = (res.stdout.strip() or res.stderr.strip() or "no output").splitlines()
            parts.append(f"$ {' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))}\n"
                         + "\n".join(out[:5]) + ("" if res.returncode == 0 else f"\n# exit {res.returncode}"))
        self.write("versions.txt", "\n".join(parts) + "\n")

    def collect_environment(self) -> None:
        env = {k: v for k, v in sorted(self.environ.items()) if k.startswith(("WARREN_", "DOCKER_HOST"))}
        self.write_json("environment.json", redact_record(env))

    COLLECTORS = ("etcd", "records", "logs", "routes", "netfilter", "bgp", "versions", "environment")

    def collect(self) -> dict[str, str]:
        """Run every collector; returns {part: "ok" | error line}."""
        results = {}
        for name in self.COLLECTORS:
            try:
                getattr(self, f"collect_{name}")()
                results[name] = "ok"
            except (DatastoreError, DiagsError, OSError, ValueError, subprocess.SubprocessError) as exc:
                results[name] = f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                log.debug("diags part %s failed", name, exc_info=True)
        self.manifest.update(node=self.node, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), parts=results)
        self.write_json("manifest.json", self.manifest)
        return results

    def scrub(self) -> None:
        """Redact every file in the staging directory (in place)."""
        for root, _dirs, files in os.walk(self.staging):
            for name in files:
                path = os.path.join(root, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                clean = redact(text, self.secrets)
                if clean != text:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(clean)

    def archive(self, output: str, top: str) -> int:
        """Write ``output`` (gzip tar, mode 0600) with everything under ``top/``; returns the file count."""
        self.scrub()
        count = 0
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for root, _dirs, files in os.walk(self.staging):
                for name in sorted(files):
                    path = os.path.join(root, name)
                    tar.add(path, arcname=os.path.join(top, os.path.relpath(path, self.staging)))
                    count += 1
        return count


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _tail(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit))
        data = f.read()
    head = f"# ... first {size - limit} bytes left out\n" if size > limit else ""
    return head + data.decode(errors="replace")


# --- the command ------------------------------------------------------------------------

def _bgp_status_of(ctx, node: str) -> Callable[[], Any]:
    def status() -> Any:
        from .status import node_status
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            node_status(argparse.Namespace(name=node, json=True), ctx)
        return json.loads(out.getvalue())
    return status


def _versions() -> str:
    from .checksystem import show_version
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        show_version(argparse.Namespace(), None)
    return out.getvalue()


def output_path(requested: str | None, node: str, stamp: str) -> str:
    name = f"warren-diags-{node}-{stamp}.tar.gz"
    if not requested:
        return os.path.join(tempfile.gettempdir(), name)
    if os.path.isdir(requested):
        return os.path.join(requested, name)
    parent = os.path.dirname(os.path.abspath(requested))
    if not os.path.isdir(parent):
        raise DiagsError(f"cannot write {requested}: directory {parent} does not exist")
    return requested


def diags(args, ctx) -> int:
    node = args.name or ctx.host
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = output_path(args.output, node, stamp)
    staging = tempfile.mkdtemp(prefix="warren-diags-")
    try:
        try:
            store = ctx.store
        except DatastoreError as exc:  # bad configuration: still collect the rest
            store = _Unconfigured(str(exc))
        collector = Diags(node=node, store=store, staging=staging,
                          log_dir=os.environ.get("WARREN_LOG_DIR", "/var/log/warren"),
                          run_dir=os.environ.get("WARREN_RUN_DIR", "/run/warren"), runner=run_command,
                          bgp_status=_bgp_status_of(ctx, node), versions=_versions)
        results = collector.collect()
        count = collector.archive(output, f"warren-diags-{node}-{stamp}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Diagnostics of node {node} written to {output} ({count} files)")
    for part, why in results.items():
        if why != "ok":
            print(f"warrenctl diags: part {part!r} is incomplete: {why.removeprefix('error: ')}",
                  file=sys.stderr)
    return 0


class _Unconfigured:
    """Stands in for the store when etcd's configuration itself is unusable."""

    def __init__(self, reason: str):
        self.reason = reason

    @property
    def config(self):
        raise DatastoreError(self.reason)

    def __getattr__(self, name: str):
        raise DatastoreError(self.reason)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diags", help="collect logs, etcd state, routes, netfilter and BGP status into a tarball")
    p.add_argument("--name", help="node name (default: $WARREN_NODE_NAME or the hostname)")
    p.add_argument("--output", "-o", metavar="PATH",
                   help="tarball path or directory (default: a new file under $TMPDIR or /tmp)")
    p.set_defaults(func=diags)
