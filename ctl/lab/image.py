"""The lab's container image: busybox-static plus one symlink per applet.

No registry is reachable, so each host gets ``warren-lab/busybox:latest`` by
``docker import`` of a tar built here in memory from ``/bin/busybox``.
"""
from __future__ import annotations

import io
import subprocess
import tarfile
import time

BUSYBOX = "/bin/busybox"
# Always linked, even if ``busybox --list`` should omit one.
REQUIRED_APPLETS = ("sh", "ping", "ping6", "ip", "nc", "wget", "sleep", "cat", "echo", "ls",
                    "ifconfig", "route", "hostname", "true", "httpd")
IMPORT_CHANGES = ('CMD ["sh"]',)


def applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    names = {a for a in out.split() if a and "/" not in a and a != "busybox"}
    return sorted(names | set(REQUIRED_APPLETS))


def _add(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"",
         link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, int(time.time())
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def rootfs_tar(busybox: str = BUSYBOX) -> bytes:
    """An uncompressed tar of a minimal rootfs around ``busybox``."""
    with open(busybox, "rb") as f:
        binary = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555),
                        ("sys", 0o555), ("tmp", 0o1777), ("root", 0o700), ("var", 0o755),
                        ("var/www", 0o755), ("usr", 0o755)):
            _add(tar, d, tarfile.DIRTYPE, mode)
        _add(tar, "usr/bin", tarfile.SYMTYPE, 0o777, link="../bin")
        _add(tar, "usr/sbin", tarfile.SYMTYPE, 0o777, link="../bin")
        _add(tar, "sbin", tarfile.SYMTYPE, 0o777, link="bin")
        _add(tar, "bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for applet in applets(busybox):
            _add(tar, f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        _add(tar, "etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        _add(tar, "etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
        _add(tar, "var/www/index.html", tarfile.REGTYPE, 0o644, b"warren-lab\n")
    return buf.getvalue()


def import_argv(docker: str, image: str) -> list[str]:
    argv = [docker, "import"]
    for change in IMPORT_CHANGES:
        argv += ["-c", change]
    return argv + ["-", image]


__all__ = ["rootfs_tar", "import_argv", "applets", "BUSYBOX"]
