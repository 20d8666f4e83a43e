"""How a lab host runs its Docker engine: which engine, its dockerd command line, its PATH.

``choose(engine, firewall)`` resolves the two lab-wide choices: the engine
(``20.10``, ``26`` or ``28``; default ``$WARREN_LAB_ENGINE``, else the newest)
and Docker's own firewall (``on``/``off``; default
``$WARREN_LAB_DOCKER_FIREWALL``, else on, as on every real host). The
environment defaults let CI pick the engine for a whole pytest run while
every fixture keeps calling ``Lab(...).up(n)``.

A host's dockerd is the engine's (``engines.Engine``): started with the
engine's ``bin/`` first on ``PATH`` (its containerd and shim, Debian 12's runc
and tini-static as ``docker-init``; see ``engines``), every path under the
host's state dir, and

* firewall **on**: Docker's defaults (iptables and ip6tables as the engine
  sets them, ``--ip-masq``, the default bridge ``docker0``, docker-proxy) -
  all of it inside the host's netns (iptables-nft on Debian 12);
* firewall **off**: ``--bridge=none --iptables=false --ip6tables=false
  --ip-masq=false`` (28 writes ip6tables rules even with ``--iptables=false``; the
  lab before engines: no Docker rules, no docker0).

Commands run on a host get the same ``bin/`` first on ``PATH`` (so ``docker``
there is the engine's CLI) and ``DOCKER_CONFIG=HOSTDIR/docker-config``, whose
``cli-plugins`` links to the engine's compose v2 plugin when it has one.
"""
from __future__ import annotations

import http.client
import json
import os
from typing import Any

from . import dockerapi, engines
from .layout import HostLayout

ENGINE_ENV = "WARREN_LAB_ENGINE"
FIREWALL_ENV = "WARREN_LAB_DOCKER_FIREWALL"
ETCD_TLS_ENV = "WARREN_LAB_ETCD_TLS"  # on: etcd over https with client certificates by default
FIREWALL_OFF_FLAGS = ("--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false")
DOCKER_CONFIG_DIR = "docker-config"


class ChoiceError(ValueError):
    """A bad engine or firewall choice (one line)."""


def choose_engine(engine: str | None = None) -> str:
    name = engine if engine not in (None, "") else (os.environ.get(ENGINE_ENV) or engines.DEFAULT_ENGINE)
    name = str(name)
    if name not in engines.ENGINES:
        where = "" if engine not in (None, "") else f" (from ${ENGINE_ENV})"
        raise ChoiceError(f"unknown engine {name!r}{where}: choose one of {', '.join(engines.ENGINES)}")
    return name


def choose_firewall(firewall: bool | str | None = None) -> bool:
    if isinstance(firewall, bool):
        return firewall
    source = firewall if firewall not in (None, "") else os.environ.get(FIREWALL_ENV) or "on"
    value = str(source).strip().lower()
    if value not in ("on", "off"):
        where = "" if firewall not in (None, "") else f" (from ${FIREWALL_ENV})"
        raise ChoiceError(f"--docker-firewall must be on or off, not {source!r}{where}")
    return value == "on"


def choose_etcd_tls(tls: bool | str | None = None) -> bool:
    """``--etcd-tls`` as given, else ``$WARREN_LAB_ETCD_TLS`` (on/off), else off."""
    if isinstance(tls, bool):
        return tls
    source = tls if tls not in (None, "") else os.environ.get(ETCD_TLS_ENV) or "off"
    value = str(source).strip().lower()
    if value not in ("on", "off"):
        where = "" if tls not in (None, "") else f" (from ${ETCD_TLS_ENV})"
        raise ChoiceError(f"--etcd-tls must be on or off, not {source!r}{where}")
    return value == "on"


def from_state(st: dict[str, Any]) -> engines.Engine | None:
    """The engine a lab recorded in its state (None for labs made before engines)."""
    data = st.get("engine")
    if not data:
        return None
    return engines.Engine(**data)


def dockerd_argv(h: HostLayout, dockerd: str, firewall: bool) -> list[str]:
    argv = [dockerd, "-H", h.docker_host,
            "--data-root", h.path("data"), "--exec-root", h.path("exec"),
            "--pidfile", h.path("dockerd.pid"), "--cgroup-parent", "/" + h.cgroup,
            "--storage-driver", "overlay2", "--shutdown-timeout", "2"]
    return argv if firewall else [*argv, *FIREWALL_OFF_FLAGS]


def docker_config(h: HostLayout) -> str:
    return h.path(DOCKER_CONFIG_DIR)


def prepare_host(h: HostLayout, eng: engines.Engine | None) -> None:
    """``HOSTDIR/docker-config`` (with the compose plugin linked in when the engine has one)."""
    cfg = docker_config(h)
    os.makedirs(cfg, exist_ok=True)
    link = os.path.join(cfg, "cli-plugins")
    if eng and eng.cli_plugins and not os.path.lexists(link):
        os.symlink(eng.cli_plugins, link)


def host_path(path: str, eng: engines.Engine | None) -> str:
    """``path`` with the engine's ``bin/`` first (kept after the venv's bin if that leads)."""
    if eng is None:
        return path
    parts = [p for p in path.split(":") if p and p != eng.bin_dir]
    return ":".join([eng.bin_dir, *parts])


def docker_version(sock: str, timeout: float = 3.0) -> str | None:
    """dockerd's own answer to ``GET /version`` (None when it does not answer)."""
    try:
        status, body = dockerapi.request(sock, "GET", "/version", timeout)
        return json.loads(body).get("Version") if status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
