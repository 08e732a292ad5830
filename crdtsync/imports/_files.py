"""Reading the files of an import: JSON documents, JSONL lines (plain or gzip), folders of ``*.json`` and
OpenMemory zips. A file that cannot be used raises :class:`~crdtsync.errors.ImportFormatError`; a line or a
file of a folder that cannot be parsed becomes an :class:`ImportProblem` instead.

Every read is bounded, so that an endless or huge input (``/dev/zero``, a giant single line, a zip bomb) ends
with ``IMPORT_TOO_LARGE`` instead of taking the machine's memory: a JSONL line is read up to
:data:`MAX_LINE_BYTES`, a whole JSON document up to :data:`MAX_DOCUMENT_BYTES`, and a stream copied by
:func:`spool` up to :data:`MAX_STREAM_BYTES`.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from io import BufferedReader
from pathlib import Path
from typing import IO, Any, Protocol

from crdtsync.errors import ImportFormatError
from crdtsync.imports._record import FORMATS, ImportProblem, Item, Mapper, apply

#: What reading a file, a gzip stream or a zip may raise.
READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)
#: File names read as JSONL whatever their first line looks like.
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
#: Longest JSONL line read, in bytes, its newline not counted (4 MiB). A record holds at most 64 KiB of
#: content and 16 KiB of metadata, which JSON's escapes can make six times longer, plus labels and tags: no
#: importable record comes near it. A longer line ends the reading of its file (reading on to its end could
#: take forever: ``/dev/zero`` has none).
MAX_LINE_BYTES = 4 * 1024 * 1024
#: Largest JSON document read whole, in bytes (64 MiB): a ``json-array``, ``mem0`` or OpenMemory
#: ``memories.json`` file (a zip member counts decompressed), one memory file or one LoCoMo file. Parsing one
#: takes up to some 25 times its size in memory (1.7 GB at the limit, for a document of empty objects; about 5
#: times for real memories). Larger collections import as JSONL, which is read a line at a time.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: Most bytes :func:`spool` copies from standard input, a pipe or a device (1 GiB).
MAX_STREAM_BYTES = 1024 * 1024 * 1024
#: Bytes read at a time by :func:`spool` and :func:`count_lines`.
CHUNK_BYTES = 1024 * 1024


class ByteReader(Protocol):
    """What the bounded reads take: a binary file, a gzip stream, a zip member or standard input's buffer."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


def unreadable(path: object, exc: BaseException) -> ImportFormatError:
    return ImportFormatError(f"cannot read {path}: {exc}", code="IMPORT_UNREADABLE")


def unknown(path: Path, why: str) -> ImportFormatError:
    return ImportFormatError(f"{path}: {why}; supported: {', '.join(FORMATS)}", code="IMPORT_UNKNOWN_FORMAT")


def mib(size: int) -> str:
    """``size`` bytes in MiB for messages (``64 MiB``)."""
    return f"{size // (1024 * 1024)} MiB"


def too_large(where: object, why: str) -> ImportFormatError:
    """ImportFormatError ``IMPORT_TOO_LARGE``: ``where`` is over a read limit, ``why`` says which."""
    return ImportFormatError(f"{where}: {why}", code="IMPORT_TOO_LARGE")


def parse(data: bytes) -> Any:
    """Parse UTF-8 JSON (a BOM is allowed); raises ValueError or RecursionError."""
    # As data.decode("utf-8-sig"), without that codec's Python-level call when there is no BOM.
    return json.loads(data.decode("utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"))


def read_document(fh: ByteReader, where: object) -> bytes:
    """All of ``fh``, at most :data:`MAX_DOCUMENT_BYTES` bytes (``where`` names it in the error).

    Raises:
        ImportFormatError: ``IMPORT_TOO_LARGE`` when ``fh`` holds more, after reading one byte past the limit.
        OSError, EOFError, zlib.error, zipfile.BadZipFile: as ``fh.read`` raises them.
    """
    data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise too_large(where, f"larger than {mib(MAX_DOCUMENT_BYTES)}, the most a JSON document may be (a larger "
                               "collection imports as JSONL, read a line at a time)")
    return data


def load_document(path: Path, data: bytes | None = None) -> Any:
    """Parse a whole JSON file, or ``data`` read from it already.

    Raises:
        ImportFormatError: ``IMPORT_UNREADABLE``, ``IMPORT_TOO_LARGE`` (over :data:`MAX_DOCUMENT_BYTES`) or
            ``IMPORT_MALFORMED``.
    """
    if data is None:
        try:
            with path.open("rb") as fh:
                data = read_document(fh, path)
        except OSError as exc:
            raise unreadable(path, exc) from exc
    try:
        return parse(data)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:
        raise ImportFormatError(f"{path}: not JSON: {exc}") from exc


def read_line(fh: ByteReader, limit: int) -> bytes | None:
    """The next line of ``fh`` with its newline (``b""`` at the end), read up to ``limit`` bytes; ``None`` when
    it is longer than ``limit`` bytes, its newline not counted (the rest of it is left unread).

    Raises:
        OSError, EOFError, zlib.error, zipfile.BadZipFile: as ``fh.readline`` raises them.
    """
    raw = fh.readline(limit + 1)
    return None if len(raw) > limit and not raw.endswith(b"\n") else raw


def spool(source: ByteReader, target: IO[bytes], name: str) -> int:
    """Copy ``source`` (standard input, a pipe, a device) into the file ``target``, :data:`CHUNK_BYTES` at a
    time, for an import that reads its input twice (once to tell the format); ``name`` stands for ``source`` in
    errors. Returns the bytes copied.

    Raises:
        ImportFormatError: ``IMPORT_TOO_LARGE`` past :data:`MAX_STREAM_BYTES`, or as soon as a line passes
            :data:`MAX_DOCUMENT_BYTES` (no input an import reads has one: JSONL lines are shorter and whole
            documents smaller), so ``/dev/zero`` stops after 64 MiB; ``IMPORT_UNREADABLE`` when reading fails.
        OSError: writing ``target`` failed.
    """
    total = line = 0
    while True:
        try:
            chunk = source.read(CHUNK_BYTES)
        except OSError as exc:
            raise unreadable(name, exc) from exc
        if not chunk:
            return total
        total += len(chunk)
        newline = chunk.rfind(b"\n")
        line = line + len(chunk) if newline < 0 else len(chunk) - newline - 1
        if line > MAX_DOCUMENT_BYTES:
            raise too_large(name, f"a line longer than {mib(MAX_DOCUMENT_BYTES)}: no input an import reads has "
                                  f"one (a JSONL line holds at most {mib(MAX_LINE_BYTES)}, a JSON document "
                                  f"{mib(MAX_DOCUMENT_BYTES)})")
        if total > MAX_STREAM_BYTES:
            raise too_large(name, f"more than {mib(MAX_STREAM_BYTES)}, the most an import copies from standard "
                                  "input or a pipe (import a larger input as a file)")
        target.write(chunk)


def count_lines(fh: ByteReader) -> int:
    """The lines of ``fh`` (blank ones too), read :data:`CHUNK_BYTES` at a time whatever their length."""
    count, last = 0, b"\n"
    while chunk := fh.read(CHUNK_BYTES):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def open_binary(path: Path) -> gzip.GzipFile | BufferedReader:
    """``path`` opened for reading bytes, through gzip when its name ends in ``.gz``."""
    try:
        return gzip.GzipFile(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
    except OSError as exc:
        raise unreadable(path, exc) from exc


def lines(fh: ByteReader, prefix: str) -> Iterator[tuple[str, Any] | ImportProblem]:
    """``(location, parsed value)`` per non-blank line, or a problem for a line that is not JSON. A line longer
    than :data:`MAX_LINE_BYTES` is a problem ``IMPORT_TOO_LARGE`` and the last item: the rest of ``fh`` is not
    read. Raises ImportFormatError ``IMPORT_UNREADABLE`` when reading fails."""
    number = 0
    try:
        while (raw := read_line(fh, MAX_LINE_BYTES)) != b"":
            number += 1
            if raw is None:
                yield ImportProblem(f"{prefix}:{number}", "IMPORT_TOO_LARGE",
                                    f"a line longer than {mib(MAX_LINE_BYTES)}, the most a JSONL line may hold: "
                                    "the rest of the file was not read")
                return
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
