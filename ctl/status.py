"""``warrenctl node status`` (this node's BGP speaker and sessions) and ``warrenctl status`` (the cluster).

``node status`` shows the speaker's real state, not a configured wish:

* whether the node runs at all (its liveness key, :mod:`ipam.nodes`);
* the speaker supervisor's published state (:class:`bgp.settings.SpeakerState`):
  ExaBGP running (pid, since, restarts and how it last ended), whether the
  newest configuration was accepted or refused (then the previous one is in
  use, and why it was refused is shown);
* peers left out of the configuration and invalid BGP records, with the reason;
* one row per session as the API process published it. While the node or its
  ExaBGP is not running, the published rows are stale: they are shown as
  ``down``.
"""
from __future__ import annotations

import time
from collections import Counter

from bgp.settings import (SpeakerState, load_settings, load_speaker_state, load_status, peers, plan_peers,
                          registered_nodes)
from datastore import codec, keys
from ipam import Block
from ipam.nodes import alive

from . import records
from .output import as_json, table


def _since(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def speaker_summary(state: SpeakerState | None, running_node: bool) -> tuple[str, bool]:
    """(one line about the speaker, whether ExaBGP runs)."""
    if not running_node:
        return "not running (the node is down)", False
    if state is None:
        return "unknown (the node agent published no state)", False
    if state.state == "running" and state.exabgp_pid:
        restarts = f", {state.restarts} restarts (last: {state.last_exit or '-'})" if state.restarts else ""
        return f"running, ExaBGP pid {state.exabgp_pid} since {_since(state.since)}{restarts}", True
    if state.state == "restarting":
        return (f"ExaBGP NOT running: it ended ({state.last_exit or 'unknown'}) at {_since(state.since)}; "
                f"restarting ({state.restarts} restarts)"), False
    return f"{state.state} since {_since(state.since)}", False


def config_summary(state: SpeakerState | None) -> str:
    if state is None:
        return "unknown"
    if state.config_ok:
        return f"accepted ({_since(state.config_time)})" if state.config_time else "accepted"
    return (f"REFUSED, the previous config stays in use ({state.render_failures} refused): "
            f"{state.config_error}")


def node_status(args, ctx) -> int:
    name = args.name or ctx.host
    invalid: list[str] = []
    nodes = registered_nodes(ctx.store, invalid)
    me = next((n for n in nodes if n.name == name), None)
    if me is None:
        raise ValueError(f"node {name} is not registered (or its record is invalid); "
                         "start it with 'warrenctl node start'")
    settings = load_settings(ctx.store, invalid=invalid)
    configured_peers, left_out = plan_peers(me, nodes, settings, peers(ctx.store, None, invalid),
                                            peers(ctx.store, name, invalid))
    configured = {p.address: p.kind for p in configured_peers}
    state = load_speaker_state(ctx.store, name)
    node_up = name in alive(ctx.store)
    speaker, exabgp_runs = speaker_summary(state, node_up)
    skipped = sorted(set(left_out + invalid + (state.skipped if state else [])))
    sessions = {s.peer: s for s in load_status(ctx.store, name)}
    rows = []
    for address in sorted(set(configured) | set(sessions)):
        s = sessions.get(address)
        row = {"peer": address, "type": configured.get(address, "removed"),
               "state": s.state if s else "idle", "since": _since(s.since) if s else "-",
               "info": (s.info if s and s.state == "down" else "Established" if s else "")}
        if s and not exabgp_runs:
            row.update(state="down", info="speaker not running")
        rows.append(row)
    if args.json:
        as_json({"node": name, "sessions": rows,
                 "speaker": {"summary": speaker, "running": exabgp_runs, "node_alive": node_up,
                             "state": state.state if state else None,
                             "exabgp_pid": state.exabgp_pid if state else None,
                             "restarts": state.restarts if state else 0,
                             "last_exit": state.last_exit if state else "",
                             "config_ok": state.config_ok if state else None,
                             "config_error": state.config_error if state else "",
                             "render_failures": state.render_failures if state else 0,
                             "skipped": skipped}})
        return 0
    print(f"Node {name} ({me.ipv4 or '-'}, AS {me.as_number or settings.default_as})")
    print(f"Speaker: {speaker}")
    print(f"Config: {config_summary(state)}")
    for i, reason in enumerate(skipped):
        print(f"{'Left out: ' if i == 0 else '          '}{reason}")
    table(["Peer address", "Peer type", "State", "Since", "Info"],
          [(r["peer"], r["type"], r["state"], r["since"], r["info"]) for r in rows])
    return 0


def cluster_status(args, ctx) -> int:
    nodes = registered_nodes(ctx.store)
    blocks = Counter(b.affinity for b in codec.load_all(Block, ctx.store.get_prefix(keys.BLOCKS)))
    endpoints = Counter(keys.last_segment(kv.key.rsplit("/", 1)[0])
                        for kv in ctx.store.get_prefix(keys.ENDPOINTS, keys_only=True))
    up = alive(ctx.store)
    rows = []
    for node in nodes:
        state = load_speaker_state(ctx.store, node.name)
        runs = speaker_summary(state, node.name in up)[1]
        speaker = ("down" if node.name not in up else "running" if runs else state.state if state else "unknown")
        if state and not state.config_ok and node.name in up:
            speaker += ", config refused"
        states = Counter(s.state for s in load_status(ctx.store, node.name)) if runs else Counter()
        rows.append({"node": node.name, "ipv4": node.ipv4, "blocks": blocks.get(node.name, 0),
                     "endpoints": endpoints.get(node.name, 0), "speaker": speaker,
                     "sessions_up": states.get("up", 0), "sessions_down": states.get("down", 0)})
    invalid = records.count(ctx.store)
    if args.json:
        as_json({"nodes": rows, "invalid_records": invalid})
        return 0
    table(["Node", "IPv4", "Blocks", "Endpoints", "Speaker", "BGP up", "BGP down"],
          [(r["node"], r["ipv4"] or "-", r["blocks"], r["endpoints"], r["speaker"], r["sessions_up"],
            r["sessions_down"]) for r in rows])
    print(f"{len(rows)} nodes, {sum(r['blocks'] for r in rows)} blocks, "
          f"{sum(r['endpoints'] for r in rows)} endpoints")
    if invalid:
        print(f"{invalid} invalid records in etcd, skipped by every reader (warrenctl records check)")
    return 0


def register(sub) -> None:
    status = sub.add_parser("status", help="cluster summary: nodes, blocks, endpoints, BGP sessions")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cluster_status)
