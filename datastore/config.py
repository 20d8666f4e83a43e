"""How to reach etcd: endpoints, TLS files and the per-call timeout.

Read from the environment (``WARREN_ETCD_ENDPOINTS``, ``WARREN_ETCD_CA``,
``WARREN_ETCD_CERT``, ``WARREN_ETCD_KEY``, ``WARREN_ETCD_TIMEOUT``) unless the
caller passes explicit values (e.g. ``warrenctl --etcd-endpoints``). When TLS
files are configured every endpoint must be ``https://``: Warren never falls
back to plain text.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigError

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_TIMEOUT = 5.0
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def target(self) -> str:
        """host:port (IPv6 in brackets), as an HTTP Host header wants it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = 2379 if parts.port is None else parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid etcd endpoint {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"invalid etcd endpoint {text!r}: expected http(s)://HOST:PORT")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        if not _HOSTNAME.match(parts.hostname):
            raise ConfigError(f"invalid etcd endpoint {text!r}: bad host name") from None
    if not 0 < port < 65536:
        raise ConfigError(f"invalid etcd endpoint {text!r}: port must be 1-65535")
    if parts.path not in ("", "/"):
        raise ConfigError(f"invalid etcd endpoint {text!r}: no path allowed")
    return Endpoint(parts.scheme, parts.hostname, port)


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[Endpoint, ...]
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("no etcd endpoint configured")
        if (self.cert is None) != (self.key is None):
            raise ConfigError(
                "WARREN_ETCD_CERT and WARREN_ETCD_KEY must be given together")
        if self.cert and not self.ca:
            raise ConfigError("a client certificate needs WARREN_ETCD_CA too")
        for path in (self.ca, self.cert, self.key):
            if path and not os.path.isfile(path):
                raise ConfigError(f"TLS file {path} does not exist")
        schemes = {e.scheme for e in self.endpoints}
        if self.tls and "http" in schemes:
            raise ConfigError(
                "TLS is configured (WARREN_ETCD_CA) but an endpoint is plain "
                "http://; use https:// for every endpoint")
        if not self.tls and "https" in schemes:
            raise ConfigError(
                "https:// endpoints need WARREN_ETCD_CA (the CA that signed etcd's certificate)")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError("the etcd timeout must be a positive number of seconds")

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.endpoints]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 endpoints: str | None = None) -> "EtcdConfig":
        env = os.environ if env is None else env
        text = endpoints or env.get("WARREN_ETCD_ENDPOINTS") or DEFAULT_ENDPOINTS
        parsed = tuple(parse_endpoint(p) for p in text.split(",") if p.strip())
        try:
            timeout = float(env.get("WARREN_ETCD_TIMEOUT", DEFAULT_TIMEOUT))
        except ValueError:
            raise ConfigError("WARREN_ETCD_TIMEOUT must be a number of seconds") from None
        return cls(endpoints=parsed,
                   ca=env.get("WARREN_ETCD_CA") or None,
                   cert=env.get("WARREN_ETCD_CERT") or None,
                   key=env.get("WARREN_ETCD_KEY") or None,
                   timeout=timeout)
