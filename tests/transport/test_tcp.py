"""Authenticated TCP connections on loopback: two registered devices of a vault pass the knock, TLS and the
device check both ways; a stranger, another vault, an unregistered key holder, a member forging another device's
certificate, a replay of captured bytes and a silent client are each refused with their code."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest

from crdtsync.crypto.keys import DeviceKeys
from crdtsync.crypto.lan import lan_key
from crdtsync.errors import LanError
from crdtsync.protocol import knock
from crdtsync.transport.tcp import Connection, admit, dial
from crdtsync.transport.tls import identity, peer_device
from crdtsync.vault import Vault

pytestmark = pytest.mark.anyio


class Side:
    """What one device brings to a handshake (its vault secrets, possibly altered by a test)."""

    def __init__(self, vault: Vault, *, device: DeviceKeys | None = None, vault_key: bytes | None = None,
                 claim: DeviceKeys | None = None) -> None:
        secrets = vault.secrets
        key = vault_key or secrets.epochs[secrets.current_epoch]
        self.knock_key = lan_key(secrets.vault_id, key, secrets.current_epoch, "knock")
        self.me = (device or secrets.device).device_id
        signer = claim or device or secrets.device
        self.tls = identity(secrets.vault_id, key, secrets.current_epoch, signer)
        if claim is not None:  # a certificate that names claim's device, signed by another key
            self.tls = identity(secrets.vault_id, key, secrets.current_epoch, _Impostor(claim, device))
        self.registry, self.vault_id = vault.devices(), secrets.vault_id

    async def check(self, cert: bytes | None) -> str:
        return peer_device(cert, self.vault_id, self.registry, self.me)


class _Impostor(DeviceKeys):
    def __init__(self, claim: DeviceKeys, signer: DeviceKeys | None) -> None:
        object.__setattr__(self, "signing", (signer or DeviceKeys.generate()).signing)
        object.__setattr__(self, "kx", claim.kx)
        object.__setattr__(self, "id_chars", claim.id_chars)
        object.__setattr__(self, "_claim", claim.device_id)

    @property
    def device_id(self) -> str:
        return str(object.__getattribute__(self, "_claim"))


async def _meet(server: Side, client: Side) -> tuple[Connection | LanError, Connection | LanError]:
    """Run admit() on a loopback listener and dial() against it; each side's connection or error."""
    results: dict[str, Connection | LanError] = {}
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve() -> None:
        raw = await listener.listeners[0].accept()  # type: ignore[attr-defined]
        results["server"] = await _outcome(lambda: admit(raw, knock_key=server.knock_key, tls=server.tls,
                                                          check=server.check, timeout=3))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            results["client"] = await _outcome(lambda: dial("127.0.0.1", port, knock_key=client.knock_key,
                                                             tls=client.tls, check=client.check, timeout=3))
    await listener.aclose()
    for result in results.values():
        if isinstance(result, Connection):
            await result.stream.aclose()
    return results["server"], results["client"]


async def _outcome(make: Callable[[], Awaitable[Connection]]) -> Connection | LanError:
    try:
        return await make()
    except LanError as exc:
        return exc


def _code(result: Connection | LanError) -> str:
    return result.code if isinstance(result, LanError) else "connected"


async def test_two_registered_devices_authenticate_each_other(devices: list[Vault]) -> None:
    d0, d1 = devices[:2]
    server, client = await _meet(Side(d0), Side(d1))
    assert isinstance(server, Connection) and isinstance(client, Connection)
    assert server.device == d1.device_id and client.device == d0.device_id
    assert client.dialed and not server.dialed


async def test_a_device_of_another_vault_fails_the_knock_on_both_sides(devices: list[Vault],
                                                                        make_vault: Callable[..., Vault]) -> None:
    stranger = make_vault("other")
    server, client = await _meet(Side(devices[0]), Side(stranger))
    assert (_code(server), _code(client)) == ("LAN_REFUSED", "LAN_REFUSED")


async def test_someone_who_knows_the_vault_key_but_is_not_registered_is_refused_after_tls(
        devices: list[Vault]) -> None:
    d0 = devices[0]
    outsider = Side(devices[1], device=DeviceKeys.generate())  # the passphrase leaked, no device registered
    server, client = await _meet(Side(d0), outsider)
    assert _code(server) == "LAN_REFUSED" and "not registered" in str(server)
    assert _code(client) in {"LAN_REFUSED", "connected"}  # TLS completes for the client before the server checks


async def test_a_member_forging_another_devices_certificate_is_refused(devices: list[Vault]) -> None:
    d0, d1, d2 = devices[:3]
    forger = Side(d1, claim=d2.secrets.device, device=d1.secrets.device)  # d1's key vouching "I am d2"
    server, _ = await _meet(Side(d0), forger)
    assert _code(server) == "LAN_REFUSED" and "not vouched for" in str(server)


async def test_a_device_claiming_to_be_the_server_itself_is_refused(devices: list[Vault]) -> None:
    d0 = devices[0]
    server, _ = await _meet(Side(d0), Side(d0))
    assert _code(server) == "LAN_REFUSED" and "this device" in str(server)


async def test_garbage_and_replayed_knocks_get_nothing_but_a_nonce(devices: list[Vault]) -> None:
    side = Side(devices[0])
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    errors: list[LanError] = []

    async def serve_two() -> None:
        for _ in range(2):
            raw = await listener.listeners[0].accept()  # type: ignore[attr-defined]
            try:
                await admit(raw, knock_key=side.knock_key, tls=side.tls, check=side.check, timeout=3)
            except LanError as exc:
                errors.append(exc)

    nc = os.urandom(32)
    captured_proof = knock.client_proof(side.knock_key, nc, os.urandom(32))  # a proof for an earlier challenge
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_two)
            garbage = await anyio.connect_tcp("127.0.0.1", port)
            await garbage.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 21)
            assert await _read_all(garbage) == b""  # not even a nonce for a wrong magic
            replay = await anyio.connect_tcp("127.0.0.1", port)
            await replay.send(knock.hello(nc))
            nonce = await replay.receive()
            await replay.send(captured_proof)
            assert len(nonce) == 32 and await _read_all(replay) == b""
    await listener.aclose()
    assert [e.code for e in errors] == ["LAN_REFUSED", "LAN_REFUSED"]


async def test_a_client_that_says_nothing_times_out_the_handshake(devices: list[Vault]) -> None:
    side = Side(devices[0])
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async def silent() -> None:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await anyio.sleep(2)
                await stream.aclose()
            tg.start_soon(silent)
            raw = await listener.listeners[0].accept()  # type: ignore[attr-defined]
            with pytest.raises(LanError) as caught:
                await admit(raw, knock_key=side.knock_key, tls=side.tls, check=side.check, timeout=0.5)
    await listener.aclose()
    assert caught.value.code == "LAN_HANDSHAKE_TIMEOUT"


async def _read_all(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    try:
        while True:
            data += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return data


