"""Docker engines for warren-lab: fetch Debian's docker.io of another suite into a cache.

An *engine* is a dockerd + containerd + docker CLI (+ compose v2) that a lab
host runs. Three are known (``ENGINES``):

* ``20.10``: Debian 12's docker.io, installed system-wide by scripts/install
  (``/usr/sbin/dockerd``, ``/usr/bin/docker``, the system's containerd);
  nothing is downloaded, and it has no compose v2 plugin;
* ``26``: Debian 13 (trixie) docker.io, containerd and docker-compose;
* ``28``: Debian unstable (sid) docker.io, docker-cli, containerd and
  docker-compose.

Nothing is installed system-wide. A fetched engine is downloaded with a
private apt configuration (its own sources.list naming the same Debian
mirror the machine's apt sources use, own lists, cache, empty dpkg status,
no preferences: the system's apt state is only read) with ``apt-get
download`` and unpacked with ``dpkg -x``. The cache, ``$WARREN_ENGINE_CACHE``
(default ``/var/cache/warren/engines``), holds per engine ``E``::

    E/root/            the unpacked packages
    E/bin/             what goes first on dockerd's PATH: links to the engine's
                       binaries, plus the two trap fixes below
    E/cli-plugins/     docker-compose (the docker CLI finds it through
                       $DOCKER_CONFIG/cli-plugins)
    E/manifest.json    engine, suite, mirror, the exact package versions, paths
    .apt/SUITE/        the private apt state (kept, so a refresh is quick)

Traps handled (see shared/notes/docker-today.md §1): runc from trixie and sid
needs GLIBC 2.38 (Debian 12 has 2.36), so ``E/bin/runc`` is Debian 12's
``/usr/sbin/runc`` (package ``runc``); ``docker-init`` in those packages is a
relative link to ``tini-static``, so ``E/bin/docker-init`` (and the link in
``root``) point at Debian 12's ``/usr/bin/tini-static`` (package ``tini``).

``ensure(name)`` returns the cached engine at once when its manifest exists
and fetches it otherwise, under an flock, building in a temporary directory
that is renamed into place, so concurrent callers and interrupted fetches
never see half an engine. A fetched engine's major version must be the one
named (unstable moves on: when sid ships 29, engine ``28`` fails with a clear
error rather than silently running 29).

Standard library only: ``scripts/fetch-engine`` runs this file by path::

    scripts/fetch-engine 20.10|26|28 [...] [--refresh] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

CACHE_ROOT = "/var/cache/warren/engines"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
HOST_RUNC = "/usr/sbin/runc"                 # Debian 12's runc (package runc)
HOST_TINI = "/usr/bin/tini-static"           # Debian 12's tini (package tini)
APT_SOURCES = "/etc/apt/sources.list"
APT_SOURCE_PARTS = "/etc/apt/sources.list.d"
MIRROR_ENV = "WARREN_DEBIAN_MIRROR"
CACHE_ENV = "WARREN_ENGINE_CACHE"
TIMEOUT = 600.0
# Executables of the unpacked packages that get a link in E/bin.
BIN_DIRS = ("usr/sbin", "usr/bin")
SYSTEM_BINARIES = ("/usr/sbin/dockerd", "/usr/bin/docker", "/usr/sbin/docker-proxy",
                   "/usr/bin/containerd", "/usr/bin/containerd-shim", "/usr/bin/containerd-shim-runc-v1",
                   "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr")


class EngineError(Exception):
    """A fetch or lookup that failed; the message is one line."""


@dataclass(frozen=True)
class EngineSpec:
    name: str
    suite: str | None                      # None: the system's own packages
    packages: tuple[str, ...]              # must exist in the suite
    optional: tuple[str, ...] = ()         # fetched when the suite has them


ENGINES: dict[str, EngineSpec] = {
    "20.10": EngineSpec("20.10", None, ("docker.io", "containerd", "runc", "tini")),
    "26": EngineSpec("26", "trixie", ("docker.io", "containerd", "docker-compose"), ("docker-cli",)),
    "28": EngineSpec("28", "sid", ("docker.io", "containerd", "docker-compose"), ("docker-cli",)),
}
DEFAULT_ENGINE = "28"   # the newest


@dataclass
class Engine:
    """A usable engine: what a lab host needs to run it."""
    name: str
    dir: str
    suite: str | None
    mirror: str | None
    packages: dict[str, str]               # package -> exact version
    dockerd: str
    docker: str
    compose: str | None
    dockerd_version: str
    fetched: float = 0.0
    format: int = MANIFEST_FORMAT
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def bin_dir(self) -> str:
        """First on dockerd's PATH (and on the PATH of commands run on a lab host)."""
        return os.path.join(self.dir, "bin")

    @property
    def cli_plugins(self) -> str | None:
        """Directory to link as ``$DOCKER_CONFIG/cli-plugins`` (None without compose)."""
        return os.path.join(self.dir, "cli-plugins") if self.compose else None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def spec(name: str) -> EngineSpec:
    try:
        return ENGINES[str(name)]
    except KeyError:
        raise EngineError(f"unknown engine {name!r} (choose one of: {', '.join(ENGINES)})") from None


def cache_root() -> str:
    return os.environ.get(CACHE_ENV) or CACHE_ROOT


# --- the machine's apt sources (pure parsing, unit-tested) -------------------------------

@dataclass(frozen=True)
class Source:
    type: str
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_one_line(text: str) -> list[Source]:
    """``deb [opt=val ...] URI SUITE COMPONENT...`` lines (sources.list format)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts: dict[str, str] = {}
        if "[" in line and "]" in line and line.index("[") < line.index("]"):
            head, rest = line.split("[", 1)
            inside, tail = rest.split("]", 1)
            for opt in inside.split():
                key, _, val = opt.partition("=")
                opts[key.lower()] = val
            line = head + " " + tail
        words = line.split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        out.append(Source(words[0], words[1], (words[2],), tuple(words[3:]), opts.get("signed-by")))
    return out


def parse_deb822(text: str) -> list[Source]:
    """``Types: / URIs: / Suites: / Components: / Signed-By:`` stanzas (``*.sources``)."""
    out = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        signed = stanza.get("signed-by", "").strip()
        # Signed-By may hold an inline key block; only a path (or fingerprints) is passed on.
        signed_by = signed if signed and "\n" not in signed and "BEGIN PGP" not in signed else None
        for typ in stanza.get("types", "").split():
            for uri in stanza.get("uris", "").split():
                out.append(Source(typ, uri, tuple(stanza.get("suites", "").split()),
                                  tuple(stanza.get("components", "").split()), signed_by))
    return out


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
            continue
        if raw[0] in " \t" and key:
            cur[key] += "\n" + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            cur[key] = value.strip()
    return stanzas


def debian_mirror(sources: list[Source]) -> Source:
    """The main Debian archive among ``sources``: a ``deb`` source with a plain
    release suite (``bookworm``; not ``-security``/``-updates``/``-backports``)."""
    for src in sources:
        if src.type != "deb" or "security" in src.uri:
            continue
        if any("-" not in s and "/" not in s for s in src.suites):
            return src
    raise EngineError(f"no Debian mirror found in {APT_SOURCES} or {APT_SOURCE_PARTS}/ "
                      f"(set ${MIRROR_ENV} to a Debian mirror URL)")


def system_sources() -> list[Source]:
    sources: list[Source] = []
    files = [APT_SOURCES] + sorted(glob.glob(os.path.join(APT_SOURCE_PARTS, "*.list")))
    for path in files + sorted(glob.glob(os.path.join(APT_SOURCE_PARTS, "*.sources"))):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        sources += parse_deb822(text) if path.endswith(".sources") else parse_one_line(text)
    return sources


def mirror() -> Source:
    url = os.environ.get(MIRROR_ENV)
    if url:
        return Source("deb", url, ("stable",), ("main",))
    return debian_mirror(system_sources())


def sources_line(src: Source, suite: str) -> str:
    """The private sources.list: the mirror of ``src`` with another suite, main only."""
    opts = f"[signed-by={src.signed_by}] " if src.signed_by and src.signed_by.startswith("/") else ""
    return f"deb {opts}{src.uri} {suite} main\n"


def major_of(version: str) -> str:
    """``28.5.2+dfsg4-5`` -> ``28``; ``20.10.24+dfsg1-1`` -> ``20.10`` (the engine's naming)."""
    parts = version.split(":")[-1].split(".")
    return ".".join(parts[:2]) if parts[0] == "20" else parts[0]


# --- the cache -----------------------------------------------------------------------------

def engine_dir(name: str, root: str | None = None) -> str:
    return os.path.join(root or cache_root(), name)


def load(name: str, root: str | None = None) -> Engine | None:
    """The cached engine, or None if it was never fetched (or its cache is incomplete)."""
    spec(name)
    path = os.path.join(engine_dir(name, root), MANIFEST)
    try:
        with open(path) as f:
            data = json.load(f)
        eng = Engine(**data)
    except (OSError, ValueError, TypeError):
        return None
    if eng.format != MANIFEST_FORMAT or eng.dir != engine_dir(name, root):
        return None
    if not all(os.access(p, os.X_OK) for p in (eng.dockerd, eng.docker)):
        return None
    return eng


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(name: str, *, refresh: bool = False, root: str | None = None) -> Engine:
    """The engine ``name``, fetched into the cache first if needed."""
    sp = spec(name)
    if not refresh:
        eng = load(name, root)
        if eng:
            return eng
    if os.geteuid() != 0:
        raise EngineError(f"fetching engine {name} needs root (the cache is {root or cache_root()})")
    base = root or cache_root()
    with _locked(os.path.join(base, f".{name}.lock")):
        if not refresh:
            eng = load(name, root)
            if eng:   # another process fetched it while we waited
                return eng
        return _build(sp, base)


def _run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, **kw)
    except FileNotFoundError:
        raise EngineError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"{what}: no answer within {TIMEOUT:.0f}s") from None
    if res.returncode != 0:
        lines = [x.strip() for x in (res.stderr + res.stdout).splitlines()
                 if x.strip() and not x.startswith("W:")]
        errs = [x for x in lines if x.startswith("E:")] or lines
        raise EngineError(f"{what} failed: {errs[-1] if errs else 'exit %d' % res.returncode}")
    return res


def _check_host_fixes() -> None:
    for path, pkg in ((HOST_RUNC, "runc"), (HOST_TINI, "tini")):
        if not os.access(path, os.X_OK):
            raise EngineError(f"{path} is missing: install Debian 12's {pkg} (apt-get install {pkg})")


def _link(target: str, link: str) -> None:
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


def _version_line(binary: str) -> str:
    res = _run([binary, "--version"], f"{binary} --version")
    return res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""


def _build(sp: EngineSpec, base: str) -> Engine:
    _check_host_fixes()
    final = engine_dir(sp.name, base)
    tmp = f"{final}.new-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "bin"))
    try:
        if sp.suite is None:
            eng = _system_engine(sp, tmp)
        else:
            eng = _fetched_engine(sp, base, tmp, final)
        _check_major(sp, eng)
        eng.dockerd_version = _version_line(eng.dockerd)
        _version_line(eng.docker)
        _version_line(_unrelocated(os.readlink(os.path.join(tmp, "bin", "containerd")), tmp, final))
        eng.fetched = time.time()
        # Paths in the manifest are those after the rename below.
        eng = _relocate(eng, tmp, final)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(eng.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
        old = f"{final}.old-{os.getpid()}"
        if os.path.exists(final):
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return eng
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _relocate(eng: Engine, tmp: str, final: str) -> Engine:
    def fix(p: str | None) -> str | None:
        return p.replace(tmp, final, 1) if p and p.startswith(tmp) else p
    return dataclasses.replace(eng, dir=final, dockerd=fix(eng.dockerd), docker=fix(eng.docker),
                               compose=fix(eng.compose))


def _unrelocated(path: str, tmp: str, final: str) -> str:
    """Links are made with their final targets (they dangle until the rename);
    the same file while building."""
    return tmp + path[len(final):] if path.startswith(final + "/") else path


def _check_major(sp: EngineSpec, eng: Engine) -> None:
    version = eng.packages.get("docker.io", "")
    if major_of(version) != sp.name:
        where = f"Debian {sp.suite}" if sp.suite else "this machine"
        raise EngineError(f"engine {sp.name}: {where} has docker.io {version or 'not installed'}, "
                          f"not {sp.name}.x")


def _system_engine(sp: EngineSpec, tmp: str) -> Engine:
    """Debian 12's docker.io as installed: links only, versions from dpkg."""
    versions = {}
    for pkg in sp.packages:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", pkg],
                             capture_output=True, text=True)
        words = res.stdout.split()
        if res.returncode != 0 or words[:3] != ["install", "ok", "installed"]:
            raise EngineError(f"engine {sp.name}: package {pkg} is not installed (run scripts/install)")
        versions[pkg] = words[3]
    bindir = os.path.join(tmp, "bin")
    for path in SYSTEM_BINARIES:
        if os.access(path, os.X_OK):
            _link(path, os.path.join(bindir, os.path.basename(path)))
    _link(HOST_RUNC, os.path.join(bindir, "runc"))
    _link(HOST_TINI, os.path.join(bindir, "docker-init"))
    return Engine(sp.name, tmp, None, None, versions, "/usr/sbin/dockerd", "/usr/bin/docker",
                  None, "")


def _fetched_engine(sp: EngineSpec, base: str, tmp: str, final: str) -> Engine:
    src = mirror()
    apt_dir = os.path.join(base, ".apt", sp.suite or "")
    for sub in ("lists/partial", "archives/partial", "cache", "parts"):
        os.makedirs(os.path.join(apt_dir, sub), exist_ok=True)
    with open(os.path.join(apt_dir, "sources.list"), "w") as f:
        f.write(sources_line(src, sp.suite or ""))
    open(os.path.join(apt_dir, "status"), "w").close()
    opts = ["-o", f"Dir::Etc::sourcelist={apt_dir}/sources.list",
            "-o", f"Dir::Etc::sourceparts={apt_dir}/parts",
            "-o", f"Dir::Etc::preferencesparts={apt_dir}/parts",
            "-o", f"Dir::Etc::preferences={apt_dir}/preferences",
            "-o", f"Dir::State::Lists={apt_dir}/lists",
            "-o", f"Dir::State::status={apt_dir}/status",
            "-o", f"Dir::Cache={apt_dir}/cache",
            "-o", f"Dir::Cache::archives={apt_dir}/archives",
            "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1", "-q"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    _run(["apt-get", *opts, "update"], f"apt-get update ({src.uri} {sp.suite})", env=env)
    versions: dict[str, str] = {}
    for pkg in sp.packages + sp.optional:
        res = subprocess.run(["apt-cache", *opts, "show", "--no-all-versions", pkg],
                             capture_output=True, text=True, env=env)
        version = next((line.split(":", 1)[1].strip() for line in res.stdout.splitlines()
                        if line.startswith("Version:")), None)
        if version:
            versions[pkg] = version
        elif pkg in sp.packages:
            raise EngineError(f"engine {sp.name}: Debian {sp.suite} has no package {pkg}")
    debs = os.path.join(tmp, "debs")
    os.makedirs(debs)
    _run(["apt-get", *opts, "download", *(f"{p}={v}" for p, v in versions.items())],
         f"apt-get download ({sp.suite})", cwd=debs, env=env)
    rootfs = os.path.join(tmp, "root")
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        _run(["dpkg-deb", "-x", deb, rootfs], f"dpkg -x {os.path.basename(deb)}")
    shutil.rmtree(debs)
    bindir = os.path.join(tmp, "bin")
    for d in BIN_DIRS:
        for path in sorted(glob.glob(os.path.join(rootfs, d, "*"))):
            if os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.X_OK):
                _link(final + path[len(tmp):], os.path.join(bindir, os.path.basename(path)))
    # The traps: Debian 12's runc first on PATH, docker-init -> Debian 12's tini-static.
    _link(HOST_RUNC, os.path.join(bindir, "runc"))
    _link(HOST_TINI, os.path.join(bindir, "docker-init"))
    for d in BIN_DIRS:
        init = os.path.join(rootfs, d, "docker-init")
        if os.path.lexists(init):
            _link(HOST_TINI, init)
    compose = os.path.join(rootfs, "usr/libexec/docker/cli-plugins/docker-compose")
    if os.access(compose, os.X_OK):
        os.makedirs(os.path.join(tmp, "cli-plugins"))
        _link(final + compose[len(tmp):], os.path.join(tmp, "cli-plugins", "docker-compose"))
    else:
        compose = None
    for binary in ("dockerd", "docker", "containerd"):
        if not os.path.lexists(os.path.join(bindir, binary)):
            raise EngineError(f"engine {sp.name}: the packages of {sp.suite} have no {binary}")
    return Engine(sp.name, tmp, sp.suite, src.uri, versions, os.path.join(rootfs, "usr/sbin/dockerd"),
                  os.path.join(rootfs, "usr/bin/docker"), compose, "")


# --- command line (scripts/fetch-engine) ----------------------------------------------------

def describe(eng: Engine, cached: bool) -> str:
    pkgs = ", ".join(f"{p} {v}" for p, v in sorted(eng.packages.items()))
    return f"engine {eng.name}: {pkgs} in {eng.dir}{' (cached)' if cached else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fetch-engine",
                                     description="Fetch Docker engines for warren-lab into a cache.")
    parser.add_argument("engines", nargs="+", metavar="ENGINE", help=" | ".join(ENGINES))
    parser.add_argument("--refresh", action="store_true", help="fetch again even if cached")
    parser.add_argument("--json", action="store_true", help="print the manifests as JSON")
    args = parser.parse_args(argv)
    try:
        for name in args.engines:
            spec(name)
        for name in args.engines:
            cached = not args.refresh and load(name) is not None
            eng = ensure(name, refresh=args.refresh)
            print(json.dumps(eng.to_json()) if args.json else describe(eng, cached), flush=True)
    except (EngineError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        print(f"fetch-engine: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
