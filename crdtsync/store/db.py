"""The vault's state of record: one SQLite file in WAL mode with ``synchronous=FULL``.

Tables (README.md "Local store" documents them):

- ``updates``: append-only log of every integrated Yjs update, local or received, written in the same
  transaction that makes it visible. ``local`` marks this device's own writes (what a push sends).
- ``snapshots``: full Doc state as of an update id (compaction; opening = newest snapshot + later updates).
- ``inbox``: received updates that passed the strict reader but wait for what they depend on, outside yrs.
- ``quarantine``: refused updates with their stable error code, kept for inspection.
- ``memories`` (+ ``memories_fts``, an FTS5 index of content, category, tags and the candidates of those in
  conflict: :meth:`Store.put_memories` indexes new rows, triggers re-index updated and deleted ones): the
  materialized current records, written in the same transaction as the update that changes them, so reads
  never load the Doc; level-0 memories live only here (``level = 0``) and never enter the Doc. Their row
  format and every query over them are :mod:`crdtsync.store.memories`
  (:class:`~crdtsync.store.memories.MaterializedMemories`, a mixin of :class:`Store`).
- ``leases``: the Yjs client ids of this device and which live process holds each.
- ``relays``, ``cursors``, ``audit``, ``meta``.

A write is durable when :meth:`Store.write` returns: the transaction is committed with ``synchronous=FULL``.
Several processes may open the same file; each sees the others' commits.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdtsync.errors import InvalidInputError, NotFoundError, VaultError
from crdtsync.model.records import check_label, utf8_size
from crdtsync.store.authorlogs import AUTHOR_LOG_SCHEMA, AuthorLogs
from crdtsync.store.memories import FULL_TEXT_SCHEMA, MaterializedMemories, alternatives, conflicts_from_json

#: 2: ``memories_fts`` also indexes the candidates of fields in conflict (a vault of format 1 is migrated when
#: opened; crdtsync versions that know only format 1 refuse it, since they would index rows without them).
#: 3: the author logs (:mod:`crdtsync.store.authorlogs`; older versions would write without keeping them).
STORE_FORMAT = 3
#: Longest relay URL, in bytes of UTF-8.
MAX_URL_BYTES = 4096
#: KiB of SQLite page cache per connection, at most.
CACHE_KIB = 16384
#: Bytes the WAL file keeps after a checkpoint resets it (``PRAGMA journal_size_limit``): none, so frames
#: holding text since deleted do not stay in the file.
WAL_SIZE_LIMIT = 0

def _storage_error(exc: sqlite3.Error) -> VaultError | None:
    """The coded error for an SQLite failure that is the storage's, not the program's (by SQLite's primary
    result code: SQLITE_FULL 13, SQLITE_READONLY 8, SQLITE_IOERR 10), or None."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == 13:
        return VaultError("the disk holding the vault is full: nothing of this write was stored, the vault is as "
                          "it was; free some space and try again", code="VAULT_DISK_FULL")
    if primary == 8:
        return VaultError(f"the vault's database cannot be written ({exc}): nothing of this write was stored",
                          code="VAULT_UNWRITABLE")
    if primary == 10:
        return VaultError(f"the vault's disk failed ({exc}; a full disk does this too): nothing was stored; "
                          "free some space or check the disk, and try again", code="IO_ERROR")
    return None


#: Refusals that may not be the update's fault, so the update is tried again at later syncs: the integration
#: worker timed out or died (a slow or busy device, the OS reclaiming memory, a fault of yrs that depends on the
#: process: hazard ``hang-2``).
RETRYABLE = frozenset({"UPDATE_WORKER_TIMEOUT", "UPDATE_WORKER_CRASHED"})
#: The ``waiting`` of a held update no integration has tried yet.
UNTRIED = "not yet tried"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, local INTEGER NOT NULL, data BLOB NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE INDEX IF NOT EXISTS updates_local ON updates (local, id);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, upto INTEGER NOT NULL, data BLOB NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, data BLOB NOT NULL, waiting TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, data BLOB NOT NULL, code TEXT NOT NULL,
    message TEXT NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    attempts INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY, content TEXT NOT NULL, category TEXT, tags TEXT NOT NULL, level INTEGER NOT NULL,
    source TEXT, metadata TEXT, created TEXT NOT NULL, updated TEXT NOT NULL, created_by TEXT NOT NULL,
    updated_by TEXT NOT NULL, deleted INTEGER NOT NULL, conflicts TEXT NOT NULL,
    alternatives TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS memories_live ON memories (deleted, created);
CREATE INDEX IF NOT EXISTS memories_conflicted ON memories (id) WHERE conflicts != '[]';
CREATE TABLE IF NOT EXISTS leases (
    client_id INTEGER PRIMARY KEY, holder TEXT, acquired TEXT);
CREATE TABLE IF NOT EXISTS relays (
    name TEXT PRIMARY KEY, url TEXT NOT NULL, added TEXT NOT NULL, last_sync TEXT, last_error TEXT);
CREATE TABLE IF NOT EXISTS cursors (
    scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (scope, key));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    op TEXT NOT NULL, peer TEXT, detail TEXT NOT NULL, code TEXT);
"""


@dataclass(frozen=True)
class AuditRow:
    """One row of the audit trail: ``at`` ISO-8601 UTC, ``op`` (add, edit, sync, import...), ``peer`` (a relay or
    device, or None), ``detail`` (a JSON object: counts and bytes), ``code`` (an error code, or None)."""

    id: int
    at: str
    op: str
    peer: str | None
    detail: dict[str, Any]
    code: str | None


def _keep_private(path: Path) -> None:
    """Make the database file ``path`` readable by its owner only (it holds every memory in clear): create it
    with mode 0600 when missing, so that SQLite's WAL and shared-memory files, which take its mode, are 0600 too;
    narrow a wider mode (a vault written by a version that left it 0644) on it and on those files, where this
    user may (a read-only file or filesystem is left as it is: SQLite reports what it cannot write). POSIX only.

    Raises:
        OSError: the file cannot be created or opened, as the OS reports it.
    """
    if os.name != "posix":
        return
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            if name.stat().st_mode & 0o077:
                os.chmod(name, 0o600)


def _check_relay_name(name: str) -> None:
    """A relay name: a non-empty label (:func:`~crdtsync.model.records.check_label`). Raises InvalidInputError."""
    if not name:
        raise InvalidInputError("a relay needs a name")
    check_label("relay name", name)


def check_relay(name: str, url: str) -> None:
    """A relay ``name`` (a non-empty label) and ``url`` (non-empty, at most MAX_URL_BYTES of UTF-8) that the
    store can hold. Raises InvalidInputError, for text that is not Unicode too (a command-line argument that was
    not UTF-8)."""
    _check_relay_name(name)
    if not url or utf8_size("relay URL", url) > MAX_URL_BYTES:
        raise InvalidInputError(f"a relay URL must be non-empty and at most {MAX_URL_BYTES} bytes")


#: The datagram socket a ``serve`` daemon listens on in the vault folder: every committed write transaction of
#: any process sends it one byte (when it exists), so the daemon sends the change to its peers at once.
POKE_NAME = "serve.sock"


def poke(path: Path) -> None:
    """Send one byte to the datagram socket at ``path`` if something listens there; never raises, never blocks
    (the daemon also polls, so a lost poke only delays)."""
    if not path.exists():
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(b"\x01", str(path))


class Store(MaterializedMemories, AuthorLogs):
    """One open connection to a vault's SQLite file. The methods over the materialized memories (``put_rows``,
    ``memory``, ``memories``, ``search``, ``counts``...) come from the mixin
    :class:`~crdtsync.store.memories.MaterializedMemories`.

    Use :meth:`write` for every change: it runs ``BEGIN IMMEDIATE`` (so a process that writes sees every
    commit before its own) and commits durably on exit, or rolls back when the block raises.

    Raises:
        VaultError: the file cannot be opened (code ``VAULT_UNREADABLE``), is newer than this version
            (``VAULT_FORMAT``), or stays locked by another process past ``busy_timeout`` (``VAULT_LOCKED``).
    """

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []
        try:
            _keep_private(path)
        except OSError as exc:
            raise VaultError(f"cannot open the vault database {path}: {exc.strerror or exc}",
                             code="VAULT_UNREADABLE") from None
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            # Deleted rows (an edited or removed memory's old text, a withdrawn level-0 record) are overwritten
            # with zeros instead of lingering in free pages; the WAL is cut back after each checkpoint, so
            # their old frames do not linger there either.
            self.conn.execute("PRAGMA secure_delete=ON")
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # A page cache of up to 16 MiB (SQLite's default is 2 MiB): a bulk write (an import, a first pull)
            # inserts ids in random order, and a cache the memories index does not fit in spills dirty pages to
            # the WAL mid-transaction. 100k rows in 10k-row transactions: 2.1 s -> 1.5 s. Pages are allocated as
            # they are used, so a small vault costs no more.
            self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.conn.executescript(_SCHEMA + AUTHOR_LOG_SCHEMA)
            version = self.get_meta("store_format")
            if version is not None and int(version) > STORE_FORMAT:
                self.conn.close()
                raise VaultError(
                    f"{path} was written by a newer crdtsync (store format {int(version)}); upgrade crdtsync",
                    code="VAULT_FORMAT",
                )
            self._ensure_full_text_index()
            self._add_quarantine_attempts()
            if version != str(STORE_FORMAT):
                self.set_meta("store_format", str(STORE_FORMAT))
        except sqlite3.Error as exc:
            coded = _storage_error(exc) or VaultError(f"cannot open the vault database {path}: {exc}",
                                                      code="VAULT_UNREADABLE")
            raise coded from exc

    def _ensure_full_text_index(self) -> None:
        """Create ``memories_fts`` and its triggers (:data:`~crdtsync.store.memories.FULL_TEXT_SCHEMA`) in a new
        vault. In a vault of store format 1 (its index lacks the candidates of conflicts, and the first versions
        also indexed through a per-row insert trigger), add and fill ``memories.alternatives``, replace the index
        and its triggers, and rebuild it from the rows: in one transaction, once, whichever process opens the
        vault first."""
        if self._full_text_index_current():
            return
        with self.write():
            if self._full_text_index_current():  # another process migrated it meanwhile
                return
            for name in ("memories_ai", "memories_ad", "memories_au"):
                self.conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            self.conn.execute("DROP TABLE IF EXISTS memories_fts")
            if "alternatives" not in {row[1] for row in self.conn.execute("PRAGMA table_info(memories)")}:
                self.conn.execute("ALTER TABLE memories ADD COLUMN alternatives TEXT NOT NULL DEFAULT ''")
                conflicted = self.conn.execute("SELECT id, conflicts FROM memories WHERE conflicts != '[]'")
                self.conn.executemany("UPDATE memories SET alternatives = ? WHERE id = ?",
                                      [(alternatives(conflicts_from_json(raw)), memory_id)
                                       for memory_id, raw in conflicted.fetchall()])
            for statement in FULL_TEXT_SCHEMA:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")

    def _full_text_index_current(self) -> bool:
        """Whether ``memories_fts`` exists, indexes ``alternatives`` and no per-row insert trigger is left."""
        if self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'memories_ai'").fetchone() is not None:
            return False
        return "alternatives" in {row[1] for row in self.conn.execute("PRAGMA table_info(memories_fts)")}

    def _add_quarantine_attempts(self) -> None:
        """Migrate a vault written before refused updates were tried again: add ``quarantine.attempts``."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(quarantine)")}
        if "attempts" not in columns:
            with self.write():
                self.conn.execute("ALTER TABLE quarantine ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed durably when the block exits normally. Nested
        use joins the outer transaction. On failure nothing of it is stored.

        Raises:
            VaultError: ``VAULT_LOCKED`` (another process holds the vault past the busy timeout),
                ``VAULT_DISK_FULL``, ``VAULT_UNWRITABLE`` (a read-only database) or ``IO_ERROR`` (the disk
                failed) when SQLite reports so, in the block or at commit.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise VaultError(f"the vault is locked by another process: {exc}", code="VAULT_LOCKED") from exc
        self._depth = 1
        try:
            yield self.conn
        except BaseException as exc:
            self._abandon()
            coded = _storage_error(exc) if isinstance(exc, sqlite3.Error) else None
            if coded is not None:
                raise coded from exc
            raise
        self._depth = 0
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abandon()
            coded = _storage_error(exc)
            if coded is None:
                raise
            raise coded from exc
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()
        poke(self.path.parent / POKE_NAME)

    def _abandon(self) -> None:
        """Roll the current transaction back (SQLite may have done so already, as on a full disk)."""
        self._depth = 0
        self._after_commit.clear()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current :meth:`write` transaction (the outermost one) has committed; it is
        dropped if the transaction rolls back. Call inside :meth:`write`."""
        self._after_commit.append(callback)

    # -- meta -------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        """The value stored under ``key`` in ``meta`` (str or bytes), or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str | bytes) -> None:
        """Store ``value`` under ``key`` in ``meta`` (its own transaction unless inside :meth:`write`)."""
        with self.write():
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        """Remove ``key`` from ``meta`` (nothing when it is absent). Call inside a write transaction."""
        self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def state_generation(self) -> int:
        """How many times updates left the log other than by compaction (a stored update quarantined, unpushed
        writes dropped). A process whose Doc or integration worker was loaded under another generation reloads
        it from the store: it may hold what left."""
        return int(self.get_meta("state_generation") or 0)

    def new_state_generation(self) -> None:
        """Count one more generation (see :meth:`state_generation`). Call inside :meth:`write`, in the
        transaction that takes updates out of the log."""
        self.set_meta("state_generation", str(self.state_generation() + 1))

    # -- update log and snapshots -----------------------------------------------------------------------

    def append_update(self, data: bytes, *, origin: str, local: bool) -> int:
        """Append one integrated update to the log; returns its id. Call inside :meth:`write`."""
        cur = self.conn.execute(
            "INSERT INTO updates (origin, local, data) VALUES (?, ?, ?)", (origin, int(local), data)
        )
        return int(cur.lastrowid or 0)

    def updates_after(self, after: int) -> list[tuple[int, bytes]]:
        """Every logged update with id > ``after``, oldest first, as (id, bytes)."""
        rows = self.conn.execute("SELECT id, data FROM updates WHERE id > ? ORDER BY id", (after,))
        return [(r[0], r[1]) for r in rows]

    def local_updates_after(self, after: int) -> list[tuple[int, bytes]]:
        """This device's own logged updates with id > ``after`` (what a push must send), oldest first."""
        rows = self.conn.execute("SELECT id, data FROM updates WHERE local = 1 AND id > ? ORDER BY id", (after,))
        return [(r[0], r[1]) for r in rows]

    def count_local_updates_after(self, after: int) -> int:
        """How many of this device's own logged updates have id > ``after`` (without reading them)."""
        row = self.conn.execute("SELECT count(*) FROM updates WHERE local = 1 AND id > ?", (after,)).fetchone()
        return int(row[0])

    def last_update_id(self) -> int:
        """The id of the newest logged update, or of the newest snapshot's end when the log is compacted."""
        row = self.conn.execute(
            "SELECT max(coalesce((SELECT max(id) FROM updates), 0), coalesce((SELECT max(upto) FROM snapshots), 0))"
        ).fetchone()
        return int(row[0])

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        """The newest snapshot as (upto update id, full Doc update bytes), or None."""
        row = self.conn.execute("SELECT upto, data FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def snapshot_upto(self) -> int:
        """The update id the newest snapshot covers (0: no snapshot), without reading its blob."""
        row = self.conn.execute("SELECT upto FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        return 0 if row is None else int(row[0])

    def updates_since_snapshot(self) -> tuple[int, int]:
        """(count, total bytes) of logged updates past the newest snapshot: what opening must replay."""
        upto = self.snapshot_upto()
        row = self.conn.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM updates WHERE id > ?", (upto,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def save_snapshot(self, upto: int, data: bytes, *, keep_local_after: int, carry: Iterable[int] = ()) -> None:
        """Store a snapshot of the Doc as of update ``upto`` and drop the log rows it covers, except this
        device's own rows with id > ``keep_local_after`` (not yet pushed to every relay). The rows ``carry``
        (updates the snapshot does not hold: pending in the Doc) are logged again after it, under new ids, so
        that loading replays them. Older snapshots go. Call inside :meth:`write`."""
        for update_id in carry:
            self.conn.execute("INSERT INTO updates (origin, local, data, at) SELECT origin, local, data, at "
                              "FROM updates WHERE id = ?", (update_id,))
            self.conn.execute("DELETE FROM updates WHERE id = ?", (update_id,))
        self.conn.execute("INSERT INTO snapshots (upto, data) VALUES (?, ?)", (upto, data))
        self.conn.execute(
            "DELETE FROM updates WHERE id <= ? AND NOT (local = 1 AND id > ?)", (upto, keep_local_after)
        )
        self.conn.execute("DELETE FROM snapshots WHERE id < (SELECT max(id) FROM snapshots)")

    # -- inbox and quarantine ---------------------------------------------------------------------------

    def is_received(self, update_id: int) -> bool:
        """Whether logged update ``update_id`` was received from another device (not written here)."""
        row = self.conn.execute("SELECT local FROM updates WHERE id = ?", (update_id,)).fetchone()
        return row is not None and row[0] == 0

    def unlog_received(self, update_id: int, *, code: str, message: str) -> int:
        """Take the received update ``update_id`` out of the log into the quarantine, and move every received
        update logged after it back to the inbox, to be checked and integrated again (some may depend on it).
        Returns how many went back to the inbox. Call inside :meth:`write`."""
        origin, data = self.conn.execute("SELECT origin, data FROM updates WHERE id = ? AND local = 0",
                                         (update_id,)).fetchone()
        self.quarantine(bytes(data), origin=origin, code=code, message=message)
        later = self.conn.execute("SELECT id, origin, data FROM updates WHERE id > ? AND local = 0 ORDER BY id",
                                  (update_id,)).fetchall()
        for _, later_origin, later_data in later:
            self.hold(bytes(later_data), origin=later_origin, waiting="checked again: an earlier update left the log")
        self.conn.execute("DELETE FROM updates WHERE id >= ? AND local = 0", (update_id,))
        return len(later)

    def hold(self, data: bytes, *, origin: str, waiting: str) -> int:
        """Keep a received update that waits for its dependencies; ``waiting`` says for what. Returns its id."""
        cur = self.conn.execute(
            "INSERT INTO inbox (origin, data, waiting) VALUES (?, ?, ?)", (origin, data, waiting)
        )
        return int(cur.lastrowid or 0)

    def held(self) -> list[tuple[int, str, bytes]]:
        """Every held update as (id, origin, bytes), oldest first."""
        rows = self.conn.execute("SELECT id, origin, data FROM inbox ORDER BY id")
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def wait_for(self, inbox_id: int, clients: Iterable[int]) -> None:
        """Record which Yjs client ids the held update ``inbox_id`` waits for (what its last try found missing),
        and the newest received update logged at that try (see :meth:`due_count`). Call inside :meth:`write`."""
        self.conn.execute("UPDATE inbox SET waiting = ? WHERE id = ?", (self._wait_record(clients), inbox_id))

    def _wait_record(self, clients: Iterable[int]) -> str:
        """``waiting`` of a tried update: JSON ``{"clients": [client id...], "after": update id}``."""
        return json.dumps({"clients": sorted(clients), "after": self._last_received()})

    def _last_received(self) -> int:
        """The id of the newest received update in the log (0 when none is)."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM updates WHERE local = 0").fetchone()[0])

    def held_waits(self) -> list[dict[str, Any]]:
        """Each held update, oldest first, as ``{origin, since (ISO-8601 UTC), clients}``: the Yjs client ids it
        waits for as its last try found them (empty before its first try)."""
        out = []
        for origin, at, waiting in self.conn.execute("SELECT origin, at, waiting FROM inbox ORDER BY id"):
            try:
                clients = [int(c) for c in json.loads(waiting)["clients"]]
            except (ValueError, TypeError, KeyError):
                clients = []
            out.append({"origin": origin, "since": at, "clients": clients})
        return out

    def split_held(self, inbox_id: int, first: bytes, rest: bytes) -> None:
        """Replace the held update ``inbox_id`` by ``first`` and hold ``rest`` (from the same origin) after it:
        two updates that together do what it did (:func:`crdtsync.model.ystate.split_unknown_deletes`). Call
        inside :meth:`write`."""
        (origin,) = self.conn.execute("SELECT origin FROM inbox WHERE id = ?", (inbox_id,)).fetchone()
        self.conn.execute("UPDATE inbox SET data = ?, waiting = ? WHERE id = ?", (first, UNTRIED, inbox_id))
        self.hold(rest, origin=origin, waiting="deletes of structs not here yet")

    def narrow_held(self, inbox_id: int, rest: bytes, clients: Iterable[int]) -> None:
        """Keep of the held update ``inbox_id`` only ``rest``, what of it still waits (its other part was
        logged in this transaction: :func:`crdtsync.model.ystate.split_integrable`), waiting for the Yjs client
        ids ``clients`` (as :meth:`wait_for` records). Call inside :meth:`write`."""
        self.conn.execute("UPDATE inbox SET data = ?, waiting = ? WHERE id = ?",
                          (rest, self._wait_record(clients), inbox_id))

    def held_origins(self) -> set[str]:
        """The origins (sender labels: device ids for a mailbox) of the held updates."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT origin FROM inbox")}

    def held_count(self) -> int:
        """How many received updates wait for dependencies."""
        return int(self.conn.execute("SELECT count(*) FROM inbox").fetchone()[0])

    def due_count(self) -> int:
        """How many held updates are due a try: not tried since they were stored (``waiting`` is :data:`UNTRIED`
        or another note, not a wait :meth:`wait_for` recorded), or tried before the newest received update was logged,
        which may be what they waited for (a process stopped between that update's commit and their try). A
        wait recorded without ``after`` (by crdtsync up to 810fad0) counts as current."""
        return int(self.conn.execute(
            "SELECT count(*) FROM inbox WHERE CASE WHEN json_valid(waiting) THEN json_extract(waiting, '$.after') < ? "
            "ELSE 1 END", (self._last_received(),)).fetchone()[0])

    def release(self, inbox_id: int) -> None:
        """Drop a held update (it integrated or was quarantined). Call inside :meth:`write`."""
        self.conn.execute("DELETE FROM inbox WHERE id = ?", (inbox_id,))

    def quarantine(self, data: bytes, *, origin: str, code: str, message: str) -> None:
        """Keep a refused update with its error code. An update whose row has a code of :data:`RETRYABLE` (it
        was tried again, :meth:`requeue_quarantined`, or arrived again) keeps that one row, with the new code and
        message. Call inside :meth:`write`."""
        marks = ",".join("?" * len(RETRYABLE))
        again = self.conn.execute(
            "UPDATE quarantine SET code = ?, message = ?, at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
            f"WHERE length(data) = ? AND data = ? AND code IN ({marks})",
            (code, message, len(data), data, *sorted(RETRYABLE)))
        if again.rowcount == 0:
            self.conn.execute(
                "INSERT INTO quarantine (origin, data, code, message) VALUES (?, ?, ?, ?)",
                (origin, data, code, message),
            )

    def requeue_quarantined(self, *, max_attempts: int) -> list[tuple[int, int]]:
        """Hold again (in the inbox) every refused update whose code is :data:`RETRYABLE`, that was tried fewer
        than ``max_attempts`` times and is not held already (a retry that waits for other updates); its row
        stays until it integrates (:meth:`forget_quarantined`) or is refused again. Returns (inbox id, which try
        this is: 2 or more) of each. Call inside :meth:`write`."""
        marks = ",".join("?" * len(RETRYABLE))
        rows = self.conn.execute(
            f"SELECT id, origin, data, code, attempts FROM quarantine q WHERE code IN ({marks}) AND attempts < ? "
            "AND NOT EXISTS (SELECT 1 FROM inbox i WHERE length(i.data) = length(q.data) AND i.data = q.data) "
            "ORDER BY id", (*sorted(RETRYABLE), max_attempts)).fetchall()
        held = []
        for quarantine_id, origin, data, code, attempts in rows:
            self.conn.execute("UPDATE quarantine SET attempts = ? WHERE id = ?", (attempts + 1, quarantine_id))
            held.append((self.hold(bytes(data), origin=origin,
                                   waiting=f"tried again after {code} (try {attempts + 1} of {max_attempts})"),
                         attempts + 1))
        return held

    def forget_quarantined(self, data: bytes) -> None:
        """Drop the :data:`RETRYABLE` quarantine row of an update that has now integrated (a retry that
        succeeded); a refusal for another reason stays on record. Call inside :meth:`write`."""
        if self.conn.execute("SELECT 1 FROM quarantine LIMIT 1").fetchone():  # else skip binding a large blob
            marks = ",".join("?" * len(RETRYABLE))
            self.conn.execute(f"DELETE FROM quarantine WHERE length(data) = ? AND data = ? AND code IN ({marks})",
                              (len(data), data, *sorted(RETRYABLE)))

    def quarantined(self) -> list[tuple[str, str, str, str, int]]:
        """Every refused update as (at, origin, code, message, tries so far), oldest first."""
        rows = self.conn.execute("SELECT at, origin, code, message, attempts FROM quarantine ORDER BY id")
        return [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    # -- leases, relays, cursors, audit -----------------------------------------------------------------

    def leases(self) -> list[tuple[int, str | None]]:
        """Every Yjs client id of this device with its holder (``"pid:start:token"``) or None when free."""
        return [(int(r[0]), r[1]) for r in self.conn.execute("SELECT client_id, holder FROM leases ORDER BY client_id")]

    def set_lease(self, client_id: int, holder: str | None) -> None:
        """Record that ``holder`` (or nobody) holds ``client_id``. Call inside :meth:`write`."""
        self.conn.execute(
            "INSERT INTO leases (client_id, holder, acquired) VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
            "ON CONFLICT (client_id) DO UPDATE SET holder = excluded.holder, acquired = excluded.acquired",
            (client_id, holder),
        )

    def free_lease(self, client_id: int, holder: str) -> None:
        """Release ``client_id`` if ``holder`` still holds it; a lease retired meanwhile stays retired. Call
        inside :meth:`write`."""
        self.conn.execute("UPDATE leases SET holder = NULL WHERE client_id = ? AND holder = ?", (client_id, holder))

    def lease_holder(self, client_id: int) -> str | None:
        """Who holds the lease of ``client_id`` (None: free, or retired: no such lease any more)."""
        row = self.conn.execute("SELECT holder FROM leases WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else row[0]

    def drop_local_updates(self, update_ids: Iterable[int]) -> None:
        """Delete this device's own logged updates ``update_ids`` (a rebase: see
        :meth:`crdtsync.store.replica.Replica.drop_unpushed`). Call inside :meth:`write`."""
        self.conn.executemany("DELETE FROM updates WHERE id = ? AND local = 1", [(i,) for i in update_ids])

    def retire_leases(self) -> list[int]:
        """Forget every client id of this device so that none is ever leased again (a restored or copied store:
        see :mod:`crdtsync.store.incarnation`); returns them. Call inside :meth:`write`."""
        retired = [cid for cid, _ in self.leases()]
        self.conn.execute("DELETE FROM leases")
        return retired

    def add_relay(self, name: str, url: str) -> None:
        """Save a relay (a mailbox URL under a short name). Raises ``InvalidInputError``: ``RELAY_EXISTS``, or a
        name or URL that is empty or not Unicode text (a command-line argument that was not UTF-8), or a name over
        the label limit."""
        check_relay(name, url)
        with self.write():
            if self.conn.execute("SELECT 1 FROM relays WHERE name = ?", (name,)).fetchone():
                raise InvalidInputError(f"a relay named {name!r} exists; remove it first", code="RELAY_EXISTS")
            self.conn.execute(
                "INSERT INTO relays (name, url, added) VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (name, url),
            )

    def remove_relay(self, name: str) -> None:
        """Forget a relay and its cursors. Raises ``NotFoundError`` when there is none of that name,
        ``InvalidInputError`` for a name no relay can have (see :meth:`add_relay`)."""
        _check_relay_name(name)
        with self.write():
            if self.conn.execute("DELETE FROM relays WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"no relay named {name!r}; `crdtsync relay list` shows them")
            for scope in ("push", "push-state"):
                self.conn.execute("DELETE FROM cursors WHERE scope = ? AND key = ?", (scope, name))
            for prefix in ("pull:", "seen:", "acked:"):
                self.conn.execute("DELETE FROM cursors WHERE scope = ?", (prefix + name,))
            self.forget_relay_heads(name)

    def relays(self) -> list[dict[str, Any]]:
        """Every relay as ``{name, url, added, last_sync, last_error}``, by name."""
        rows = self.conn.execute("SELECT name, url, added, last_sync, last_error FROM relays ORDER BY name")
        return [dict(r) for r in rows]

    def record_sync(self, relay: str, report: dict[str, Any]) -> None:
        """Note a sync of ``relay``: its time, its first error (or none), and an audit row with ``report``."""
        errors = report.get("errors") or []
        last_error = f"[{errors[0]['code']}] {errors[0]['message']}" if errors else None
        with self.write():
            self.conn.execute(
                "UPDATE relays SET last_sync = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), last_error = ? WHERE name = ?",
                (last_error, relay),
            )
            self.audit("sync", peer=relay, code=errors[0]["code"] if errors else None, **report)

    def get_cursor(self, scope: str, key: str) -> bytes | None:
        """A cursor value (opaque bytes) stored by a sync layer, or None."""
        row = self.conn.execute("SELECT value FROM cursors WHERE scope = ? AND key = ?", (scope, key)).fetchone()
        return None if row is None else bytes(row[0])

    def set_cursor(self, scope: str, key: str, value: bytes) -> None:
        """Store a cursor value. Call inside :meth:`write` together with the data it covers."""
        self.conn.execute(
            "INSERT OR REPLACE INTO cursors (scope, key, value) VALUES (?, ?, ?)", (scope, key, value)
        )

    def delete_cursor(self, scope: str, key: str) -> None:
        """Remove a cursor (nothing happens when there is none). Call inside :meth:`write`."""
        self.conn.execute("DELETE FROM cursors WHERE scope = ? AND key = ?", (scope, key))

    def cursors(self, scope: str) -> dict[str, bytes]:
        """Every cursor of ``scope`` as ``{key: value}``."""
        rows = self.conn.execute("SELECT key, value FROM cursors WHERE scope = ?", (scope,))
        return {r[0]: bytes(r[1]) for r in rows}

    def raise_alarm(self, code: str, message: str, **context: str) -> None:
        """Record a persistent alarm (for example ``MAILBOX_FORK``) that ``status`` shows until cleared, with
        an audit row. Alarms with the same code and context are kept once."""
        with self.write():
            alarms = self.alarms()
            entry = {"code": code, "message": message, **context}
            if not any({k: a.get(k) for k in ("code", *context)} == {"code": code, **context} for a in alarms):
                alarms.append({**entry, "at": self.conn.execute(
                    "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]})
                self.set_meta("alarms", json.dumps(alarms))
            self.audit("alarm", code=code, message=message, **context)

    def clear_alarms(self, code: str | None = None) -> int:
        """Forget the alarms with ``code`` (every alarm when None), with an audit row; returns how many. A cause
        that persists raises its alarm again at the next sync."""
        with self.write():
            alarms = self.alarms()
            kept = [a for a in alarms if code is not None and a.get("code") != code]
            self.set_meta("alarms", json.dumps(kept))
            cleared = len(alarms) - len(kept)
            self.audit("alarms cleared", code=code, count=cleared)
            return cleared

    def alarms(self) -> list[dict[str, str]]:
        """Every persistent alarm: ``{code, message, at, ...context}``."""
        raw = self.get_meta("alarms")
        loaded: list[dict[str, str]] = json.loads(raw) if raw else []
        return loaded

    def audit(self, op: str, *, peer: str | None = None, code: str | None = None, **detail: Any) -> None:
        """Append a row to the audit trail (its own transaction unless inside :meth:`write`)."""
        with self.write():
            self.conn.execute(
                "INSERT INTO audit (op, peer, detail, code) VALUES (?, ?, ?, ?)",
                (op, peer, json.dumps(detail, sort_keys=True), code),
            )

    def audit_rows(self, *, limit: int = 50) -> list[AuditRow]:
        """The newest ``limit`` audit rows, newest first."""
        rows = self.conn.execute(
            "SELECT id, at, op, peer, detail, code FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [AuditRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]
