"""A device whose vault folder is restored from a backup, or copied and used in two places, never writes under
a Yjs client id at clocks that writes it lost (or the other copy) already used, and gets its lost writes back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import crdtsync._vault_rebase as rebase_module
import crdtsync.store.replica as replica_module
from crdtsync.model.records import Memory
from crdtsync.store.incarnation import ALARM
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf


def device(tmp_path: Path, name: str) -> Path:
    Vault.init(tmp_path / name, name="vault", device_name=name, passphrase=PASSPHRASE, kdf=cheap_kdf())
    return tmp_path / name


def clients(vault: Vault) -> list[int]:
    return list(vault.devices()[vault.device_id]["clients"])


def sync_errors(vault: Vault) -> list[str]:
    return [e["code"] for r in vault.sync() for e in r.errors]


def test_a_restored_vault_writes_under_a_new_client_id_and_recovers_its_lost_writes(tmp_path: Path) -> None:
    box = (tmp_path / "box").as_uri()
    laptop = device(tmp_path, "laptop")
    with Vault.open(laptop) as vault:
        kept = vault.add("written before the backup")
        vault.add_relay("box", box)
        assert sync_errors(vault) == []
        before = clients(vault)
    shutil.copytree(laptop, tmp_path / "backup")
    with Vault.open(laptop) as vault:
        lost = vault.add("written after the backup, then lost with the disk")
        assert sync_errors(vault) == []
    shutil.rmtree(laptop)
    shutil.copytree(tmp_path / "backup", laptop)

    with Vault.open(laptop) as vault:
        fresh = vault.add("written after the restore")
        now = clients(vault)
        assert set(before) < set(now), "the restored store must take a client id it never used"
        assert [a["code"] for a in vault.status()["alarms"]] == [ALARM]
        assert sync_errors(vault) == []
        assert vault.get(lost.id).content == "written after the backup, then lost with the disk"
    Vault.join(tmp_path / "phone", box, passphrase=PASSPHRASE, device_name="phone")
    with Vault.open(tmp_path / "phone") as phone:
        assert {m.id for m in phone.list()} == {kept.id, lost.id, fresh.id}
        phone.update(lost.id, content="edited on the phone")
        assert sync_errors(phone) == []
    with Vault.open(laptop) as vault:
        assert sync_errors(vault) == []
        assert vault.get(lost.id).content == "edited on the phone"
        assert vault.store.held() == []


def test_reopening_the_same_store_keeps_its_client_id_and_raises_no_alarm(tmp_path: Path) -> None:
    path = device(tmp_path, "laptop")
    for i in range(3):
        with Vault.open(path) as vault:
            vault.add(f"run {i}")
    with Vault.open(path) as vault:
        assert len(clients(vault)) == 1 and vault.status()["alarms"] == []


def test_two_copies_of_one_folder_never_share_a_client_id(tmp_path: Path) -> None:
    first = device(tmp_path, "laptop")
    with Vault.open(first) as vault:
        vault.add("before the copy")
    second = tmp_path / "copy"
    shutil.copytree(first, second)
    with Vault.open(first) as a:
        a.add("in the first copy")
        a_clients = set(clients(a))
    with Vault.open(second) as b:
        b.add("in the second copy")
        b_own = set(clients(b)) - a_clients
    with Vault.open(first) as a:
        a.add("in the first copy again")
        a_now = set(clients(a))
    assert b_own and not (b_own & a_now)


def test_a_crash_between_the_two_token_writes_raises_no_false_alarm(tmp_path: Path) -> None:
    """The outside copy accepts the old and the new token until the store's commit is known: a process killed
    in between (here: the store commits, the outside copy keeps both) reopens without a restore alarm."""
    import crdtsync.store.incarnation as incarnation

    path = device(tmp_path, "laptop")
    with Vault.open(path) as vault:
        vault.add("first")
        device_id = vault.device_id
    settled = incarnation._read_outside(device_id)
    with Vault.open(path) as vault:
        vault.add("second")
        token = vault.store.get_meta(incarnation.META_KEY)
    incarnation._write_outside(device_id, *settled, token)  # as if killed before the narrowing write
    with Vault.open(path) as vault:
        vault.add("third")
        assert vault.status()["alarms"] == [] and len(clients(vault)) == 1


# -- a restore that also restores the state folder (a whole home folder, or a copy to a new phone) --------


def full_backup_restored_after_a_lost_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A laptop and a phone in sync; the laptop's vault and state folder are backed up; the laptop adds a memory
    and edits the first one, and syncs (the lost writes); both folders are restored. Returns the laptop's path
    and the relay URL."""
    state = tmp_path / "state"
    monkeypatch.setenv("CRDTSYNC_STATE_DIR", str(state))
    box = (tmp_path / "box").as_uri()
    laptop = device(tmp_path, "laptop")
    with Vault.open(laptop) as vault:
        vault.add("written before the backup", tags=["old"])
        vault.add_relay("box", box)
        assert sync_errors(vault) == []
    Vault.join(tmp_path / "phone", box, passphrase=PASSPHRASE, device_name="phone")
    shutil.copytree(laptop, tmp_path / "backup")
    shutil.copytree(state, tmp_path / "backup-state")
    with Vault.open(laptop) as vault:
        vault.add("written after the backup, then lost with the disk")
        vault.update(by_content(vault, "written before the backup").id, category="edited before the loss")
        assert sync_errors(vault) == []
    for live, saved in ((laptop, tmp_path / "backup"), (state, tmp_path / "backup-state")):
        shutil.rmtree(live)
        shutil.copytree(saved, live)
    return laptop, box


def by_content(vault: Vault, content: str) -> Memory:
    (memory,) = [m for m in vault.list(include_deleted=True) if m.content == content]
    return memory


def shown(path: Path) -> list[tuple[object, ...]]:
    with Vault.open(path) as vault:
        return sorted((m.id, m.content, m.category, sorted(m.tags), m.deleted, m.conflicts)
                      for m in vault.list(include_deleted=True))


def contents(path: Path) -> list[str]:
    with Vault.open(path) as vault:
        return sorted(m.content for m in vault.list())


def test_writes_made_after_a_full_restore_are_rebased_under_a_new_client_and_reach_every_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = full_backup_restored_after_a_lost_write(tmp_path, monkeypatch)
    with Vault.open(laptop) as vault:
        before = clients(vault)
        old = by_content(vault, "written before the backup")
        fresh = vault.add("written after the restore, before any sync", tags=["new"])
        vault.update(old.id, category="edited after the restore", add_tags=["again"])
        assert sync_errors(vault) == []
        assert [a["code"] for a in vault.status()["alarms"]] == ["DEVICE_RESTORED"]
        assert set(clients(vault)) - set(before)  # a client id it never used before
        assert vault.get(old.id).tags == {"old", "again"}
        assert {c.value for c in vault.conflicts()[0].candidates} == {"edited before the loss",
                                                                      "edited after the restore"}
        assert vault.store.get_meta("rebase-intents") == ""
    with Vault.open(tmp_path / "phone") as phone:
        assert sync_errors(phone) == []
    assert shown(tmp_path / "phone") == shown(laptop)
    assert sorted(row[1] for row in shown(laptop)) == [
        "written after the backup, then lost with the disk", "written after the restore, before any sync",
        "written before the backup"]
    # Later edits of what was written after the restore land on the right memory everywhere.
    with Vault.open(laptop) as vault:
        vault.update(fresh.id, content="edited again on the laptop")
        assert sync_errors(vault) == []
    with Vault.open(tmp_path / "phone") as phone:
        assert sync_errors(phone) == []
        assert phone.get(fresh.id).content == "edited again on the laptop"
        assert by_content(phone, "written after the backup, then lost with the disk").category is None
    assert shown(tmp_path / "phone") == shown(laptop)


def test_deletes_and_moves_to_level_zero_made_after_a_full_restore_are_rebased_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = full_backup_restored_after_a_lost_write(tmp_path, monkeypatch)
    with Vault.open(laptop) as vault:
        old = by_content(vault, "written before the backup")
        gone = vault.add("added and deleted after the restore")
        vault.delete(gone.id)
        vault.update(old.id, level=0)
        assert sync_errors(vault) == []
        assert [a["code"] for a in vault.status()["alarms"]] == ["DEVICE_RESTORED"]
        assert vault.get(gone.id).deleted and vault.get(old.id).level == 0
        assert b"written before the backup" not in vault.encode_update()  # out of the shared Doc again
    with Vault.open(tmp_path / "phone") as phone:
        assert sync_errors(phone) == []
        assert phone.get(gone.id).deleted
        assert by_content(phone, "written after the backup, then lost with the disk").deleted is False


def test_a_rebase_interrupted_before_its_writes_are_re_applied_finishes_on_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = full_backup_restored_after_a_lost_write(tmp_path, monkeypatch)

    def crash(*args: object) -> None:
        raise RuntimeError("killed while re-applying")

    with Vault.open(laptop) as vault:
        fresh = vault.add("written after the restore, before any sync")
        with monkeypatch.context() as patched:
            patched.setattr(rebase_module, "_write_as", crash)
            with pytest.raises(RuntimeError):
                vault.sync()
        assert vault.store.get_meta(rebase_module.INTENTS_META) not in ("", None)  # kept for the next push
        assert sync_errors(vault) == []
        assert vault.get(fresh.id).content == "written after the restore, before any sync"
        assert vault.store.get_meta(rebase_module.INTENTS_META) == ""
    with Vault.open(tmp_path / "phone") as phone:
        assert sync_errors(phone) == []
        assert phone.get(fresh.id).content == "written after the restore, before any sync"
    assert shown(tmp_path / "phone") == shown(laptop)


def test_writes_already_compacted_into_a_snapshot_stop_the_sync_with_a_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = full_backup_restored_after_a_lost_write(tmp_path, monkeypatch)
    heads = sorted((tmp_path / "box").rglob("head"))
    heads_before = [p.read_bytes() for p in heads]
    monkeypatch.setattr(replica_module, "COMPACT_AFTER_UPDATES", 1)
    with Vault.open(laptop) as vault:
        vault.add("written after the restore, then compacted")
        assert sync_errors(vault) == ["DEVICE_CLOCKS_REUSED"]
        assert "DEVICE_CLOCKS_REUSED" in [a["code"] for a in vault.status()["alarms"]]
    assert [p.read_bytes() for p in heads] == heads_before  # nothing was pushed
    assert "written after the restore, then compacted" not in [row[1] for row in shown(tmp_path / "phone")]


def test_a_full_restore_synced_before_writing_gets_its_lost_writes_back_without_an_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = full_backup_restored_after_a_lost_write(tmp_path, monkeypatch)
    with Vault.open(laptop) as vault:
        assert sync_errors(vault) == []
        vault.add("written after the first sync")
        assert sync_errors(vault) == [] and vault.status()["alarms"] == []
        assert by_content(vault, "written before the backup").category == "edited before the loss"
    with Vault.open(tmp_path / "phone") as phone:
        assert sync_errors(phone) == []
    assert contents(tmp_path / "phone") == contents(laptop) == [
        "written after the backup, then lost with the disk", "written after the first sync",
        "written before the backup"]
    assert shown(tmp_path / "phone") == shown(laptop)


def test_an_entry_its_store_lost_is_recognised_as_its_own_and_raises_nothing(tmp_path: Path) -> None:
    """A store that lost its newest own entry after it reached the relay (its author row, entry and log cursor as
    they were one entry before: a state folder copied mid-sync): the next sync finds the relay ahead, takes the
    entry back, and the writes since are the very Items it holds, not reused clocks."""
    box = (tmp_path / "box").as_uri()
    laptop = device(tmp_path, "laptop")
    with Vault.open(laptop) as vault:
        vault.add("first")
        vault.add_relay("box", box)
        assert sync_errors(vault) == []
        me = vault.device_id
        before = vault.store.author(me)
        logged = vault.store.get_cursor("push", "")
        vault.add("second, pushed but then lost by the store")
        assert sync_errors(vault) == []
        assert before.head is not None and logged is not None
        with vault.store.write():
            vault.store.conn.execute("DELETE FROM entries WHERE author = ? AND seq > ?", (me, before.applied))
            vault.store.set_applied(me, before.applied, before.chain)
            vault.store.set_head(me, before.head, before.head_seq, before.head_n)
            vault.store.set_cursor("push", "", logged)
        vault.add("third")
        assert sync_errors(vault) == [] and vault.status()["alarms"] == []
        assert vault.store.author(me).applied == before.applied + 2
    Vault.join(tmp_path / "phone", box, passphrase=PASSPHRASE, device_name="phone")
    assert contents(tmp_path / "phone") == ["first", "second, pushed but then lost by the store", "third"]
