"""The values the import readers produce and how one is built: :class:`ImportRecord`, :class:`ImportProblem`,
:func:`stable_id`, and :func:`make` that checks the fields with the model's validators."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crdtsync.errors import InvalidInputError
from crdtsync.model.records import (
    check_category,
    check_content,
    check_level,
    check_metadata,
    check_source,
    check_tags,
    normalize_timestamp,
)

#: Namespace of the name-based (UUIDv5) ids of imported memories; changing it would change every id.
IMPORT_NAMESPACE = uuid.UUID("3f0fbda8-c923-4625-92f5-88cb5a236335")
#: The names :func:`~crdtsync.imports.detect_format` returns and ``read_import(format=...)`` accepts.
FORMATS = ("jsonl", "json-array", "mem0", "openmemory", "memory-files", "locomo")

# Values already in the form their normalizer writes, which it would return unchanged: a UTC timestamp as
# ``utc_now_iso`` writes it (a four-digit year: strftime does not pad smaller ones) and a lowercase hyphenated
# UUID. Exports and the LoCoMo reader produce these, so most records skip the reformatting.
_CANONICAL_TIME = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class ImportRecord:
    """One memory read from an import file.

    Attributes:
        id: the memory id, a UUID string (see :func:`stable_id`).
        content, category, tags, source, metadata, level: as in :class:`~crdtsync.model.records.Memory`.
        created: ISO-8601 UTC as ``normalize_timestamp`` writes it, or ``None`` (the vault then uses "now").
        location: where it was read: ``"f.jsonl:12"`` (1-based line), ``"f.json#3"`` (0-based index),
            ``"26.json#D1:3"`` (LoCoMo turn) or a file path.
    """

    id: str
    content: str
    category: str | None = None
    tags: frozenset[str] = frozenset()
    created: str | None = None
    source: str | None = None
    metadata: dict[str, Any] | None = None
    level: int = 1
    location: str = ""


@dataclass(frozen=True)
class ImportProblem:
    """A line, element or file that was not imported; the rest of the import goes on.

    Attributes:
        location: ``"path:line"`` (1-based), ``"path#index"`` (0-based), ``"path#dia_id"`` or ``"path"``.
        code: ``IMPORT_MALFORMED`` (not JSON), ``IMPORT_INVALID_RECORD`` (bad or missing fields),
            ``CONTENT_TOO_LARGE``, ``IMPORT_TOO_LARGE`` (a JSONL line over its limit: the rest of the file is not
            read); for one file of a folder ``IMPORT_UNKNOWN_FORMAT``, ``IMPORT_UNREADABLE``,
            ``IMPORT_TOO_LARGE``. (The vault's import adds ``IMPORT_DUPLICATE_ID`` and ``IMPORT_ID_TAKEN``
            for records whose id is taken: see :mod:`crdtsync._vault_import`.)
        message: what is wrong, for a person.
    """

    location: str
    code: str
    message: str


Item = ImportRecord | ImportProblem
#: Maps one JSON object read at a location to a record (``None``: skipped on purpose); raises
#: InvalidInputError for a bad one.
Mapper = Callable[[str, dict[str, Any]], ImportRecord | None]


def stable_id(source: str | None, record: Mapping[str, Any]) -> str:
    """The id of an imported memory: a UUIDv5 under :data:`IMPORT_NAMESPACE`.

    Args:
        source: the record's source label. When given, the id derives from ``"source:" + source`` alone, so a
            memory imported again from the same origin keeps its id even if its text changed.
        record: the normalized record (``content``, ``category``, ``tags``, ``created``, ``metadata``,
            ``level``; absent keys count as ``None``, no tags, level 1). Without a source the id derives from
            its canonical JSON (sorted keys, compact, tags sorted): equal records get equal ids, and records
            with equal text but another field different stay two memories.
    """
    if source is not None:
        return str(uuid.uuid5(IMPORT_NAMESPACE, "source:" + source))
    canonical = {
        "content": record.get("content"),
        "category": record.get("category"),
        "tags": sorted(record.get("tags") or ()),
        "created": record.get("created"),
        "metadata": record.get("metadata"),
        "level": record.get("level", 1),
    }
    return str(uuid.uuid5(IMPORT_NAMESPACE, json.dumps(canonical, sort_keys=True, separators=(",", ":"))))


def apply(mapper: Mapper, location: str, obj: object) -> Item | None:
    """Map one JSON value; a non-object or a validator error becomes a problem (``None``: skipped)."""
    if not isinstance(obj, dict):
        why = f"expected a JSON object, not {type(obj).__name__}"
        return ImportProblem(location, "IMPORT_INVALID_RECORD", why)
    try:
        return mapper(location, obj)
    except InvalidInputError as exc:
        code = "IMPORT_INVALID_RECORD" if exc.code == "INVALID_INPUT" else exc.code
        return ImportProblem(location, code, exc.message)


def make(location: str, content: object, *, category: object = None, tags: object = None,
         created: object = None, source: object = None, metadata: object = None, level: object = 1,
         given_id: object = None) -> ImportRecord:
    """Validate the fields with the model's validators and build the record (raises InvalidInputError).

    ``given_id`` is the record's own ``id``: a UUID is kept (so our exports round-trip), another string is
    hashed as ``"id:" + value``; without it the id is :func:`stable_id`.
    """
    if created is not None and not isinstance(created, str):
        raise InvalidInputError(f"created must be an ISO-8601 string, not {type(created).__name__}")
    fields: dict[str, Any] = {
        "content": check_content(content),
        "category": check_category(category),
        "tags": check_tags(() if tags is None else tags),
        "created": _normalized(created) if created else None,
        "metadata": check_metadata(metadata),
        "level": check_level(level),
    }
    checked_source = check_source(source)
    if given_id is None:
        record_id = stable_id(checked_source, fields)
    elif not isinstance(given_id, str) or not given_id:
        raise InvalidInputError("id must be a non-empty string")
    elif _CANONICAL_UUID.fullmatch(given_id):
        record_id = given_id
    else:
        try:
            record_id = str(uuid.UUID(given_id))
        except ValueError:
            record_id = str(uuid.uuid5(IMPORT_NAMESPACE, "id:" + given_id))
    return ImportRecord(id=record_id, source=checked_source, location=location, **fields)


def _normalized(created: str) -> str:
    """``normalize_timestamp(created)``; a valid timestamp already in its output form is returned as it is."""
    if _CANONICAL_TIME.fullmatch(created):
        try:
            datetime.fromisoformat(created[:-1])
        except ValueError:
            pass  # 2023-02-30 and the like: normalize_timestamp raises its own error
        else:
            return created
    return normalize_timestamp(created)
