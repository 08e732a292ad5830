"""The benchmark corpus: the LoCoMo conversations repeated to N memories, on real text only.

LoCoMo (Maharana et al., ACL 2024; snap-research/locomo) has 5,882 dialogue turns. To reach N memories the turns
are repeated in order; repetition ``k`` (0-based) gets fresh ids and, for ``k >= 1``, the suffix ``" (rep k)"``
on its content and source so that no two memories share a text. Nothing is generated at random: the same N
always gives the same records, byte for byte, so runs compare.

Used by ``bench/local.py`` and meant to be reused by the mailbox benchmark::

    from bench._corpus import corpus_rows, write_jsonl
    rows = corpus_rows(100_000)                 # list of plain dicts, JSON-ready
    write_jsonl(tmp / "corpus.jsonl", rows)     # what ``Vault.import_path`` reads
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Where the shared data lives: ``../shared/data/locomo`` beside the project's root (override with
#: ``CRDTSYNC_LOCOMO``).
LOCOMO = Path(os.environ.get("CRDTSYNC_LOCOMO") or Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo")
#: Namespace of the per-repetition ids (any fixed UUID: it only has to differ from the importer's).
REP_NAMESPACE = uuid.UUID("8d3b2f4e-5c1a-4a8e-9b7d-2f6c0e1a9b33")
#: The keys of one row, in the order they are written.
ROW_KEYS = ("id", "content", "category", "tags", "created", "source", "metadata")


def base_rows(root: Path = LOCOMO) -> list[dict[str, Any]]:
    """The LoCoMo turns as rows, read with crdtsync's own LoCoMo reader (``crdtsync.imports.read_import``).

    Raises:
        FileNotFoundError: the corpus is not at ``root``.
        RuntimeError: the reader reported a problem (the shared corpus is expected to read cleanly).
    """
    from crdtsync.imports import ImportProblem, read_import

    if not root.exists():
        raise FileNotFoundError(f"the LoCoMo corpus is not at {root} (set CRDTSYNC_LOCOMO)")
    rows: list[dict[str, Any]] = []
    for item in read_import(root):
        if isinstance(item, ImportProblem):
            raise RuntimeError(f"LoCoMo record unreadable: {item.location}: {item.code}: {item.message}")
        rows.append({
            "id": item.id,
            "content": item.content,
            "category": item.category,
            "tags": sorted(item.tags),
            "created": item.created,
            "source": item.source,
            "metadata": item.metadata,
        })
    return rows


def repeated(base: list[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    """The first ``n`` rows of ``base`` repeated: repetition ``k >= 1`` has a fresh id (UUIDv5 of the original id
    and ``k``) and ``" (rep k)"`` appended to its content and source."""
    if not base:
        raise ValueError("empty base corpus")
    for index in range(n):
        rep, row = divmod(index, len(base))
        row = base[row]
        if rep == 0:
            yield dict(row)
            continue
        suffix = f" (rep {rep})"
        yield {
            **row,
            "id": str(uuid.uuid5(REP_NAMESPACE, f"{row['id']}/{rep}")),
            "content": row["content"] + suffix,
            "source": None if row["source"] is None else row["source"] + suffix,
        }


def corpus_rows(n: int, root: Path = LOCOMO) -> list[dict[str, Any]]:
    """``n`` memories built from the LoCoMo corpus at ``root`` (see the module docstring)."""
    return list(repeated(base_rows(root), n))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSONL (the format ``crdtsync import`` reads, ids kept); returns the count."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read back rows written by :func:`write_jsonl`."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
