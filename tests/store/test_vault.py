"""The Vault API on real SQLite files: writes, reads without the Doc, level 0, leases, compaction."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc

import crdtsync._process as process_module
import crdtsync._vault_import as import_module
import crdtsync.store.replica as replica_module
from crdtsync._vault_create import create_store
from crdtsync.crypto.keys import DeviceKeys, new_vault_key
from crdtsync.errors import CryptoError, InvalidInputError, NotFoundError, VaultError
from crdtsync.model.records import Memory
from crdtsync.model.schema import MemoryDoc
from crdtsync.store.db import STORE_FORMAT, Store
from crdtsync.store.secrets_file import VaultSecrets
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

MakeVault = Callable[..., Vault]


def doc_ids(vault: Vault) -> set[str]:
    """Memory ids in the shared Doc, read from the vault's full update by a fresh pycrdt Doc."""
    doc = Doc()
    doc.apply_update(vault.encode_update())
    return set(MemoryDoc(doc).memory_ids())


def test_add_get_update_delete_restore_round_trip(make_vault: MakeVault) -> None:
    v = make_vault()
    m = v.add("I prefer green tea", category="prefs", tags=["drinks"], metadata={"n": 1}, source="chat")
    assert v.get(m.id) == m
    edited = v.update(m.id, content="I prefer oolong", add_tags=["tea"], remove_tags=["drinks"])
    assert (edited.content, edited.tags, edited.metadata) == ("I prefer oolong", {"tea"}, {"n": 1})
    assert edited.updated >= m.updated
    assert v.delete(m.id).deleted
    assert v.list() == []
    assert [x.id for x in v.list(include_deleted=True)] == [m.id]
    assert not v.restore(m.id).deleted
    assert [x.id for x in v.list()] == [m.id]


def test_writes_survive_reopening(make_vault: MakeVault, tmp_path: Path) -> None:
    v = make_vault()
    ids = [v.add(f"memory {i}").id for i in range(5)]
    v.update(ids[0], content="changed")
    v.close()
    with Vault.open(tmp_path / "a") as again:
        assert sorted(m.id for m in again.list()) == sorted(ids)
        assert again.get(ids[0]).content == "changed"
        assert doc_ids(again) == set(ids)


def test_reads_answer_from_sqlite_without_loading_the_doc(tmp_path: Path, make_vault: MakeVault) -> None:
    v = make_vault()
    m = v.add("coffee in the morning", tags=["habit"])
    v.close()
    with Vault.open(tmp_path / "a") as fresh:
        assert fresh.get(m.id).content == "coffee in the morning"
        assert [x.id for x in fresh.list(limit=20)] == [m.id]
        assert [x.id for x in fresh.search("morn")] == [m.id]
        assert [x.id for x in fresh.search("habit")] == [m.id]
        assert fresh.conflicts() == [] and fresh.status()["memories"]["live"] == 1
        assert not fresh.doc_loaded


def test_search_treats_fts_syntax_as_plain_words(make_vault: MakeVault) -> None:
    v = make_vault()
    m = v.add('she said "NEAR" AND OR (x)')
    assert [x.id for x in v.search('"NEAR" AND (x')] == [m.id]
    assert v.search('""') == []


def test_level_zero_never_enters_the_shared_doc(make_vault: MakeVault) -> None:
    v = make_vault()
    secret = v.add("my bank PIN is 0000", level=0, tags=["private-tag"])
    shared = v.add("shared fact")
    update = v.encode_update()
    assert b"bank PIN" not in update and b"private-tag" not in update and b"shared fact" in update
    assert v.get(secret.id).level == 0
    moved = v.update(shared.id, level=0)
    assert moved.level == 0 and b"shared fact" not in v.encode_update()
    back = v.update(secret.id, level=1, content="my PIN hint")
    assert back.level == 1 and b"my PIN hint" in v.encode_update()


def test_bad_input_is_refused_with_a_code_and_changes_nothing(make_vault: MakeVault) -> None:
    v = make_vault()
    m = v.add("x")
    before = v.encode_update()
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: v.add(""), "INVALID_INPUT"),
        (lambda: v.add("x" * (64 * 1024 + 1)), "CONTENT_TOO_LARGE"),
        (lambda: v.add("x", level=2), "INVALID_INPUT"),
        (lambda: v.add("x", tags="abc"), "INVALID_INPUT"),
        (lambda: v.add("x", metadata={"f": object()}), "INVALID_INPUT"),
        (lambda: v.update(m.id, colour="red"), "INVALID_FIELD"),
        (lambda: v.update(m.id, content=7), "INVALID_INPUT"),
        (lambda: v.get("no-such-id"), "NOT_FOUND"),
        (lambda: v.update("no-such-id", content="y"), "NOT_FOUND"),
        (lambda: v.resolve(m.id, "colour", "red"), "INVALID_FIELD"),
    ]
    for call, code in cases:
        with pytest.raises((InvalidInputError, NotFoundError)) as info:
            call()
        assert info.value.code == code
    assert v.encode_update() == before
    assert [x.id for x in v.list()] == [m.id]


def test_editing_a_deleted_memory_asks_for_restore(make_vault: MakeVault) -> None:
    v = make_vault()
    m = v.add("x")
    v.delete(m.id)
    with pytest.raises(InvalidInputError) as info:
        v.update(m.id, content="y")
    assert info.value.code == "MEMORY_DELETED"


def test_init_refuses_an_existing_vault_and_a_missing_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRDTSYNC_PASSPHRASE", raising=False)
    with pytest.raises(CryptoError) as info:
        Vault.init(tmp_path / "v")
    assert info.value.code == "PASSPHRASE_REQUIRED"
    Vault.init(tmp_path / "v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with pytest.raises(VaultError) as exists:
        Vault.init(tmp_path / "v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    assert exists.value.code == "VAULT_EXISTS"
    with pytest.raises(VaultError) as missing:
        Vault.open(tmp_path / "nothing-here")
    assert missing.value.code == "VAULT_NOT_FOUND"


def test_a_second_creation_racing_into_the_same_folder_is_refused_without_touching_the_first(
    tmp_path: Path,
) -> None:
    """Two ``init`` runs that both found the folder vacant: the one whose transaction comes second is refused
    inside it (``VAULT_EXISTS``), before it writes its key file over the first vault's."""
    folder = Vault.init(tmp_path / "v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    keys_before = (folder / "keys").read_bytes()
    with Vault.open(folder) as vault:
        header = vault.header
    rival = VaultSecrets(device=DeviceKeys.generate(), vault_id=header.vault_id, epochs={0: new_vault_key()})
    with pytest.raises(VaultError) as refused:
        create_store(folder, rival, header, vault_name="rival", device_name=None, founder=True)
    assert refused.value.code == "VAULT_EXISTS"
    assert (folder / "keys").read_bytes() == keys_before
    with Vault.open(folder) as vault:
        assert vault.secrets.device.device_id == vault.device_id


def test_the_database_and_its_wal_are_private_even_in_a_shared_folder(tmp_path: Path) -> None:
    """The store holds every memory in clear: 0600 from its creation (SQLite gives the WAL and shared-memory
    files the database's mode), whatever the folder's mode, and narrowed on open when an older version left it
    0644."""
    folder = tmp_path / "existing"
    folder.mkdir(mode=0o755)
    Vault.init(folder, passphrase=PASSPHRASE, kdf=cheap_kdf())
    db_files = [folder / "vault.db", folder / "vault.db-wal", folder / "vault.db-shm"]
    with Vault.open(folder) as vault:
        vault.add("private")
        assert [f.stat().st_mode & 0o777 for f in db_files] == [0o600] * 3
    (folder / "vault.db").chmod(0o644)
    with Vault.open(folder) as vault:
        vault.add("still private")
        assert [f.stat().st_mode & 0o777 for f in db_files] == [0o600] * 3


@settings(max_examples=150, deadline=None)
@given(ids=st.sets(st.text(alphabet="ab\u00e9\ud7ff\ue000\U0010fffd\U0010ffff", min_size=1, max_size=5),
                   max_size=12),
       prefixes=st.lists(st.text(alphabet="ab\u00e9\ud7ff\ue000\U0010fffd\U0010ffff", max_size=4), max_size=6))
def test_ids_starting_with_a_prefix_are_exactly_those_python_finds(ids: set[str], prefixes: list[str]) -> None:
    """The primary-key range scan behind ``match_id`` against ``str.startswith``, with the code points where
    the range's end has to skip (U+D7FF before the surrogates, U+10FFFF at the top)."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "vault.db")
        try:
            template = Memory(id="x", content="c", category=None, tags=frozenset(), level=1, source=None,
                              metadata=None, created="2026-01-01T00:00:00.000Z", updated="2026-01-01T00:00:00.000Z",
                              created_by="d", updated_by="d", deleted=False)
            with store.write():
                store.put_memories([(replace(template, id=memory_id), []) for memory_id in ids])
            for prefix in [*prefixes, *ids]:
                expected = sorted(i for i in ids if i.startswith(prefix))
                assert store.ids_starting_with(prefix, 100) == expected, prefix
        finally:
            store.close()


def test_key_file_is_private(tmp_path: Path, make_vault: MakeVault) -> None:
    make_vault()
    assert (tmp_path / "a" / "keys").stat().st_mode & 0o777 == 0o600


def test_client_ids_are_reused_across_runs(tmp_path: Path, make_vault: MakeVault) -> None:
    make_vault().close()
    for i in range(4):
        with Vault.open(tmp_path / "a") as v:
            v.add(f"run {i}")
    with Vault.open(tmp_path / "a") as v:
        (entry,) = v.devices().values()
        assert len(entry["clients"]) == 1


def test_a_fresh_client_id_is_never_one_another_device_announced(
    make_vault: MakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, v = make_vault("a"), make_vault("b")
    source.add("announces the source's client id")
    (taken,) = source.devices()[source.device_id]["clients"]
    v.apply_update(source.encode_update(), "a")
    with v.store.write():
        v.store.retire_leases()  # so that the next write takes a fresh client id
    draws, real = iter([taken, 0, 424242]), replica_module.secrets.randbits
    monkeypatch.setattr(replica_module.secrets, "randbits", lambda bits: next(draws) if bits == 32 else real(bits))
    v.add("written under a client id of its own")
    clients = v.devices()[v.device_id]["clients"]
    assert 424242 in clients and taken not in clients


def test_a_lease_holder_is_checked_with_signal_0_on_posix_and_never_signalled_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Windows ``os.kill`` terminates the process whatever the signal: the holder of a lease must never be
    signalled there."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    holder = f"{dead.stdout.strip()}::token"
    assert not process_module.process_alive(holder)  # a pid that exited (reused within this test: unlikely)

    def terminate(pid: int, sig: int) -> None:
        raise AssertionError("os.kill called outside POSIX")

    monkeypatch.setattr(process_module.os, "name", "nt")
    monkeypatch.setattr(process_module.os, "kill", terminate)
    assert process_module.process_alive(holder)


def test_two_live_openers_write_under_different_client_ids_and_see_each_other(
    tmp_path: Path, make_vault: MakeVault
) -> None:
    one = make_vault()
    two = make_vault()
    a = one.add("from one")
    b = two.add("from two")
    assert one.get(b.id).content == "from two"
    one.update(b.id, content="one edits two's memory")
    assert two.update(a.id, content="two edits one's memory").content == "two edits one's memory"
    assert two.get(b.id).content == "one edits two's memory"
    (entry,) = one.devices().values()
    assert len(entry["clients"]) == 2
    assert one.encode_update() and doc_ids(one) == {a.id, b.id}


def test_another_process_sees_writes_and_its_writes_are_seen(tmp_path: Path, make_vault: MakeVault) -> None:
    v = make_vault()
    mine = v.add("written here")
    script = textwrap.dedent(
        f"""
        from crdtsync.vault import Vault
        with Vault.open({str(tmp_path / "a")!r}) as v:
            assert v.get({mine.id!r}).content == "written here"
            v.update({mine.id!r}, content="edited by the other process")
            print(v.add("written there").id)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    theirs = done.stdout.strip()
    assert v.get(theirs).content == "written there"
    assert v.update(mine.id, add_tags=["t"]).content == "edited by the other process"


def test_a_full_disk_is_a_coded_error_and_the_vault_stays_as_it_was(tmp_path: Path, make_vault: MakeVault) -> None:
    """SQLite reports SQLITE_FULL when a write needs a page past ``max_page_count``, as it does on a full disk
    (a phone's storage): the write fails whole with ``VAULT_DISK_FULL`` and what was stored is kept."""
    v = make_vault("a")
    kept = v.add("written before the disk filled")
    rows = tmp_path / "big.jsonl"
    rows.write_text("".join(json.dumps({"content": f"memory {n} " + "x" * 300}) + "\n" for n in range(500)))
    (pages,) = v.store.conn.execute("PRAGMA page_count").fetchone()
    v.store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(VaultError) as info:
        v.import_path(rows)
    assert info.value.code == "VAULT_DISK_FULL"
    assert [m.id for m in v.list()] == [kept.id] and not v.store.conn.in_transaction
    v.store.conn.execute("PRAGMA max_page_count = 1073741823")
    assert v.import_path(rows).added == 500 and len(v.list()) == 501


@pytest.mark.parametrize(("result_code", "code"), [
    (13, "VAULT_DISK_FULL"), (8, "VAULT_UNWRITABLE"), (10 | 19 << 8, "IO_ERROR"), (1, None)])
def test_sqlite_failures_of_the_storage_map_to_codes_by_primary_result_code(result_code: int, code: str | None,
                                                                           ) -> None:
    """SQLITE_FULL, SQLITE_READONLY and SQLITE_IOERR (here extended: SQLITE_IOERR_SHMSIZE, what a full tmpfs
    gives when a vault is opened) are the storage's; any other SQLite error is the program's and stays one."""
    from crdtsync.store.db import _storage_error

    error = sqlite3.OperationalError("from SQLite")
    error.sqlite_errorcode = result_code  # type: ignore[attr-defined]
    coded = _storage_error(error)
    assert (coded.code if coded else None) == code


def test_compaction_bounds_the_log_and_loses_nothing(
    tmp_path: Path, make_vault: MakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "COMPACT_AFTER_UPDATES", 10)
    v = make_vault()
    ids = [v.add(f"m{i}").id for i in range(25)]
    count, _ = v.store.updates_since_snapshot()
    assert count < 10 and v.store.latest_snapshot() is not None
    state = v.encode_update()
    v.close()
    with Vault.open(tmp_path / "a") as again:
        assert sorted(m.id for m in again.list()) == sorted(ids)
        assert sorted(doc_ids(again)) == sorted(ids)
        assert again.state_vector() and len(again.encode_update()) == len(state)


def test_deferred_compaction_waits_for_compact_if_due_up_to_four_times_the_bounds(
    make_vault: MakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "COMPACT_AFTER_UPDATES", 10)
    v = make_vault()
    v.defer_compaction()
    ids = [v.add(f"m{i}").id for i in range(25)]  # past the bound, under four times it: writes leave it
    assert v.store.latest_snapshot() is None and v.store.updates_since_snapshot()[0] >= 25
    v.compact_if_due()
    assert v.store.latest_snapshot() is not None and v.store.updates_since_snapshot()[0] == 0
    ids += [v.add(f"n{i}").id for i in range(45)]  # past four times the bound: a write compacts after all
    assert v.store.updates_since_snapshot()[0] < 40
    assert sorted(m.id for m in v.list()) == sorted(ids) == sorted(doc_ids(v))


def test_a_process_behind_a_compaction_reloads_from_the_snapshot(
    tmp_path: Path, make_vault: MakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "COMPACT_AFTER_UPDATES", 10)
    early = make_vault()
    first = early.add("before")
    late = make_vault()
    later = [late.add(f"m{i}").id for i in range(20)]
    assert late.store.latest_snapshot() is not None
    early.update(first.id, content="after compaction")
    assert doc_ids(early) == {first.id, *later}


def _fts_integrity(vault: Vault) -> None:
    """FTS5's own check that the external-content index matches the ``memories`` table (raises if not)."""
    vault.store.conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")


def test_full_text_search_stays_exact_through_bulk_stores_edits_and_repeats(make_vault: MakeVault) -> None:
    source, sink = make_vault("a"), make_vault("b")
    for i in range(30):
        source.add(f"walrus number {i}", tags=["sea"])
    sink.apply_update(source.encode_update(), "a")
    assert len(sink.search("walrus", limit=None)) == 30 and len(sink.search("sea", limit=None)) == 30
    first = sink.search("walrus", limit=1)[0]
    sink.update(first.id, content="penguin now")
    assert len(sink.search("walrus", limit=None)) == 29 and [m.id for m in sink.search("penguin")] == [first.id]
    sink.add("another walrus")
    assert len(sink.search("walrus", limit=None)) == 30
    memory = sink.get(first.id)
    sink.store.put_memories([(memory, []), (replace(memory, content="zebra crossing"), [])])
    assert [m.id for m in sink.search("zebra")] == [first.id] and sink.search("penguin") == []
    _fts_integrity(sink)
    count = sink.store.conn.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'walrus'")
    assert count.fetchone()[0] == 30  # an edit leaves no stale entry behind in the index


def test_a_refused_update_already_held_again_is_not_held_twice(make_vault: MakeVault) -> None:
    vault = make_vault("a")
    with vault.store.write():
        vault.store.quarantine(b"update bytes", origin="x", code="UPDATE_WORKER_CRASHED", message="died")
        assert len(vault.store.requeue_quarantined(max_attempts=3)) == 1
        assert vault.store.requeue_quarantined(max_attempts=3) == []  # still held: waits for another update
        assert vault.store.held_count() == 1


def test_an_update_that_integrates_clears_only_a_refusal_that_was_not_its_fault(make_vault: MakeVault) -> None:
    vault = make_vault("a")
    with vault.store.write():
        vault.store.quarantine(b"foreign", origin="x", code="UPDATE_FOREIGN_CLIENT", message="not its clients")
        vault.store.quarantine(b"crashed", origin="y", code="UPDATE_WORKER_CRASHED", message="died")
        vault.store.forget_quarantined(b"foreign")  # the same bytes integrated when their owner sent them
        vault.store.forget_quarantined(b"crashed")
    assert [q[2] for q in vault.store.quarantined()] == ["UPDATE_FOREIGN_CLIENT"]


def test_opening_a_vault_whose_quarantine_has_no_attempts_column_adds_it(make_vault: MakeVault) -> None:
    vault = make_vault("a")
    with vault.store.write():
        vault.store.quarantine(b"refused bytes", origin="x", code="UPDATE_WORKER_TIMEOUT", message="slow")
        vault.store.conn.execute("ALTER TABLE quarantine DROP COLUMN attempts")
    path = vault.path
    vault.close()
    with Vault.open(path) as reopened, reopened.store.write():
        ((held, attempt),) = reopened.store.requeue_quarantined(max_attempts=3)
        assert attempt == 2
        assert [row[2] for row in reopened.store.held() if row[0] == held] == [b"refused bytes"]
        assert reopened.store.conn.execute("SELECT attempts FROM quarantine").fetchall()[0][0] == 2


def test_opening_a_vault_with_the_old_insert_trigger_drops_it_and_rebuilds_the_index(
    tmp_path: Path, make_vault: MakeVault
) -> None:
    vault = make_vault("a")
    kept = vault.add("walrus")
    conn = vault.store.conn
    conn.execute(
        "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN INSERT INTO memories_fts "
        "(rowid, content, category, tags) VALUES (new.rowid, new.content, new.category, new.tags); END"
    )
    conn.execute("INSERT INTO memories_fts (rowid, content, category, tags) VALUES (999, 'stale', NULL, '[]')")
    path = vault.path
    vault.close()
    with Vault.open(path) as reopened:
        triggers = reopened.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert "memories_ai" not in {row[0] for row in triggers}
        stale = reopened.store.conn.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'stale'")
        assert stale.fetchone()[0] == 0
        assert [m.id for m in reopened.search("walrus")] == [kept.id]
        reopened.add("walrus two")
        assert len(reopened.search("walrus")) == 2
        _fts_integrity(reopened)


def content_conflict(make_vault: MakeVault, mine: str, theirs: str) -> tuple[Vault, str]:
    """Vault ``a`` holding a content conflict between ``mine`` (its own edit) and ``theirs`` (b's)."""
    a, b = make_vault("a"), make_vault("b")
    memory = a.add("Tea order for the office")
    b.apply_update(a.encode_update(), "a")
    state = a.state_vector()
    a.update(memory.id, content=mine)
    b.update(memory.id, content=theirs)
    a.apply_update(b.encode_update(state), "b")
    assert [c.field for c in a.conflicts()] == ["content"]
    return a, memory.id


def test_search_finds_a_memory_by_any_candidate_of_a_conflict_until_it_is_resolved(make_vault: MakeVault) -> None:
    """The value shown is one candidate; a search for another (a word or a symbol of it) finds the memory too,
    and stops finding it once the conflict is resolved the other way."""
    a, memory_id = content_conflict(make_vault, "Prefers oolong, no sugar", "Prefers sencha 🍵")
    shown = a.get(memory_id).content
    for query in ("oolong", "sencha", "sencha 🍵", "🍵", "prefers sug"):
        assert [m.id for m in a.search(query)] == [memory_id], (query, shown)
    a.resolve(memory_id, "content", "Prefers oolong, no sugar")
    assert a.search("sencha") == [] and a.search("🍵") == []
    assert [m.id for m in a.search("oolong")] == [memory_id]
    _fts_integrity(a)


def _downgrade_to_store_format_1(vault: Vault) -> None:
    """Rewrite ``vault``'s full-text index as store format 1 had it (no ``alternatives``)."""
    conn = vault.store.conn
    with vault.store.write():
        for statement in ("DROP TRIGGER memories_ad", "DROP TRIGGER memories_au", "DROP TABLE memories_fts",
                          "ALTER TABLE memories DROP COLUMN alternatives"):
            conn.execute(statement)
        conn.execute("CREATE VIRTUAL TABLE memories_fts USING fts5(content, category, tags, content='memories', "
                     "content_rowid='rowid', tokenize='unicode61')")
        conn.execute("CREATE TRIGGER memories_au AFTER UPDATE ON memories BEGIN INSERT INTO memories_fts "
                     "(memories_fts, rowid, content, category, tags) VALUES ('delete', old.rowid, old.content, "
                     "old.category, old.tags); INSERT INTO memories_fts (rowid, content, category, tags) VALUES "
                     "(new.rowid, new.content, new.category, new.tags); END")
        conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
        vault.store.set_meta("store_format", "1")


def test_opening_a_store_format_1_vault_indexes_the_candidates_of_its_conflicts(make_vault: MakeVault) -> None:
    a, memory_id = content_conflict(make_vault, "Prefers oolong, no sugar", "Prefers sencha")
    a.add("sencha in the cupboard")
    path = a.path
    _downgrade_to_store_format_1(a)
    a.close()
    with Vault.open(path) as reopened:
        assert reopened.store.get_meta("store_format") == str(STORE_FORMAT)
        assert {m.content for m in reopened.search("sencha")} >= {"sencha in the cupboard"}
        assert memory_id in {m.id for m in reopened.search("sencha")}
        assert memory_id in {m.id for m in reopened.search("oolong")}
        _fts_integrity(reopened)
        reopened.resolve(memory_id, "content", "Prefers oolong, no sugar")
        assert memory_id not in {m.id for m in reopened.search("sencha")}
        _fts_integrity(reopened)


def test_a_vault_of_a_newer_store_format_is_refused_untouched(make_vault: MakeVault) -> None:
    vault = make_vault("a")
    vault.add("written by a future version")
    path = vault.path
    _downgrade_to_store_format_1(vault)  # an index this version would migrate...
    vault.store.set_meta("store_format", str(STORE_FORMAT + 1))  # ...in a vault a newer version wrote
    vault.close()
    with pytest.raises(VaultError) as refused:
        Vault.open(path)
    assert refused.value.code == "VAULT_FORMAT"
    conn = sqlite3.connect(path / "vault.db")
    try:
        assert "alternatives" not in {row[1] for row in conn.execute("PRAGMA table_info(memories)")}
        assert conn.execute("SELECT value FROM meta WHERE key = 'store_format'").fetchone()[0] == str(STORE_FORMAT + 1)
    finally:
        conn.close()


def test_an_import_commits_in_batches_bounded_by_records_and_by_content(
    make_vault: MakeVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_module, "IMPORT_BATCH", 4)
    monkeypatch.setattr(import_module, "IMPORT_BATCH_CHARS", 1000)
    source = tmp_path / "in.jsonl"
    lines = [{"content": f"short {i}"} for i in range(6)] + [{"content": f"long {i} " + "x" * 400} for i in range(6)]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    v = make_vault()
    before = len(v.store.local_updates_after(0))
    progress: list[int] = []
    report = v.import_path(source, progress=progress.append)
    # 4 short (the record limit), 2 short + 2 long (the record limit), 3 long (over 1,000 characters), the last.
    assert progress == [4, 8, 11, 12] and report.added == 12
    assert len(v.store.local_updates_after(0)) - before == 4  # one local update per committed batch
    assert sorted(m.content for m in v.list()) == sorted(line["content"] for line in lines)


def test_a_lease_retired_by_another_process_is_never_released_back_into_use(make_vault: MakeVault) -> None:
    v = make_vault()
    v.add("written under the first client id")
    (first,) = v.devices()[v.device_id]["clients"]
    with Vault.open(v.path) as other, other.store.write():
        other.store.retire_leases()  # what a rebase or a restore seen by another process does
    v.close()  # releases the lease it still thinks it holds
    with Vault.open(v.path) as reader:
        assert first not in [cid for cid, _ in reader.store.leases()]
    with Vault.open(v.path) as again:
        again.add("a later run")
        assert first not in [cid for cid, _ in again.store.leases()]
