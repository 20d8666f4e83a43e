"""CreateNetwork's ``Options`` as Docker 20.10 to 29 send them -> a Warren network's settings.

Two kinds of keys arrive (moby ``libnetwork/netlabel``, ``daemon/network.go``):

* **libnetwork's labels, at the top level**: ``com.docker.network.enable_ipv4``
  (28+, on every network), ``...enable_ipv6``, ``...internal`` (``--internal``)
  and ``com.docker.network.generic`` (the ``-o`` map). Warren honours
  ``internal`` (stored in the network record: the policy agent keeps its
  endpoints inside the pools, the plugin gives them no default route and no
  ``-p``); ``enable_ipv4``/``enable_ipv6`` only say which of IPv4Data/IPv6Data
  are filled, which is what Warren reads. Every other top-level key is logged
  and ignored: a later Docker may add labels, and refusing an unknown one
  refuses every network (what 28's ``enable_ipv4`` did to Warren).
* **the ``-o`` map** (``com.docker.network.generic``): Warren's own ``mtu=N``
  and ``profile=NAME``, and Docker's standard ``com.docker.network.driver.mtu=N``
  (the same as ``mtu``). Other ``com.docker.network.*`` keys in it are Docker's
  (``default-network-opts`` in daemon.json reach every driver; ``-o
  com.docker.network.enable_ipv6=true`` stays there after dockerd read it): logged
  and ignored. Any other key is an option Warren cannot honour: refused, with
  the list of valid ones.

Pure: no etcd, no kernel; :func:`parse` raises :class:`PluginError` with one line.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import PluginError

log = logging.getLogger(__name__)

LABEL_PREFIX = "com.docker.network."
GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
DRIVER_MTU = "com.docker.network.driver.mtu"
PORTMAP = "com.docker.network.portmap"  # -p, in Join's and ProgramExternalConnectivity's options
MTU, PROFILE = "mtu", "profile"
VALID_OPTIONS = (MTU, PROFILE, DRIVER_MTU)
VALID_HELP = f"{MTU}=N, {PROFILE}=NAME, {DRIVER_MTU}=N"
MTU_RANGE = (576, 65535)


@dataclass(frozen=True)
class NetworkOptions:
    mtu: int | None = None
    profile: str | None = None
    internal: bool = False
    ignored: tuple[str, ...] = ()   # Docker's keys that mean nothing to Warren (logged)


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise PluginError(f"{name} must be true or false, not {value!r}")


def _mtu(generic: dict) -> int | None:
    given = {k: generic[k] for k in (MTU, DRIVER_MTU) if k in generic}
    if not given:
        return None
    values = set()
    for key, raw in given.items():
        try:
            values.add(int(str(raw).strip()))
        except ValueError:
            raise PluginError(f"-o {key} must be a number such as 1400") from None
    if len(values) > 1:
        raise PluginError(f"-o {MTU} and -o {DRIVER_MTU} disagree: give one of them")
    mtu = values.pop()
    if not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]:
        raise PluginError(f"-o mtu must be between {MTU_RANGE[0]} and {MTU_RANGE[1]}")
    return mtu


def parse(options: dict) -> NetworkOptions:
    generic = options.get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise PluginError("network options must be a map")
    if not all(isinstance(v, str) for v in generic.values()):
        raise PluginError("-o values must be strings")
    unknown = sorted(k for k in generic if k not in VALID_OPTIONS and not k.startswith(LABEL_PREFIX))
    if unknown:
        raise PluginError(f"the warren driver does not support -o {', '.join(unknown)}; "
                          f"valid options: {VALID_HELP}")
    profile = generic.get(PROFILE)
    if profile is not None and not profile.strip():
        raise PluginError("-o profile needs a name")
    ignored = sorted({k for k in options if k not in (GENERIC, INTERNAL, ENABLE_IPV4, ENABLE_IPV6)}
                     | {f"-o {k}" for k in generic if k not in VALID_OPTIONS})
    for key in (ENABLE_IPV4, ENABLE_IPV6):
        if key in options:
            _bool(key, options[key])
    return NetworkOptions(mtu=_mtu(generic), profile=profile,
                          internal=_bool(INTERNAL, options.get(INTERNAL, False)),
                          ignored=tuple(ignored))
