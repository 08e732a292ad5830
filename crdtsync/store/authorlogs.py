"""The author logs a device holds (protocol v2): every author's entries as received, how far each was applied,
each author's newest verified head, and what each relay was last seen to hold.

Tables (created by :class:`crdtsync.store.db.Store`):

- ``entries (author, kind, seq, digest, parts, sizes)``: an entry's parts, byte for byte as the author sealed
  them, one after the other, kept until the author's head says its log no longer needs them (compaction);
  ``digest`` is the chain digest of a log body, or for a snapshot the digest it links to; ``sizes`` the parts'
  sizes in bytes (a JSON array: where ``parts`` is cut, and what a relay's listing is compared with, without
  reading the parts).
- ``authors (author, applied, chain, head, head_seq, head_n)``: the author's log applied up to ``applied``
  (its body digest ``chain``), and the newest head of it this device verified, as received.
- ``relay_heads (relay, author, token, seq, n)``: what a relay's head object of the author looked like when
  it was last read (``token``: size and modification mark from the listing, so an unchanged head is not
  fetched again) and its ``(seq, n)``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.protocol.messages import Have

AUTHOR_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    author TEXT NOT NULL, kind INTEGER NOT NULL, seq INTEGER NOT NULL, digest BLOB NOT NULL, parts BLOB NOT NULL,
    sizes TEXT NOT NULL, PRIMARY KEY (author, kind, seq));
CREATE TABLE IF NOT EXISTS authors (
    author TEXT PRIMARY KEY, applied INTEGER NOT NULL DEFAULT 0, chain BLOB NOT NULL DEFAULT x'',
    head BLOB, head_seq INTEGER NOT NULL DEFAULT 0, head_n INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS relay_heads (
    relay TEXT NOT NULL, author TEXT NOT NULL, token TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (relay, author));
"""


@dataclass(frozen=True)
class AuthorRow:
    """What this device holds of one author: its log applied up to ``applied`` (body digest ``chain``), its
    newest verified head envelope ``head`` (None: none yet) with that head's ``(head_seq, head_n)``."""

    applied: int = 0
    chain: bytes = b""
    head: bytes | None = None
    head_seq: int = 0
    head_n: int = 0


class AuthorLogs:
    """Mixin of :class:`crdtsync.store.db.Store` over the author-log tables. Writes expect to run inside
    :meth:`crdtsync.store.db.Store.write`."""

    conn: sqlite3.Connection

    def author(self, author: str) -> AuthorRow:
        """What this device holds of ``author`` (an empty row when nothing)."""
        row = self.conn.execute("SELECT applied, chain, head, head_seq, head_n FROM authors WHERE author = ?",
                                (author,)).fetchone()
        return AuthorRow() if row is None else AuthorRow(row[0], bytes(row[1]), None if row[2] is None
                                                         else bytes(row[2]), row[3], row[4])

    def authors(self) -> dict[str, AuthorRow]:
        """Every author this device holds anything of."""
        rows = self.conn.execute("SELECT author, applied, chain, head, head_seq, head_n FROM authors")
        return {r[0]: AuthorRow(r[1], bytes(r[2]), None if r[3] is None else bytes(r[3]), r[4], r[5]) for r in rows}

    def set_applied(self, author: str, seq: int, chain: bytes) -> None:
        """Record that ``author``'s log is applied (stored and handed to integration) up to ``seq``."""
        self.conn.execute("INSERT INTO authors (author, applied, chain) VALUES (?, ?, ?) ON CONFLICT (author) "
                          "DO UPDATE SET applied = excluded.applied, chain = excluded.chain", (author, seq, chain))

    def set_head(self, author: str, head: bytes, seq: int, n: int) -> None:
        """Keep ``head`` (an envelope as received) as the newest verified head of ``author``."""
        self.conn.execute("INSERT INTO authors (author, head, head_seq, head_n) VALUES (?, ?, ?, ?) ON CONFLICT "
                          "(author) DO UPDATE SET head = excluded.head, head_seq = excluded.head_seq, "
                          "head_n = excluded.head_n", (author, head, seq, n))

    def put_entry(self, author: str, kind: int, seq: int, digest: bytes, parts: list[bytes]) -> None:
        """Keep an entry's parts as received."""
        # The parts are written into a zero blob of their size, part by part (SQLite's incremental blob I/O):
        # binding them whole would have SQLite copy a large entry once more in memory.
        cur = self.conn.execute("INSERT OR REPLACE INTO entries (author, kind, seq, digest, parts, sizes) VALUES "
                                "(?, ?, ?, ?, zeroblob(?), ?)", (author, kind, seq, digest, sum(map(len, parts)),
                                                                 json.dumps([len(part) for part in parts])))
        with self.conn.blobopen("entries", "parts", int(cur.lastrowid or 0)) as blob:
            for part in parts:
                blob.write(part)

    def entry_parts(self, author: str, kind: int, seq: int) -> list[bytes] | None:
        """The parts of a held entry, or None."""
        row = self.conn.execute("SELECT parts, sizes FROM entries WHERE author = ? AND kind = ? AND seq = ?",
                                (author, kind, seq)).fetchone()
        if row is None:
            return None
        data, parts, start = bytes(row[0]), [], 0
        for size in json.loads(row[1]):
            parts.append(data[start:start + size])  # the whole of a single part is not copied
            start += size
        return parts

    def entry_sizes(self, author: str) -> dict[tuple[int, int], list[int]]:
        """``(kind, seq) -> [size of each part]`` of every held entry of ``author``."""
        rows = self.conn.execute("SELECT kind, seq, sizes FROM entries WHERE author = ?", (author,))
        return {(r[0], r[1]): json.loads(r[2]) for r in rows}

    def known_digests(self, author: str) -> dict[int, bytes]:
        """seq -> chain digest of ``author``'s log bodies this device can vouch for: its held log entries, the
        links of its held snapshots, and the point it applied up to."""
        known = {r[0]: bytes(r[1]) for r in self.conn.execute(
            "SELECT seq, digest FROM entries WHERE author = ? ORDER BY kind DESC", (author,))}
        row = self.author(author)
        if row.applied:
            known[row.applied] = row.chain
        return known

    def have(self, author: str) -> Have:
        """What this device can serve of ``author``: applied seq and digest, lowest held log seq, newest held
        snapshot."""
        row = self.author(author)
        first, snap = self.conn.execute(
            "SELECT min(CASE WHEN kind = ? THEN seq END), max(CASE WHEN kind = ? THEN seq END) FROM entries "
            "WHERE author = ?", (KIND_UPDATE, KIND_SNAPSHOT, author)).fetchone()
        return Have(row.applied, row.chain, row.applied + 1 if first is None else first, snap or 0)

    def drop_entries(self, author: str, before: int, snap: int) -> int:
        """Forget ``author``'s log entries below seq ``before`` and its snapshots other than ``snap``; returns
        how many went."""
        cur = self.conn.execute("DELETE FROM entries WHERE author = ? AND ((kind = ? AND seq < ?) OR (kind = ? AND "
                                "seq != ?))", (author, KIND_UPDATE, before, KIND_SNAPSHOT, snap))
        return cur.rowcount

    def relay_head(self, relay: str, author: str) -> tuple[str, int, int] | None:
        """(token, seq, n) of ``author``'s head as relay ``relay`` last showed it, or None."""
        row = self.conn.execute("SELECT token, seq, n FROM relay_heads WHERE relay = ? AND author = ?",
                                (relay, author)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def set_relay_head(self, relay: str, author: str, token: str, seq: int, n: int) -> None:
        """Remember what relay ``relay``'s head object of ``author`` held when its listing showed ``token``."""
        self.conn.execute("INSERT OR REPLACE INTO relay_heads (relay, author, token, seq, n) VALUES (?, ?, ?, ?, ?)",
                          (relay, author, token, seq, n))

    def forget_relay_heads(self, relay: str) -> None:
        """Forget what relay ``relay`` was seen to hold (the relay was removed)."""
        self.conn.execute("DELETE FROM relay_heads WHERE relay = ?", (relay,))
