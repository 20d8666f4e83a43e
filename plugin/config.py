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
