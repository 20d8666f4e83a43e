"""The HTTP face of the plugin: one thin handler per Docker remote-API endpoint.

Docker POSTs JSON without a Content-Type (and an empty body for Activate and
the capability calls), so bodies are parsed with ``force=True`` and an empty
body counts as ``{}``. Each handler validates its request, calls one domain
method (:mod:`plugin.networks`, :mod:`plugin.ipamdriver`) and returns its
answer (:mod:`plugin.publishing` for -p). ``create_app`` wires the two drivers
together: CreateNetwork accepts only pools IPAM has, CreateEndpoint only
addresses IPAM holds (:mod:`plugin.networks`). Every failure - for the NetworkDriver *and* the IpamDriver - is HTTP
500 with ``{"Err": "<one sentence>"}`` (a 200 with ``Err`` would look like
success to dockerd's IPAM client); unknown URLs are 404, which dockerd reads
as "not implemented".
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from datastore import DatastoreError
from ipam import IpamError
from ipam.underlay import Protected, cluster_protected, host_protected

from .dataplane import DataplaneError
from . import metrics
from .errors import PluginError
from .ipamdriver import ADDRESS_SPACES, IpamDriver
from .networks import NetworkDriver
from .publishing import Publishing

log = logging.getLogger(__name__)

MIME = "application/vnd.docker.plugins.v1.2+json"
USER_ERRORS = (PluginError, IpamError, DatastoreError, DataplaneError, ValueError)


# -- request validation ---------------------------------------------------

def _body() -> dict:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise PluginError("the request body is not a JSON object")
    return data


def _str(body: dict, name: str, required: bool = True) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise PluginError(f"missing {name}")
        return ""
    if not isinstance(value, str):
        raise PluginError(f"{name} must be a string")
    return value


def _map(body: dict, name: str) -> dict:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PluginError(f"{name} must be a JSON object")
    return value


def _list(body: dict, name: str) -> list:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise PluginError(f"{name} must be a list of objects")
    return value


def _id(body: dict, name: str) -> str:
    value = _str(body, name)
    if not (0 < len(value) <= 128 and value.isalnum()):
        raise PluginError(f"{name} must be Docker's hexadecimal id")
    return value


def _string_map(body: dict, name: str) -> dict[str, str]:
    value = _map(body, name)
    if not all(isinstance(v, str) for v in value.values()):
        raise PluginError(f"{name} values must be strings")
    return value


# -- the app ----------------------------------------------------------------

def protected_networks(network: NetworkDriver) -> list[Protected]:
    """What a new pool must not overlap: this host's subnets (from the driver's dataplane),
    every node's underlay addresses and the etcd members (:mod:`ipam.underlay`)."""
    subnets = getattr(network.dataplane, "host_subnets", None)  # a test's fake may have none
    config = getattr(network.store, "config", None)
    etcd_hosts = [e.host for e in config.endpoints] if config is not None else []
    return host_protected(subnets() if subnets else []) + cluster_protected(network.store, etcd_hosts)


def create_app(network: NetworkDriver, ipam: IpamDriver, scope: str = "local",
               connectivity_scope: str = "global") -> Flask:
    app = Flask("warren")
    # the default pools are shared by every network made without --subnet: never routed per interface
    network.shared_pools = frozenset(ipam.default_pools.values())
    # CreateNetwork names pools IPAM has; CreateEndpoint names addresses IPAM holds (issue 12)
    network.pool_exists = lambda cidr: ipam.pools.get(cidr) is not None
    network.address_proof = ipam.proof
    ipam.protected = lambda: protected_networks(network)
    publishing = Publishing(network, network.ports)
    routes: dict[str, Callable[[dict], Any]] = {}

    def route(name: str):
        def register(fn):
            routes[name] = fn
            return fn
        return register

    @route("Plugin.Activate")
    def activate(_):
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    # NetworkDriver ---------------------------------------------------------

    @route("NetworkDriver.GetCapabilities")
    def capabilities(_):
        # GwAllocChecker (28+): dockerd asks GwAllocCheck before allocating a network's pools
        return {"Scope": scope, "ConnectivityScope": connectivity_scope, "GwAllocChecker": True}

    @route("NetworkDriver.GwAllocCheck")
    def gw_alloc_check(b):
        # Warren routes through 169.254.1.N and the host's link-local address: no pool
        # address is ever a gateway. The options are checked here too, so a network Warren
        # would refuse is refused before any pool is requested.
        network.check_options(_map(b, "Options"))
        return {"SkipIPv4": True, "SkipIPv6": True}

    @route("NetworkDriver.CreateNetwork")
    def create_network(b):
        ipv4, ipv6 = _list(b, "IPv4Data"), _list(b, "IPv6Data")
        network.create_network(_id(b, "NetworkID"), _map(b, "Options"), ipv4, ipv6)
        ipam.adopt([str(d.get("Pool")) for d in ipv4 + ipv6])
        return {}

    @route("NetworkDriver.DeleteNetwork")
    def delete_network(b):
        network.delete_network(_id(b, "NetworkID"))
        return {}

    @route("NetworkDriver.CreateEndpoint")
    def create_endpoint(b):
        interface = _map(b, "Interface")
        for key in ("Address", "AddressIPv6", "MacAddress"):
            _str(interface, key, required=False)
        return network.create_endpoint(_id(b, "NetworkID"), _id(b, "EndpointID"),
                                       interface, _map(b, "Options"))

    @route("NetworkDriver.EndpointOperInfo")
    def oper_info(b):
        return publishing.oper_info(_id(b, "EndpointID"))

    @route("NetworkDriver.DeleteEndpoint")
    def delete_endpoint(b):
        _id(b, "NetworkID")
        network.delete_endpoint(_id(b, "EndpointID"))
        return {}

    @route("NetworkDriver.Join")
    def join(b):
        return network.join(_id(b, "NetworkID"), _id(b, "EndpointID"), _str(b, "SandboxKey"))

    @route("NetworkDriver.Leave")
    def leave(b):
        network.leave(_id(b, "NetworkID"), _id(b, "EndpointID"))
        return {}

    @route("NetworkDriver.ProgramExternalConnectivity")
    def program_external(b):
        options = _map(b, "Options")
        network.refuse_publishing_if_internal(_id(b, "NetworkID"), options)
        publishing.program(_id(b, "EndpointID"), options)
        return {}

    @route("NetworkDriver.RevokeExternalConnectivity")
    def revoke_external(b):
        _id(b, "NetworkID")
        publishing.revoke(_id(b, "EndpointID"))
        return {}

    @route("NetworkDriver.DiscoverNew")
    def discover_new(_):
        return {}

    @route("NetworkDriver.DiscoverDelete")
    def discover_delete(_):
        return {}

    @route("NetworkDriver.AllocateNetwork")
    def allocate_network(b):
        _id(b, "NetworkID")
        return {"Options": _string_map(b, "Options")}

    @route("NetworkDriver.FreeNetwork")
    def free_network(b):
        _id(b, "NetworkID")
        return {}

    # IpamDriver --------------------------------------------------------------

    @route("IpamDriver.GetCapabilities")
    def ipam_capabilities(_):
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    @route("IpamDriver.GetDefaultAddressSpaces")
    def address_spaces(_):
        return dict(ADDRESS_SPACES)

    @route("IpamDriver.RequestPool")
    def request_pool(b):
        v6 = b.get("V6", False)
        if not isinstance(v6, bool):
            raise PluginError("V6 must be true or false")
        return ipam.request_pool(_str(b, "Pool", required=False), _str(b, "SubPool", required=False),
                                 _string_map(b, "Options"), v6)

    @route("IpamDriver.ReleasePool")
    def release_pool(b):
        return ipam.release_pool(_str(b, "PoolID"))

    @route("IpamDriver.RequestAddress")
    def request_address(b):
        return ipam.request_address(_str(b, "PoolID"), _str(b, "Address", required=False),
                                    _string_map(b, "Options"))

    @route("IpamDriver.ReleaseAddress")
    def release_address(b):
        return ipam.release_address(_str(b, "PoolID"), _str(b, "Address"))

    # dispatch ------------------------------------------------------------------

    @app.post("/<name>")
    def dispatch(name: str):
        handler = routes.get(name)
        if handler is None:
            return _error(f"{name} is not implemented", 404)
        started = time.perf_counter()
        response = _answer(name, handler)
        metrics.LATENCY.labels(name).observe(time.perf_counter() - started)
        metrics.REQUESTS.labels(name, str(response.status_code)).inc()
        return response

    def _answer(name: str, handler: Callable[[dict], Any]):
        try:
            answer = handler(_body())
        except USER_ERRORS as exc:
            log.info("%s failed: %s", name, exc)
            return _error(str(exc) or exc.__class__.__name__, 500)
        except Exception as exc:  # a bug: keep the traceback in our log, not in Docker's
            log.exception("%s crashed", name)
            return _error(f"internal error in warren ({exc.__class__.__name__}); see the node log", 500)
        response = jsonify(answer)
        response.mimetype = MIME
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(exc.description or exc.name, exc.code or 500)

    app.config["ROUTES"] = sorted(routes)
    return app


def _error(message: str, status: int):
    response = jsonify({"Err": message})
    response.status_code = status
    response.mimetype = MIME
    return response
