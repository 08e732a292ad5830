"""Run a live session (:class:`~crdtsync.live.LiveSync`) over any anyio byte stream: TLS over TCP, the sealed
stream of a pairing, a WebRTC data channel later. The adapter only moves bytes; the session decides everything.

Three tasks share one session:

- the **pump** reads the socket up to :data:`READ_AHEAD` reads ahead, and the **reader** gives what the peer
  sent to the session; the session's work (checking, storing and integrating entries) runs in a worker thread
  under ``vault_lock`` (one vault, one writer at a time, and the event loop stays free for heartbeats and other
  peers);
- the **writer** sends what the session returns, item after item: an entry's frames are never cut by a ping;
- the **pulse** sends a ping when nothing was sent for ``heartbeat`` seconds, and ends the session with
  ``LAN_PEER_GONE`` when the pump has waited ``dead_after`` seconds without a byte (a peer that vanished
  without a FIN, a cut cable). Time the pump spends blocked on a full read-ahead (this side busy storing) is not
  counted.

``changes`` (a :class:`Changes`) wakes the session when this device wrote, or when another session brought
entries: it then sends its next entry and whatever else the peer lacks (author logs: a device forwards every
author's entries). A session that received entries notifies ``changes`` itself, so the other sessions forward
them.

With ``until_synced`` (a one-shot ``sync --lan``), the session closes cleanly once neither side lacks anything
the other can send (:meth:`~crdtsync.live.LiveSync.in_sync`). Otherwise it runs until the peer ends it, it
fails, or the caller cancels it: on cancellation it sends CLOSE when it can and closes the stream, and an entry
being stored finishes first (the worker thread is not abandoned), so nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from crdtsync.errors import CrdtsyncError
from crdtsync.live import LiveReport, LiveSync
from crdtsync.protocol.session import MAX_READ

#: Default seconds without sending anything after which a ping is sent.
HEARTBEAT = 4.0
#: Default seconds the reader may wait on a silent peer before the session ends with ``LAN_PEER_GONE``: with the
#: pulse's check every ``HEARTBEAT / 8`` s, a vanished peer is noticed within 12.5 s of its last byte.
DEAD_AFTER = 12.0
#: Reads (of up to :data:`~crdtsync.protocol.session.MAX_READ` bytes) taken from the socket ahead of the session.
READ_AHEAD = 4
#: Seconds a closing side waits to flush its last bytes before it closes the stream.
CLOSE_GRACE = 2.0

T = TypeVar("T")


class Changes:
    """A broadcast "something new to send" signal for the sessions of one vault: :meth:`notify` after a local
    write (or entries taken from a peer or relay); each session waits with :meth:`wait`. Notifications that come
    while a session is busy are folded into one."""

    def __init__(self) -> None:
        self.version = 0
        self._event = anyio.Event()

    def notify(self) -> None:
        """Wake every waiting session (call from the event loop's thread)."""
        self.version += 1
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, seen: int) -> int:
        """Wait until :attr:`version` differs from ``seen``; returns the new version."""
        while self.version == seen:
            await self._event.wait()
        return self.version


async def run_live(live: LiveSync, stream: anyio.abc.ByteStream, *, vault_lock: anyio.CapacityLimiter,
                   heartbeat: float = HEARTBEAT, dead_after: float = DEAD_AFTER, changes: Changes | None = None,
                   until_synced: bool = False, stop: anyio.Event | None = None,
                   progress: Callable[[LiveReport], None] | None = None) -> LiveReport:
    """Run ``live`` over ``stream`` until the session ends (see the module docstring); returns its report, whose
    ``error`` names why it ended unless it closed cleanly (``LAN_PEER_GONE``, ``LAN_CONNECTION_LOST`` for a
    broken stream, a protocol or entry code). ``heartbeat`` and ``dead_after`` are in seconds. The stream is closed on
    return. ``stop`` set: close cleanly (CLOSE sent, then the stream closed). Raises nothing for what the peer
    does; a cancellation propagates after the stream is closed (no CLOSE is sent then). ``progress(report)`` is
    called on the event loop's thread whenever entries went either way."""
    sent_at = anyio.current_time()
    waiting_since: float | None = None
    outbox_in, outbox_out = anyio.create_memory_object_stream[bytes](math.inf)

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=vault_lock)

    def fail(code: str, message: str) -> None:
        if live.report.error is None:
            live.report.error = {"code": code, "message": message}

    async def writer(scope: anyio.CancelScope) -> None:
        nonlocal sent_at
        async with outbox_out:
            async for data in outbox_out:
                try:
                    await stream.send(data)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    if not live.closing:  # after our close, a peer that closed first is no failure
                        fail("LAN_CONNECTION_LOST", f"the connection to the peer broke: {exc}")
                    scope.cancel()
                    return
                sent_at = anyio.current_time()

    async def begin_close(scope: anyio.CancelScope) -> None:
        """Send CLOSE, then keep reading until the peer closes too (or :data:`CLOSE_GRACE` passes)."""
        queue(await call(live.close))
        scope.deadline = min(scope.deadline, anyio.current_time() + CLOSE_GRACE)

    def queue(data: bytes) -> None:
        if data:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):  # the writer is gone:
                outbox_in.send_nowait(data)  # the connection broke, and nothing more can be sent

    moved = (0, 0)

    async def settle(scope: anyio.CancelScope) -> None:
        """After each step: tell ``progress`` what moved; close once in sync when asked to."""
        nonlocal moved
        now = (live.report.entries_sent, live.report.entries_received)
        if progress is not None and now != moved:
            progress(live.report)
        moved = now
        if until_synced and not live.closed and not live.closing and await call(live.in_sync):
            await begin_close(scope)

    inbox_in, inbox_out = anyio.create_memory_object_stream[bytes](READ_AHEAD)

    async def pump() -> None:
        """Read the socket ahead of the session's work, so that the peer's pings are seen while this side stores:
        only time spent waiting on the socket with nothing unread counts towards ``dead_after``."""
        nonlocal waiting_since
        async with inbox_in:
            while True:
                waiting_since = anyio.current_time()
                try:
                    data = await stream.receive(MAX_READ)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    data = b""
                waiting_since = None
                await inbox_in.send(data)
                if not data:
                    return

    async def reader(scope: anyio.CancelScope) -> None:
        queue(await call(live.start))
        received = 0
        async with inbox_out:
            while not live.closed:
                data = await inbox_out.receive()
                try:
                    queue(await call(live.receive, data))
                except CrdtsyncError as exc:  # the peer broke the protocol: tell it why, and end
                    queue(live.abort(exc.code, exc.message))
                if changes is not None and live.report.entries_received > received:
                    received = live.report.entries_received
                    changes.notify()
                await settle(scope)
            scope.cancel()  # before the inbox closes under the pump

    async def pulse(scope: anyio.CancelScope) -> None:
        step = min(heartbeat, dead_after) / 8
        while True:
            await anyio.sleep(step)
            now = anyio.current_time()
            if waiting_since is not None and now - waiting_since > dead_after:
                fail("LAN_PEER_GONE", f"nothing from the peer for {dead_after:g} s: it is gone")
                scope.cancel()
                return
            if now - sent_at >= heartbeat:
                queue(live.ping())

    async def stopper(event: anyio.Event, scope: anyio.CancelScope) -> None:
        await event.wait()
        if not live.closing:
            await begin_close(scope)

    async def local(scope: anyio.CancelScope) -> None:
        assert changes is not None
        seen = changes.version
        while True:
            seen = await changes.wait(seen)
            queue(await call(live.local_changes))
            await settle(scope)

    try:
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer, scope)
            with scope:
                async with anyio.create_task_group() as session:
                    session.start_soon(pump)
                    session.start_soon(reader, scope)
                    session.start_soon(pulse, scope)
                    if changes is not None:
                        session.start_soon(local, scope)
                    if stop is not None:
                        session.start_soon(stopper, stop, scope)
            if not live.closed and live.report.error is None and not live.closing:
                queue(await call(live.close))
            outbox_in.close()  # the writer sends what is queued, then ends
            tasks.cancel_scope.deadline = anyio.current_time() + CLOSE_GRACE
    finally:
        outbox_in.close()
        with anyio.CancelScope(shield=True):
            await stream.aclose()
    return live.report

