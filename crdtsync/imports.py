"""Import and export of memory files: several formats in, plain :class:`ImportRecord` values out, JSONL back.

This layer only reads and writes files (no pycrdt, no SQLite). Every record is checked with the validators of
:mod:`crdtsync.model.records`; one that fails becomes an :class:`ImportProblem`, never an exception.

Formats (the names :func:`detect_format` returns):

``jsonl``
    One object per line, ``{content, category?, tags?, created?, source?, metadata?, level?, id?}``: what
    :func:`export_jsonl` writes. When ``content`` is absent, ``text`` or ``memory`` stands for it (ad-hoc
    dumps and mem0 items use them); ``created_at`` likewise for ``created``. Other keys (``updated``,
    ``created_by``...) are ignored: the vault stamps its own. Plain or gzip-compressed (``.jsonl.gz``).
``json-array``
    A JSON array of such objects (a lone object counts as an array of one).
``mem0``
    mem0's ``Memory.get_all()`` result ``{"results": [{id, memory, hash, metadata, categories?, created_at,
    updated_at, user_id?, agent_id?, run_id?, actor_id?, role?}]}`` (mem0ai/mem0 mem0/memory/main.py,
    docs.mem0.ai "Get all memories"), or the bare list older versions return. category = first category,
    tags = all, source = ``"mem0:<id>"``, metadata + ``{"mem0": {hash, user_id, agent_id, updated_at...}}``.
``openmemory``
    OpenMemory's backup, ``POST /api/v1/backup/export`` in mem0ai/mem0 openmemory/api/app/routers/backup.py:
    a zip of ``memories.json`` (``{user, apps, categories, memories: [{id, app_id, content, metadata, state,
    created_at, updated_at, category_ids, ...}], ...}``) and ``memories.jsonl.gz`` (per line ``{id, content,
    metadata, created_at, updated_at, state, app, categories}``). The zip (its JSONL member preferred), either
    member alone or an uncompressed ``memories.jsonl`` is read. States are ``active|paused|archived|deleted``
    (openmemory/api/app/models.py): ``deleted`` and ``archived`` memories are skipped, as the user took them
    out of use and an import must not bring them back; ``paused`` ones are still the user's and imported.
    Mapped as mem0: source ``"openmemory:<id>"``, metadata + ``{"openmemory": {state, app, updated_at}}``.
``memory-files``
    A folder of JSON files, one memory each, ``{timestamp, device_id, category, content, context}`` (the Ghost
    design), walked recursively in sorted order; or one such file. created = timestamp, source =
    ``"file:<path relative to the folder>"``, metadata = ``{device_id, context}``.
``locomo``
    LoCoMo conversation files (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM
    Agents", ACL 2024; snap-research/locomo), one file or a folder: one memory per dialogue turn, content =
    text, category = speaker, created = its session's date (UTC), source = ``"26.json#D1:3"``, tags
    ``{"locomo"}``, metadata ``{session, dia_id, blip_caption?, img_url?}``.
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from io import BufferedReader
from pathlib import Path
from typing import IO, Any

from crdtsync.errors import ImportFormatError, InvalidInputError
from crdtsync.model.records import (
    Memory,
    check_category,
    check_content,
    check_level,
    check_metadata,
    check_source,
    check_tags,
    normalize_timestamp,
    utc_now_iso,
)

#: Namespace of the name-based (UUIDv5) ids of imported memories; changing it would change every id.
IMPORT_NAMESPACE = uuid.UUID("3f0fbda8-c923-4625-92f5-88cb5a236335")
#: The names :func:`detect_format` returns and ``read_import(format=...)`` accepts.
FORMATS = ("jsonl", "json-array", "mem0", "openmemory", "memory-files", "locomo")

_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
_CONTENT_KEYS = ("content", "text", "memory")
_SESSION_RE = re.compile(r"session_(\d+)")
_LOCOMO_DATE = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


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
            ``CONTENT_TOO_LARGE``; for one file of a folder ``IMPORT_UNKNOWN_FORMAT``, ``IMPORT_UNREADABLE``.
        message: what is wrong, for a person.
    """

    location: str
    code: str
    message: str


Item = ImportRecord | ImportProblem
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


def detect_format(path: Path) -> str:
    """The format of the file or folder ``path``, one of :data:`FORMATS`.

    Reads little: the first lines of a file (a ``.jsonl``/``.ndjson`` name, or a first line that is a whole
    object with more lines after it, means JSONL), else the whole JSON document; the member names of a zip;
    the first parseable ``*.json`` file of a folder (LoCoMo-shaped: ``locomo``, else ``memory-files``).

    Raises:
        ImportFormatError: ``IMPORT_UNREADABLE`` (missing or unreadable), ``IMPORT_MALFORMED`` (a ``.json``
            file that does not parse), ``IMPORT_UNKNOWN_FORMAT`` (no supported shape, or not JSON at all).
    """
    return _sniff(path)[0]


def read_import(path: Path, *, format: str | None = None) -> Iterator[Item]:
    """Stream the memories of ``path``: an :class:`ImportRecord` per memory and an :class:`ImportProblem` per
    line, element or file that cannot be imported (the rest still imports).

    JSONL is read line by line (a 100k-line file is never held in memory); JSON documents one file at a time.

    Args:
        path: a file or folder in one of the shapes of the module docstring.
        format: one of :data:`FORMATS`, or ``None`` to use :func:`detect_format`.

    Returns:
        A generator; the format is resolved before it is returned.

    Raises:
        ImportFormatError: ``IMPORT_UNKNOWN_FORMAT`` (unknown ``format`` or shape), ``IMPORT_UNREADABLE``
            (missing or unreadable), ``IMPORT_MALFORMED`` (a single JSON document that does not parse). With
            an explicit ``format`` these may come from the first ``next()`` instead.
    """
    if format is None:
        fmt, doc = _sniff(path)
    elif format not in FORMATS:
        raise ImportFormatError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}",
                                code="IMPORT_UNKNOWN_FORMAT")
    elif not path.exists():
        raise ImportFormatError(f"{path} does not exist", code="IMPORT_UNREADABLE")
    else:
        fmt, doc = format, None
    return _READERS[fmt](path, doc)


def count_hint(path: Path) -> int | None:
    """A cheap estimate of the number of records, for a progress bar: the lines of an uncompressed JSONL file,
    the files of a memory-files folder, the ``"dia_id"`` keys of LoCoMo files; ``None`` for other formats or
    an unusable path. Never raises."""
    try:
        fmt = detect_format(path)
        if fmt == "jsonl" and not path.name.lower().endswith(".gz"):
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
        files = _json_files(path) if path.is_dir() else [path]
        if fmt == "memory-files":
            return len(files)
        if fmt == "locomo":
            return sum(file.read_bytes().count(b'"dia_id"') for file in files)
    except (ImportFormatError, *_READ_ERRORS):
        return None
    return None


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


def _apply(mapper: Mapper, location: str, obj: object) -> Item | None:
    """Map one JSON value; a non-object or a validator error becomes a problem (``None``: skipped)."""
    if not isinstance(obj, dict):
        why = f"expected a JSON object, not {type(obj).__name__}"
        return ImportProblem(location, "IMPORT_INVALID_RECORD", why)
    try:
        return mapper(location, obj)
    except InvalidInputError as exc:
        code = "IMPORT_INVALID_RECORD" if exc.code == "INVALID_INPUT" else exc.code
        return ImportProblem(location, code, exc.message)


def _make(location: str, content: object, *, category: object = None, tags: object = None,
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
        "created": normalize_timestamp(created) if created else None,
        "metadata": check_metadata(metadata),
        "level": check_level(level),
    }
    checked_source = check_source(source)
    if given_id is None:
        record_id = stable_id(checked_source, fields)
    elif not isinstance(given_id, str) or not given_id:
        raise InvalidInputError("id must be a non-empty string")
    else:
        try:
            record_id = str(uuid.UUID(given_id))
        except ValueError:
            record_id = str(uuid.uuid5(IMPORT_NAMESPACE, "id:" + given_id))
    return ImportRecord(id=record_id, source=checked_source, location=location, **fields)


def _tagged(obj: Mapping[str, Any], key: str, keys: tuple[str, ...]) -> tuple[list[Any], dict[str, Any]]:
    """mem0/OpenMemory: ``(categories, metadata + {key: the present ones of keys})``."""
    categories, metadata = obj.get("categories") or [], obj.get("metadata") or {}
    if not isinstance(categories, list):
        raise InvalidInputError(f"categories must be an array, not {type(categories).__name__}")
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"metadata must be a JSON object, not {type(metadata).__name__}")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise InvalidInputError("memory without an 'id'")
    return categories, {**metadata, key: {k: obj[k] for k in keys if obj.get(k) is not None}}


def _generic(location: str, obj: dict[str, Any]) -> ImportRecord:
    content_key = next((key for key in _CONTENT_KEYS if key in obj), None)
    if content_key is None:
        raise InvalidInputError("missing 'content'")
    return _make(location, obj[content_key], category=obj.get("category"), tags=obj.get("tags"),
                 created=obj["created"] if "created" in obj else obj.get("created_at"),
                 source=obj.get("source"), metadata=obj.get("metadata"), level=obj.get("level", 1),
                 given_id=obj.get("id"))


def _mem0(location: str, obj: dict[str, Any]) -> ImportRecord:
    keys = ("hash", "user_id", "agent_id", "run_id", "actor_id", "role", "updated_at")
    categories, metadata = _tagged(obj, "mem0", keys)
    return _make(location, obj.get("memory"), category=categories[0] if categories else None, tags=categories,
                 created=obj.get("created_at"), source="mem0:" + obj["id"], metadata=metadata)


def _openmemory(location: str, obj: dict[str, Any]) -> ImportRecord | None:
    if obj.get("state") in ("deleted", "archived"):
        return None
    categories, metadata = _tagged(obj, "openmemory", ("state", "app", "updated_at"))
    return _make(location, obj.get("content"), category=categories[0] if categories else None,
                 tags=categories, created=obj.get("created_at"), source="openmemory:" + obj["id"],
                 metadata=metadata)


def _ghost(location: str, obj: dict[str, Any], *, relative: str) -> ImportRecord:
    metadata = {key: obj[key] for key in ("device_id", "context") if obj.get(key) is not None}
    return _make(location, obj.get("content"), category=obj.get("category"), created=obj.get("timestamp"),
                 source="file:" + relative, metadata=metadata or None)


def _locomo_turn(location: str, turn: dict[str, Any], *, name: str, session: int, when: object
                 ) -> ImportRecord:
    dia_id = turn.get("dia_id")
    if not isinstance(dia_id, str) or not dia_id:
        raise InvalidInputError("LoCoMo turn without a 'dia_id'")
    try:
        created = datetime.strptime(str(when), _LOCOMO_DATE).replace(tzinfo=UTC)
    except ValueError as exc:
        why = f"session_{session}_date_time {when!r} is not like '1:56 pm on 8 May, 2023'"
        raise InvalidInputError(why) from exc
    metadata: dict[str, Any] = {"session": session, "dia_id": dia_id}
    if turn.get("blip_caption") is not None:
        metadata["blip_caption"] = turn["blip_caption"]
    # Two turns inline the image itself as a base64 data: URI (11-16 KB): a payload, not an address, and
    # over the metadata limit, so only real URLs are kept.
    urls = turn.get("img_url")
    if isinstance(urls, list) and (urls := [u for u in urls if not str(u).startswith("data:")]):
        metadata["img_url"] = urls
    return _make(location, turn.get("text"), category=turn.get("speaker"), tags=("locomo",),
                 created=utc_now_iso(created), source=f"{name}#{dia_id}", metadata=metadata)


def _unreadable(path: object, exc: BaseException) -> ImportFormatError:
    return ImportFormatError(f"cannot read {path}: {exc}", code="IMPORT_UNREADABLE")


def _unknown(path: Path, why: str) -> ImportFormatError:
    return ImportFormatError(f"{path}: {why}; supported: {', '.join(FORMATS)}", code="IMPORT_UNKNOWN_FORMAT")


def _parse(data: bytes) -> Any:
    """Parse UTF-8 JSON (a BOM is allowed); raises ValueError or RecursionError."""
    return json.loads(data.decode("utf-8-sig"))


def _load_document(path: Path, data: bytes | None = None) -> Any:
    """Parse a whole JSON file. Raises ImportFormatError ``IMPORT_UNREADABLE`` or ``IMPORT_MALFORMED``."""
    try:
        data = path.read_bytes() if data is None else data
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        return _parse(data)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:
        raise ImportFormatError(f"{path}: not JSON: {exc}") from exc


def _open_binary(path: Path) -> gzip.GzipFile | BufferedReader:
    try:
        return gzip.GzipFile(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _lines(fh: Iterable[bytes], prefix: str) -> Iterator[tuple[str, Any] | ImportProblem]:
    """``(location, parsed value)`` per non-blank line, or a problem for a line that is not JSON."""
    try:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                try:
                    yield f"{prefix}:{number}", _parse(raw)
                except (ValueError, RecursionError) as exc:
                    yield ImportProblem(f"{prefix}:{number}", "IMPORT_MALFORMED", f"not JSON: {exc}")
    except _READ_ERRORS as exc:
        raise _unreadable(prefix, exc) from exc


def _map(entries: Iterable[tuple[str, Any] | ImportProblem], mapper: Mapper) -> Iterator[Item]:
    """Apply ``mapper`` to each ``(location, JSON value)``; problems pass through, skipped records vanish."""
    for entry in entries:
        item = entry if isinstance(entry, ImportProblem) else _apply(mapper, *entry)
        if item is not None:
            yield item


def _indexed(items: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    return ((f"{prefix}#{index}", obj) for index, obj in enumerate(items))


def _json_files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*.json") if p.is_file()), key=lambda p: p.relative_to(root).parts)


def _documents(path: Path, doc: Any) -> Iterator[tuple[Path, str, Any] | ImportProblem]:
    """``(file, path relative to the folder, parsed JSON)`` for ``path`` itself or each ``*.json`` under it;
    a file that cannot be read or parsed is a problem."""
    if path.is_file():
        yield path, path.name, _load_document(path) if doc is None else doc
        return
    for file in _json_files(path):
        try:
            yield file, file.relative_to(path).as_posix(), _load_document(file)
        except ImportFormatError as exc:
            yield ImportProblem(str(file), exc.code, exc.message)


def _is_locomo(doc: object) -> bool:
    return isinstance(doc, dict) and "speaker_a" in doc and isinstance(doc.get("session_1"), list)


def _line_format(obj: object) -> str:
    """``openmemory`` for a line of its ``memories.jsonl``, else ``jsonl``."""
    is_openmemory = isinstance(obj, dict) and {"id", "content", "state"} <= obj.keys() and "app" in obj
    return "openmemory" if is_openmemory else "jsonl"


def _zip_member(path: Path) -> str | None:
    """The ``memories.jsonl.gz`` member of an OpenMemory zip, else its ``memories.json``, else ``None``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {name.rsplit("/", 1)[-1]: name for name in zf.namelist()}
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    return names.get("memories.jsonl.gz") or names.get("memories.json")


def _sniff(path: Path) -> tuple[str, Any]:
    """``(format, the parsed document if detection parsed one, else None)``."""
    if not path.exists():
        raise ImportFormatError(f"{path} does not exist", code="IMPORT_UNREADABLE")
    if path.is_dir():
        for _, _, doc in (d for d in _documents(path, None) if isinstance(d, tuple)):
            return ("locomo" if _is_locomo(doc) else "memory-files"), None
        if not _json_files(path):
            raise _unknown(path, "a folder without *.json files")
        return "memory-files", None
    name = path.name.lower()
    if name.endswith(".zip"):
        if _zip_member(path) is None:
            raise _unknown(path, "a zip without memories.json or memories.jsonl.gz")
        return "openmemory", None
    with _open_binary(path) as fh:
        if name.endswith(_JSONL_SUFFIXES):
            parsed = (e[1] for e in _lines(fh, str(path)) if isinstance(e, tuple) and isinstance(e[1], dict))
            return _line_format(next(parsed, None)), None
        try:
            lines = (raw for raw in fh if raw.strip())
            first, more = next(lines, b""), next(lines, None) is not None
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from exc
    try:
        head = _parse(first)
    except (ValueError, RecursionError):
        head = None
    if more and isinstance(head, dict):
        return _line_format(head), None
    try:
        doc = _load_document(path) if more or head is None else head
    except ImportFormatError as exc:
        if exc.code == "IMPORT_MALFORMED" and not name.endswith(".json"):
            raise _unknown(path, "neither JSON, JSONL, a zip nor a folder") from exc
        raise
    return _classify(doc, path), doc


def _classify(doc: object, path: Path) -> str:
    """The format of a whole JSON document."""
    if isinstance(doc, list):
        first = doc[0] if doc else None
        is_mem0 = isinstance(first, dict) and {"memory", "hash"} <= first.keys() and "content" not in first
        return "mem0" if is_mem0 else "json-array"
    if not isinstance(doc, dict):
        raise _unknown(path, f"a JSON {type(doc).__name__}, not an object or array")
    if isinstance(doc.get("results"), list):
        return "mem0"
    if isinstance(doc.get("memories"), list):
        return "openmemory"
    if _is_locomo(doc):
        return "locomo"
    if {"content", "timestamp"} <= doc.keys():
        return "memory-files"
    if any(key in doc for key in _CONTENT_KEYS):
        return "json-array"
    raise _unknown(path, "a JSON object of no known shape")


def _read_jsonl(path: Path, doc: Any) -> Iterator[Item]:
    with _open_binary(path) as fh:
        yield from _map(_lines(fh, str(path)), _generic)


def _read_json_array(path: Path, doc: Any) -> Iterator[Item]:
    doc = _load_document(path) if doc is None else doc
    if not isinstance(doc, list | dict):
        raise _unknown(path, "not a JSON array of memories")
    yield from _map(_indexed(doc if isinstance(doc, list) else [doc], str(path)), _generic)


def _read_mem0(path: Path, doc: Any) -> Iterator[Item]:
    doc = _load_document(path) if doc is None else doc
    items = doc.get("results") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise _unknown(path, "not a mem0 get_all() result")
    yield from _map(_indexed(items, str(path)), _mem0)


def _read_openmemory(path: Path, doc: Any) -> Iterator[Item]:
    prefix, name = str(path), path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        with _open_binary(path) as fh:
            yield from _map(_lines(fh, prefix), _openmemory)
        return
    if name.endswith(".zip"):
        if (member := _zip_member(path)) is None:
            raise _unknown(path, "a zip without memories.json or memories.jsonl.gz")
        prefix = f"{path}!{member}"
        try:
            with zipfile.ZipFile(path) as zf:
                if member.endswith(".gz"):
                    with zf.open(member) as raw, gzip.GzipFile(fileobj=raw) as fh:
                        yield from _map(_lines(fh, prefix), _openmemory)
                    return
                data = zf.read(member)
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from exc
        doc = _load_document(Path(prefix), data)
    elif doc is None:
        doc = _load_document(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("memories"), list):
        raise _unknown(path, "not an OpenMemory memories.json")
    # memories.json names categories and apps by id: resolve them as memories.jsonl.gz has them.
    names = {key: {e.get("id"): e.get("name") for e in doc.get(key) or () if isinstance(e, dict)}
             for key in ("categories", "apps")}

    def resolved(memory: Any) -> Any:
        if not isinstance(memory, dict):
            return memory
        ids = memory.get("category_ids")
        categories = [names["categories"].get(c, c) for c in ids] if isinstance(ids, list) else ids
        return {**memory, "categories": categories, "app": names["apps"].get(memory.get("app_id"))}

    yield from _map(((loc, resolved(m)) for loc, m in _indexed(doc["memories"], prefix)), _openmemory)


def _read_memory_files(path: Path, doc: Any) -> Iterator[Item]:
    for entry in _documents(path, doc):
        if isinstance(entry, ImportProblem):
            yield entry
        elif (item := _apply(partial(_ghost, relative=entry[1]), str(entry[0]), entry[2])) is not None:
            yield item


def _read_locomo(path: Path, doc: Any) -> Iterator[Item]:
    for entry in _documents(path, doc):
        if isinstance(entry, ImportProblem):
            yield entry
            continue
        file, name, conversation = entry
        if not _is_locomo(conversation):
            if path.is_file():
                raise _unknown(path, "not a LoCoMo conversation")
            yield ImportProblem(str(file), "IMPORT_UNKNOWN_FORMAT", "not a LoCoMo conversation")
            continue
        sessions = sorted((int(m[1]), key) for key in conversation if (m := _SESSION_RE.fullmatch(key)))
        for session, key in sessions:
            turns, when = conversation[key], conversation.get(f"{key}_date_time")
            if not isinstance(turns, list):
                yield ImportProblem(f"{file}#{key}", "IMPORT_INVALID_RECORD", "not an array of turns")
                continue
            mapper = partial(_locomo_turn, name=name, session=session, when=when)
            for index, turn in enumerate(turns):
                dia_id = turn.get("dia_id") if isinstance(turn, dict) else None
                location = f"{file}#{dia_id if isinstance(dia_id, str) else f'{key}[{index}]'}"
                if (item := _apply(mapper, location, turn)) is not None:
                    yield item


_READERS: dict[str, Callable[[Path, Any], Iterator[Item]]] = {
    "jsonl": _read_jsonl,
    "json-array": _read_json_array,
    "mem0": _read_mem0,
    "openmemory": _read_openmemory,
    "memory-files": _read_memory_files,
    "locomo": _read_locomo,
}
