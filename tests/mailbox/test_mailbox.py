"""Mailbox protocol v1 on real stores: a folder, fsspec's memory store and moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from typer.testing import CliRunner

import crdtsync.node as relays_module
import crdtsync.protocol.messages as messages_module
import crdtsync.protocol.sealing as sealing_module
import crdtsync.replication as replication_module
import crdtsync.store.integration as integration_module
import crdtsync.store.replica as replica_module
from crdtsync.cli.app import app
from crdtsync.errors import CryptoError, InvalidInputError, MailboxError, NotFoundError, VaultError
from crdtsync.mailbox.backend import open_store
from crdtsync.mailbox.relay import SyncReport
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, crash_workers_applying
from tests.mailbox.forge import push_raw

MakeVault = Callable[..., Vault]


def new_device(tmp_path: Path, name: str) -> Vault:
    Vault.init(tmp_path / name, name="vault", device_name=name, passphrase=PASSPHRASE, kdf=cheap_kdf())
    return Vault.open(tmp_path / name)


def joined(tmp_path: Path, name: str, url: str) -> Vault:
    Vault.join(tmp_path / name, url, passphrase=PASSPHRASE, device_name=name)
    return Vault.open(tmp_path / name)


def errors(reports: list[SyncReport]) -> list[str]:
    return [e["code"] for r in reports for e in r.errors]


def memories(vault: Vault) -> list[dict[str, object]]:
    return [m.to_json() for m in vault.list(include_deleted=True) if m.level == 1]


@pytest.fixture
def folder_pair(tmp_path: Path) -> tuple[Vault, Vault, str, Path]:
    box = tmp_path / "box"
    a = new_device(tmp_path, "laptop")
    a.add("I prefer oolong tea", category="prefs", tags=["drinks"])
    a.add_relay("box", box.as_uri())
    assert errors(a.sync()) == []
    b = joined(tmp_path, "phone", box.as_uri())
    yield a, b, box.as_uri(), box
    a.close()
    b.close()


def test_a_joined_device_holds_everything_and_edits_flow_both_ways(folder_pair: tuple[Vault, Vault, str, Path]) -> None:
    a, b, _, _ = folder_pair
    assert memories(a) == memories(b)
    m = b.list()[0]
    b.update(m.id, category="tea")
    new = a.add("meets Sam on Fridays")
    assert errors(b.sync()) == [] and errors(a.sync()) == [] and errors(b.sync()) == []
    assert a.get(m.id).category == "tea" and b.get(new.id).content == "meets Sam on Fridays"
    assert memories(a) == memories(b)
    assert set(a.devices()) == set(b.devices()) and len(a.devices()) == 2


def test_join_reports_progress_over_every_object_it_fetches(tmp_path: Path) -> None:
    box = tmp_path / "box"
    with new_device(tmp_path, "laptop") as a:
        a.add_relay("box", box.as_uri())
        for text in ("oolong", "sencha", "hojicha"):
            a.add(text)
            assert errors(a.sync()) == []
    seen: list[tuple[int, int]] = []
    Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    with Vault.open(tmp_path / "phone") as b:
        assert sorted(m.content for m in b.list()) == ["hojicha", "oolong", "sencha"]


def test_concurrent_edits_surface_the_same_conflict_and_resolution_syncs(
    folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    a, b, _, _ = folder_pair
    m = a.list()[0]
    a.update(m.id, content="green tea")
    b.update(m.id, content="black tea")
    a.sync(), b.sync(), a.sync()
    assert [c.to_json() for c in a.conflicts()] == [c.to_json() for c in b.conflicts()]
    assert {c.value for c in a.conflicts()[0].candidates} == {"green tea", "black tea"}
    a.resolve(m.id, "content", "black tea")
    a.sync(), b.sync()
    assert a.conflicts() == b.conflicts() == [] and b.get(m.id).content == "black tea"


def test_one_edit_moves_little_and_few_objects(folder_pair: tuple[Vault, Vault, str, Path]) -> None:
    a, b, _, _ = folder_pair
    for i in range(200):
        a.add(f"filler memory number {i} with some realistic length of text to it")
    a.sync(), b.sync()
    m = a.list()[0]
    a.update(m.id, content="one small edit")
    (push,) = a.sync(pull=False)
    (pull,) = b.sync(push=False)
    assert push.bytes_up < 2048 and push.operations < 5
    assert pull.bytes_down < 2048 and pull.operations < 5
    assert b.get(m.id).content == "one small edit"


def test_moving_a_memory_to_level_0_removes_it_from_the_other_devices(
    folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    """Level 0 means "this device only": the other devices drop their copy at their next sync, while this
    device keeps it; moving it back to level 1 shares it again, with the edit made in between."""
    a, b, _, _ = folder_pair
    memory = a.add("my therapist's name")
    a.sync()
    b.sync()
    assert b.get(memory.id).content == "my therapist's name"
    a.update(memory.id, level=0)
    a.update(memory.id, content="my therapist's name and number")
    assert errors(a.sync()) == [] and errors(b.sync()) == []
    with pytest.raises(NotFoundError):
        b.get(memory.id)
    assert a.get(memory.id).level == 0
    a.update(memory.id, level=1)
    assert errors(a.sync()) == [] and errors(b.sync()) == []
    assert b.get(memory.id).content == "my therapist's name and number" and memories(a) == memories(b)


def test_an_edit_made_elsewhere_while_a_memory_moved_to_level_0_is_kept_with_a_conflict(
    folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    """Moving a memory to level 0 while another device edits it: neither side is lost. The edit brings the
    shared memory back on both devices with a conflict on ``deleted`` (the move against the edit), and the
    device that moved it keeps its private copy under a new id, with an alarm that names both."""
    a, b, _, _ = folder_pair
    memory = a.add("my therapist is Dr. Okafor")
    assert errors(a.sync()) == [] and errors(b.sync()) == []
    a.update(memory.id, level=0, content="my therapist is Dr. Okafor, 555-0199")
    b.update(memory.id, content="my therapist is Dr. Okafor (Tuesdays)")
    assert errors(a.sync()) == [] and errors(b.sync()) == []
    synced = CliRunner().invoke(app, ["--vault", str(a.path), "sync"], env={"CRDTSYNC_PASSPHRASE": PASSPHRASE})
    assert synced.exit_code == 0 and "ALARM [MEMORY_LEVEL_CONFLICT]" in synced.stderr
    shown = CliRunner().invoke(app, ["--vault", str(b.path), "conflicts"], env={"CRDTSYNC_PASSPHRASE": PASSPHRASE})
    assert "deleted (or moved to level 0)" in shown.stdout and "kept (edited)" in shown.stdout
    assert memories(a) == memories(b) and a.conflicts() == b.conflicts()
    shared = b.get(memory.id)
    assert shared.content == "my therapist is Dr. Okafor (Tuesdays)" and shared.level == 1
    (conflict,) = b.conflicts()
    assert (conflict.memory_id, conflict.field) == (memory.id, "deleted")
    assert {(c.value, c.device) for c in conflict.candidates} == {(True, a.device_id), (False, b.device_id)}
    (alarm,) = [x for x in a.status()["alarms"] if x["code"] == "MEMORY_LEVEL_CONFLICT"]
    assert alarm["memory"] == memory.id
    private = a.get(alarm["private_copy"])
    assert (private.level, private.content) == (0, "my therapist is Dr. Okafor, 555-0199")
    assert b"555-0199" not in a.encode_update()
    a.resolve(memory.id, "deleted", True)
    for device in (a, b):
        assert errors(device.sync()) == []
    assert b.get(memory.id).deleted and memories(a) == memories(b) and b.conflicts() == []
    assert a.get(private.id).content == private.content


def test_records_imported_at_level_0_here_and_level_1_elsewhere_are_both_kept_with_one_alarm(
    folder_pair: tuple[Vault, Vault, str, Path], tmp_path: Path,
) -> None:
    """An import derives ids from the records, so one file imported privately on one device and shared on the
    other names the same memories: both copies stay, the private ones under new ids, with one alarm for the lot
    and an audit row per memory."""
    a, b, _, _ = folder_pair
    rows = [{"content": f"journal entry {n}", "source": f"journal.jsonl#{n}"} for n in range(30)]
    shared_file, private_file = tmp_path / "shared.jsonl", tmp_path / "private.jsonl"
    shared_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    private_file.write_text("".join(json.dumps({**row, "level": 0}) + "\n" for row in rows))
    assert a.import_path(private_file).added == 30 and b.import_path(shared_file).added == 30
    for device in (b, a):
        assert errors(device.sync()) == []
    contents = sorted(m.content for m in a.list() if m.content.startswith("journal"))
    assert contents == sorted([row["content"] for row in rows] * 2)
    assert len([m for m in a.list() if m.level == 0]) == 30 and memories(a) == memories(b)
    assert [x["code"] for x in a.status()["alarms"]] == ["MEMORY_LEVEL_CONFLICT"]
    renamed = [row for row in a.log(limit=200) if row.op == "level-0 copy renamed"]
    assert len(renamed) == 30 and {r.detail["private_copy"] for r in renamed} == {
        m.id for m in a.list() if m.level == 0}


def test_an_update_refused_because_the_worker_died_is_tried_again_at_the_next_syncs(
    folder_pair: tuple[Vault, Vault, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The integration worker dying (the OS reclaiming memory on a phone, a fault of yrs that depends on the
    process) is not the update's fault: the next syncs try it again, and the writes that waited behind it
    follow once it integrates."""
    a, b, _, _ = folder_pair
    memory = a.add("arrives while the phone is short of memory")
    assert errors(a.sync()) == []
    flag = crash_workers_applying(b"short of memory", tmp_path, monkeypatch)
    assert errors(b.sync()) == ["UPDATE_WORKER_CRASHED"]
    a.update(memory.id, content="edited on the laptop (short of memory no more)")
    assert errors(a.sync()) == [] and errors(b.sync()) == []  # tried again: it crashes again; the edit waits
    assert b.store.held_count() == 1 and len(b.store.quarantined()) == 1
    flag.unlink()
    assert errors(b.sync()) == []
    assert b.get(memory.id).content == "edited on the laptop (short of memory no more)"
    assert b.store.quarantined() == [] and b.store.held_count() == 0 and memories(a) == memories(b)
    assert [row.detail for row in b.log() if row.op == "retry refused"] == [
        {"tried": 1, "integrated": 1}, {"tried": 1, "integrated": 0}]


def test_an_update_that_timed_out_is_tried_again_with_twice_the_deadline(
    folder_pair: tuple[Vault, Vault, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy phone takes longer than the deadline: the next sync tries the update again with the deadline
    doubled, and it integrates."""
    a, b, _, _ = folder_pair
    b.close()
    memory = a.add("integrates slowly on a busy phone")
    assert errors(a.sync()) == []
    flag = crash_workers_applying(b"slowly on a busy phone", tmp_path, monkeypatch, stall=1.5)
    with Vault.open(b.path, deadline=1.0) as phone:
        assert errors(phone.sync()) == ["UPDATE_WORKER_TIMEOUT"]
        assert errors(phone.sync()) == []
        flag.unlink()
        assert phone.get(memory.id).content == memory.content and phone.store.quarantined() == []


def test_an_update_stored_by_a_pull_killed_before_integrating_it_integrates_at_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A join or pull stores what it fetched and advances the relay's cursor in one transaction, then integrates.
    Killed in between (a phone's OS stopping a long join), the update stays in the inbox untried and no pull
    fetches it again: the next sync integrates it."""
    box = tmp_path / "box"
    with new_device(tmp_path, "laptop") as a:
        memory = a.add("written before the phone joined")
        a.add_relay("box", box.as_uri())
        assert errors(a.sync()) == []

    def killed(self: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what the process sees of a kill, as far as this test can go

    monkeypatch.setattr(integration_module.UpdateIntegration, "_drain_inbox", killed)
    with pytest.raises(KeyboardInterrupt):
        Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE)
    monkeypatch.undo()
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.store.held_count() == 1 and phone.list() == []
        (report,) = phone.sync()
        assert report.errors == [] and report.objects_down == 0  # the cursor had moved past it
        assert memory.id in report.memories_changed
        assert phone.get(memory.id).content == "written before the phone joined"
        assert phone.store.held_count() == 0


def test_a_join_killed_before_its_first_sync_is_finished_by_sync(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The joining device's store is created with its relay in one transaction: however early the join is
    stopped once the store exists, `sync` in that folder finishes it (a second `join` refuses the folder)."""
    box = tmp_path / "box"
    with new_device(tmp_path, "laptop") as a:
        memory = a.add("written before the phone joined")
        a.add_relay("box", box.as_uri())
        assert errors(a.sync()) == []

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(relays_module, "first_sync", killed)
    with pytest.raises(KeyboardInterrupt):
        Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, relay_name="box")
    monkeypatch.undo()
    with pytest.raises(VaultError) as again:
        Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE)
    assert again.value.code == "VAULT_EXISTS" and "`crdtsync sync` there finishes it" in again.value.message
    with Vault.open(tmp_path / "phone") as phone:
        assert [r["name"] for r in phone.relays()] == ["box"]
        assert errors(phone.sync()) == []
        assert phone.get(memory.id).content == "written before the phone joined"
        assert len(phone.devices()) == 2


def test_a_folder_relay_and_the_vault_folder_may_not_hold_one_another(tmp_path: Path) -> None:
    """A vault inside the folder that Dropbox or Syncthing carries would travel in clear, keys included:
    ``join`` refuses it before asking anything of the mailbox, and ``relay add`` refuses a relay that holds the
    vault or lies inside it (a plain path, a file:// URL, or through a symlink)."""
    box = tmp_path / "box"
    with new_device(tmp_path, "laptop") as a:
        a.add("laptop memory")
        for url in (str(tmp_path), (tmp_path / "laptop").as_uri(), str(tmp_path / "laptop" / "box")):
            with pytest.raises(InvalidInputError) as refused:
                a.add_relay("bad", url)
            assert refused.value.code == "RELAY_OVERLAPS_VAULT"
        assert a.relays() == []
        a.add_relay("box", box.as_uri())
        assert errors(a.sync()) == []
    (tmp_path / "link").symlink_to(box)
    for folder in (box / "phone", tmp_path / "link" / "phone", box):
        with pytest.raises(InvalidInputError) as inside:
            Vault.join(folder, box.as_uri(), passphrase=PASSPHRASE)
        assert inside.value.code == "RELAY_OVERLAPS_VAULT" and "in clear" in inside.value.message
    assert sorted(p.name for p in box.iterdir()) == ["crdtsync-v1"]
    with joined(tmp_path, "phone", str(tmp_path / "link")) as phone:
        assert [m.content for m in phone.list()] == ["laptop memory"]
        with phone.store.write():  # a relay saved by a version that did not refuse it
            phone.store.add_relay("inner", (tmp_path / "phone" / "box").as_uri())
        (report,) = phone.sync(relay="inner")
        assert [e["code"] for e in report.errors] == ["RELAY_OVERLAPS_VAULT"]
        assert not (tmp_path / "phone" / "box").exists()


def test_a_join_stopped_before_its_store_committed_is_redone_by_join(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A join stopped after writing the device's key file but before the store's creating transaction
    committed leaves no vault: ``open`` says so, and the next ``join`` replaces the leftovers."""
    box = tmp_path / "box"
    with new_device(tmp_path, "laptop") as a:
        memory = a.add("written before the phone joined")
        a.add_relay("box", box.as_uri())
        assert errors(a.sync()) == []

    def stopped(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(replica_module.Replica, "ensure_lease_registered", stopped)
    with pytest.raises(KeyboardInterrupt):
        Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, relay_name="box")
    monkeypatch.undo()
    assert {p.name for p in (tmp_path / "phone").iterdir()} >= {"keys", "vault.db"}
    with pytest.raises(VaultError) as unfinished:
        Vault.open(tmp_path / "phone")
    assert unfinished.value.code == "VAULT_NOT_FOUND" and "run it again" in unfinished.value.message
    Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, relay_name="box")
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.secrets.device.device_id == phone.device_id
        assert phone.get(memory.id).content == "written before the phone joined"
        assert [r["name"] for r in phone.relays()] == ["box"] and len(phone.devices()) == 2


def test_a_retry_that_fails_is_reported_and_the_relays_still_sync(
    folder_pair: tuple[Vault, Vault, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trying a refused update again needs a worker loaded with the vault's state; when even that fails (here
    this device's own write crashes every worker: VAULT_REBUILD_FAILED), the sync reports it and goes on."""
    a, b, _, _ = folder_pair
    a.add("zebra, from the laptop")
    assert errors(a.sync()) == []
    crash_workers_applying(b"zebra", tmp_path, monkeypatch)
    assert errors(b.sync()) == ["UPDATE_WORKER_CRASHED"]
    b.add("zebra, written on the phone")
    reports = b.sync()
    assert reports[0].errors[0]["code"] == "VAULT_REBUILD_FAILED"
    assert reports[0].errors[0]["message"].startswith("integrating received updates again")
    assert reports[0].objects_up >= 1  # the push still ran


def test_an_update_the_worker_never_survives_is_tried_three_times_in_all(
    folder_pair: tuple[Vault, Vault, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, _, _ = folder_pair
    a.add("crashes every worker")
    assert errors(a.sync()) == []
    crash_workers_applying(b"crashes every worker", tmp_path, monkeypatch)
    assert errors(b.sync()) == ["UPDATE_WORKER_CRASHED"]
    for _ in range(3):
        assert errors(b.sync()) == []
    assert len([row for row in b.log() if row.op == "retry refused"]) == 2
    (refused,) = b.status()["refused"]
    assert (refused["origin"], refused["code"], refused["tries"]) == (a.device_id, "UPDATE_WORKER_CRASHED", 3)
    shown = CliRunner().invoke(app, ["--vault", str(b.path), "status"], env={"CRDTSYNC_PASSPHRASE": PASSPHRASE})
    assert f"from {a.device_id} [UPDATE_WORKER_CRASHED], tried 3x" in " ".join(shown.stdout.split())


def test_a_truncated_object_is_reported_and_read_again_once_whole(
    folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    a, b, _, box = folder_pair
    a.add("new fact")
    a.sync()
    (obj,) = [p for p in box.rglob("log/*") if a.device_id in str(p) and p.name.endswith("2")]
    whole = obj.read_bytes()
    obj.write_bytes(whole[: len(whole) // 2])
    before = memories(b)
    assert errors(b.sync()) == ["MAILBOX_OBJECT_CORRUPT"]
    assert memories(b) == before
    obj.write_bytes(whole)
    assert errors(b.sync()) == [] and memories(b) == memories(a)


def test_a_missing_object_is_never_skipped(folder_pair: tuple[Vault, Vault, str, Path]) -> None:
    a, b, _, box = folder_pair
    first = a.add("second push")
    a.sync()
    a.add("third push")
    a.sync()
    log = next(p for p in box.rglob("log/0000000000000002") if a.device_id in str(p))
    kept = log.read_bytes()
    log.unlink()
    assert errors(b.sync()) == ["MAILBOX_OBJECT_MISSING"]
    with pytest.raises(NotFoundError):
        b.get(first.id)
    log.write_bytes(kept)
    assert errors(b.sync()) == [] and memories(a) == memories(b)


def test_a_mailbox_folder_that_is_not_there_receives_nothing_until_it_is_back(
    tmp_path: Path, folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    """A USB stick that is not mounted (or a synced folder not carried yet): the relay's path is missing. A push
    must not create it and write there: that log object would never reach the real mailbox, and once the stick
    is back, each device would heal it from what it holds, but a copy left on the mount point would be lost."""
    a, b, _, box = folder_pair
    stick = tmp_path / "stick"
    box.rename(stick)  # unmounted
    memory = a.add("written while the stick is away")
    assert errors(a.sync()) == ["MAILBOX_UNAVAILABLE"]
    assert not box.exists()
    assert errors(b.sync()) == ["MAILBOX_UNAVAILABLE"]
    stick.rename(box)  # mounted again
    assert errors(a.sync()) == []
    assert errors(b.sync()) == [] and b.get(memory.id).content == "written while the stick is away"
    assert memories(a) == memories(b)


def test_files_a_folder_sync_tool_or_desktop_leaves_in_the_mailbox_are_ignored(
    monkeypatch: pytest.MonkeyPatch, folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    """Finder, Explorer, Syncthing and Dropbox drop their own files into a synced folder. Before, a .DS_Store
    beside the device folders failed every sync (exit 8, after 5 retries of reading '.DS_Store/head'). The
    pushes run into a snapshot and the collection of acknowledged logs, which lists the log folder."""
    monkeypatch.setattr(replication_module, "SNAPSHOT_EVERY", 3)
    a, b, _, box = folder_pair
    devices = next(box.glob("crdtsync-v1/*/a"))
    mine = devices / a.device_id
    junk = [devices / ".DS_Store", devices / "desktop.ini", devices / "Icon\r",
            mine / "head.sync-conflict-20261122-1", mine / "log" / "0000000000000001.sync-conflict-20261122-1",
            mine / "log" / ".syncthing.0000000000000002.tmp", mine / "log" / "0000000000000001 (conflicted copy)",
            mine / "log" / "Thumbs.db"]
    for path in junk:
        path.write_bytes(b"not ours")
    (devices / ".stfolder").mkdir()
    for i in range(6):
        a.add(f"fact {i}")
        assert errors(a.sync()) == []
        assert errors(b.sync()) == []
    assert memories(a) == memories(b) and len(memories(b)) == 7
    assert list(mine.glob("snap/*")) and not (mine / "log" / "0000000000000001").exists()
    assert all(path.read_bytes() == b"not ours" for path in junk)


def test_an_object_replaced_by_another_seq_or_device_is_refused(folder_pair: tuple[Vault, Vault, str, Path]) -> None:
    a, b, _, box = folder_pair
    b.add("from the phone")
    b.sync()
    a.add("from the laptop")
    a.sync()
    a_logs = sorted(p for p in box.rglob("log/*") if a.device_id in str(p))
    b_log = next(p for p in box.rglob("log/*") if b.device_id in str(p))
    kept = a_logs[-1].read_bytes()
    a_logs[-1].write_bytes(a_logs[0].read_bytes())
    assert errors(b.sync()) == ["MAILBOX_OBJECT_CORRUPT"]
    a_logs[-1].write_bytes(b_log.read_bytes())
    assert errors(b.sync()) == ["MAILBOX_OBJECT_CORRUPT"]
    a_logs[-1].write_bytes(kept)
    assert errors(b.sync()) == []


def test_an_object_from_another_vault_is_refused(tmp_path: Path, folder_pair: tuple[Vault, Vault, str, Path]) -> None:
    a, b, _, box = folder_pair
    other = new_device(tmp_path, "stranger")
    other.add_relay("x", (tmp_path / "otherbox").as_uri())
    other.sync()
    foreign = next((tmp_path / "otherbox").rglob("log/0000000000000001")).read_bytes()
    a.add("fresh")
    a.sync()
    target = next(p for p in box.rglob("log/0000000000000002") if a.device_id in str(p))
    target.write_bytes(foreign)
    assert errors(b.sync()) == ["ENVELOPE_OTHER_VAULT"]
    other.close()


def test_a_head_rolled_back_is_put_back_by_a_device_that_verified_a_newer_one(
    folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    """A store that serves an older head (a backup restored, a sync tool's rollback, a lost write) is healed by the
    next sync of any device that holds a newer head of that author, its own device or another."""
    a, b, _, box = folder_pair
    head = next(p for p in box.rglob("head") if a.device_id in str(p))
    old = head.read_bytes()
    a.add("newer")
    a.sync()
    b.sync()
    newer = head.read_bytes()
    head.write_bytes(old)
    (report,) = b.sync()
    assert report.errors == [] and any(key.endswith(f"{a.device_id}/head") for key in report.healed)
    assert head.read_bytes() == newer
    head.write_bytes(old)
    a.add("newest")
    assert errors(a.sync()) == [] and head.read_bytes() != old
    assert errors(b.sync()) == [] and memories(a) == memories(b)


def test_structs_under_another_devices_client_id_are_quarantined(
    tmp_path: Path, folder_pair: tuple[Vault, Vault, str, Path]
) -> None:
    a, b, url, _ = folder_pair
    c = joined(tmp_path, "tablet", url)
    a.add("written by the laptop")
    stolen = a.store.local_updates_after(0)[-1][1]
    push_raw(b, b.secrets.device, stolen, (1,), url=url)
    assert "UPDATE_FOREIGN_CLIENT" in errors(c.sync(push=False))
    assert c.store.quarantined()[-1][2] == "UPDATE_FOREIGN_CLIENT"
    assert all(m.content != "written by the laptop" for m in c.list())
    c.close()


def test_the_store_sees_no_plaintext_and_level_zero_stays_home(tmp_path: Path) -> None:
    box = tmp_path / "box"
    a = new_device(tmp_path, "secret-laptop-name")
    a.add("SECRET-CONTENT my allergy is penicillin", category="SECRET-CATEGORY", tags=["SECRET-TAG"],
          source="SECRET-SOURCE", metadata={"k": "SECRET-META"})
    a.add("LEVEL-ZERO pin code 4242", level=0)
    a.add_relay("box", box.as_uri())
    a.sync()
    b = joined(tmp_path, "secret-phone-name", box.as_uri())
    b.update(b.list()[0].id, content="SECRET-EDIT on the phone")
    b.sync()
    a.sync()
    blob = b"".join(p.read_bytes() for p in box.rglob("*") if p.is_file())
    for needle in (b"SECRET-", b"LEVEL-ZERO", b"penicillin", b"secret-laptop-name", b"secret-phone-name",
                   b"4242", "SECRET".encode("utf-16-le")):
        assert needle not in blob
    assert all("LEVEL-ZERO" not in m.content for m in b.list(include_deleted=True))
    a.close()
    b.close()


def test_join_with_a_wrong_passphrase_fails_cleanly(
    tmp_path: Path, folder_pair: tuple[Vault, Vault, str, Path]
) -> None:
    _, _, url, _ = folder_pair
    with pytest.raises(CryptoError) as info:
        Vault.join(tmp_path / "intruder", url, passphrase="not it")
    assert info.value.code == "WRONG_PASSPHRASE" and not (tmp_path / "intruder").exists()
    with pytest.raises(MailboxError) as empty:
        Vault.join(tmp_path / "lost", (tmp_path / "nothing-here").as_uri(), passphrase=PASSPHRASE)
    assert empty.value.code == "MAILBOX_NO_VAULT"


def test_memory_store_and_a_device_offline_for_many_pushes_catches_up(tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    a = new_device(tmp_path, "a")
    a.add_relay("mem", url)
    a.sync()
    b = joined(tmp_path, "b", url)
    for i in range(1000):
        a.add(f"push number {i}")
        a.sync(pull=False)
    (report,) = b.sync()
    assert report.errors == [] and report.objects_down == 1001  # the head, then every entry
    assert memories(a) == memories(b)
    a.close()
    b.close()


def test_compaction_snapshots_and_drops_acknowledged_logs_and_a_new_device_starts_from_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replication_module, "SNAPSHOT_EVERY", 5)
    box = tmp_path / "box"
    a = new_device(tmp_path, "a")
    a.add_relay("box", box.as_uri())
    a.sync()
    b = joined(tmp_path, "b", box.as_uri())
    for i in range(12):
        a.add(f"m{i}")
        a.sync()
        b.sync()
    a.sync()
    a_logs = sorted(p.name for p in box.rglob("log/*") if a.device_id in str(p))
    assert len(a_logs) < 12 and any(box.rglob("snap/*"))
    c = joined(tmp_path, "c", box.as_uri())
    assert memories(c) == memories(a)
    for v in (a, b, c):
        v.close()


def test_a_body_larger_than_one_object_continues_in_further_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects hold 64 chunks of 4 MiB; here 4 chunks of 1 KiB, so a few dozen memories need continuations."""
    monkeypatch.setattr(messages_module, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(messages_module, "MAX_CHUNKS", 4)
    box = tmp_path / "box"
    a = new_device(tmp_path, "a")
    for i in range(40):
        a.add(f"memory {i}: a sentence long enough that forty of them fill several chunks", tags=["x"])
    a.add_relay("box", box.as_uri())
    (push,) = a.sync()
    logs = next(box.rglob(f"a/{a.device_id}")) / "log"
    first = sorted(p.name for p in logs.iterdir())
    assert push.errors == [] and first[0] == "0000000000000001" and "0000000000000001.1" in first
    assert push.objects_up == len(first) + 1  # every part and the head
    b = joined(tmp_path, "b", box.as_uri())
    assert memories(b) == memories(a) and len(memories(b)) == 40

    # A missing continuation is never skipped; one from another body is refused.
    for i in range(40, 80):
        a.add(f"memory {i}: a sentence long enough that forty of them fill several chunks")
    a.sync()
    second = logs / "0000000000000002.1"
    kept = second.read_bytes()
    second.unlink()
    assert errors(b.sync()) == ["MAILBOX_OBJECT_MISSING"] and len(memories(b)) == 40
    second.write_bytes((logs / "0000000000000001.1").read_bytes())
    assert errors(b.sync()) == ["MAILBOX_OBJECT_CORRUPT"] and len(memories(b)) == 40
    second.write_bytes(kept)
    assert errors(b.sync()) == [] and memories(b) == memories(a)

    # A body that would need more than MAX_PARTS objects is refused before anything is written.
    monkeypatch.setattr(messages_module, "MAX_PARTS", 1)
    monkeypatch.setattr(sealing_module, "MAX_PARTS", 1)
    a.add("one more, pushed in a body that now needs two objects " * 100)
    before = sorted(p.name for p in logs.iterdir())
    assert errors(a.sync(pull=False)) == ["MAILBOX_TOO_LARGE"]
    assert sorted(p.name for p in logs.iterdir()) == before
    for v in (a, b):
        v.close()


def test_collected_logs_and_replaced_snapshots_take_their_continuations_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages_module, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(messages_module, "MAX_CHUNKS", 2)
    monkeypatch.setattr(messages_module, "MAX_PARTS", 64)
    monkeypatch.setattr(sealing_module, "MAX_PARTS", 64)
    monkeypatch.setattr(replication_module, "SNAPSHOT_EVERY", 3)
    box = tmp_path / "box"
    a = new_device(tmp_path, "a")
    a.add_relay("box", box.as_uri())
    a.sync()
    b = joined(tmp_path, "b", box.as_uri())
    for round_ in range(8):
        for i in range(15):
            a.add(f"round {round_} memory {i} with enough text to need a continuation object")
        a.sync()
        b.sync()
    a.sync()
    mine = next(box.rglob(f"a/{a.device_id}"))
    logs = sorted(p.name for p in (mine / "log").iterdir())
    snaps = sorted(p.name for p in (mine / "snap").iterdir())
    assert all(int(name.split(".")[0], 16) > 1 for name in logs)  # the acknowledged ones went, parts and all
    assert len({name.split(".")[0] for name in snaps}) == 1 and len(snaps) > 1  # one snapshot, in parts
    c = joined(tmp_path, "c", box.as_uri())
    assert memories(c) == memories(a) == memories(b)
    for v in (a, b, c):
        v.close()


def test_s3_mailbox_round_trip_and_ciphertext_only(tmp_path: Path, s3_bucket: str, s3_endpoint: str) -> None:
    import boto3

    url = f"s3://{s3_bucket}/alice"
    a = new_device(tmp_path, "a")
    a.add("S3-SECRET stays encrypted", tags=["S3-TAG"])
    a.add_relay("s3", url)
    assert errors(a.sync()) == []
    b = joined(tmp_path, "b", url)
    b.update(b.list()[0].id, content="S3-SECRET edited on b")
    assert errors(b.sync()) == [] and errors(a.sync()) == []
    assert memories(a) == memories(b)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(k.endswith("vault.json") for k in keys)
    for key in keys:
        body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert b"S3-SECRET" not in body and b"S3-TAG" not in body
    a.close()
    b.close()


def test_s3_missing_bucket_and_unreachable_endpoint_have_stable_codes(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MailboxError) as missing:
        open_store(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p").put("k", b"x")
    assert missing.value.code == "MAILBOX_NO_BUCKET"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = open_store("s3://any/p", attempts=2, base_delay=0.01)
    with pytest.raises(MailboxError) as down:
        store.get("k")
    assert down.value.code == "MAILBOX_UNAVAILABLE"


def test_folder_writes_leave_no_temporary_files(folder_pair: tuple[Vault, Vault, str, Path]) -> None:
    a, _, _, box = folder_pair
    a.add("x")
    a.sync()
    assert not [p for p in box.rglob(".tmp-*")]
    assert msgpack.unpackb(next(box.rglob("log/0000000000000001")).read_bytes())


def test_a_forked_history_raises_a_persistent_alarm(
    tmp_path: Path, folder_pair: tuple[Vault, Vault, str, Path]
) -> None:
    """Device A is restored from a backup while the mailbox serves it a stale head (lag), so it writes a
    second, validly signed seq 3. B, which applied the first seq 3, must notice that A's seq 4 does not link
    to it, refuse it, and keep an alarm."""
    a, b, _, box = folder_pair
    a.add("second push")
    a.sync()
    device = a.device_id
    head = next(p for p in box.rglob("head") if device in str(p))
    stale_head = head.read_bytes()
    a.close()
    shutil.copytree(tmp_path / "laptop", tmp_path / "laptop-backup")
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.add("third push, first history")
        laptop.sync()
    assert errors(b.sync()) == []
    head.write_bytes(stale_head)
    with Vault.open(tmp_path / "laptop-backup") as restored:
        restored.add("third push, second history")
        restored.sync()
        restored.add("fourth push, second history")
        restored.sync()
    assert errors(b.sync()) == ["MAILBOX_FORK"]
    (alarm,) = b.status()["alarms"]
    assert alarm["code"] == "MAILBOX_FORK" and alarm["device"] == device
    assert all("second history" not in m.content for m in b.list())
    assert errors(b.sync()) == ["MAILBOX_FORK"] and len(b.status()["alarms"]) == 1


def test_objects_read_from_a_folder_do_not_each_keep_a_memory_mapping(tmp_path: Path) -> None:
    """A ranged read allocates the whole size limit and shrinks it; kept as is, every object held in memory
    would pin one mapping and a pull holding ~65k objects would fail with MemoryError (vm.max_map_count)."""
    store = open_store((tmp_path / "box").as_uri())
    for i in range(2000):
        store.put(f"m/{i:05d}", b"x" * 600)
    maps_before = len(Path("/proc/self/maps").read_text().splitlines())
    kept = [store.get(f"m/{i:05d}") for i in range(2000)]
    maps_after = len(Path("/proc/self/maps").read_text().splitlines())
    assert all(data == b"x" * 600 for data in kept)
    assert maps_after - maps_before < 200


def test_a_pull_never_loads_the_doc_and_the_registry_it_keeps_equals_the_docs(
    folder_pair: tuple[Vault, Vault, str, Path],
) -> None:
    a, b, _, _ = folder_pair
    a.add("one more from the laptop", tags=["t"])
    assert errors(a.sync()) == []
    with Vault.open(b.path) as phone:
        assert errors(phone.sync()) == []
        assert not phone.doc_loaded
        kept = phone.devices()
        assert not phone.doc_loaded and set(kept) == {a.device_id, b.device_id}
        phone.state_vector()  # loads the Doc: devices() now reads the Doc itself
        changes = phone.store.conn.total_changes
        assert phone.doc_loaded and phone.devices() == kept
        assert phone.store.conn.total_changes == changes  # and rewrites nothing when the copy is right
        assert [m.content for m in phone.search("laptop")] == ["one more from the laptop"]


def test_an_object_over_the_size_limit_is_neither_written_nor_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crdtsync.mailbox.backend as backend

    store = open_store((tmp_path / "box").as_uri())
    store.put("m/big", b"x" * 2000)
    monkeypatch.setattr(backend, "MAX_OBJECT_BYTES", 1000)
    with pytest.raises(MailboxError) as read:
        store.get("m/big")
    with pytest.raises(MailboxError) as written:
        store.put("m/other", b"y" * 1001)
    assert read.value.code == written.value.code == "MAILBOX_TOO_LARGE"
    assert store.get("m/other") is None and store.list("m") == ["big"]
