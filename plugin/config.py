"""Plugin settings, from the environment (set by ``warrenctl node start``)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

DEFAULT_SOCKET = "/run/docker/plugins/warren.sock"


@dataclass(frozen=True)
class PluginConfig:
    host: str
    socket: str = DEFAULT_SOCKET
    scope: str = "local"                   # "global" only with a dockerd cluster store
    underlay_iface: str | None = None      # None: the interface of the default route
    default_pool_v4: str = "10.30.0.0/16"  # networks created without --subnet
    default_pool_v6: str = "fd00:30::/64"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "PluginConfig":
        env = os.environ if env is None else env
        scope = env.get("WARREN_SCOPE", "local")
        if scope not in ("local", "global"):
            raise ValueError("WARREN_SCOPE must be local or global")
        return cls(host=env.get("WARREN_NODE_NAME") or socket.gethostname(),
                   socket=env.get("WARREN_PLUGIN_SOCKET", DEFAULT_SOCKET),
                   scope=scope,
                   underlay_iface=env.get("WARREN_UNDERLAY_IFACE") or None,
                   default_pool_v4=env.get("WARREN_DEFAULT_POOL_V4", cls.default_pool_v4),
                   default_pool_v6=env.get("WARREN_DEFAULT_POOL_V6", cls.default_pool_v6))


LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(path: str | None, env: Mapping[str, str] | None = None) -> None:
    """One line per event with time, level, pid and logger, for every node process.

    ``WARREN_LOG_LEVEL`` (debug|info|warning|error, default info) sets the level;
    the log goes to ``path`` (stderr if None), and also to stderr when
    ``WARREN_LOG_STDERR=1`` (``node start --foreground``: containers, systemd).
    """
    import logging
    import sys
    env = os.environ if env is None else env
    level = (env.get("WARREN_LOG_LEVEL") or "info").lower()
    if level not in LOG_LEVELS:
        level = "info"
    handlers: list[logging.Handler] = [logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)]
    if path and env.get("WARREN_LOG_STDERR") == "1":
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, handlers=handlers, force=True)
