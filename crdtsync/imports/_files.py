"""Reading the files of an import: JSON documents, JSONL lines (plain or gzip), folders of ``*.json`` and
OpenMemory zips. A file that cannot be used raises :class:`~crdtsync.errors.ImportFormatError`; a line or a
file of a folder that cannot be parsed becomes an :class:`ImportProblem` instead."""

from __future__ import annotations

import codecs
import gzip
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from io import BufferedReader
from pathlib import Path
from typing import Any

from crdtsync.errors import ImportFormatError
from crdtsync.imports._record import FORMATS, ImportProblem, Item, Mapper, apply

#: What reading a file, a gzip stream or a zip may raise.
READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)
#: File names read as JSONL whatever their first line looks like.
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")


def unreadable(path: object, exc: BaseException) -> ImportFormatError:
    return ImportFormatError(f"cannot read {path}: {exc}", code="IMPORT_UNREADABLE")


def unknown(path: Path, why: str) -> ImportFormatError:
    return ImportFormatError(f"{path}: {why}; supported: {', '.join(FORMATS)}", code="IMPORT_UNKNOWN_FORMAT")


def parse(data: bytes) -> Any:
    """Parse UTF-8 JSON (a BOM is allowed); raises ValueError or RecursionError."""
    # As data.decode("utf-8-sig"), without that codec's Python-level call when there is no BOM.
    return json.loads(data.decode("utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"))


def load_document(path: Path, data: bytes | None = None) -> Any:
    """Parse a whole JSON file. Raises ImportFormatError ``IMPORT_UNREADABLE`` or ``IMPORT_MALFORMED``."""
    try:
        data = path.read_bytes() if data is None else data
    except OSError as exc:
        raise unreadable(path, exc) from exc
    try:
        return parse(data)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:
        raise ImportFormatError(f"{path}: not JSON: {exc}") from exc


def open_binary(path: Path) -> gzip.GzipFile | BufferedReader:
    """``path`` opened for reading bytes, through gzip when its name ends in ``.gz``."""
    try:
        return gzip.GzipFile(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
    except OSError as exc:
        raise unreadable(path, exc) from exc


def lines(fh: Iterable[bytes], prefix: str) -> Iterator[tuple[str, Any] | ImportProblem]:
    """``(location, parsed value)`` per non-blank line, or a problem for a line that is not JSON."""
    try:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                try:
                    yield f"{prefix}:{number}", parse(raw)
                except (ValueError, RecursionError) as exc:
                    yield ImportProblem(f"{prefix}:{number}", "IMPORT_MALFORMED", f"not JSON: {exc}")
    except READ_ERRORS as exc:
        raise unreadable(prefix, exc) from exc


def map_entries(entries: Iterable[tuple[str, Any] | ImportProblem], mapper: Mapper) -> Iterator[Item]:
    """Apply ``mapper`` to each ``(location, JSON value)``; problems pass through, skipped records vanish."""
    for entry in entries:
        item = entry if isinstance(entry, ImportProblem) else apply(mapper, *entry)
        if item is not None:
            yield item


def indexed(items: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """``("prefix#index", element)`` for each element of a JSON array."""
    return ((f"{prefix}#{index}", obj) for index, obj in enumerate(items))


def json_files(root: Path) -> list[Path]:
    """The ``*.json`` files under the folder ``root``, recursively, in sorted order of their relative path."""
    return sorted((p for p in root.rglob("*.json") if p.is_file()), key=lambda p: p.relative_to(root).parts)


def documents(path: Path, doc: Any) -> Iterator[tuple[Path, str, Any] | ImportProblem]:
    """``(file, path relative to the folder, parsed JSON)`` for ``path`` itself or each ``*.json`` under it;
    a file that cannot be read or parsed is a problem."""
    if path.is_file():
        yield path, path.name, load_document(path) if doc is None else doc
        return
    for file in json_files(path):
        try:
            yield file, file.relative_to(path).as_posix(), load_document(file)
        except ImportFormatError as exc:
            yield ImportProblem(str(file), exc.code, exc.message)


def zip_member(path: Path) -> str | None:
    """The ``memories.jsonl.gz`` member of an OpenMemory zip, else its ``memories.json``, else ``None``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {name.rsplit("/", 1)[-1]: name for name in zf.namelist()}
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from exc
    return names.get("memories.jsonl.gz") or names.get("memories.json")
