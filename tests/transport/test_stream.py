"""run_live over real loopback TCP sockets (no TLS here: the stream driver only moves bytes): a one-shot round
converges and closes cleanly, live writes flow through Changes, a silent peer is noticed by the heartbeat, and a
peer that drops the connection ends the session with LAN_CONNECTION_LOST."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest

from crdtsync.live import LiveReport, LiveSync
from crdtsync.replication import AuthorLogReplica
from crdtsync.transport.stream import Changes, run_live
from crdtsync.vault import Vault

pytestmark = pytest.mark.anyio


async def _pair() -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream, anyio.abc.SocketListener]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        accepted: list[anyio.abc.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.listeners[0].accept())  # type: ignore[attr-defined]

        tg.start_soon(accept)
        client = await anyio.connect_tcp("127.0.0.1", port)
    return client, accepted[0], listener


def _contents(vault: Vault) -> set[str]:
    return {m.content for m in vault.list()}


async def test_one_shot_round_converges_both_ways_and_closes_cleanly(devices: list[Vault]) -> None:
    d0, d1, d2, _ = devices
    d0.add("from d0")
    d2.add("from d2, carried by d0")
    d2.sync()
    d0.sync()
    d1.add("from d1")
    a, b, listener = await _pair()
    lock = anyio.CapacityLimiter(1)
    reports: dict[str, LiveReport] = {}
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            async def side(name: str, vault: Vault, stream: anyio.abc.ByteStream) -> None:
                reports[name] = await run_live(LiveSync(AuthorLogReplica(vault)), stream, vault_lock=lock,
                                               until_synced=True)
            tg.start_soon(side, "d0", d0, a)
            tg.start_soon(side, "d1", d1, b)
    await listener.aclose()
    assert reports["d0"].error is None and reports["d1"].error is None
    assert _contents(d0) == _contents(d1) >= {"from d0", "from d1", "from d2, carried by d0"}
    assert reports["d1"].peer == d0.device_id and reports["d1"].entries_received >= 2


async def test_live_writes_flow_through_changes_and_stop_closes_cleanly(devices: list[Vault]) -> None:
    d0, d1, _, _ = devices
    a, b, listener = await _pair()
    lock = anyio.CapacityLimiter(1)
    changes0, changes1 = Changes(), Changes()
    stop = anyio.Event()
    reports: list[LiveReport] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            async def side(vault: Vault, stream: anyio.abc.ByteStream, changes: Changes) -> None:
                reports.append(await run_live(LiveSync(AuthorLogReplica(vault)), stream, vault_lock=lock,
                                              changes=changes, stop=stop))
            tg.start_soon(side, d0, a, changes0)
            tg.start_soon(side, d1, b, changes1)
            written = await anyio.to_thread.run_sync(d0.add, "live from d0", limiter=lock)
            changes0.notify()
            await _until(lambda: _has(d1, written.id, lock))
            edited = await anyio.to_thread.run_sync(lambda: d1.update(written.id, content="edited on d1"),
                                                    limiter=lock)
            changes1.notify()
            await _until(lambda: _content_is(d0, written.id, edited.content, lock))
            stop.set()
    await listener.aclose()
    assert [r.error for r in reports] == [None, None]


async def test_a_silent_peer_is_noticed_by_the_heartbeat(devices: list[Vault]) -> None:
    d0 = devices[0]
    a, b, listener = await _pair()  # b never answers: a peer that hangs without closing its socket
    with anyio.fail_after(10):
        report = await run_live(LiveSync(AuthorLogReplica(d0)), a, vault_lock=anyio.CapacityLimiter(1),
                                heartbeat=0.2, dead_after=1.0)
    await b.aclose()
    await listener.aclose()
    assert report.error is not None and report.error["code"] == "LAN_PEER_GONE"


async def test_a_peer_that_drops_the_connection_ends_the_session_with_lan_connection_lost(devices: list[Vault]) -> None:
    d0 = devices[0]
    a, b, listener = await _pair()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async def drop() -> None:
                await b.receive()  # the hello arrived; the peer goes away without a close
                await b.aclose()
            tg.start_soon(drop)
            report = await run_live(LiveSync(AuthorLogReplica(d0)), a, vault_lock=anyio.CapacityLimiter(1))
    await listener.aclose()
    assert report.error is not None and report.error["code"] == "LAN_CONNECTION_LOST"


async def _has(vault: Vault, memory_id: str, lock: anyio.CapacityLimiter) -> bool:
    return await anyio.to_thread.run_sync(lambda: any(m.id == memory_id for m in vault.list()), limiter=lock)


async def _content_is(vault: Vault, memory_id: str, content: str, lock: anyio.CapacityLimiter) -> bool:
    return await anyio.to_thread.run_sync(lambda: vault.get(memory_id).content == content, limiter=lock)


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


