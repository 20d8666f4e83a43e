"""The anchor of one lab host: holds its mount and UTS namespaces open.

Started as (see ``Lab``)::

    nsenter --net=/run/netns/LAB-hI -- unshare --mount --uts --propagation private -- \
        python -I -S .../ctl/lab/anchor.py HOSTDIR HOSTNAME

so it runs in the host's netns with a fresh private mount ns and UTS ns, then:

1. mounts a fresh sysfs (so /sys/class/net shows this netns; ``ip netns exec``
   would do that too but leaves /sys/fs/cgroup empty, which breaks dockerd)
   and moves the cgroup tree back on top of it;
2. lazily unmounts /run/netns and every copied ``nsfs`` mount, so this mount
   ns pins no other netns (``ip netns del`` elsewhere stays effective);
3. bind-mounts ``HOSTDIR/run`` over /run (a private /run per host: docker's
   plugin sockets in /run/docker/plugins, /run/containerd, /run/warren,
   xtables.lock...) and ``HOSTDIR/etc-docker`` over /etc/docker (plugin spec
   files, key.json), and ``HOSTDIR/usr-lib-docker-plugins`` over
   /usr/lib/docker/plugins when that exists;
4. sets the hostname, writes ``HOSTDIR/anchor.pid`` (the readiness signal)
   and sleeps until SIGTERM.

Everything "on the host" then runs via ``nsenter -t ANCHOR -m -u -n``. When
the anchor and every process that entered its mount ns are gone, the kernel
drops all those mounts: teardown needs no umount. Standard library only, and
meant to be run by path so it imports nothing from the project.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(source.encode(), target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags), None),
           f"mount {source} on {target}")


def umount_lazy(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount -l {target}")


def mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount in this mount ns, in mount order."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ").replace("\\011", "\t")
            result.append((point, right.split(" ", 1)[0]))
    return result


def setup(hostdir: str, hostname: str) -> None:
    cgsave = os.path.join(hostdir, "cgsave")
    mount("/sys/fs/cgroup", cgsave, None, MS_BIND | MS_REC)
    mount("sysfs", "/sys", "sysfs", 0)
    mount(cgsave, "/sys/fs/cgroup", None, MS_MOVE)

    if any(p == "/run/netns" for p, _ in mounts()):
        umount_lazy("/run/netns")
    for point, fstype in reversed(mounts()):
        if fstype == "nsfs":
            try:
                umount_lazy(point)
            except OSError:  # already gone with a parent
                pass

    mount(os.path.join(hostdir, "run"), "/run", None, MS_BIND)
    mount(os.path.join(hostdir, "etc-docker"), "/etc/docker", None, MS_BIND)
    if os.path.isdir("/usr/lib/docker/plugins"):
        mount(os.path.join(hostdir, "usr-lib-docker-plugins"), "/usr/lib/docker/plugins",
              None, MS_BIND)
    name = hostname.encode()
    _check(_libc.sethostname(name, len(name)), "sethostname")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: anchor.py HOSTDIR HOSTNAME", file=sys.stderr)
        return 2
    hostdir, hostname = argv[1], argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    try:
        setup(hostdir, hostname)
    except OSError as exc:
        print(f"anchor {hostname}: {exc}", file=sys.stderr)
        return 1
    pidfile = os.path.join(hostdir, "anchor.pid")
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(pidfile + ".tmp", pidfile)
    print(f"anchor {hostname} ready, pid {os.getpid()}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
