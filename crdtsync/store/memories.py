"""The materialized memories: the ``memories`` table's row format and the queries over it.

Every current record is kept as one row of ``memories`` (and indexed in ``memories_fts``), written in the same
transaction as the update that changes it, so reads never load the Doc. This module owns that row: its columns
(:data:`MemoryRow`, built by :func:`memory_row`, which the integration worker also uses), how a row reads back
as a :class:`~crdtsync.model.records.Memory` or its conflicts, and :class:`MaterializedMemories`, the mixin of
:class:`crdtsync.store.db.Store` that writes, reads, searches and counts the rows. The table and its triggers
are declared with the rest of the schema in :mod:`crdtsync.store.db`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from crdtsync.model.records import Candidate, Conflict, Memory
from crdtsync.store.search import CONTAINS, fts_query, like_pattern, symbol_terms

_MEMORY_COLUMNS = (
    "id, content, category, tags, level, source, metadata, created, updated, created_by, updated_by, deleted, "
    "conflicts, alternatives"
)
_ROW_WIDTH = len(_MEMORY_COLUMNS.split(","))
_UPSERT_SET = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _MEMORY_COLUMNS.split(",")[1:])


_INDEXED = "content, category, tags, alternatives"
#: The full-text index of the materialized rows and the triggers that re-index a row updated or deleted
#: (:meth:`MaterializedMemories.put_rows` indexes new rows itself), created by :class:`crdtsync.store.db.Store`
#: in a new vault or in place of a format-1 index.
FULL_TEXT_SCHEMA = (
    f"CREATE VIRTUAL TABLE memories_fts USING fts5({_INDEXED}, content='memories', content_rowid='rowid', "
    "tokenize='unicode61')",
    f"CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN INSERT INTO memories_fts (memories_fts, rowid, "
    f"{_INDEXED}) VALUES ('delete', old.rowid, old.content, old.category, old.tags, old.alternatives); END",
    f"CREATE TRIGGER memories_au AFTER UPDATE ON memories BEGIN INSERT INTO memories_fts (memories_fts, rowid, "
    f"{_INDEXED}) VALUES ('delete', old.rowid, old.content, old.category, old.tags, old.alternatives); "
    f"INSERT INTO memories_fts (rowid, {_INDEXED}) VALUES (new.rowid, new.content, new.category, new.tags, "
    "new.alternatives); END",
)


def new_memory_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 (RFC 9562) string: 48-bit Unix time in milliseconds, then random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


#: One row of the ``memories`` table, in :data:`_MEMORY_COLUMNS` order: id, content, category, tags (JSON
#: array, sorted), level, source, metadata (JSON text or None), created, updated, created_by, updated_by,
#: deleted (0 or 1), conflicts (JSON array of :meth:`Conflict.to_json`), alternatives (:func:`alternatives`).
MemoryRow = tuple[Any, ...]
#: The JSON of the row's tags, metadata and conflicts columns (built once: ``json.dumps`` with options builds an
#: encoder on every call).
_ROW_JSON = json.JSONEncoder(ensure_ascii=False)


@lru_cache(maxsize=4096)
def _tags_json(tags: frozenset[str]) -> str:
    """The tags column: a JSON array of the tags, sorted. Cached: a vault has few distinct tag sets, and a
    first sync or an import builds 100k rows."""
    return _ROW_JSON.encode(sorted(tags))


#: The fields whose conflict candidates the full-text index holds (:func:`alternatives`).
_SEARCHED_FIELDS = ("content", "category")


def alternatives(conflicts: Iterable[Conflict]) -> str:
    """The ``alternatives`` column that ``memories_fts`` indexes beside content, category and tags: every
    candidate value of a content or category conflict, one per line ('' without one), so that a search finds a
    memory by a value it may yet be resolved to."""
    return "\n".join(str(candidate.value) for conflict in conflicts if conflict.field in _SEARCHED_FIELDS
                     for candidate in conflict.candidates if candidate.value is not None)


def memory_row(memory: Memory, conflicts: list[Conflict]) -> MemoryRow:
    """The ``memories`` row of ``memory`` and its conflicts (what :meth:`Store.put_rows` stores)."""
    return (
        memory.id,
        memory.content,
        memory.category,
        _tags_json(frozenset(memory.tags)),
        memory.level,
        memory.source,
        None if memory.metadata is None else _ROW_JSON.encode(memory.metadata),
        memory.created,
        memory.updated,
        memory.created_by,
        memory.updated_by,
        int(memory.deleted),
        _ROW_JSON.encode([c.to_json() for c in conflicts]) if conflicts else "[]",
        alternatives(conflicts) if conflicts else "",
    )


def _row_to_memory(row: sqlite3.Row) -> Memory:
    return Memory(
        id=row["id"],
        content=row["content"],
        category=row["category"],
        tags=frozenset(json.loads(row["tags"])),
        level=row["level"],
        source=row["source"],
        metadata=json.loads(row["metadata"]) if row["metadata"] is not None else None,
        created=row["created"],
        updated=row["updated"],
        created_by=row["created_by"],
        updated_by=row["updated_by"],
        deleted=bool(row["deleted"]),
        conflicts=tuple(c["field"] for c in json.loads(row["conflicts"])),
    )


def conflicts_from_json(raw: str) -> list[Conflict]:
    """The conflicts of a row's ``conflicts`` column (JSON text)."""
    return [
        Conflict(
            memory_id=c["memory_id"],
            field=c["field"],
            candidates=tuple(Candidate(value=x["value"], device=x["device"], at=x["at"], agent=x.get("agent"))
                             for x in c["candidates"]),
        )
        for c in json.loads(raw)
    ]


def _past_prefix(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (None: there is none, the prefix
    being empty or all U+10FFFF): its last character that can grow, grown by one code point (surrogates, which
    no UTF-8 text holds, skipped), the rest dropped."""
    for i in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[i])
        if code < 0x10FFFF:
            grown = 0xE000 if 0xD800 <= code + 1 <= 0xDFFF else code + 1
            return prefix[:i] + chr(grown)
    return None


def _filters(table: str, category: str | None, tags: Iterable[str]) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) on the rows of ``table`` (a name or alias of ``memories``): of
    ``category``, when given, and holding every one of ``tags`` (exact names)."""
    conditions: list[str] = []
    params: list[Any] = []
    if category is not None:
        conditions.append(f"{table}.category = ?")
        params.append(category)
    for tag in dict.fromkeys(tags):
        conditions.append(f"EXISTS (SELECT 1 FROM json_each({table}.tags) WHERE json_each.value = ?)")
        params.append(tag)
    return conditions, params


class MaterializedMemories:
    """Mixin of :class:`crdtsync.store.db.Store`: its methods over the ``memories`` table (and its full-text
    index). It holds no state of its own; it uses the store's connection ``conn``, and the writes expect to run
    inside :meth:`crdtsync.store.db.Store.write` as each one says."""

    conn: sqlite3.Connection

    def put_memory(self, memory: Memory, conflicts: list[Conflict]) -> None:
        """Insert or replace the materialized row of ``memory``. Call inside :meth:`write`."""
        self.put_memories([(memory, conflicts)])

    def put_memories(self, rows: Iterable[tuple[Memory, list[Conflict]]]) -> None:
        """Insert or replace the materialized rows of memories and their conflicts (see :meth:`put_rows`)."""
        self.put_rows(memory_row(memory, conflicts) for memory, conflicts in rows)

    def put_rows(self, rows: Iterable[MemoryRow]) -> None:
        """Insert or replace materialized rows (:func:`memory_row`) and keep the full-text index in step. Call
        inside :meth:`write`.

        Rows of ids already stored are updated in place (the ``memories_au`` trigger re-indexes them); new rows
        are inserted with one ``executemany`` and indexed afterwards with one ``INSERT ... SELECT`` over the
        rowids past the table's maximum before the insert. At 100k rows that is about 2.7x faster than a
        per-row insert trigger. When ``rows`` repeats an id, the last row wins."""
        latest = {row[0]: row for row in rows}
        if not latest:
            return
        (before,) = self.conn.execute("SELECT coalesce(max(rowid), 0) FROM memories").fetchone()
        self.conn.executemany(
            f"INSERT INTO memories ({_MEMORY_COLUMNS}) VALUES ({','.join('?' * _ROW_WIDTH)}) "
            f"ON CONFLICT (id) DO UPDATE SET {_UPSERT_SET}",
            latest.values(),
        )
        self.conn.execute(
            f"INSERT INTO memories_fts (rowid, {_INDEXED}) SELECT rowid, {_INDEXED} FROM memories WHERE rowid > ?",
            (before,),
        )

    def ids_starting_with(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` memory ids (deleted and level-0 ones too) that start with ``prefix``, in id order: a
        range scan of the primary key, from ``prefix`` to the first string past every string it starts (SQLite
        compares text as UTF-8 bytes, which orders as code points do)."""
        end = _past_prefix(prefix)
        if end is None:
            rows = self.conn.execute("SELECT id FROM memories WHERE id >= ? ORDER BY id LIMIT ?", (prefix, limit))
        else:
            rows = self.conn.execute("SELECT id FROM memories WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                     (prefix, end, limit))
        return [memory_id for (memory_id,) in rows]

    def existing_ids(self, memory_ids: Iterable[str], *, level: int | None = None) -> set[str]:
        """Which of ``memory_ids`` have a materialized row (deleted or not), of ``level`` when given."""
        ids = list(memory_ids)
        found: set[str] = set()
        where = "" if level is None else f" AND level = {int(level)}"
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id FROM memories WHERE id IN ({marks}){where}"
            found.update(r[0] for r in self.conn.execute(sql, chunk))
        return found

    def shared_ids(self) -> set[str]:
        """Every memory id materialized at level 1 (the shared Doc's records, deleted ones included)."""
        return {r[0] for r in self.conn.execute("SELECT id FROM memories WHERE level = 1")}

    def drop_memory(self, memory_id: str) -> None:
        """Remove the materialized row of ``memory_id``. Call inside :meth:`write`."""
        self.conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))

    def rename_memory(self, memory_id: str, new_id: str) -> None:
        """Give the materialized row of ``memory_id`` the id ``new_id`` (its full-text entry follows, through
        the ``memories_au`` trigger). Only for a level-0 row: a shared memory's id is its key in the Doc. Call
        inside :meth:`write`."""
        self.conn.execute("UPDATE memories SET id = ? WHERE id = ? AND level = 0", (new_id, memory_id))

    def memory(self, memory_id: str) -> Memory | None:
        """The materialized memory ``memory_id`` (deleted ones too), or None."""
        row = self.conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return None if row is None else _row_to_memory(row)

    def memory_level(self, memory_id: str) -> int | None:
        """The level of ``memory_id`` here, or None when it is not stored."""
        row = self.conn.execute("SELECT level FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return None if row is None else int(row[0])

    def memories(self, *, limit: int | None = None, include_deleted: bool = False, category: str | None = None,
                 tags: Iterable[str] = ()) -> list[Memory]:
        """Materialized memories, newest created first; live ones only unless ``include_deleted``; of
        ``category`` only and holding every one of ``tags``, when given (exact, case-sensitive)."""
        conditions, params = _filters("memories", category, tags)
        if not include_deleted:
            conditions.insert(0, "deleted = 0")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {_MEMORY_COLUMNS} FROM memories {where} ORDER BY created DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row_to_memory(r) for r in self.conn.execute(sql, params)]

    def search(self, query: str, *, limit: int | None = 50, category: str | None = None,
               tags: Iterable[str] = ()) -> list[Memory]:
        """Live memories matching every word of ``query``, at most ``limit`` of them (None: no limit), of
        ``category`` only and holding every one of ``tags`` when given (as :meth:`memories` filters).

        Words unicode61 indexes (they hold a letter or a digit) match whole words of content, category, tags
        or a candidate value of a content or category conflict (a value the memory may yet be resolved to)
        through FTS5, the last word of ``query`` also as a prefix. Words it does not (emoji, symbols,
        punctuation: ``🍵``, ``❤️``, ``→``, ``++``) match as substrings of content, category, one tag or those
        candidates, with ``%`` and ``_`` taken literally and case folded as SQLite's ``LIKE`` does (ASCII only,
        and such words hold no ASCII letter). When ``query`` has an indexed word, results are best first (bm25,
        then id); with symbol words alone, newest created first, then id (a scan of the live memories). Blank:
        ``[]``.
        Raises nothing for any text: FTS5 syntax in ``query`` is plain words."""
        match = fts_query(query)
        symbols = symbol_terms(query)
        if not match and not symbols:
            return []
        columns = ", ".join("m." + c.strip() for c in _MEMORY_COLUMNS.split(","))
        filters, filter_params = _filters("m", category, tags)
        where = " AND ".join(["m.deleted = 0", *[CONTAINS] * len(symbols), *filters])
        params: list[Any] = [*(p for term in symbols for p in [like_pattern(term)] * CONTAINS.count("?")),
                              *filter_params]
        if match:
            sql = (
                f"SELECT {columns} FROM memories_fts f JOIN memories m ON m.rowid = f.rowid "
                f"WHERE memories_fts MATCH ? AND {where} ORDER BY bm25(memories_fts), m.id"
            )
            params.insert(0, match)
        else:
            sql = f"SELECT {columns} FROM memories m WHERE {where} ORDER BY m.created DESC, m.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row_to_memory(r) for r in self.conn.execute(sql, params)]

    def conflicts(self, memory_id: str | None = None) -> list[Conflict]:
        """Every conflict of every memory (of ``memory_id`` only, when given), ordered by memory id then field."""
        sql = "SELECT conflicts FROM memories WHERE conflicts != '[]'"
        params: tuple[str, ...] = ()
        if memory_id is not None:
            sql, params = sql + " AND id = ?", (memory_id,)
        out: list[Conflict] = []
        for (raw,) in self.conn.execute(sql + " ORDER BY id", params):
            out.extend(conflicts_from_json(raw))
        return out

    def counts(self) -> dict[str, int]:
        """Counts for ``status``: live, deleted, local-only (level 0) and conflicted memories."""
        row = self.conn.execute(
            "SELECT coalesce(sum(deleted = 0), 0), coalesce(sum(deleted = 1), 0), "
            "coalesce(sum(level = 0 AND deleted = 0), 0), coalesce(sum(conflicts != '[]'), 0) FROM memories"
        ).fetchone()
        return {"live": row[0], "deleted": row[1], "local_only": row[2], "conflicted": row[3]}
