"""Writing memories as the JSONL that :func:`~crdtsync.imports.read_import` reads back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO

from crdtsync.model.records import Memory


def export_jsonl(memories: Iterable[Memory], out: IO[str]) -> int:
    """Write ``memories`` to the text stream ``out`` as JSONL: one compact object per line with keys id,
    content, category, tags (sorted list), level, source, metadata, created, updated, created_by, updated_by.

    :func:`read_import` reads it back with the same ids and fields, so importing an export into a fresh vault
    and exporting again gives the same records, and re-importing it into its own vault adds nothing. Deleted
    memories are skipped (callers pass live ones). Returns the number of lines written.
    """
    count = 0
    for memory in memories:
        if memory.deleted:
            continue
        row = memory.to_json()
        del row["deleted"], row["conflicts"]
        out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count
