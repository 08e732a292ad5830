"""Importing memories into a vault, behind :meth:`crdtsync.vault.Vault.import_path`.

Records come from the readers in :mod:`crdtsync.imports` and are written :data:`IMPORT_BATCH` at a time (fewer
when their content passes :data:`IMPORT_BATCH_CHARS`): level-0 records go straight into SQLite and level-1
records into the shared Doc in one transaction through the :class:`~crdtsync.store.replica.Replica`.

An import only adds memories; it never changes one. A record whose id the vault already holds with the same
fields is counted as already present (imports are idempotent). One whose id is taken by different fields is a
problem naming its location, and the memory stays as it is: ``IMPORT_DUPLICATE_ID`` when an earlier record of
the same input took the id (two records of one source, say), ``IMPORT_ID_TAKEN`` when the vault held it before
(the record changed at its source, or the memory was edited here since it was imported).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from crdtsync.model.records import Conflict, Memory, utc_now_iso
from crdtsync.model.schema import MemoryDoc
from crdtsync.store.db import Store
from crdtsync.store.replica import Replica

if TYPE_CHECKING:
    from crdtsync.imports import ImportRecord

#: Records per SQLite transaction (and local update) during an import, at most...
IMPORT_BATCH = 10000
#: ...and characters of content, at most: 10,000 memories of up to 64 KiB each would make one update of 640 MB.
IMPORT_BATCH_CHARS = 16 * 1024 * 1024


#: The fields of a record that an import compares with the memory holding its id, in messages' order.
COMPARED_FIELDS = ("content", "category", "tags", "level", "source", "metadata", "created")


@dataclass
class ImportReport:
    """What an import did: ``added`` memories, ``skipped`` (already present with the same fields: imports are
    idempotent) and ``problems`` (location, code, message) for records that were not imported: unreadable or
    invalid ones, and those whose id another record or memory holds with different fields."""

    added: int = 0
    skipped: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """Whether the input had records and every one of them was a problem (nothing added, nothing present)."""
        return bool(self.problems) and not (self.added or self.skipped)


def import_path(
    store: Store, replica: Replica, path: str | os.PathLike[str], *, format: str | None,
    progress: Callable[[int], None] | None, name: str | None = None,
) -> ImportReport:
    """Import the file or folder ``path`` into the vault of ``store`` and ``replica`` and record the import in
    the audit log, with the code ``IMPORT_ALL_FAILED`` when :attr:`ImportReport.all_failed` (see
    :meth:`crdtsync.vault.Vault.import_path`); ``name`` stands for the path in problem locations and in the
    log."""
    from crdtsync.imports import ImportProblem, read_import

    def located(location: str) -> str:
        return name + location[len(str(path)):] if name is not None and location.startswith(str(path)) else location

    report = ImportReport()
    taken: dict[str, str] = {}  # memory id -> location of the record of this input that the vault now holds
    batch: list[ImportRecord] = []
    handled = chars = 0
    for item in read_import(Path(path), format=format):
        if isinstance(item, ImportProblem):
            report.problems.append((located(item.location), item.code, item.message))
            continue
        batch.append(item if name is None else replace(item, location=located(item.location)))
        chars += len(item.content)
        if len(batch) >= IMPORT_BATCH or chars >= IMPORT_BATCH_CHARS:
            handled += _import_batch(store, replica, batch, report, taken)
            batch, chars = [], 0
            if progress:
                progress(handled)
    handled += _import_batch(store, replica, batch, report, taken)
    if progress:
        progress(handled)
    store.audit("import", code="IMPORT_ALL_FAILED" if report.all_failed else None, added=report.added,
                skipped=report.skipped, problems=len(report.problems), path=name or str(path))
    return report


def _differences(record: ImportRecord, holder: ImportRecord | Memory) -> list[str]:
    """The :data:`COMPARED_FIELDS` in which ``record`` differs from ``holder``, the record or memory that holds
    its id; a record without a creation time matches any."""
    return [f for f in COMPARED_FIELDS
            if getattr(record, f) != getattr(holder, f) and not (f == "created" and record.created is None)]


def _import_batch(store: Store, replica: Replica, records: Sequence[ImportRecord], report: ImportReport,
                  taken: dict[str, str]) -> int:
    """Write the ``records`` whose id neither the vault nor an earlier record of the batch holds; count the others
    in ``report``: already present when their fields are the same, else a problem (``IMPORT_DUPLICATE_ID`` when
    ``taken``, the ids of this input's records already stored, holds the id, else ``IMPORT_ID_TAKEN``). Records
    that the vault now holds join ``taken``. Returns how many records were handled."""
    present = store.existing_ids([rec.id for rec in records])
    fresh: dict[str, ImportRecord] = {}
    for rec in records:
        holder = fresh.get(rec.id) or (store.memory(rec.id) if rec.id in present else None)
        if holder is None:
            fresh[rec.id] = rec
            taken[rec.id] = rec.location
            continue
        differing = _differences(rec, holder)
        if not differing:
            report.skipped += 1
            taken.setdefault(rec.id, rec.location)
        elif rec.id in taken:
            report.problems.append((rec.location, "IMPORT_DUPLICATE_ID", (
                f"the record at {taken[rec.id]} has the same id ({_identity(rec)}) but another "
                f"{', '.join(differing)}: this one was not imported; give each record its own source or id, or "
                "drop one")))
        else:
            report.problems.append((rec.location, "IMPORT_ID_TAKEN", (
                f"memory {rec.id} ({_identity(rec)}) is already in the vault with another {', '.join(differing)} "
                "(changed at its source, or edited here since it was imported): it is left as it is; "
                f"`crdtsync edit {rec.id}` can give it this record's values")))
    shared = [r for r in fresh.values() if r.level == 1]
    local = [r for r in fresh.values() if r.level == 0]
    now = utc_now_iso()
    me = replica.device_id
    if local:
        with store.write():
            store.put_memories([(Memory(
                id=rec.id, content=rec.content, category=rec.category, tags=rec.tags, level=0,
                source=rec.source, metadata=rec.metadata, created=rec.created or now, updated=now,
                created_by=me, updated_by=me), []) for rec in local])
    if shared:
        replica.ensure_lease_registered()
        ctx = replica.context()
        rows: list[tuple[Memory, list[Conflict]]] = []
        for rec in shared:
            created = rec.created or ctx.at
            # What read_record will see: add() writes entries without by/at unless an agent is set.
            updated = ctx.at if ctx.agent is not None and ctx.at > created else created
            rows.append((Memory(id=rec.id, content=rec.content, category=rec.category, tags=rec.tags,
                                source=rec.source, metadata=rec.metadata, created=created, updated=updated,
                                created_by=me, updated_by=me), []))

        def add_all(doc: MemoryDoc) -> None:
            with doc.doc.transaction():
                for rec in shared:
                    doc.add(rec.id, ctx, content=rec.content, category=rec.category, tags=rec.tags,
                            source=rec.source, metadata=rec.metadata, created=rec.created)

        replica.local_write(add_all, (), rows=rows)
    report.added += len(fresh)
    return len(records)


def _identity(record: ImportRecord) -> str:
    """What gave ``record`` its id, for messages: its source, else its own id."""
    return f"source {record.source!r}" if record.source is not None else f"id {record.id}"
