"""Revoking a device and changing the passphrase, through real vault folders and folder relays (the S3 relay and
the CLI are in tests/cli/test_revoke_cli.py): a revoked device gets nothing new and says so, what it writes later is
refused everywhere, the old passphrase admits no one, nothing written afterwards opens with its keys, and the
other devices take the new epoch by any path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crdtsync.crypto.envelope import KIND_UPDATE, open_envelope
from crdtsync.crypto.epochs import make_statement
from crdtsync.crypto.keys import DeviceKeys, new_vault_key, vault_tag
from crdtsync.errors import CrdtsyncError
from crdtsync.protocol.mailbox import author_key, entry_key
from crdtsync.protocol.messages import unpack_part
from crdtsync.replication import AuthorLogReplica
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

NEW_PASSPHRASE = "a brand new passphrase for the vault"


def codes(vault: Vault, **kwargs: object) -> list[str]:
    return [e["code"] for report in vault.sync(**kwargs) for e in report.errors]  # type: ignore[arg-type]


def contents(vault: Vault) -> set[str]:
    return {m.content for m in vault.list()}


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[tuple[Vault, Vault, Vault, Path]]:
    """Devices A, B and C of one vault, each registered and in step through the folder relay ``box``."""
    box = tmp_path / "box"
    Vault.init(tmp_path / "a", name="v", device_name="A", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "a") as a:
        a.add("written by A before")
        a.add_relay("box", box.as_uri())
        assert codes(a) == []
    for name in ("b", "c"):
        Vault.join(tmp_path / name, box.as_uri(), passphrase=PASSPHRASE, device_name=name.upper())
    vaults = [Vault.open(tmp_path / name) for name in ("a", "b", "c")]
    vaults[2].add("written by C before")
    for vault in (*vaults, vaults[0]):
        assert codes(vault) == []
    yield vaults[0], vaults[1], vaults[2], box
    for vault in vaults:
        vault.close()


def relay_files(box: Path) -> dict[str, bytes]:
    return {str(p.relative_to(box)): p.read_bytes() for p in box.rglob("*") if p.is_file()}


def opened_by(vault: Vault, data: bytes) -> list[tuple[str, int]]:
    """(sender, kind) of every envelope in an object (a head or a part) that ``vault``'s keys open."""
    secrets = vault.secrets
    try:
        envelopes = unpack_part(data, "an object")
    except CrdtsyncError:
        envelopes = [data]
    opened = []
    for envelope in envelopes:
        try:
            result = open_envelope(envelope, vault_id=secrets.vault_id, epoch_keys=secrets.epochs,
                                   sender_key=lambda device, epoch: None)
        except CrdtsyncError:
            continue
        opened.append((result.sender, result.kind))
    return opened


def test_a_revoked_device_gets_nothing_new_and_the_old_passphrase_admits_no_one(
        trio: tuple[Vault, Vault, Vault, Path], tmp_path: Path) -> None:
    a, b, c, box = trio
    c_id = c.device_id
    before = relay_files(box)
    done = a.revoke_device("C", passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    assert done["device"] == c_id and done["epoch"] == 1
    assert done["recipients"] == sorted([a.device_id, b.device_id])
    statement_seq = a.store.author(a.device_id).applied
    assert a.secrets.current_epoch == 1
    a.add("written by A after")
    (report,) = a.sync()
    assert report.errors == [] and report.warnings == []  # the new header goes up as any change does
    assert codes(b) == []
    assert b.secrets.current_epoch == 1
    assert "written by A after" in contents(b)
    b.add("written by B after")
    assert codes(b) == []
    assert codes(a) == []
    assert "written by B after" in contents(a)

    assert set(codes(c)) == {"DEVICE_REVOKED"}
    assert contents(c) == {"written by A before", "written by C before"}
    assert c.secrets.current_epoch == 0
    assert any(alarm["code"] == "DEVICE_REVOKED" for alarm in c.status()["alarms"])
    assert set(codes(c)) == {"DEVICE_REVOKED"}  # and it stays so

    # C's keys against every object written since the revocation: only A's entry that carries the statement
    # (sealed under the old epoch on purpose, so that C learns it was revoked) opens.
    written = {key: data for key, data in relay_files(box).items() if before.get(key) != data}
    opened = {key: who for key, data in written.items() if (who := opened_by(c, data))}
    tag = vault_tag(a.secrets.vault_id)
    assert opened == {entry_key(tag, a.device_id, KIND_UPDATE, statement_seq): [(a.device_id, KIND_UPDATE)]}

    with pytest.raises(CrdtsyncError) as caught:
        Vault.join(tmp_path / "thief", box.as_uri(), passphrase=PASSPHRASE, device_name="thief")
    assert caught.value.code == "WRONG_PASSPHRASE"
    Vault.join(tmp_path / "new", box.as_uri(), passphrase=NEW_PASSPHRASE, device_name="new")
    with Vault.open(tmp_path / "new") as new:
        assert contents(new) == {"written by A before", "written by C before", "written by A after",
                                 "written by B after"}
        assert new.secrets.current_epoch == 1
        new.add("written by the new device")
        assert codes(new) == []
    assert codes(a) == [] and codes(b) == []
    assert "written by the new device" in contents(a) & contents(b)


def test_what_the_revoked_device_writes_later_is_refused_and_what_it_wrote_before_still_arrives(
        trio: tuple[Vault, Vault, Vault, Path]) -> None:
    a, b, c, _ = trio
    c.add("C's last write that A saw")
    assert codes(c) == []
    assert codes(a) == []  # A applies it: the revocation point is past it
    point = a.store.author(c.device_id).applied
    c.add("C writes while offline")
    a.revoke_device(c.device_id[:8], passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    assert codes(c) == []  # C pushes before the revocation reaches the relay
    assert c.store.author(c.device_id).applied == point + 1
    assert codes(a) == []
    assert codes(b) == []
    for member in (a, b):
        assert "C's last write that A saw" in contents(member)  # B had not seen it: it arrives
        assert "C writes while offline" not in contents(member)
        assert member.store.author(c.device_id).applied == point
        assert member.device_states()[c.device_id]["revoked"] == {"seq": point, "by": a.device_id, "epoch": 1}

    # The entry past the point, handed over directly (as a LAN peer or a member relaying it would): refused.
    entry = AuthorLogReplica(c).entry(c.device_id, 1, point + 1)
    assert entry is not None
    logs = AuthorLogReplica(b)
    row = b.store.author(c.device_id)
    with pytest.raises(CrdtsyncError) as caught:
        logs.accept(entry, row.applied, row.chain, "a relayed entry")
    assert caught.value.code == "ENVELOPE_REVOKED_SENDER"
    assert set(codes(c)) == {"DEVICE_REVOKED"}


def test_a_device_offline_during_the_revocation_takes_the_new_epoch_from_a_relay_only_a_bridged(
        trio: tuple[Vault, Vault, Vault, Path], tmp_path: Path) -> None:
    a, b, _, _ = trio
    other = (tmp_path / "other").as_uri()
    a.add_relay("other", other)
    b.add_relay("other", other)
    b.remove_relay("default")
    assert codes(a) == [] and codes(b) == []
    a.revoke_device("C", passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    a.add("A after the revocation")
    assert codes(a) == []
    assert codes(b) == []
    assert b.secrets.current_epoch == 1
    assert "A after the revocation" in contents(b)
    assert b.header.commits == a.header.commits  # B took the header A published
    b.add("B after")
    assert codes(b) == []
    assert codes(a) == []
    assert "B after" in contents(a)


def test_two_members_revoking_different_devices_at_once_converge(tmp_path: Path) -> None:
    box = (tmp_path / "box").as_uri()
    Vault.init(tmp_path / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "d0") as first:
        first.add_relay("box", box)
        assert codes(first) == []
    for n in range(1, 4):
        Vault.join(tmp_path / f"d{n}", box, passphrase=PASSPHRASE, device_name=f"d{n}")
    a, b, c, d = vaults = [Vault.open(tmp_path / f"d{n}") for n in range(4)]
    try:
        for vault in vaults:
            assert codes(vault) == []
        a.revoke_device("d2", passphrase=PASSPHRASE, new_passphrase="passphrase of A")
        b.revoke_device("d3", passphrase=PASSPHRASE, new_passphrase="passphrase of B")
        a.add("A under its own epoch 1")
        b.add("B under its own epoch 1")
        for _ in range(3):
            for vault in (a, b):
                assert codes(vault) == []
        view_a, view_b = a.epochs(), b.epochs()
        assert view_a == view_b
        assert set(view_a.revoked) == {c.device_id, d.device_id}
        assert view_a.clean and view_a.current == 2  # a rekey followed the crossed revocations
        assert a.secrets.current_epoch == b.secrets.current_epoch == 2
        assert contents(a) == contents(b)
        assert {"A under its own epoch 1", "B under its own epoch 1"} <= contents(a)
        for revoked in (c, d):
            assert "DEVICE_REVOKED" in codes(revoked)
    finally:
        for vault in vaults:
            vault.close()


def test_a_passphrase_change_keeps_every_device_and_admits_only_the_new_passphrase(
        trio: tuple[Vault, Vault, Vault, Path], tmp_path: Path) -> None:
    a, b, c, box = trio
    done = a.change_passphrase(passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    assert done["epoch"] == 1 and len(done["recipients"]) == 3
    a.add("after the change")
    assert codes(a) == []
    for vault in (b, c):
        assert codes(vault) == []
        assert vault.secrets.current_epoch == 1
        assert "after the change" in contents(vault)
    with pytest.raises(CrdtsyncError) as caught:
        Vault.join(tmp_path / "late", box.as_uri(), passphrase=PASSPHRASE, device_name="late")
    assert caught.value.code == "WRONG_PASSPHRASE"
    with pytest.raises(CrdtsyncError) as caught:
        b.change_passphrase(passphrase=PASSPHRASE, new_passphrase="again")
    assert caught.value.code == "WRONG_PASSPHRASE"  # B took the new header: the old passphrase is refused there too


@pytest.mark.parametrize(("given", "code"), [("A", "DEVICE_SELF_REVOKE"), ("nobody", "DEVICE_NOT_FOUND"),
                                             ("0000", "DEVICE_NOT_FOUND")])
def test_bad_revocations_are_refused_and_change_nothing(
        trio: tuple[Vault, Vault, Vault, Path], given: str, code: str) -> None:
    a = trio[0]
    before = a.devices()
    with pytest.raises(CrdtsyncError) as caught:
        a.revoke_device(given, passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    assert caught.value.code == code
    assert a.devices() == before and a.secrets.current_epoch == 0


def test_a_wrong_passphrase_or_a_second_revocation_is_refused(trio: tuple[Vault, Vault, Vault, Path]) -> None:
    a, _, c, _ = trio
    with pytest.raises(CrdtsyncError) as caught:
        a.revoke_device("C", passphrase="not the passphrase", new_passphrase=NEW_PASSPHRASE)
    assert caught.value.code == "WRONG_PASSPHRASE"
    assert a.secrets.current_epoch == 0 and a.epochs().revoked == {}
    a.revoke_device("C", passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    with pytest.raises(CrdtsyncError) as caught:
        a.revoke_device(c.device_id, passphrase=NEW_PASSPHRASE, new_passphrase="x")
    assert caught.value.code == "DEVICE_ALREADY_REVOKED"


@pytest.mark.parametrize("hostile", ["unknown recipient", "revokes an unregistered device", "signed by another"])
def test_a_statement_a_member_made_against_the_rules_counts_nowhere(
        trio: tuple[Vault, Vault, Vault, Path], hostile: str) -> None:
    """A member (a modified client) publishes, in its own registry entry, a statement that wraps the new key for
    a device that does not exist, revokes one that does not, or carries another device's signature: every device
    leaves it void with its code and keeps sealing under the epoch it had."""
    a, b, c, _ = trio
    stranger = DeviceKeys.generate()
    secrets = b.secrets
    recipients = {a.device_id: bytes.fromhex(b.devices()[a.device_id]["kx_pk"])}
    revoke: dict[str, int] = {}
    author = secrets.device
    if hostile == "unknown recipient":
        recipients[stranger.device_id] = stranger.kx_pk
    elif hostile == "revokes an unregistered device":
        revoke[stranger.device_id] = 0
    else:
        author = c.secrets.device  # C's statement, put in B's entry
    statement = make_statement(author, vault_id=secrets.vault_id, prev=0, epoch=1, vault_key=new_vault_key(),
                               reason="rekey", recipients=recipients, revoke=revoke)
    if hostile == "signed by another":
        with pytest.raises(ValueError):  # crdtsync never writes another device's statement into its entry
            b.publish_statement(statement, None)
        return
    b.publish_statement(statement, None)
    assert codes(b) == []
    assert codes(a) == [] and codes(c) == []
    for vault in (a, b, c):
        view = vault.epochs()
        assert view.void == {statement.digest: "EPOCH_UNKNOWN_DEVICE"}
        assert view.current == 0 and vault.secrets.current_epoch == 0
        assert [(x["code"], x["device"]) for x in vault.status()["alarms"]] == [("EPOCH_UNKNOWN_DEVICE", b.device_id)]
    audited = len(a.log(limit=1000))
    assert codes(a) == []
    assert len(a.log(limit=1000)) == audited + 1  # the sync's row: the alarm is not raised again
    a.add("still under epoch 0")
    assert codes(a) == [] and codes(b) == []
    assert "still under epoch 0" in contents(b)


def test_a_head_a_device_cannot_open_is_never_rolled_back_by_it(tmp_path: Path) -> None:
    """d0 and d1 revoke each other at once: each seals its head under a key the other was not given. d1's sync
    must leave d0's newer head on the relay, not put back the older copy of it that d1 holds."""
    box = tmp_path / "box"
    Vault.init(tmp_path / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "d0") as first:
        first.add_relay("box", box.as_uri())
        assert codes(first) == []
    Vault.join(tmp_path / "d1", box.as_uri(), passphrase=PASSPHRASE, device_name="d1")
    with Vault.open(tmp_path / "d0") as d0, Vault.open(tmp_path / "d1") as d1:
        assert codes(d0) == [] and codes(d1) == []
        d0.revoke_device("d1", passphrase=PASSPHRASE, new_passphrase="of d0")
        d1.revoke_device("d0", passphrase=PASSPHRASE, new_passphrase="of d1")
        assert codes(d0) == []
        head = box / author_key(vault_tag(d0.secrets.vault_id), d0.device_id, "head")
        newer = head.read_bytes()
        codes(d1)
        assert head.read_bytes() == newer
