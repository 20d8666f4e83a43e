"""Which records in etcd are invalid: ``warrenctl records check``, ``status`` and ``diags``.

Every reader skips a record that fails its schema (:mod:`datastore.codec`),
so a bad record never stops a node, but what it says is then ignored: an
operator has to see it. :data:`KINDS` maps every key prefix Warren's code
reads (:mod:`datastore.keys`) to the check its readers apply, the record's
dataclass (types, ``validate()``, ``check_key``) or, for keys whose value
is not a record (affinity, sandbox slots), the shape of key and value.
:func:`scan` reads ``/warren/v1/`` once and returns every invalid record
with its one-line reason. Keys no reader knows (an unknown prefix) are not
reported: nothing reads them.

The scan does not count into :data:`datastore.codec.SKIPPED` (that counts
what a process's readers skipped, for its metric); ``warrenctl status``
shows :func:`count` and ``diags`` writes :func:`scan`'s list.

``warrenctl records check [--json]`` prints them and exits 1 when there is
any; ``warrenctl records remove KEY`` deletes one record, only if it is
invalid (and unchanged since it was checked): the operator's way out for a
record no command of Warren would write.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Callable

from datastore import codec, keys

SCAN_PREFIX = keys.PREFIX
MAX_SLOT = 254


@dataclass(frozen=True)
class Invalid:
    key: str
    kind: str      # the record class (or key kind) its readers expect
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class Kind:
    """Keys under ``prefix`` (or exactly ``prefix`` when ``exact``) whose last part ``matches``."""
    name: str
    prefix: str
    check: Callable[[str, bytes], None]  # raises ValueError / InvalidRecord with the reason
    exact: bool = False
    matches: Callable[[str], bool] = lambda rest: True

    def covers(self, key: str) -> bool:
        if self.exact:
            return key == self.prefix
        return key.startswith(self.prefix) and self.matches(key[len(self.prefix):])


def _record(cls: type, key_check: Callable[[Any, str], None] | None = None) -> Callable[[str, bytes], None]:
    def check(key: str, value: bytes) -> None:
        record = codec.loads(cls, value, key)
        if key_check is not None:
            key_check(record, key)
    return check


def _last_segment_is(field: str) -> Callable[[Any, str], None]:
    def check(record: Any, key: str) -> None:
        if getattr(record, field) != keys.last_segment(key):
            raise ValueError(f"{field} {getattr(record, field)!r:.60} does not match its key")
    return check


def _affinity(key: str, value: bytes) -> None:
    host, cidr = keys.split_affinity_key(key)
    keys.segment(host, "host name")
    ipaddress.ip_network(cidr, strict=True)
    if not isinstance(json.loads(value), dict):
        raise ValueError("value is not a JSON object")


def _handle(key: str, value: bytes) -> None:
    handle, address = keys.split_handle_key(key)
    keys.segment(handle, "handle")
    ipaddress.ip_address(address)
    from ipam.allocator import HandleRef
    ref = codec.loads(HandleRef, value, key)
    ipaddress.ip_network(ref.block, strict=True)
    if ipaddress.ip_address(address) not in ipaddress.ip_network(ref.block):
        raise ValueError(f"{address} is not in block {ref.block}")


def _sandbox_slot(key: str, value: bytes) -> None:
    parts = key[len(keys.SANDBOXES):].split("/")
    if len(parts) != 3:
        raise ValueError("not a key of the form sandboxes/<host>/<sandbox>/<slot>")
    keys.segment(parts[0], "host name")
    if not (parts[2].isascii() and parts[2].isdigit()) or not 1 <= int(parts[2]) <= MAX_SLOT:
        raise ValueError(f"slot {parts[2]!r:.20} is out of range 1-{MAX_SLOT}")
    keys.segment(value.decode(), "endpoint id")


def _sessions(key: str, value: bytes) -> None:
    """``status/<node>/bgp``: a list of SessionStatus, as ``bgp.settings.load_status`` reads it."""
    from bgp import settings
    record = codec.loads(getattr(settings, "_Sessions"), value, key)  # the record's own (private) class
    if not isinstance(record.sessions, list):
        raise ValueError("sessions is not a list")
    for entry in record.sessions:
        codec.loads(settings.SessionStatus, json.dumps(entry), key)


def _kinds() -> list[Kind]:
    from bgp import settings
    from ipam.blocks import Block
    from ipam.config import IpamConfig
    from ipam.nodes import Liveness, Node
    from ipam.pools import Pool
    from ipam.workloads import Endpoint, Network
    from profiles.model import Profile
    return [
        Kind("Pool", keys.POOLS, _record(Pool)),
        Kind("IpamConfig", keys.IPAM_CONFIG, _record(IpamConfig), exact=True),
        Kind("Block", keys.BLOCKS, _record(Block)),
        Kind("affinity", keys.AFFINITY, _affinity),
        Kind("HandleRef", keys.HANDLES, _handle),
        Kind("Network", keys.NETWORKS, _record(Network)),
        Kind("Endpoint", keys.ENDPOINTS, _record(Endpoint)),
        Kind("Node", keys.NODES, _record(Node)),
        Kind("sandbox slot", keys.SANDBOXES, _sandbox_slot),
        Kind("BgpSettings", keys.BGP_CONFIG, _record(settings.BgpSettings), exact=True),
        Kind("PeerRecord", keys.BGP_PEERS, _record(settings.PeerRecord, _last_segment_is("address"))),
        Kind("PeerRecord", keys.BGP + "nodes/", _record(settings.PeerRecord, _last_segment_is("address")),
             matches=lambda rest: rest.count("/") == 2 and rest.split("/")[1] == "peers"),
        Kind("SessionStatus", keys.STATUS, _sessions, matches=lambda rest: rest.endswith("/bgp")),
        Kind("Liveness", keys.STATUS, _record(Liveness), matches=lambda rest: rest.endswith("/alive")),
        Kind("SpeakerState", keys.STATUS, _record(settings.SpeakerState),
             matches=lambda rest: rest.endswith("/speaker")),
        Kind("Profile", keys.PROFILES, _record(Profile, _last_segment_is("name"))),
    ]


def kind_of(key: str, kinds: list[Kind]) -> Kind | None:
    return next((k for k in kinds if k.covers(key)), None)


def check(key: str, value: bytes, kinds: list[Kind] | None = None) -> Invalid | None:
    """Why the record at ``key`` is invalid, or None (also for keys no reader knows)."""
    kind = kind_of(key, kinds if kinds is not None else _kinds())
    if kind is None:
        return None
    try:
        kind.check(key, value)
    except codec.InvalidRecord as exc:
        return Invalid(key, kind.name, exc.reason)
    except Exception as exc:  # noqa: BLE001 - whatever the value trips on is the record's fault
        return Invalid(key, kind.name, (str(exc) or type(exc).__name__).splitlines()[0])
    return None


def scan(store) -> list[Invalid]:
    """Every invalid record under ``/warren/v1/``, in key order."""
    kinds = _kinds()
    found = [check(kv.key, kv.value, kinds) for kv in store.get_prefix(SCAN_PREFIX)]
    return [f for f in found if f is not None]


def count(store) -> int:
    """How many records are invalid (``warrenctl status``: "invalid records: N")."""
    return len(scan(store))


# --- the commands -------------------------------------------------------------------------

def records_check(args, ctx) -> int:
    found = scan(ctx.store)
    if args.json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
    elif not found:
        print("No invalid records.")
    else:
        width = max(len(f.key) for f in found)
        for f in found:
            print(f"{f.key:<{width}}  {f.kind}: {f.reason}")
        print(f"{len(found)} invalid record{'s' if len(found) > 1 else ''}: every reader skips "
              f"{'them' if len(found) > 1 else 'it'}; fix or remove with 'warrenctl records remove KEY'")
    return 1 if found else 0


def records_remove(args, ctx) -> int:
    key = args.key
    if not key.startswith(SCAN_PREFIX):
        raise ValueError(f"{key} is not a Warren key (they start with {SCAN_PREFIX})")
    kv = ctx.store.get(key)
    if kv is None:
        raise ValueError(f"{key} does not exist")
    problem = check(key, kv.value)
    if problem is None:
        raise ValueError(f"{key} is a valid record: remove it with the command that manages it")
    if not ctx.store.delete_if_unchanged(key, kv.mod_revision):
        raise ValueError(f"{key} changed while it was being removed; check it again")
    print(f"Removed {key} ({problem.kind}: {problem.reason})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("records", help="find and remove invalid records in etcd (every reader skips them)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = verbs.add_parser("check", help="list invalid records with the reason; exit 1 if there is any")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=records_check)
    r = verbs.add_parser("remove", help="delete one record, only if it is invalid")
    r.add_argument("key", metavar="KEY")
    r.set_defaults(func=records_remove)
