"""Watches: an iterator of :class:`~datastore.ops.WatchEvent` over one etcd watch stream.

Each watch is one streaming ``POST /v3/watch`` on a connection of its own (no
background thread). A member that dies ends the stream at once; a member that
*hangs* (SIGSTOP, a dead link) would keep it open and silent forever, so a
watch that has heard nothing for :data:`PROBE_AFTER` seconds asks the same
member for its status on another connection: no answer within the call
timeout ends the watch with :class:`DatastoreUnavailable` (within ~15 s with
the default 5 s timeout), and its reader resyncs - from another member, since
the failure also moves the client on.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterator

from . import gateway
from .errors import DatastoreError, DatastoreUnavailable
from .ops import WatchEvent
from .wire import Member, Stream, WireError

PROBE_AFTER = 10.0  # seconds of silence before the member is asked whether it is still there


class Watch:
    """An iterator of :class:`WatchEvent` over one etcd watch stream."""

    def __init__(self, stream: Stream, member: Member, urls: list[str],
                 on_unreachable: Callable[[], None] | None = None):
        self._stream = stream
        self._member = member
        self._urls = urls
        self._on_unreachable = on_unreachable
        self._cancelled = False
        self._done = threading.Event()

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            while True:
                message = self._stream.next(PROBE_AFTER)
                if message is None:  # silence: is the member still there?
                    self._member.post("/v3/maintenance/status", {})
                    continue
                if "error" in message:
                    raise DatastoreUnavailable(self._urls, [f"{self._member.url}: watch failed: "
                                                            f"{gateway_error(message)}"])
                result = message.get("result") or {}
                if result.get("compact_revision"):
                    raise DatastoreError(f"watch start revision was compacted "
                                         f"(now {result['compact_revision']}); resync")
                if result.get("canceled"):
                    return
                yield from gateway.watch_events(result)
        except WireError as exc:
            if self._cancelled:
                return
            if self._on_unreachable is not None:
                self._on_unreachable()
            raise DatastoreUnavailable(self._urls, [f"{self._member.url}: watch ended: {exc.reason}"]) from None
        finally:
            self._done.set()
            self._stream.close()

    def cancel(self) -> None:
        """Stop the watch; an iteration in another thread ends quietly."""
        self._cancelled = True
        self._done.set()
        self._stream.close()

    def until(self, stop: threading.Event) -> "Watch":
        """Cancel this watch when ``stop`` is set (or when the watch ends): one
        short-lived helper thread per watch, never an idle one left behind."""
        def wait() -> None:
            while not stop.wait(0.5):
                if self._done.is_set():
                    return
            self.cancel()
        threading.Thread(target=wait, name="watch-stop", daemon=True).start()
        return self


def gateway_error(message: dict) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
