"""A join that a hostile store cannot steer: the store operator serves decoy headers (cheap KDF parameters, many
vaults, a damaged one first, a header copied under another vault's folder, a wrap that opens under two
passphrases), plants an epoch in the unsigned header, or still serves a v1 header. A join with the v3 header a key
change leaves. Plus the migration of a vault and relay written by 9204cbf."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

import crdtsync.crypto.header as header_module
from crdtsync.crypto.header import (
    KdfParams,
    VaultHeader,
    add_epoch,
    create_header,
    fingerprint,
    rotate_header,
    with_commitments,
)
from crdtsync.crypto.keys import MAX_EPOCH, new_vault_id, new_vault_key, vault_tag
from crdtsync.errors import CrdtsyncError
from crdtsync.protocol.mailbox import ROOT, header_key
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf
from tests.crypto.salamander import two_key_ciphertext

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "v1-vault"


def errors(vault: Vault, **kwargs: bool) -> list[str]:
    return [e["code"] for report in vault.sync(**kwargs) for e in report.errors]


@pytest.fixture
def laptop(tmp_path: Path) -> Iterator[Vault]:
    Vault.init(tmp_path / "laptop", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "laptop") as vault:
        vault.add("the real vault's memory")
        vault.add_relay("box", (tmp_path / "box").as_uri())
        assert errors(vault) == []
        yield vault


def put_header(box: Path, header: VaultHeader, *, tag: str | None = None, data: bytes | None = None) -> None:
    """What the store operator does: write a ``vault.json`` under the mailbox URL."""
    path = box / header_key(tag or vault_tag(header.vault_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.to_json() if data is None else data)


def decoy(passphrase: str = PASSPHRASE, kdf: KdfParams | None = None) -> VaultHeader:
    """A vault of the operator's making, under a passphrase it guesses."""
    return create_header(new_vault_id(), new_vault_key(), passphrase, kdf or cheap_kdf())


def join_code(tmp_path: Path, url: str, name: str = "phone") -> str:
    with pytest.raises(CrdtsyncError) as caught:
        Vault.join(tmp_path / name, url, passphrase=PASSPHRASE, device_name=name)
    assert not (tmp_path / name / "vault.db").exists()
    return caught.value.code


@pytest.fixture
def kdf_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times Argon2id runs (the real function, counted)."""
    runs: list[int] = []
    real = header_module._derive_kek

    def counted(passphrase: str, kdf: KdfParams) -> bytes:
        runs.append(kdf.memory_cost)
        return real(passphrase, kdf)

    monkeypatch.setattr(header_module, "_derive_kek", counted)
    return runs


def test_a_decoy_with_cheap_kdf_parameters_is_refused_before_argon2id_runs(tmp_path: Path,
                                                                           kdf_runs: list[int]) -> None:
    box = tmp_path / "box"
    weak = decoy(kdf=cheap_kdf())
    put_header(box, VaultHeader(vault_id=weak.vault_id, kdf=KdfParams.new(iterations=1, lanes=1, memory_cost=8),
                                epochs=weak.epochs, commits=weak.commits))
    kdf_runs.clear()
    assert join_code(tmp_path, box.as_uri()) == "KDF_TOO_WEAK"
    assert kdf_runs == []


def test_a_decoy_that_would_exhaust_the_device_is_refused_before_argon2id_runs(tmp_path: Path,
                                                                               kdf_runs: list[int]) -> None:
    box = tmp_path / "box"
    costly = decoy()
    put_header(box, VaultHeader(vault_id=costly.vault_id, kdf=KdfParams.new(iterations=16, lanes=4,
                                                                             memory_cost=1024 * 1024),
                                epochs=costly.epochs, commits=costly.commits))
    kdf_runs.clear()
    assert join_code(tmp_path, box.as_uri()) == "KDF_TOO_COSTLY"
    assert kdf_runs == []


def test_many_decoys_beside_the_real_vault_cost_no_argon2id_and_the_join_string_picks_the_real_one(
        tmp_path: Path, laptop: Vault, kdf_runs: list[int]) -> None:
    box = tmp_path / "box"
    for guess in range(40):
        put_header(box, decoy(f"guess {guess}"))
    copied = decoy("one more guess")
    for n in range(300):  # listed before the real vault: copies, each passed over (not in its own folder)
        put_header(box, copied, tag=f"{n:016x}")
    kdf_runs.clear()
    assert join_code(tmp_path, box.as_uri()) == "MAILBOX_SEVERAL_VAULTS"
    assert kdf_runs == []
    Vault.join(tmp_path / "phone", f"{box.as_uri()}#vault={laptop.fingerprint}", passphrase=PASSPHRASE)
    assert len(kdf_runs) == 1  # exactly one header tried
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.fingerprint == laptop.fingerprint
        assert [m.content for m in phone.list()] == ["the real vault's memory"]


def test_a_damaged_header_first_does_not_stop_the_join(tmp_path: Path, laptop: Vault) -> None:
    box = tmp_path / "box"
    broken = box / ROOT / "0000000000000000" / "vault.json"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b'{"format": "crdtsync-vault/2", "vault_id": ')
    Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE)
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.fingerprint == laptop.fingerprint


def test_a_header_copied_under_another_vaults_folder_is_passed_over(tmp_path: Path, laptop: Vault) -> None:
    elsewhere = tmp_path / "elsewhere"
    put_header(elsewhere, laptop.header, tag="0123456789abcdef")
    assert join_code(tmp_path, elsewhere.as_uri()) == "MAILBOX_NO_VAULT"


def test_a_join_string_of_another_vault_joins_nothing(tmp_path: Path, laptop: Vault) -> None:
    """The operator replaces the real vault with its own under the same passphrase guess (it guessed right):
    without the join string the device would trust it on first use; with it, it refuses."""
    box = tmp_path / "box"
    shutil.rmtree(box / ROOT)
    fake = decoy(PASSPHRASE)
    put_header(box, fake)
    assert join_code(tmp_path, f"{box.as_uri()}#vault={laptop.fingerprint}") == "MAILBOX_NO_VAULT"
    assert join_code(tmp_path, f"{box.as_uri()}#vault=nope") == "INVALID_FINGERPRINT"
    Vault.join(tmp_path / "tofu", box.as_uri(), passphrase=PASSPHRASE)
    with Vault.open(tmp_path / "tofu") as trusted:
        assert trusted.fingerprint == fingerprint(fake) != laptop.fingerprint  # it says which vault it joined


def test_a_wrap_that_opens_under_two_passphrases_admits_only_one(tmp_path: Path) -> None:
    """The operator's decoy tests two passphrase guesses at once in v1; in v2 the commitment names one key."""
    box = tmp_path / "box"
    kdf = cheap_kdf()
    vault_id = new_vault_id()
    keks = [header_module._derive_kek(p, kdf) for p in ("operator's guess", PASSPHRASE)]
    wrap = two_key_ciphertext(keks[0], keks[1], header_module._wrap_ad(vault_id, 0))
    v1 = VaultHeader(vault_id=vault_id, kdf=kdf, epochs={0: wrap})
    guessed = header_module.unwrap_vault_key(v1, "operator's guess", 0)
    put_header(box, with_commitments(v1, {0: guessed}))
    assert join_code(tmp_path, box.as_uri()) == "WRONG_PASSPHRASE"


def test_an_epoch_planted_in_the_header_is_never_sealed_under(tmp_path: Path, laptop: Vault) -> None:
    """Anyone with the passphrase can add an epoch to the unsigned header (here 2^64-1 with a key of its own): a
    new device still seals under the vault's founding epoch, and every member reads what it writes."""
    box = tmp_path / "box"
    planted = add_epoch(laptop.header, MAX_EPOCH, new_vault_key(), PASSPHRASE)
    put_header(box, planted)
    Vault.join(tmp_path / "phone", f"{box.as_uri()}#vault={laptop.fingerprint}", passphrase=PASSPHRASE)
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.secrets.current_epoch == 0
        memory = phone.add("written by the new device")
        assert errors(phone) == []
    assert errors(laptop) == []
    assert laptop.get(memory.id).content == "written by the new device"


NEW_PASSPHRASE = "the passphrase after a revocation"


def rotated(header: VaultHeader, keys: dict[int, list[bytes]], vault_key: bytes) -> VaultHeader:
    """``header`` after a key change to epoch 1 (what a revocation publishes): only the new passphrase joins."""
    return rotate_header(header, keys=keys, epoch=1, vault_key=vault_key, passphrase=NEW_PASSPHRASE,
                         kdf=cheap_kdf())


def test_a_join_with_a_rotated_header_gets_every_key_and_seals_only_under_an_epoch_a_statement_made(
        tmp_path: Path, laptop: Vault) -> None:
    """A v3 header (here rotated by hand, as anyone with the passphrase could, with no epoch statement behind it)
    gives a joining device every key, alternates included; its first pull finds no statement that made epoch 1
    current, so it seals under the founding epoch, which every member holds."""
    box = tmp_path / "box"
    (founding,) = laptop.secrets.epochs.values()
    key_1, alternate = new_vault_key(), new_vault_key()
    put_header(box, rotated(laptop.header, {0: [founding, alternate]}, key_1))
    assert join_code(tmp_path, box.as_uri(), "old") == "WRONG_PASSPHRASE"  # the old passphrase admits no one
    Vault.join(tmp_path / "phone", f"{box.as_uri()}#vault={laptop.fingerprint}", passphrase=NEW_PASSPHRASE)
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.secrets.epochs == {0: founding, 1: key_1}
        assert phone.secrets.alternates == {0: [alternate]}
        assert phone.secrets.current_epoch == 0
        assert phone.fingerprint == laptop.fingerprint
        assert [m.content for m in phone.list()] == ["the real vault's memory"]


def test_a_rotated_header_in_a_relay_is_left_alone_unless_it_commits_to_other_keys(
        tmp_path: Path, laptop: Vault) -> None:
    """A member's sync keeps a v3 header that commits to every key it holds and more; one committing to another
    founding key is put back."""
    path = tmp_path / "box" / header_key(vault_tag(laptop.header.vault_id))
    (founding,) = laptop.secrets.epochs.values()
    rotation = rotated(laptop.header, {0: [founding]}, new_vault_key())
    path.write_bytes(rotation.to_json())
    (report,) = laptop.sync()
    assert report.errors == [] and report.warnings == []
    assert VaultHeader.from_json(path.read_bytes()) == rotation
    impostor_key = new_vault_key()
    impostor = create_header(laptop.header.vault_id, impostor_key, PASSPHRASE, cheap_kdf())
    path.write_bytes(rotated(impostor, {0: [impostor_key]}, new_vault_key()).to_json())
    (report,) = laptop.sync()
    assert [w["code"] for w in report.warnings] == ["MAILBOX_HEADER_REPLACED"]
    assert VaultHeader.from_json(path.read_bytes()) == laptop.header


def test_a_lost_damaged_downgraded_or_foreign_header_is_put_back_at_the_next_sync(
        tmp_path: Path, laptop: Vault) -> None:
    """A sync sees ``vault.json`` in its listing of the relay: a header that is gone is written again; one that
    changed since this device last checked it is read, and when it is damaged, v1 or another vault's, this
    vault's is put back and the replacement reported (``MAILBOX_HEADER_REPLACED``). A good header is read once
    and then left alone (a sync of one edit costs no extra request)."""
    path = tmp_path / "box" / header_key(vault_tag(laptop.header.vault_id))
    current = laptop.header
    path.unlink()
    assert errors(laptop) == []
    assert VaultHeader.from_json(path.read_bytes()) == current
    other = VaultHeader(vault_id=bytes(16), kdf=current.kdf, epochs=current.epochs)
    for damage in (b"{}", VaultHeader(vault_id=current.vault_id, kdf=current.kdf, epochs=current.epochs).to_json(),
                   other.to_json()):
        path.write_bytes(damage)
        (report,) = laptop.sync()
        assert report.errors == [] and [w["code"] for w in report.warnings] == ["MAILBOX_HEADER_REPLACED"]
        assert VaultHeader.from_json(path.read_bytes()) == current
    assert errors(laptop) == []
    unchanged = path.stat().st_mtime_ns
    assert errors(laptop) == []
    assert path.stat().st_mtime_ns == unchanged  # a good header is left alone


def test_a_vault_and_relay_written_by_9204cbf_upgrade_and_admit_a_new_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture (tests/data/v1-vault/HOW.md) was written by crdtsync at 9204cbf: header v1 in the relay and
    in the vault, two devices. This crdtsync opens the vault, syncs, upgrades both headers to v2 with the vault
    keys alone (no passphrase), and a new device joins with the join string."""
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    for keys in root.glob("*/keys"):
        os.chmod(keys, 0o600)  # git keeps no permissions beyond the executable bit
    monkeypatch.setenv("CRDTSYNC_STATE_DIR", str(root / "state"))
    box = root / "box"
    for device in ("laptop", "phone"):  # the relay folder was elsewhere on the machine that wrote the fixture
        with closing(sqlite3.connect(root / device / "vault.db")) as db, db:
            db.execute("UPDATE relays SET url = ?", (box.as_uri(),))
    (relay_header,) = box.glob(f"{ROOT}/*/vault.json")
    assert VaultHeader.from_json(relay_header.read_bytes()).version == 1
    assert join_code(tmp_path, box.as_uri(), "early") == "HEADER_OUTDATED"
    with Vault.open(root / "laptop") as old:
        expected = sorted(m.content for m in old.list())
        assert old.header.version == 2  # upgraded in place with the vault keys
        assert errors(old) == []
        join = f"{box.as_uri()}#vault={old.fingerprint}"
    assert VaultHeader.from_json(relay_header.read_bytes()).version == 2
    Vault.join(tmp_path / "tablet", join, passphrase="correct horse battery staple", device_name="tablet")
    with Vault.open(tmp_path / "tablet") as tablet:
        assert sorted(m.content for m in tablet.list()) == [c for c in expected if c != "Door code 4417"]
        memory = tablet.add("written after the upgrade")
        assert errors(tablet) == []
    with Vault.open(root / "phone") as phone:
        assert errors(phone) == []
        assert phone.get(memory.id).content == "written after the upgrade"
