"""Telling the format of a file or folder (:func:`detect_format`) and reading it (:func:`read_import`,
:func:`count_hint`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crdtsync.errors import ImportFormatError
from crdtsync.imports._files import (
    JSONL_SUFFIXES,
    MAX_DOCUMENT_BYTES,
    MAX_LINE_BYTES,
    READ_ERRORS,
    ByteReader,
    count_lines,
    documents,
    json_files,
    lines,
    load_document,
    mib,
    open_binary,
    parse,
    read_document,
    read_line,
    too_large,
    unknown,
    unreadable,
    zip_member,
)
from crdtsync.imports._formats import CONTENT_KEYS, READERS, is_locomo
from crdtsync.imports._record import FORMATS, Item


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
    else:
        _check_path(path)
        fmt, doc = format, None
    return READERS[fmt](path, doc)


def count_hint(path: Path) -> int | None:
    """A cheap estimate of the number of records, for a progress bar: the lines of an uncompressed JSONL file
    (blank ones too), the files of a memory-files folder, the ``"dia_id"`` keys of LoCoMo files; ``None`` for
    other formats or an unusable path. Reads within the import's limits. Never raises."""
    try:
        fmt = detect_format(path)
        if fmt == "jsonl" and not path.name.lower().endswith(".gz"):
            with path.open("rb") as fh:
                return count_lines(fh)
        files = json_files(path) if path.is_dir() else [path]
        if fmt == "memory-files":
            return len(files)
        if fmt == "locomo":
            total = 0
            for file in files:
                with file.open("rb") as fh:
                    total += read_document(fh, file).count(b'"dia_id"')
            return total
    except (ImportFormatError, *READ_ERRORS):
        return None
    return None


def _line_format(obj: object) -> str:
    """``openmemory`` for a line of its ``memories.jsonl``, else ``jsonl``."""
    is_openmemory = isinstance(obj, dict) and {"id", "content", "state"} <= obj.keys() and "app" in obj
    return "openmemory" if is_openmemory else "jsonl"


def _check_path(path: Path) -> None:
    """Raise ImportFormatError ``IMPORT_UNREADABLE`` unless ``path`` is a file or a folder. An import reads its
    input twice (once to tell the format), which a pipe or a device cannot give: the ``crdtsync`` command copies
    those to a file first (:func:`~crdtsync.imports.spool`)."""
    if not path.exists():
        raise ImportFormatError(f"{path} does not exist", code="IMPORT_UNREADABLE")
    if not (path.is_file() or path.is_dir()):
        raise ImportFormatError(f"{path} is neither a file nor a folder (a pipe or a device?): copy it to a file "
                                "and import that", code="IMPORT_UNREADABLE")


def _sniff(path: Path) -> tuple[str, Any]:
    """``(format, the parsed document if detection parsed one, else None)``."""
    _check_path(path)
    if path.is_dir():
        for _, _, doc in (d for d in documents(path, None) if isinstance(d, tuple)):
            return ("locomo" if is_locomo(doc) else "memory-files"), None
        if not json_files(path):
            raise unknown(path, "a folder without *.json files")
        return "memory-files", None
    name = path.name.lower()
    if name.endswith(".zip"):
        if zip_member(path) is None:
            raise unknown(path, "a zip without memories.json or memories.jsonl.gz")
        return "openmemory", None
    with open_binary(path) as fh:
        if name.endswith(JSONL_SUFFIXES):
            parsed = (e[1] for e in lines(fh, str(path)) if isinstance(e, tuple) and isinstance(e[1], dict))
            return _line_format(next(parsed, None)), None
        try:
            # The first line may be a whole JSON document: read up to that limit.
            first, more = _next_nonblank(fh, path), _next_nonblank(fh, path) != b""
        except READ_ERRORS as exc:
            raise unreadable(path, exc) from exc
    try:
        head = parse(first)
    except (ValueError, RecursionError):
        head = None
    if more and isinstance(head, dict):
        return _line_format(head), None
    try:
        doc = load_document(path) if more or head is None else head
    except ImportFormatError as exc:
        if exc.code == "IMPORT_MALFORMED" and not name.endswith(".json"):
            raise unknown(path, "neither JSON, JSONL, a zip nor a folder") from exc
        raise
    return _classify(doc, path), doc


def _next_nonblank(fh: ByteReader, path: Path) -> bytes:
    """The next line of ``fh`` that is not blank, ``b""`` at the end.

    Raises:
        ImportFormatError: ``IMPORT_TOO_LARGE`` for a line longer than :data:`MAX_DOCUMENT_BYTES`: no JSON
            document may be that large, nor any JSONL line.
    """
    while (raw := read_line(fh, MAX_DOCUMENT_BYTES)) is not None:
        if not raw or raw.strip():
            return raw
    raise too_large(path, f"a line longer than {mib(MAX_DOCUMENT_BYTES)}: neither a JSON document (at most "
                          f"{mib(MAX_DOCUMENT_BYTES)}) nor JSONL (lines of at most {mib(MAX_LINE_BYTES)})")


def _classify(doc: object, path: Path) -> str:
    """The format of a whole JSON document."""
    if isinstance(doc, list):
        first = doc[0] if doc else None
        is_mem0 = isinstance(first, dict) and {"memory", "hash"} <= first.keys() and "content" not in first
        return "mem0" if is_mem0 else "json-array"
    if not isinstance(doc, dict):
        raise unknown(path, f"a JSON {type(doc).__name__}, not an object or array")
    if isinstance(doc.get("results"), list):
        return "mem0"
    if isinstance(doc.get("memories"), list):
        return "openmemory"
    if is_locomo(doc):
        return "locomo"
    if {"content", "timestamp"} <= doc.keys():
        return "memory-files"
    if any(key in doc for key in CONTENT_KEYS):
        return "json-array"
    raise unknown(path, "a JSON object of no known shape")
