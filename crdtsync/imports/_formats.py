"""One reader per format of :data:`~crdtsync.imports.FORMATS` (:data:`READERS`), and the mappers that turn
one JSON object of that format into an :class:`ImportRecord` (shapes in the :mod:`crdtsync.imports` docstring).
"""

from __future__ import annotations

import gzip
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from crdtsync.errors import InvalidInputError
from crdtsync.imports._files import (
    JSONL_SUFFIXES,
    READ_ERRORS,
    documents,
    indexed,
    lines,
    load_document,
    map_entries,
    open_binary,
    read_document,
    unknown,
    unreadable,
    zip_member,
)
from crdtsync.imports._record import ImportProblem, ImportRecord, Item, apply, make
from crdtsync.model.records import utc_now_iso

#: The keys that hold a generic record's content, the first present one wins.
CONTENT_KEYS = ("content", "text", "memory")
_SESSION_RE = re.compile(r"session_(\d+)")
_LOCOMO_DATE = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


def is_locomo(doc: object) -> bool:
    """Whether a parsed JSON document is a LoCoMo conversation."""
    return isinstance(doc, dict) and "speaker_a" in doc and isinstance(doc.get("session_1"), list)


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
    content_key = next((key for key in CONTENT_KEYS if key in obj), None)
    if content_key is None:
        raise InvalidInputError("missing 'content'")
    return make(location, obj[content_key], category=obj.get("category"), tags=obj.get("tags"),
                created=obj["created"] if "created" in obj else obj.get("created_at"),
                source=obj.get("source"), metadata=obj.get("metadata"), level=obj.get("level", 1),
                given_id=obj.get("id"))


def _mem0(location: str, obj: dict[str, Any]) -> ImportRecord:
    keys = ("hash", "user_id", "agent_id", "run_id", "actor_id", "role", "updated_at")
    categories, metadata = _tagged(obj, "mem0", keys)
    return make(location, obj.get("memory"), category=categories[0] if categories else None, tags=categories,
                created=obj.get("created_at"), source="mem0:" + obj["id"], metadata=metadata)


def _openmemory(location: str, obj: dict[str, Any]) -> ImportRecord | None:
    if obj.get("state") in ("deleted", "archived"):
        return None
    categories, metadata = _tagged(obj, "openmemory", ("state", "app", "updated_at"))
    return make(location, obj.get("content"), category=categories[0] if categories else None,
                tags=categories, created=obj.get("created_at"), source="openmemory:" + obj["id"],
                metadata=metadata)


def _ghost(location: str, obj: dict[str, Any], *, relative: str) -> ImportRecord:
    metadata = {key: obj[key] for key in ("device_id", "context") if obj.get(key) is not None}
    return make(location, obj.get("content"), category=obj.get("category"), created=obj.get("timestamp"),
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
    return make(location, turn.get("text"), category=turn.get("speaker"), tags=("locomo",),
                created=utc_now_iso(created), source=f"{name}#{dia_id}", metadata=metadata)


def _read_jsonl(path: Path, doc: Any) -> Iterator[Item]:
    with open_binary(path) as fh:
        yield from map_entries(lines(fh, str(path)), _generic)


def _read_json_array(path: Path, doc: Any) -> Iterator[Item]:
    doc = load_document(path) if doc is None else doc
    if not isinstance(doc, list | dict):
        raise unknown(path, "not a JSON array of memories")
    yield from map_entries(indexed(doc if isinstance(doc, list) else [doc], str(path)), _generic)


def _read_mem0(path: Path, doc: Any) -> Iterator[Item]:
    doc = load_document(path) if doc is None else doc
    items = doc.get("results") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise unknown(path, "not a mem0 get_all() result")
    yield from map_entries(indexed(items, str(path)), _mem0)


def _read_openmemory(path: Path, doc: Any) -> Iterator[Item]:
    prefix, name = str(path), path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        with open_binary(path) as fh:
            yield from map_entries(lines(fh, prefix), _openmemory)
        return
    if name.endswith(".zip"):
        if (member := zip_member(path)) is None:
            raise unknown(path, "a zip without memories.json or memories.jsonl.gz")
        prefix = f"{path}!{member}"
        try:
            with zipfile.ZipFile(path) as zf:
                if member.endswith(".gz"):
                    with zf.open(member) as raw, gzip.GzipFile(fileobj=raw) as fh:
                        yield from map_entries(lines(fh, prefix), _openmemory)
                    return
                with zf.open(member) as raw:
                    data = read_document(raw, prefix)
        except READ_ERRORS as exc:
            raise unreadable(path, exc) from exc
        doc = load_document(Path(prefix), data)
    elif doc is None:
        doc = load_document(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("memories"), list):
        raise unknown(path, "not an OpenMemory memories.json")
    # memories.json names categories and apps by id: resolve them as memories.jsonl.gz has them.
    names = {key: {e.get("id"): e.get("name") for e in doc.get(key) or () if isinstance(e, dict)}
             for key in ("categories", "apps")}

    def resolved(memory: Any) -> Any:
        if not isinstance(memory, dict):
            return memory
        ids = memory.get("category_ids")
        categories = [names["categories"].get(c, c) for c in ids] if isinstance(ids, list) else ids
        return {**memory, "categories": categories, "app": names["apps"].get(memory.get("app_id"))}

    yield from map_entries(((loc, resolved(m)) for loc, m in indexed(doc["memories"], prefix)), _openmemory)


def _read_memory_files(path: Path, doc: Any) -> Iterator[Item]:
    for entry in documents(path, doc):
        if isinstance(entry, ImportProblem):
            yield entry
        elif (item := apply(partial(_ghost, relative=entry[1]), str(entry[0]), entry[2])) is not None:
            yield item


def _read_locomo(path: Path, doc: Any) -> Iterator[Item]:
    for entry in documents(path, doc):
        if isinstance(entry, ImportProblem):
            yield entry
            continue
        file, name, conversation = entry
        if not is_locomo(conversation):
            if path.is_file():
                raise unknown(path, "not a LoCoMo conversation")
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
                if (item := apply(mapper, location, turn)) is not None:
                    yield item


#: The reader of each format: ``(path, the document detection already parsed or None)`` to items.
READERS: dict[str, Callable[[Path, Any], Iterator[Item]]] = {
    "jsonl": _read_jsonl,
    "json-array": _read_json_array,
    "mem0": _read_mem0,
    "openmemory": _read_openmemory,
    "memory-files": _read_memory_files,
    "locomo": _read_locomo,
}
