"""Pairing by code over real TCP on 127.0.0.1 (crdtsync.pairing), under asyncio and trio: a member invites, a
new device joins with the code, gets every memory and is registered; wrong codes, withdrawal, expiry, one use,
and a join that breaks leaves no vault behind (nor keys in the keyring)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from crdtsync.crypto.pairing import Grant, Invitation, InviterHandshake, PairingCode
from crdtsync.errors import InvalidInputError, LanError, VaultError
from crdtsync.pairing import Inviter, JoinReport, SealedStream, join_by_code, open_invitation
from crdtsync.store.keystore import keys_location
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf
from tests.keyring_backend import CLASS_PATH, FileTestKeyring

pytestmark = pytest.mark.anyio


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Vault]:
    """A member device with a few memories and a memory:// relay."""
    Vault.init(tmp_path / "laptop", name="memories", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "laptop") as vault:
        for text in ("prefers oolong", "works on crdtsync", "lives in Lyon"):
            vault.add(text, category="facts")
        vault.add_relay("box", f"memory://{uuid.uuid4().hex}")
        assert all(not r.errors for r in vault.sync())
        yield vault


async def _with_invitation(member: Vault, body: Callable[[Inviter], Awaitable[Any]], **options: Any) -> Any:
    with anyio.fail_after(60):
        async with open_invitation(member, **options) as inviter:
            return await body(inviter)


async def _join(inviter: Inviter, path: Path, code: str | None = None, **options: Any) -> JoinReport:
    return await join_by_code(path, code or str(inviter.code), addresses=inviter.addresses, **options)


async def _refused(inviter: Inviter, path: Path, code: str) -> LanError:
    with pytest.raises(LanError) as caught:
        await _join(inviter, path, code)
    assert not path.exists()  # nothing half-created
    return caught.value


def _wrong(code: PairingCode, n: int = 0) -> str:
    """The ``n``-th of three codes that differ from ``code`` in the second word."""
    others = [w for w in ("hamilton", "hideaway", "holiness", "hurricane") if w != code.second]
    return f"{code.number}-{code.first}-{others[n]}"


async def test_a_new_device_joins_by_code_gets_every_memory_is_registered_and_then_syncs_by_relay(
        member: Vault, tmp_path: Path) -> None:
    async def body(inviter: Inviter) -> tuple[Any, JoinReport]:
        async with anyio.create_task_group() as tasks:
            joined: list[JoinReport] = []

            async def join() -> None:
                joined.append(await _join(inviter, tmp_path / "phone", device_name="phone"))

            tasks.start_soon(join)
            report = await inviter.wait()
        return report, joined[0]

    invite_report, join_report = await _with_invitation(member, body)
    assert join_report.memories == 3 and join_report.relays == ["box"]
    assert invite_report.device == join_report.device_id and invite_report.device_name == "phone"
    assert invite_report.live is not None and invite_report.live.error is None
    assert join_report.device_id in member.devices()  # registered on the inviter by the session
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.fingerprint == member.fingerprint
        assert {m.content for m in phone.list()} == {m.content for m in member.list()}
        assert set(phone.devices()) == set(member.devices())
        assert phone.secrets.epochs == member.secrets.epochs and phone.secrets.current_epoch == 0
        written = phone.add("written on the phone after pairing")
        assert all(not r.errors for r in phone.sync())
    assert all(not r.errors for r in member.sync())  # the registration is real: the laptop takes the phone's entry
    assert member.get(written.id).content == "written on the phone after pairing"
    assert member.store.quarantined() == []


async def test_a_wrong_code_is_refused_on_both_sides_with_pairing_wrong_code(member: Vault, tmp_path: Path) -> None:
    async def body(inviter: Inviter) -> LanError:
        return await _refused(inviter, tmp_path / "phone", _wrong(inviter.code))

    inviter_errors: list[LanError] = []
    error = await _with_invitation(member, body, on_failure=inviter_errors.append)
    assert error.code == "PAIRING_WRONG_CODE" and "2 attempts left" in error.message
    assert [e.code for e in inviter_errors] == ["PAIRING_WRONG_CODE"]


async def test_the_third_failure_withdraws_the_code_on_both_sides_and_the_right_code_is_then_refused(
        member: Vault, tmp_path: Path) -> None:
    async def body(inviter: Inviter) -> tuple[list[LanError], LanError, LanError]:
        errors = [await _refused(inviter, tmp_path / "phone", _wrong(inviter.code, n)) for n in range(3)]
        right = await _refused(inviter, tmp_path / "phone", str(inviter.code))
        with pytest.raises(LanError) as waited:
            await inviter.wait()
        return errors, right, waited.value

    errors, right, waited = await _with_invitation(member, body)
    assert [e.code for e in errors] == ["PAIRING_WRONG_CODE", "PAIRING_WRONG_CODE", "PAIRING_WITHDRAWN"]
    assert "withdrawn" in errors[2].message
    assert right.code == "PAIRING_WITHDRAWN"
    assert waited.code == "PAIRING_WITHDRAWN" and "withdrawn" in waited.message  # the inviter's side says so
    assert len(member.devices()) == 1


async def test_an_expired_invitation_is_refused_and_wait_reports_it(member: Vault, tmp_path: Path) -> None:
    now = [1000.0]

    async def body(inviter: Inviter) -> tuple[LanError, LanError]:
        now[0] += 600.0
        error = await _refused(inviter, tmp_path / "phone", str(inviter.code))
        with pytest.raises(LanError) as waited:
            await inviter.wait()
        return error, waited.value

    error, waited = await _with_invitation(member, body, clock=lambda: now[0])
    assert error.code == waited.code == "PAIRING_EXPIRED"


async def test_a_code_never_works_twice(member: Vault, tmp_path: Path) -> None:
    async def body(inviter: Inviter) -> LanError:
        await _join(inviter, tmp_path / "phone")
        await inviter.wait()
        return await _refused(inviter, tmp_path / "tablet", str(inviter.code))

    error = await _with_invitation(member, body)
    assert error.code == "PAIRING_WITHDRAWN" and "used" in error.message


async def test_a_connection_that_is_not_a_pairing_costs_no_attempt(member: Vault, tmp_path: Path) -> None:
    async def body(inviter: Inviter) -> JoinReport:
        for data in (b"\x16\x03\x01\x02\x00\x01\x00", b"\x00\x00\x00\x05hello"):  # TLS, a session frame
            async with await anyio.connect_tcp(*inviter.addresses[0]) as stream:
                await stream.send(data)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    while True:  # the inviter answers with an error frame and closes
                        await stream.receive()
        assert inviter.invitation.failures == 0
        return await _join(inviter, tmp_path / "phone")

    assert (await _with_invitation(member, body)).memories == 3


async def test_no_inviter_at_the_address_is_lan_no_peer_and_creates_nothing(tmp_path: Path) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there any more
    with pytest.raises(LanError) as caught:
        await join_by_code(tmp_path / "phone", "7-cobra-hamburger", addresses=[("127.0.0.1", port)])
    assert caught.value.code == "LAN_NO_PEER" and not (tmp_path / "phone").exists()
    with pytest.raises(LanError) as caught:
        await join_by_code(tmp_path / "phone", "7-cobra-hamburger", addresses=[])
    assert caught.value.code == "LAN_NO_PEER"


async def test_an_inviter_that_never_answers_times_out(tmp_path: Path) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        held: list[anyio.abc.SocketStream] = []

        async def accept(stream: anyio.abc.SocketStream) -> None:
            held.append(stream)
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, accept)
            with pytest.raises(LanError) as caught:
                await join_by_code(tmp_path / "phone", "7-cobra-hamburger", addresses=[("127.0.0.1", port)],
                                   handshake_seconds=0.5)
            tasks.cancel_scope.cancel()
    assert caught.value.code == "LAN_HANDSHAKE_TIMEOUT" and not (tmp_path / "phone").exists()


async def _join_cut_after_the_grant(member: Vault, path: Path, store_created: Callable[[], bool]) -> LanError:
    """Join at ``path`` from an inviter that proves the code and sends ``member``'s grant, waits until
    ``store_created()`` says the joiner created its store, then drops the connection (no END record). Returns the
    joiner's error."""
    code = PairingCode(7, "cobra", "hamburger")
    grant = Grant(member.header, dict(member.secrets.epochs), 0, "memories", ())

    async def serve(stream: anyio.abc.SocketStream) -> None:
        handshake = InviterHandshake(Invitation(code, created=0.0), os.urandom)
        while handshake.keys is None:
            await stream.send(handshake.receive_data(await stream.receive(), 1.0))
        sealed = SealedStream(stream, handshake.keys)
        data = grant.to_bytes()
        await sealed.send(len(data).to_bytes(4, "big") + data)
        with anyio.fail_after(30):
            while not store_created():
                await anyio.sleep(0.01)
        await stream.aclose()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, serve)
            with pytest.raises(LanError) as caught:
                await join_by_code(path, str(code), addresses=[("127.0.0.1", port)])
            tasks.cancel_scope.cancel()
    return caught.value


async def test_a_join_cut_after_the_vault_arrived_removes_the_new_vault_folder(member: Vault, tmp_path: Path
                                                                                ) -> None:
    """An inviter that proves the code and sends the grant, then drops the connection: the joiner had created
    its store, and removes it."""
    phone = tmp_path / "phone"
    error = await _join_cut_after_the_grant(member, phone, lambda: (phone / "vault.db").exists())
    assert error.code == "LAN_CONNECTION_LOST"
    assert not phone.exists()


async def test_a_candidate_that_is_not_an_inviter_is_passed_over(member: Vault, tmp_path: Path) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as other:
        port = other.extra(anyio.abc.SocketAttribute.local_port)

        async def not_inviting(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(other.serve, not_inviting)

            async def body(inviter: Inviter) -> JoinReport:
                return await join_by_code(tmp_path / "phone", str(inviter.code),
                                          addresses=[("127.0.0.1", port), *inviter.addresses])

            report = await _with_invitation(member, body)
            tasks.cancel_scope.cancel()
    assert report.memories == 3


async def test_joining_into_a_folder_that_holds_a_vault_is_refused_before_any_connection(member: Vault) -> None:
    with pytest.raises(VaultError) as caught:
        await join_by_code(member.path, "7-cobra-hamburger", addresses=[("127.0.0.1", 9)])
    assert caught.value.code == "VAULT_EXISTS"
    assert len(member.list()) == 3


async def test_a_byte_altered_on_the_way_after_the_handshake_ends_the_join_with_pairing_malformed(
        member: Vault, tmp_path: Path) -> None:
    """A relay in the middle that flips one byte of the sealed grant: the joiner refuses the record and creates
    nothing; the code was proven, so it is spent."""
    async def forward(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, flip_at: int | None) -> None:
        seen = 0
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)):
            while True:
                data = bytearray(await source.receive())
                if flip_at is not None and seen <= flip_at < seen + len(data):
                    data[flip_at - seen] ^= 0x40
                seen += len(data)
                await sink.send(bytes(data))

    async def body(inviter: Inviter) -> LanError:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as proxy:
            port = proxy.extra(anyio.abc.SocketAttribute.local_port)

            async def relay(joiner: anyio.abc.SocketStream) -> None:
                async with joiner, await anyio.connect_tcp(*inviter.addresses[0]) as upstream, \
                        anyio.create_task_group() as pipes:
                    pipes.start_soon(forward, joiner, upstream, None)
                    await forward(upstream, joiner, 200)  # past the handshake (< 120 bytes): in the grant
                    pipes.cancel_scope.cancel()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(proxy.serve, relay)
                with pytest.raises(LanError) as caught:
                    await join_by_code(tmp_path / "phone", str(inviter.code), addresses=[("127.0.0.1", port)])
                tasks.cancel_scope.cancel()
        with pytest.raises(LanError) as waited:
            await inviter.wait()
        assert waited.value.code == "LAN_CONNECTION_LOST"
        return caught.value

    error = await _with_invitation(member, body)
    assert error.code == "PAIRING_MALFORMED" and not (tmp_path / "phone").exists()
    assert len(member.devices()) == 1


async def test_an_interface_that_is_not_this_hosts_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await join_by_code(tmp_path / "phone", "7-cobra-hamburger", interfaces=["192.0.2.1"])
    assert caught.value.code == "DISCOVERY_NO_INTERFACE" and not (tmp_path / "phone").exists()


async def test_a_device_joined_by_code_keeps_its_keys_in_a_real_keyring(
        member: Vault, tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    async def body(inviter: Inviter) -> JoinReport:
        return await _join(inviter, tmp_path / "phone")

    report = await _with_invitation(member, body)
    location = keys_location(tmp_path / "phone")
    assert (location.store, location.backend) == ("keyring", CLASS_PATH)
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.secrets.device.device_id == report.device_id
        assert phone.secrets.epochs == member.secrets.epochs


async def test_a_join_cut_after_the_vault_arrived_removes_its_keys_from_the_keyring_too(
        member: Vault, tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    """As above, the joiner had created its store with its keys in the keyring: the item goes with the folder."""
    error = await _join_cut_after_the_grant(member, tmp_path / "phone", lambda: bool(test_keyring.items()))
    assert error.code == "LAN_CONNECTION_LOST"
    assert not (tmp_path / "phone").exists()
    assert test_keyring.items() == {}
