"""Importing memories into a vault, behind :meth:`crdtsync.vault.Vault.import_path`.

Records come from the readers in :mod:`crdtsync.imports` and are written :data:`IMPORT_BATCH` at a time (fewer
when their content passes :data:`IMPORT_BATCH_CHARS`):
ids already in the vault are skipped (imports are idempotent), level-0 records go straight into SQLite and
level-1 records into the shared Doc in one transaction through the :class:`~crdtsync.store.replica.Replica`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdtsync.model.records import Conflict, Memory, utc_now_iso
from crdtsync.model.schema import MemoryDoc
from crdtsync.store.db import Store
from crdtsync.store.replica import Replica

#: Records per SQLite transaction (and local update) during an import, at most...
IMPORT_BATCH = 10000
#: ...and characters of content, at most: 10,000 memories of up to 64 KiB each would make one update of 640 MB.
IMPORT_BATCH_CHARS = 16 * 1024 * 1024


@dataclass
class ImportReport:
    """What an import did: ``added`` memories, ``skipped`` (already present: imports are idempotent) and
    ``problems`` (location, code, message) for records that could not be read."""

    added: int = 0
    skipped: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)


def import_path(
    store: Store, replica: Replica, path: str | os.PathLike[str], *, format: str | None,
    progress: Callable[[int], None] | None, name: str | None = None,
) -> ImportReport:
    """Import the file or folder ``path`` into the vault of ``store`` and ``replica`` and record the import in
    the audit log (see :meth:`crdtsync.vault.Vault.import_path`); ``name`` stands for the path in problem
    locations and in the log."""
    from crdtsync.imports import ImportProblem, read_import

    report = ImportReport()
    batch: list[Any] = []
    handled = chars = 0
    for item in read_import(Path(path), format=format):
        if isinstance(item, ImportProblem):
            location = item.location
            if name is not None and location.startswith(str(path)):
                location = name + location[len(str(path)):]
            report.problems.append((location, item.code, item.message))
            continue
        batch.append(item)
        chars += len(item.content)
        if len(batch) >= IMPORT_BATCH or chars >= IMPORT_BATCH_CHARS:
            handled += _import_batch(store, replica, batch, report)
            batch, chars = [], 0
            if progress:
                progress(handled)
    handled += _import_batch(store, replica, batch, report)
    if progress:
        progress(handled)
    store.audit("import", added=report.added, skipped=report.skipped, problems=len(report.problems),
                path=name or str(path))
    return report


def _import_batch(store: Store, replica: Replica, records: Sequence[Any], report: ImportReport) -> int:
    """Write the ``records`` not yet in the vault (counted in ``report``); returns how many were handled."""
    present = store.existing_ids([rec.id for rec in records])
    fresh = {}
    for rec in records:
        if rec.id in fresh or rec.id in present:
            report.skipped += 1
        else:
            fresh[rec.id] = rec
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
