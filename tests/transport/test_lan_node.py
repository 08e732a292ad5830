"""LanNode on loopback, under asyncio and trio: devices that dial each other converge and stay live, a device
carries a third one's writes down a chain, a write committed by another process on the same vault reaches the
peers, crossed dials leave one session per pair, and a one-shot round syncs and returns."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import pytest

from crdtsync.lan import LanNode, LanOptions
from crdtsync.transport.tcp import dial
from crdtsync.vault import Vault
from tests.cli.test_cli import CRDTSYNC, process_env

pytestmark = pytest.mark.anyio

FAST = {"heartbeat": 0.5, "dead_after": 3.0, "redial": 0.2, "relay_interval": 0.0}


@asynccontextmanager
async def running(vault: Vault, *peers: int, listen: bool = True) -> AsyncIterator[LanNode]:
    """A LanNode of ``vault`` serving on 127.0.0.1 (any port) and dialling the given loopback ports."""
    options = LanOptions(interfaces=("127.0.0.1",) if listen else (), port=0,
                         peers=tuple(("127.0.0.1", p) for p in peers), **FAST)  # type: ignore[arg-type]
    lines: list[str] = []
    node = LanNode(vault, options, log=lines.append)
    node.lines = lines  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        await tg.start(node.serve)
        yield node
        node.stop()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


def _contents(node: LanNode) -> Callable[[], Awaitable[set[str]]]:
    async def read() -> set[str]:
        return await node._call(lambda: {m.content for m in node.vault.list()})
    return read


async def test_a_chain_converges_and_a_live_write_travels_two_hops(devices: list[Vault]) -> None:
    d0, d1, d2, _ = devices
    d0.add("old on d0")
    d2.add("old on d2")
    async with running(d1) as b, running(d0, b.ports[0]) as a, running(d2, b.ports[0]) as c:
        want = {"old on d0", "old on d2"}
        await _until(lambda: _has(a, want))
        await _until(lambda: _has(c, want))
        written = await a._call(d0.add, "live on d0")
        a.changes.notify()
        await _until(lambda: _has(c, {"live on d0"}), timeout=5)
        assert written.id in {m.id for m in await c._call(d2.list)}
        assert set(a.sessions) == {d1.device_id} and set(c.sessions) == {d1.device_id}
        assert set(b.sessions) == {d0.device_id, d2.device_id}


async def test_a_write_by_another_process_reaches_the_peer(devices: list[Vault]) -> None:
    d0, d1 = devices[:2]
    async with running(d1) as b, running(d0, b.ports[0]):
        await _until(lambda: _sessions(b, 1))
        added = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(CRDTSYNC), "add", "written by a CLI process"], env=process_env(d0.path), capture_output=True,
            text=True, timeout=60, check=False))
        assert added.returncode == 0, added.stderr
        await _until(lambda: _has(b, {"written by a CLI process"}), timeout=10)
        assert not await b._call(b.vault.store.quarantined)  # its Yjs client id was announced with it


async def test_crossed_dials_leave_one_session_per_pair(devices: list[Vault]) -> None:
    d0, d1 = devices[:2]
    async with running(d0) as a, running(d1, a.ports[0]) as b:
        await _until(lambda: _sessions(a, 1))
        a.options = LanOptions(**{**a.options.__dict__, "peers": (("127.0.0.1", b.ports[0]),)})  # a dials b too
        await _until(lambda: _logged(a, "LAN_DUPLICATE"))
        await anyio.sleep(1.5)  # both dial loops have come round again
        assert len(a.sessions) == 1 and len(b.sessions) == 1
        assert a.sessions[d1.device_id].connection.dialed == (d0.device_id < d1.device_id)
        d0.add("after the crossed dials")
        a.changes.notify()
        await _until(lambda: _has(b, {"after the crossed dials"}), timeout=5)


async def test_a_one_shot_round_syncs_and_returns(devices: list[Vault]) -> None:
    d0, d1 = devices[:2]
    d0.add("for the round")
    d1.add("back from the peer")
    async with running(d1) as b:
        node = LanNode(d0, LanOptions(**FAST))  # type: ignore[arg-type]
        with anyio.fail_after(20):
            result = await node.sync_round([("127.0.0.1", b.ports[0])], timeout=5)
        assert [r.peer for r in result.synced] == [d1.device_id] and not result.failures
        assert {"for the round", "back from the peer"} <= {m.content for m in d0.list()}
        await _until(lambda: _has(b, {"for the round"}))


async def test_a_one_shot_round_reports_addresses_it_could_not_reach(devices: list[Vault]) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    node = LanNode(devices[0], LanOptions(**FAST))  # type: ignore[arg-type]
    result = await node.sync_round([("127.0.0.1", port)], timeout=2)
    assert not result.sessions and [f["code"] for f in result.failures] == ["LAN_UNREACHABLE"]


async def _has(node: LanNode, contents: set[str]) -> bool:
    return contents <= await _contents(node)()


async def _sessions(node: LanNode, count: int) -> bool:
    return len(node.sessions) == count


async def _logged(node: LanNode, pattern: str) -> bool:
    return any(re.search(pattern, line) for line in node.lines)  # type: ignore[attr-defined]


async def test_a_member_forwarding_a_forged_entry_is_refused_while_an_honest_peer_keeps_syncing(
        devices: list[Vault]) -> None:
    d0, d1, d2, d3 = devices
    d2.add("written on d2")
    assert all(not r.errors for r in d2.sync())
    assert all(not r.errors for r in d1.sync())  # d1 holds d2's entry, which it will forward altered
    seq = d1.store.author(d2.device_id).applied
    parts = d1.store.entry_parts(d2.device_id, 1, seq)
    assert parts is not None
    forged = bytearray(parts[0])
    forged[len(forged) // 2] ^= 1
    with d1.store.write():
        d1.store.put_entry(d2.device_id, 1, seq, b"\0" * 32, [bytes(forged)])
    async with running(d0) as a, running(d3, a.ports[0]):
        await _until(lambda: _sessions(a, 1))
        async with running(d1, a.ports[0], listen=False):
            await _until(lambda: _logged(a, r"ENVELOPE_BAD_SIGNATURE"))
            written = await anyio.to_thread.run_sync(d3.add, "honest write during the attack")
            await _until(lambda: _has(a, {"honest write during the attack"}))
        assert written.id in {m.id for m in d0.list()}
        assert "written on d2" not in {m.content for m in d0.list()}
        assert any(f"peer down d1 ({d1.device_id[:12]}): ENVELOPE_BAD_SIGNATURE" in line
                   for line in a.lines)  # type: ignore[attr-defined]


async def test_an_oversized_frame_from_a_member_ends_its_session_with_its_code(devices: list[Vault]) -> None:
    d0, d1 = devices[:2]
    async with running(d0) as a:
        member = LanNode(d1, LanOptions(**FAST))  # type: ignore[arg-type]
        connection = await dial("127.0.0.1", a.ports[0], knock_key=member.knock_key, tls=member.tls,
                                check=member._check)
        await connection.stream.send((0xFFFFFFFF).to_bytes(4, "big"))
        await _until(lambda: _logged(a, r"PROTOCOL_FRAME_TOO_LARGE"))
        await connection.stream.aclose()


async def test_a_local_write_with_no_peer_connected_goes_to_the_relays_at_once(devices: list[Vault]) -> None:
    d0, d1 = devices[:2]
    options = LanOptions(interfaces=(), relay_interval=3600.0, heartbeat=0.5, dead_after=3.0)
    node = LanNode(d0, options)
    async with anyio.create_task_group() as tg:
        await tg.start(node.serve)
        await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(CRDTSYNC), "add", "no peer is connected"], env=process_env(d0.path), check=True,
            capture_output=True, timeout=60))

        async def on_the_relay() -> bool:
            await anyio.to_thread.run_sync(d1.sync)
            return "no peer is connected" in {m.content for m in d1.list()}

        await _until(on_the_relay, timeout=15)
        node.stop()


async def test_a_node_stops_to_restart_once_its_device_moves_to_a_new_epoch(devices: list[Vault]) -> None:
    """Its knock, discovery and TLS keys are its epoch's: a passphrase change made by another process on the same
    vault stops it with ``restart`` set, and a node started afterwards syncs with a peer on the new epoch."""
    d0, d1 = devices[:2]
    async with running(d1) as b, running(d0, b.ports[0]) as a:
        await _until(lambda: _sessions(b, 1))
        changed = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [str(CRDTSYNC), "passphrase", "change"], env=process_env(d0.path, {
                "CRDTSYNC_NEW_PASSPHRASE": "the new passphrase"}), capture_output=True, text=True, timeout=60,
            check=False))
        assert changed.returncode == 0, changed.stderr
        a.changes.notify()
        with anyio.fail_after(15):
            await a._stop.wait()
        assert a.restart and any("restarting" in line for line in a.lines)  # type: ignore[attr-defined]
    assert await anyio.to_thread.run_sync(lambda: all(not r.errors for r in d0.sync()))
    assert await anyio.to_thread.run_sync(lambda: all(not r.errors for r in d1.sync()))
    assert d1.secrets.current_epoch == 1
    d0.add("written under the new epoch")
    async with running(d1) as b, running(d0, b.ports[0]) as a:
        assert a.epoch == b.epoch == 1
        await _until(lambda: _has(b, {"written under the new epoch"}))
