#!/usr/bin/env python3
"""Run one command as root in a throw-away QEMU guest whose kernel has IP-in-IP.

    python3 tests/ipip/guest.py [options] [--] COMMAND [ARGS...]

exits with COMMAND's exit status, 124 when the guest ran out of time and 125
when it never reported a status (no kernel or qemu, boot failure, panic).
Only the standard library is used, so any python3 can run it.

Why: the hosts Warren's CI runs on may have no ``CONFIG_NET_IPIP`` (this
machine kind has neither the option nor modules), yet the ipip data path
has to be proven, not assumed. Debian's own kernel has ipip as a module.

How (measured on a 2-core nested VM: ~4 s per boot once the kernel is cached):

* **Kernel**: Debian's ``linux-image-<abi>-amd64`` package, resolved through
  ``apt-cache depends linux-image-amd64`` (the ABI name moves with point
  releases), fetched with ``apt-get download`` and unpacked with
  ``dpkg-deb -x`` plus ``depmod -b``: *not installed*, nothing in /boot,
  no initramfs-tools. It is cached in ``$WARREN_IPIP_CACHE`` (default
  ``/var/cache/warren-ipip-guest``); ``VM_KROOT`` points at a tree of your
  own instead (``/`` for an installed kernel). The uncompressed ``vmlinux``
  is cut out of the bzImage once (Python's lzma) and cached: booting it
  through PVH saves ~3.5 s of xz decompression under emulation per boot.
* **Accelerator**: TCG (software emulation) by default. ``/dev/kvm`` on this
  machine kind is ``kvm_pvm``, on which a stock kernel hangs; ``VM_ACCEL=kvm``
  exists for hosts with real VMX/SVM but is untested.
* **Initramfs**: built on the fly (an in-process cpio writer, no ``cpio``
  tool): the host's static busybox, the 9p/virtio/overlay modules taken from
  the guest kernel's own tree (``modprobe --show-depends``) and two scripts.
  Stage 1 mounts the host ``/`` over virtio-9p **read-only** under a tmpfs
  overlay (so the guest sees this machine's files, venv included, and every
  write is thrown away), binds the kernel's modules to ``/lib/modules``,
  puts fresh tmpfs on ``/run`` and ``switch_root``s. Stage 2 runs the command
  with a clean environment, stdin ``/dev/null`` and stdout+stderr into a
  pipe (not a terminal) in the caller's working directory, prints
  ``VM-EXIT-CODE=<n>`` on the serial console (which this runner streams to
  its stdout) and powers the guest off (``busybox poweroff -f``).
* **Isolation**: ``-nodefaults -net none``: the guest has no NIC at all.
  Nothing is passed into it but the command, the working directory, the
  variables named by ``--env``/``VM_ENV`` and, with ``--rw``/``VM_RWDIR``, one
  host directory mounted read-write at the same path (for junit XML).
* **No leftovers**: qemu is killed at the deadline, when this runner gets
  SIGTERM/SIGINT, and (PR_SET_PDEATHSIG) when this runner dies; the per-run
  files live in a temp dir that is always removed.

Knobs (environment; the options of the same meaning win): ``VM_TIMEOUT``
(s, 600), ``VM_MEM`` (MiB, 1024), ``VM_CPUS`` (min(nproc, 4)), ``VM_ENV``,
``VM_RWDIR``, ``VM_ACCEL`` (tcg|kvm), ``VM_PVH`` (1|0), ``VM_APPEND`` (extra
kernel arguments, e.g. ``ignore_loglevel`` to debug a boot), ``VM_KROOT``,
``WARREN_IPIP_CACHE``. Host packages: ``qemu-system-x86``, ``kmod``,
``busybox-static`` and, for the fetch, ``apt``/``dpkg`` with ``apt-get update``
done.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import gzip
import logging
import lzma
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

log = logging.getLogger("warren.ipip.guest")

EXIT_TIMEOUT = 124
EXIT_NO_STATUS = 125
STATUS_LINE = re.compile(r"^VM-EXIT-CODE=(\d+)\s*$")
POWER_DOWN = re.compile(r"^\[[ \d.]+\] reboot: Power down")  # the kernel's last word: not shown
KERNEL_META_PACKAGE = "linux-image-amd64"
DEFAULT_CACHE = "/var/cache/warren-ipip-guest"
QEMU = "qemu-system-x86_64"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# What stage 1 needs before it can mount the root (the rest autoloads in the guest).
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_MARKER = "WARREN_IPIP_GUEST"  # set to 1 in the guest, so in-guest tests know where they are
KERNEL_ARGS = ("console=ttyS0", "quiet", "loglevel=3", "panic=-1", "mitigations=off",
               "random.trust_cpu=on", "8250.nr_uarts=1", "rdinit=/init")


class GuestUnavailable(Exception):
    """qemu, busybox or a guest kernel cannot be obtained on this host."""


# --------------------------------------------------------------------------- options


@dataclass
class Options:
    command: list[str]
    timeout: float = 600.0
    mem: int = 1024
    cpus: int = 2
    env: list[str] = field(default_factory=list)
    rwdir: str | None = None
    accel: str = "tcg"
    pvh: bool = True
    append: str = ""
    kroot: str | None = None
    cache: Path = Path(DEFAULT_CACHE)


def parse_args(argv: list[str]) -> Options:
    e = os.environ
    p = argparse.ArgumentParser(prog="guest.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=float(e.get("VM_TIMEOUT", 600)))
    p.add_argument("--mem", type=int, default=int(e.get("VM_MEM", 1024)), help="MiB")
    p.add_argument("--cpus", type=int, default=int(e.get("VM_CPUS", min(os.cpu_count() or 1, 4))))
    p.add_argument("--env", action="append", default=e.get("VM_ENV", "").split(),
                   help="name of a variable to pass into the guest (repeatable)")
    p.add_argument("--rw", dest="rwdir", default=e.get("VM_RWDIR") or None,
                   help="host directory mounted read-write at the same path")
    p.add_argument("--accel", choices=("tcg", "kvm"), default=e.get("VM_ACCEL", "tcg"))
    p.add_argument("--no-pvh", dest="pvh", action="store_false", default=e.get("VM_PVH", "1") != "0")
    p.add_argument("--append", default=e.get("VM_APPEND", ""), help="extra kernel arguments")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        p.error("no command given")
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="guest: %(message)s", stream=sys.stderr)
    return Options(command=command, timeout=ns.timeout, mem=ns.mem, cpus=ns.cpus, env=ns.env,
                   rwdir=os.path.abspath(ns.rwdir) if ns.rwdir else None, accel=ns.accel,
                   pvh=ns.pvh, append=ns.append, kroot=e.get("VM_KROOT") or None,
                   cache=cache_dir())


def cache_dir() -> Path:
    return Path(os.environ.get("WARREN_IPIP_CACHE", DEFAULT_CACHE))


# --------------------------------------------------------------------------- host tools


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        raise GuestUnavailable(f"{name} not found (apt-get install {package})")
    return path


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP (dynamic loader) header."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def static_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path) and is_static_elf(path):
            return path
    raise GuestUnavailable("no static busybox (apt-get install busybox-static)")


# --------------------------------------------------------------------------- kernel


@dataclass(frozen=True)
class Kernel:
    root: Path      # holds boot/vmlinuz-<version> and lib/modules/<version>
    version: str

    @property
    def bzimage(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"


def newest_version(root: Path) -> str | None:
    """The newest ``<version>`` with both ``boot/vmlinuz-<version>`` and its modules."""
    def key(v: str) -> list:
        return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]
    versions = [p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*")]
    versions = [v for v in versions if (root / "lib" / "modules" / v).is_dir()]
    return max(versions, key=key) if versions else None


def resolve_kernel_package() -> str | None:
    """``linux-image-6.1.0-NN-amd64``: what Debian's meta-package depends on now."""
    if not shutil.which("apt-cache"):
        return None
    out = subprocess.run(["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True,
                         text=True, timeout=60).stdout
    match = re.search(r"Depends:\s*(linux-image-\d\S*)", out)
    return match.group(1) if match else None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so concurrent runs fetch a kernel only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def fetch_kernel(package: str, cache: Path) -> Path:
    """Download ``package`` and unpack it (not install it) as ``cache/package``."""
    dest = cache / package
    with locked(cache / ".lock"):
        if (dest / "boot").is_dir():
            return dest
        for tool, pkg in (("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("depmod", "kmod")):
            require_tool(tool, pkg)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
            log.info("fetching %s into %s (once)", package, cache)
            run_checked(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
                        cwd=tmp, what=f"apt-get download {package} (is `apt-get update` done?)")
            deb = next(Path(tmp).glob("*.deb"))
            root = Path(tmp) / "root"
            run_checked(["dpkg-deb", "-x", str(deb), str(root)], what="dpkg-deb -x")
            deb.unlink()
            version = newest_version(root)
            if version is None:
                raise GuestUnavailable(f"{package} holds no vmlinuz with modules")
            run_checked([require_tool("depmod", "kmod"), "-b", str(root), version], what="depmod")
            root.rename(dest)
        log.info("%s unpacked in %.1f s", package, time.monotonic() - started)
        prune_other_kernels(cache, keep=package)
    return dest


def prune_other_kernels(cache: Path, keep: str) -> None:
    """Drop superseded kernels and what killed fetches left (the caller holds the lock)."""
    for stale in cache.glob(".fetch-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in cache.glob("linux-image-*"):
        if old.name != keep and old.is_dir():
            log.info("removing the superseded %s", old)
            shutil.rmtree(old, ignore_errors=True)


def run_checked(argv: list[str], what: str, cwd: str | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise GuestUnavailable(f"{what} failed: {(result.stderr or result.stdout).strip()[-800:]}")


def obtain_kernel(cache: Path | None = None, kroot: str | None = None) -> Kernel:
    """The guest kernel: ``kroot`` if given, else Debian's current one (fetched once)."""
    cache = cache or cache_dir()
    root = Path(kroot) if kroot else current_kernel_tree(cache)
    version = newest_version(root)
    if version is None:
        raise GuestUnavailable(f"no boot/vmlinuz-* with lib/modules/* under {root}")
    return Kernel(root=root, version=version)


def current_kernel_tree(cache: Path) -> Path:
    """Debian's current kernel, fetched once; offline, the newest one fetched before."""
    package = resolve_kernel_package()
    try:
        if package is None:
            raise GuestUnavailable(f"cannot resolve {KERNEL_META_PACKAGE} with apt-cache "
                                   "(is `apt-get update` done?)")
        return fetch_kernel(package, cache)
    except GuestUnavailable as exc:
        cached = sorted(p for p in cache.glob("linux-image-*") if (p / "boot").is_dir())
        if not cached:
            raise
        log.warning("%s: using the cached %s", exc, cached[-1].name)
        return cached[-1]


def decompress_payload(data: bytes) -> bytes:
    """Decompress an xz or gzip kernel payload (trailing bytes are ignored)."""
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if data.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    raise GuestUnavailable(f"unsupported kernel compression (magic {data[:6].hex()})")


def extract_vmlinux(bzimage: Path) -> bytes:
    """The ELF ``vmlinux`` inside a bzImage (boot protocol >= 2.08 header fields)."""
    image = bzimage.read_bytes()
    if image[0x202:0x206] != b"HdrS":
        raise GuestUnavailable(f"{bzimage} is not a bzImage")
    setup_sects = image[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    elf = decompress_payload(image[start:start + payload_length])
    if not elf.startswith(b"\x7fELF"):
        raise GuestUnavailable(f"the payload of {bzimage} is not an ELF vmlinux")
    return elf


def boot_image(kernel: Kernel, cache: Path, pvh: bool) -> Path:
    """The file qemu boots: a cached PVH ``vmlinux`` or, failing that, the bzImage."""
    if not pvh:
        return kernel.bzimage
    st = kernel.bzimage.stat()
    target = cache / "pvh" / f"vmlinux-{kernel.version}-{st.st_size}-{int(st.st_mtime)}"
    if target.exists():
        return target
    started = time.monotonic()
    try:
        elf = extract_vmlinux(kernel.bzimage)
    except (GuestUnavailable, lzma.LZMAError, zlib.error, gzip.BadGzipFile) as exc:
        log.warning("cannot extract vmlinux (%s): booting the bzImage", exc)
        return kernel.bzimage
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob("vmlinux-*"):
        stale.unlink()
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(elf)
    tmp.rename(target)
    log.info("cached the PVH vmlinux of %s (%d MB, %.1f s)", kernel.version, len(elf) >> 20,
             time.monotonic() - started)
    return target


def module_files(kernel: Kernel, names: tuple[str, ...]) -> list[Path]:
    """``names`` and their dependencies, in load order, without repeats."""
    out = subprocess.run([require_tool("modprobe", "kmod"), "-d", str(kernel.root), "-S",
                          kernel.version, "--show-depends", "-a", *names],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise GuestUnavailable(f"modprobe --show-depends: {out.stderr.strip()}")
    files: list[Path] = []
    for line in out.stdout.splitlines():  # "insmod /path/x.ko [params]" or "builtin x"
        parts = line.split()
        if parts[:1] == ["insmod"] and Path(parts[1]) not in files:
            files.append(Path(parts[1]))
    return files


def read_module(path: Path) -> bytes:
    """A module's bytes, decompressed (busybox insmod may not read .ko.xz/.ko.gz)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        raise GuestUnavailable(f"{path}: zstd-compressed modules are not supported")
    return data


# --------------------------------------------------------------------------- initramfs


class Cpio:
    """A minimal writer of the ``newc`` cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        raw_name = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(raw_name), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.parts += [header, raw_name, _pad(len(header) + len(raw_name)), data, _pad(len(data))]

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = -1
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


STAGE1 = r"""#!/bin/busybox sh
# Stage 1 (initramfs): mount the host / read-only under a tmpfs overlay, then switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "guest stage 1 failed: $*"; echo o > /proc/sysrq-trigger; sleep 60; }
while read -r m; do insmod "/modules/$m" || fail "insmod $m"; done < /modules/order
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
    || fail "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "cannot mount the overlay root"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
. /config
if [ "$KROOT" != / ]; then
    mkdir -p "/newroot/lib/modules/$KVER"
    mount --bind "/newroot$KROOT/lib/modules/$KVER" "/newroot/lib/modules/$KVER" || fail "modules"
fi
if [ -n "$RWDIR" ]; then
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rwdir "/newroot$RWDIR" || fail "rwdir"
fi
cp /stage2 /newroot/run/warren-guest-stage2
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/sh /run/warren-guest-stage2
"""

STAGE2 = r"""#!/bin/sh
# Stage 2 (the host's files as root): run the command, report its status, power off.
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
echo warren-ipip-guest > /proc/sys/kernel/hostname
ip link set lo up
cd {cwd} || echo "guest: cannot enter {cwd}, staying in /"
# Through a pipe: the command's output is a log, not a terminal (no progress bars, no colour).
(env -i {env} {command} </dev/null 2>&1; echo $? > /run/warren-guest-status) | cat
[ -f /run/warren-guest-status ] && echo "VM-EXIT-CODE=$(cat /run/warren-guest-status)"
sync
exec {busybox} poweroff -f
"""


def stage2_script(command: list[str], cwd: str, env: dict[str, str]) -> str:
    return STAGE2.format(cwd=shlex.quote(cwd), command=shlex.join(command),
                         busybox=shlex.quote(static_busybox()),
                         env=" ".join(shlex.quote(f"{k}={v}") for k, v in env.items()))


def guest_env(names: list[str]) -> dict[str, str]:
    env = {"HOME": "/root", "PATH": GUEST_PATH, "TERM": "dumb", "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1", GUEST_MARKER: "1"}
    env.update({n: os.environ[n] for n in names if n in os.environ})
    return env


def build_initramfs(kernel: Kernel, opts: Options) -> bytes:
    cpio = Cpio()
    for d in ("bin", "dev", "modules"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", Path(static_busybox()).read_bytes(), 0o755)
    order = []
    for path in module_files(kernel, BOOT_MODULES):
        name = path.name.split(".ko")[0] + ".ko"
        cpio.file(f"modules/{name}", read_module(path))
        order.append(name)
    cpio.file("modules/order", "".join(f"{n}\n" for n in order).encode())
    config = (f"KROOT={shlex.quote(str(kernel.root))}\nKVER={shlex.quote(kernel.version)}\n"
              f"RWDIR={shlex.quote(opts.rwdir or '')}\n")
    cpio.file("config", config.encode())
    cpio.file("init", STAGE1.encode(), 0o755)
    cpio.file("stage2", stage2_script(opts.command, os.getcwd(), guest_env(opts.env)).encode(), 0o755)
    return cpio.finish()


# --------------------------------------------------------------------------- qemu


def qemu_argv(opts: Options, image: Path, initrd: Path) -> list[str]:
    if opts.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]
    argv = [require_tool(QEMU, "qemu-system-x86"), "-nodefaults", "-no-user-config", "-no-reboot",
            "-M", "q35", *accel, "-smp", str(opts.cpus), "-m", str(opts.mem),
            "-display", "none", "-serial", "stdio", "-net", "none",
            "-kernel", str(image), "-initrd", str(initrd),
            "-append", " ".join((*KERNEL_ARGS, opts.append)).strip(),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"]
    if opts.rwdir:
        argv += ["-virtfs", f"local,path={opts.rwdir},mount_tag=rwdir,security_model=none,multidevs=remap"]
    return argv


def _die_with_parent() -> None:
    """In the qemu child: get SIGKILL when the runner dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pump(stream, out: TextIO, status: list[int]) -> None:
    """Copy the console to ``out`` line by line; remember the last status line."""
    for raw in stream:
        line = raw.decode(errors="replace").replace("\r", "")
        match = STATUS_LINE.match(line)
        if match:
            status.append(int(match.group(1)))
        elif not POWER_DOWN.match(line):
            out.write(line)
            out.flush()


def run_qemu(argv: list[str], timeout: float, out: TextIO = sys.stdout) -> int:
    log.debug("%s", shlex.join(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    status: list[int] = []
    pump = threading.Thread(target=_pump, args=(proc.stdout, out, status), daemon=True)
    pump.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("the guest did not finish within %.0f s: killed", timeout)
        return EXIT_TIMEOUT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pump.join(10)
    if not status:
        log.error("the guest reported no exit status (qemu exit %s)", proc.returncode)
        return EXIT_NO_STATUS
    return status[-1]


def run(opts: Options) -> int:
    kernel = obtain_kernel(opts.cache, opts.kroot)
    image = boot_image(kernel, opts.cache, opts.pvh)
    with tempfile.TemporaryDirectory(prefix="warren-guest-") as tmp:
        initrd = Path(tmp) / "initramfs.cpio"
        initrd.write_bytes(build_initramfs(kernel, opts))
        log.debug("kernel %s (%s), initramfs %d kB", kernel.version, image, initrd.stat().st_size >> 10)
        return run_qemu(qemu_argv(opts, image, initrd), opts.timeout)


def _terminate(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_qemu's finally: qemu is killed


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(opts)
    except GuestUnavailable as exc:
        log.error("cannot start the guest: %s", exc)
        return EXIT_NO_STATUS
    except KeyboardInterrupt:  # qemu was killed on the way out (run_qemu's finally)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
