"""Tests of crdtsync.imports on real files (small fixtures in tests/data/imports, the LoCoMo corpus, files past
the read limits, a FIFO and /dev/zero), and of what importing them into a vault makes of ids already taken."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from crdtsync._vault_import import IMPORT_BATCH_CHARS
from crdtsync.errors import ImportFormatError
from crdtsync.imports import (
    IMPORT_NAMESPACE,
    MAX_DOCUMENT_BYTES,
    MAX_LINE_BYTES,
    ImportProblem,
    ImportRecord,
    count_hint,
    detect_format,
    export_jsonl,
    read_import,
    spool,
    stable_id,
)
from crdtsync.model.records import MAX_CONTENT_BYTES, Memory
from crdtsync.vault import Vault

DATA = Path(__file__).parent / "data" / "imports"
LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo"
OPENMEMORY = DATA / "openmemory"


def split(path: Path, **kwargs: str) -> tuple[list[ImportRecord], list[ImportProblem]]:
    records: list[ImportRecord] = []
    problems: list[ImportProblem] = []
    for item in read_import(path, **kwargs):
        if isinstance(item, ImportRecord):
            records.append(item)
        else:
            problems.append(item)
    return records, problems


def by_content(records: list[ImportRecord]) -> dict[str, ImportRecord]:
    return {r.content: r for r in records}


def write_lines(path: Path, *objects: object) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


@pytest.fixture
def locomo() -> Path:
    """The LoCoMo corpus; missing data fails under CI=true and skips elsewhere."""
    if not (LOCOMO / "26.json").is_file():
        message = f"LoCoMo corpus not found at {LOCOMO} (see ../shared/data/README.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return LOCOMO


# --- JSONL and JSON arrays -----------------------------------------------------------------------------


def test_jsonl_imports_good_lines_and_reports_bad_ones_by_line_number() -> None:
    path = DATA / "memories.jsonl"
    assert detect_format(path) == "jsonl"
    records, problems = split(path)

    assert [(p.location, p.code) for p in problems] == [
        (f"{path}:3", "IMPORT_MALFORMED"),
        (f"{path}:5", "IMPORT_INVALID_RECORD"),
        (f"{path}:7", "IMPORT_INVALID_RECORD"),
    ]
    assert "content" in problems[1].message and "level" in problems[2].message
    assert [r.location for r in records] == [f"{path}:{n}" for n in (1, 2, 6, 8)]

    dark, uv, lyon, weekends = records
    assert dark == ImportRecord(
        id=dark.id, content="Prefers dark mode in every editor", category="preference",
        tags=frozenset({"ui", "editor"}), created="2024-03-01T08:30:00.000Z", source=None,
        metadata={"app": "vscode"}, level=1, location=f"{path}:1",
    )
    normalized = {"content": dark.content, "category": "preference", "tags": ["editor", "ui"],
                  "created": dark.created, "metadata": {"app": "vscode"}, "level": 1}
    assert dark.id == stable_id(None, normalized)
    # "text" and "memory" stand for content, "created_at" for created.
    assert (uv.content, uv.source, uv.id) == ("Uses uv to manage Python environments", "notes:python",
                                              stable_id("notes:python", {}))
    assert (lyon.content, lyon.level) == ("Lives in Lyon, France", 0)
    assert lyon.created == "2024-04-02T18:00:00.000Z"
    # A record's own UUID id is kept as is (it is how our exports round-trip), even with a source.
    assert (weekends.id, weekends.source) == ("0190f1c2-7a3b-7def-8abc-0123456789ab", "claude-code")


def test_json_array_reports_the_bad_element_by_index() -> None:
    path = DATA / "array.json"
    assert detect_format(path) == "json-array"
    records, problems = split(path)
    assert [r.content for r in records] == ["Allergic to peanuts", "Speaks French and Spanish"]
    assert [r.location for r in records] == [f"{path}#0", f"{path}#2"]
    assert records[1].created == "2023-11-05T12:00:00.000Z"
    assert [(p.location, p.code) for p in problems] == [(f"{path}#1", "IMPORT_INVALID_RECORD")]
    assert "tags" in problems[0].message


def test_invalid_fields_become_problems_with_the_validator_code(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    write_lines(
        path,
        {"content": "x" * (MAX_CONTENT_BYTES + 1)},
        {"content": "   "},
        {"content": "ok", "created": "last Tuesday"},
        {"content": "ok", "metadata": ["not", "an", "object"]},
        {"content": "ok", "category": 7},
        ["content", "in an array"],
        {"content": "ok", "id": 12},
        {"content": "still imported"},
    )
    with path.open("ab") as fh:
        fh.write(b'{"content": "caf\xe9 in Latin-1"}\n')
    records, problems = split(path)
    assert [r.content for r in records] == ["still imported"]
    invalid = ["IMPORT_INVALID_RECORD"] * 6
    assert [p.code for p in problems] == ["CONTENT_TOO_LARGE", *invalid, "IMPORT_MALFORMED"]
    assert [p.location for p in problems] == [f"{path}:{n}" for n in (1, 2, 3, 4, 5, 6, 7, 9)]


# --- mem0, OpenMemory, memory files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mem0_results.json", "mem0_list.json"])
def test_mem0_get_all_output(name: str) -> None:
    path = DATA / name
    assert detect_format(path) == "mem0"
    records, problems = split(path)
    assert problems == []
    vegetarian, british = records
    assert vegetarian == ImportRecord(
        id=stable_id("mem0:892db2ae-06d9-49e5-8b3e-585ef9b85b8e", {}),
        content="Is a vegetarian and avoids dairy", category="food", tags=frozenset({"food", "health"}),
        created="2024-07-20T08:30:00.123Z", source="mem0:892db2ae-06d9-49e5-8b3e-585ef9b85b8e",
        metadata={"food": "vegan-ish", "mem0": {"hash": "5c0a5c8f2b0d4ed2b1f3a9e0c6d7b8a1", "user_id": "alex",
                                                "updated_at": "2024-07-21T08:00:00.000000-07:00"}},
        location=f"{path}#0",
    )
    assert (british.category, british.tags) == (None, frozenset())
    assert british.created == "2024-08-01T10:00:00.000Z"
    assert british.metadata == {"mem0": {"hash": "0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b", "user_id": "alex",
                                         "agent_id": "writer"}}


def openmemory_zip(tmp_path: Path, *, with_jsonl: bool) -> Path:
    """A zip laid out as OpenMemory's POST /api/v1/backup/export writes it."""
    path = tmp_path / "memories_export_alex.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(OPENMEMORY / "memories.json", "memories.json")
        if with_jsonl:
            zf.writestr("memories.jsonl.gz", gzip.compress((OPENMEMORY / "memories.jsonl").read_bytes()))
    return path


@pytest.mark.parametrize("variant", ["memories.json", "memories.jsonl", "zip", "zip-json-only", "jsonl.gz"])
def test_openmemory_backup_in_each_of_its_shapes(tmp_path: Path, variant: str) -> None:
    if variant.startswith("zip"):
        path = openmemory_zip(tmp_path, with_jsonl=variant == "zip")
    elif variant == "jsonl.gz":
        path = tmp_path / "memories.jsonl.gz"
        path.write_bytes(gzip.compress((OPENMEMORY / "memories.jsonl").read_bytes()))
    else:
        path = OPENMEMORY / variant
    assert detect_format(path) == "openmemory"
    records, problems = split(path)
    assert problems == []
    # "deleted" and "archived" memories are skipped; "paused" is still the user's.
    assert [r.content for r in records] == [
        "Prefers tabs over spaces in Go code", "Is learning Rust in the evenings",
    ]
    tabs, rust = records
    assert tabs == ImportRecord(
        id=stable_id("openmemory:d3000000-0000-4000-8000-000000000001", {}),
        content="Prefers tabs over spaces in Go code", category="preferences",
        tags=frozenset({"preferences", "technology"}), created="2025-05-02T10:11:12.345Z",
        source="openmemory:d3000000-0000-4000-8000-000000000001",
        metadata={
            "source_app": "openmemory",
            "openmemory": {"state": "active", "app": "claude", "updated_at": "2025-05-02T11:00:00+00:00"},
        },
        location=tabs.location,
    )
    assert rust.metadata == {"openmemory": {"state": "paused", "app": "cursor",
                                            "updated_at": "2025-05-03T11:00:00+00:00"}}
    if variant == "zip":
        assert tabs.location == f"{path}!memories.jsonl.gz:1"


def test_memory_files_folder_walks_recursively_in_order(tmp_path: Path) -> None:
    folder = DATA / "ghost"
    assert detect_format(folder) == "memory-files"
    assert count_hint(folder) == 2
    records, problems = split(folder)
    assert problems == []
    assert records == [
        ImportRecord(
            id=stable_id("file:2024-05-01-standup.json", {}), content="Daily standup moved to 9:30",
            category="work", created="2024-05-01T09:00:00.000Z", source="file:2024-05-01-standup.json",
            metadata={"device_id": "laptop-7f3a", "context": {"channel": "team-chat"}},
            location=str(folder / "2024-05-01-standup.json"),
        ),
        ImportRecord(
            id=stable_id("file:sub/coffee.json", {}), content="Takes coffee black", category="preference",
            created="2024-05-03T05:15:00.000Z", source="file:sub/coffee.json",
            metadata={"device_id": "phone-19bc", "context": "morning routine chat"},
            location=str(folder / "sub" / "coffee.json"),
        ),
    ]
    # One broken file is reported; the others still import. A single file reads the same way.
    copy = tmp_path / "ghost"
    shutil.copytree(folder, copy)
    (copy / "broken.json").write_text('{"content": "half', encoding="utf-8")
    (copy / "empty.json").write_text('{"timestamp": "2024-05-04T00:00:00Z", "content": ""}', encoding="utf-8")
    records, problems = split(copy)
    assert len(records) == 2
    assert [(p.location, p.code) for p in problems] == [
        (str(copy / "broken.json"), "IMPORT_MALFORMED"), (str(copy / "empty.json"), "IMPORT_INVALID_RECORD"),
    ]
    single = folder / "sub" / "coffee.json"
    assert detect_format(single) == "memory-files"
    assert [r.source for r in read_import(single) if isinstance(r, ImportRecord)] == ["file:coffee.json"]


# --- LoCoMo ----------------------------------------------------------------------------------------------


def test_locomo_corpus_is_5882_turns(locomo: Path) -> None:
    assert detect_format(locomo) == "locomo"
    assert count_hint(locomo) == 5882
    records, problems = split(locomo)
    assert problems == []
    assert len(records) == 5882
    assert len({r.id for r in records}) == 5882
    turn = next(r for r in records if r.source == "26.json#D1:5")
    assert turn == ImportRecord(
        id=stable_id("26.json#D1:5", {}),
        content="The transgender stories were so inspiring! I was so happy and thankful for all the support.",
        category="Caroline", tags=frozenset({"locomo"}), created="2023-05-08T13:56:00.000Z",
        source="26.json#D1:5",
        metadata={"session": 1, "dia_id": "D1:5",
                  "blip_caption": "a photo of a dog walking past a wall with a painting of a woman",
                  "img_url": ["https://i.redd.it/l7hozpetnhlb1.jpg"]},
        location=str(locomo / "26.json") + "#D1:5",
    )
    # The turn whose img_url inlines a 16 KB base64 image keeps its caption but not the payload.
    inlined = next(r for r in records if r.source == "42.json#D5:6")
    assert inlined.metadata is not None and "img_url" not in inlined.metadata


def test_locomo_single_file_and_folder_detection(locomo: Path, tmp_path: Path) -> None:
    assert detect_format(locomo / "26.json") == "locomo"
    records, problems = split(locomo / "26.json")
    assert (len(records), problems) == (419, [])
    assert records[0].location == f"{locomo / '26.json'}#D1:1"
    # A folder holding a LoCoMo file is read as LoCoMo; a stray JSON file in it is reported, not mistaken.
    folder = tmp_path / "conversations"
    folder.mkdir()
    shutil.copy(locomo / "30.json", folder / "30.json")
    shutil.copy(DATA / "array.json", folder / "zz.json")
    assert detect_format(folder) == "locomo"
    records, problems = split(folder)
    assert len(records) == 369
    assert [(p.location, p.code) for p in problems] == [(str(folder / "zz.json"), "IMPORT_UNKNOWN_FORMAT")]


# --- ids ---------------------------------------------------------------------------------------------------


def all_fixtures(tmp_path: Path) -> list[Path]:
    return [DATA / "memories.jsonl", DATA / "array.json", DATA / "mem0_results.json",
            OPENMEMORY / "memories.json", openmemory_zip(tmp_path, with_jsonl=True), DATA / "ghost"]


def test_reading_twice_gives_identical_records(tmp_path: Path) -> None:
    for path in all_fixtures(tmp_path):
        first, second = list(read_import(path)), list(read_import(path))
        assert first == second
        assert all(uuid.UUID(r.id) for r in first if isinstance(r, ImportRecord))


def test_ids_follow_the_source_and_keep_equal_texts_apart(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "ids.jsonl",
        {"content": "Likes jazz", "source": "phone"},
        {"content": "Likes jazz", "source": "laptop"},
        {"content": "Likes jazz"},
        {"content": "Likes jazz", "created": "2024-01-01T00:00:00Z"},
        {"content": "Likes jazz", "category": "music"},
        {"content": "Likes jazz", "tags": ["b", "a"]},
        {"tags": ["a", "b"], "content": "Likes jazz"},
    )
    ids = [r.id for r in read_import(path) if isinstance(r, ImportRecord)]
    assert len(set(ids[:6])) == 6  # equal text, another source or field: distinct memories
    assert ids[5] == ids[6]  # the same record written differently: the same memory
    changed = write_lines(tmp_path / "edited.jsonl", {"content": "Likes jazz and blues", "source": "phone"})
    assert [r.id for r in read_import(changed) if isinstance(r, ImportRecord)] == [ids[0]]


def test_stable_id_is_a_uuid5_of_the_canonical_record() -> None:
    record = {"content": "Likes jazz", "tags": ["b", "a"], "metadata": {"y": 1, "x": 2}}
    reordered = {"metadata": {"x": 2, "y": 1}, "tags": ["a", "b"], "content": "Likes jazz", "level": 1}
    assert stable_id(None, record) == stable_id(None, reordered)
    assert uuid.UUID(stable_id(None, record)).version == 5
    assert stable_id("mem0:42", record) == str(uuid.uuid5(IMPORT_NAMESPACE, "source:mem0:42"))
    assert stable_id(None, {**record, "level": 0}) != stable_id(None, record)


# --- export and round trip -------------------------------------------------------------------------------


def sample_memories() -> list[Memory]:
    return [
        Memory(id="0190f1c2-7a3b-7def-8abc-0123456789ab", content="Prefers dark mode — always", category="ui",
               tags=frozenset({"editor", "ui"}), level=1, metadata={"app": "vscode", "nested": {"k": [1, 2]}},
               created="2024-03-01T08:30:00.000Z", updated="2024-03-02T08:30:00.000Z", created_by="dev-a",
               updated_by="dev-b"),
        Memory(id=stable_id("mem0:abc", {}), content="Is vegetarian", source="mem0:abc", level=0,
               created="2024-07-20T08:30:00.123Z", updated="2024-07-20T08:30:00.123Z", created_by="dev-a",
               updated_by="dev-a"),
        Memory(id="0190f1c2-7a3b-7def-8abc-0123456789ac", content="Gone", deleted=True,
               created="2024-01-01T00:00:00.000Z", updated="2024-01-02T00:00:00.000Z"),
    ]


def test_export_then_import_round_trips(tmp_path: Path) -> None:
    memories = sample_memories()
    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as out:
        assert export_jsonl(memories, out) == 2  # the deleted memory is not exported
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert list(rows[0]) == ["id", "content", "category", "tags", "level", "source", "metadata", "created",
                             "updated", "created_by", "updated_by"]
    assert rows[0]["tags"] == ["editor", "ui"]

    assert detect_format(path) == "jsonl"
    assert count_hint(path) == 2
    records, problems = split(path)
    assert problems == []
    fields = ("id", "content", "category", "tags", "level", "source", "metadata", "created")
    for memory, record in zip(memories[:2], records, strict=True):
        assert [getattr(record, f) for f in fields] == [getattr(memory, f) for f in fields]

    # Into a fresh vault (new updated/created_by stamps) and out again: the same records.
    fresh = [
        Memory(id=r.id, content=r.content, category=r.category, tags=r.tags, level=r.level, source=r.source,
               metadata=r.metadata, created=r.created or "", updated="2025-01-01T00:00:00.000Z",
               created_by="dev-c", updated_by="dev-c")
        for r in records
    ]
    out2 = io.StringIO()
    export_jsonl(fresh, out2)
    stamps = ("updated", "created_by", "updated_by")
    again = [json.loads(line) for line in out2.getvalue().splitlines()]
    assert [{k: v for k, v in row.items() if k not in stamps} for row in again] == [
        {k: v for k, v in row.items() if k not in stamps} for row in rows
    ]
    # Re-importing the export into its own vault brings no new id.
    assert {r.id for r in records} <= {m.id for m in memories}


# --- detection, errors, streaming --------------------------------------------------------------------------


def test_unusable_paths_raise_import_format_errors(tmp_path: Path) -> None:
    cases = {
        "odd.json": ('{"settings": {"theme": "dark"}}', "IMPORT_UNKNOWN_FORMAT"),
        "notes.txt": ("Remember to buy milk\n", "IMPORT_UNKNOWN_FORMAT"),
        "number.json": ("42", "IMPORT_UNKNOWN_FORMAT"),
        "broken.json": ('{"results": [', "IMPORT_MALFORMED"),
    }
    for name, (text, code) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(ImportFormatError) as info:
            read_import(tmp_path / name)
        assert info.value.code == code, name
    not_openmemory = tmp_path / "photos.zip"
    with zipfile.ZipFile(not_openmemory, "w") as zf:
        zf.writestr("cat.jpg", b"\xff\xd8")
    (tmp_path / "empty").mkdir()
    for path in (not_openmemory, tmp_path / "empty"):
        with pytest.raises(ImportFormatError) as info:
            detect_format(path)
        assert info.value.code == "IMPORT_UNKNOWN_FORMAT"
    with pytest.raises(ImportFormatError) as info:
        read_import(DATA / "array.json", format="csv")
    assert info.value.code == "IMPORT_UNKNOWN_FORMAT"
    for kwargs in ({}, {"format": "jsonl"}):
        with pytest.raises(ImportFormatError) as info:
            read_import(tmp_path / "missing.jsonl", **kwargs)
        assert info.value.code == "IMPORT_UNREADABLE"
    assert count_hint(tmp_path / "missing.jsonl") is None
    assert count_hint(DATA / "mem0_results.json") is None


def test_jsonl_without_jsonl_name_is_detected_by_its_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dump.json", {"content": "one"}, {"content": "two"})
    assert detect_format(path) == "jsonl"
    single = write_lines(tmp_path / "single.json", {"content": "only one"})
    assert detect_format(single) == "json-array"
    assert [r.content for r in read_import(single) if isinstance(r, ImportRecord)] == ["only one"]


def test_read_import_streams_a_large_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for n in range(100_000):
            fh.write(json.dumps({"content": f"memory number {n} " + "x" * 40, "source": f"big:{n}"}) + "\n")
    assert path.stat().st_size > 7_000_000
    assert count_hint(path) == 100_000
    tracemalloc.start()
    try:
        items = read_import(path)
        assert isinstance(items, Generator)
        first = [next(items) for _ in range(10)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # a few records in memory, not the 7 MB file
    assert [r.location for r in first] == [f"{path}:{n}" for n in range(1, 11)]
    assert sum(1 for _ in items) == 100_000 - 10


# --- bounded reads ------------------------------------------------------------------------------------------


def big_line(path: Path, size: int, *, before: bytes = b"", after: bytes = b"") -> Path:
    """``before``, then one JSON object whose content is ``size`` bytes of ``x`` on a single line, then ``after``,
    written a MiB at a time."""
    with path.open("wb") as fh:
        fh.write(before + b'{"content": "')
        for start in range(0, size, 1 << 20):
            fh.write(b"x" * min(1 << 20, size - start))
        fh.write(b'"}\n' + after)
    return path


def test_a_jsonl_line_over_the_limit_is_a_problem_and_ends_the_file_in_bounded_memory(tmp_path: Path) -> None:
    path = big_line(tmp_path / "long.jsonl", 3 * MAX_LINE_BYTES, before=b'{"content": "before"}\n',
                    after=b'{"content": "after, never read"}\n')
    tracemalloc.start()
    try:
        records, problems = split(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.content for r in records] == ["before"]
    assert [(p.location, p.code) for p in problems] == [(f"{path}:2", "IMPORT_TOO_LARGE")]
    assert "4 MiB" in problems[0].message and "rest of the file was not read" in problems[0].message
    assert peak < 2 * MAX_LINE_BYTES + 1_000_000  # one line's worth, not the 12 MiB line
    assert count_hint(path) == 3


def test_a_jsonl_line_at_the_limit_is_read(tmp_path: Path) -> None:
    """The limit counts the line without its newline; a record that long is refused by the model instead."""
    overhead = len(b'{"content": ""}')
    path = big_line(tmp_path / "edge.jsonl", MAX_LINE_BYTES - overhead)
    records, problems = split(path)
    assert (records, [p.code for p in problems]) == ([], ["CONTENT_TOO_LARGE"])


@pytest.mark.parametrize("shape", ["one line", "pretty-printed", "in a zip"])
def test_a_json_document_over_the_limit_is_refused_whole(tmp_path: Path, shape: str) -> None:
    """``IMPORT_TOO_LARGE`` before anything is parsed: one line longer than a document may be, a document of
    many lines, and a zip member that inflates past the limit (its compressed size is 65 KiB)."""
    if shape == "one line":
        path = big_line(tmp_path / "long.json", MAX_DOCUMENT_BYTES)
    elif shape == "pretty-printed":
        path = tmp_path / "array.json"
        row = (json.dumps({"content": "y" * 1000}) + ",\n").encode()
        with path.open("wb") as fh:
            fh.write(b"[\n")
            fh.writelines(row for _ in range(MAX_DOCUMENT_BYTES // len(row) + 1))
            fh.write(b'{"content": "last"}\n]\n')
        assert path.stat().st_size > MAX_DOCUMENT_BYTES
    else:
        path = tmp_path / "backup.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, \
                zf.open("memories.json", "w") as member:
            member.write(b'{"memories": [')
            for _ in range(MAX_DOCUMENT_BYTES >> 20):
                member.write(b" " * (1 << 20))
            member.write(b"]}")
        assert path.stat().st_size < 100_000
    with pytest.raises(ImportFormatError) as info:
        list(read_import(path))
    assert info.value.code == "IMPORT_TOO_LARGE"
    assert str(path) in info.value.message and "64 MiB" in info.value.message
    assert count_hint(path) is None


def test_a_file_of_a_folder_over_the_limit_is_a_problem_and_the_others_import(tmp_path: Path) -> None:
    folder = tmp_path / "memories"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"timestamp": "2024-01-01T00:00:00Z", "content": "small"}))
    big_line(folder / "b.json", MAX_DOCUMENT_BYTES)
    records, problems = split(folder)
    assert [r.content for r in records] == ["small"]
    assert [(p.location, p.code) for p in problems] == [(str(folder / "b.json"), "IMPORT_TOO_LARGE")]


def test_a_pipe_or_a_device_is_refused_with_a_hint(tmp_path: Path) -> None:
    """``read_import`` reads its input twice (once to tell the format), which a stream cannot give; the
    ``crdtsync`` command copies one to a file first (tests/cli/test_import_limits.py)."""
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for path, kwargs in ((fifo, {}), (fifo, {"format": "jsonl"}), (Path("/dev/zero"), {})):
        with pytest.raises(ImportFormatError) as info:
            read_import(path, **kwargs)
        assert (info.value.code, "neither a file nor a folder" in info.value.message) == ("IMPORT_UNREADABLE", True)


def test_spool_copies_a_stream_and_stops_an_endless_one(tmp_path: Path) -> None:
    text = b'{"content": "one"}\n{"content": "two"}\n'
    copy = io.BytesIO()
    assert spool(io.BytesIO(text), copy, "standard input") == len(text)
    assert copy.getvalue() == text
    with Path("/dev/zero").open("rb") as zeros, (tmp_path / "copy").open("wb") as target, \
            pytest.raises(ImportFormatError) as info:
        spool(zeros, target, "/dev/zero")
    assert info.value.code == "IMPORT_TOO_LARGE"
    assert info.value.message.startswith("/dev/zero: a line longer than 64 MiB")
    assert (tmp_path / "copy").stat().st_size <= MAX_DOCUMENT_BYTES + (1 << 20)


# --- importing into a vault: ids already taken -----------------------------------------------------------------


def test_a_record_whose_id_an_earlier_record_holds_with_other_fields_is_a_problem(
        make_vault: Callable[..., Vault], tmp_path: Path) -> None:
    """Two records of one source (or one id) that disagree: the first is imported, the later one is reported
    with its line and the first's, and never counted as already present; an identical repeat is."""
    path = write_lines(tmp_path / "dupes.jsonl",
                       {"content": "Lives in Lyon", "source": "notes:home"},
                       {"content": "Lives in Paris", "source": "notes:home"},
                       {"content": "Lives in Lyon", "source": "notes:home"},
                       {"id": "0190f1c2-7a3b-7def-8abc-0123456789ab", "content": "Likes tea", "tags": ["drinks"]},
                       {"id": "0190f1c2-7a3b-7def-8abc-0123456789ab", "content": "Likes tea"})
    vault = make_vault()
    report = vault.import_path(path)
    assert (report.added, report.skipped) == (2, 1)
    assert [(p[0], p[1]) for p in report.problems] == [(f"{path}:2", "IMPORT_DUPLICATE_ID"),
                                                       (f"{path}:5", "IMPORT_DUPLICATE_ID")]
    assert f"the record at {path}:1 has the same id (source 'notes:home') but another content" in report.problems[0][2]
    assert "another tags" in report.problems[1][2]
    assert sorted(m.content for m in vault.list()) == ["Likes tea", "Lives in Lyon"]
    assert not report.all_failed


def test_mem0_items_sharing_an_id_are_told_apart_across_import_batches(
        make_vault: Callable[..., Vault], tmp_path: Path) -> None:
    """The first record sits in an earlier write batch (batches end at IMPORT_BATCH_CHARS of content) than
    its conflicting twin: the twin is still reported as a duplicate of its line."""
    per_batch = IMPORT_BATCH_CHARS // MAX_CONTENT_BYTES
    items = [{"id": f"m-{n}", "memory": f"{n:04d}" + "x" * (MAX_CONTENT_BYTES - 4), "hash": "h"}
             for n in range(per_batch)]
    items.append({"id": "m-0", "memory": "An edited memory 0", "hash": "h2"})
    path = tmp_path / "mem0.json"
    path.write_text(json.dumps({"results": items}), encoding="utf-8")
    handled: list[int] = []
    report = make_vault().import_path(path, progress=handled.append)
    assert handled == [per_batch, per_batch + 1]  # two batches
    assert (report.added, report.skipped) == (per_batch, 0)
    assert [(p[0], p[1]) for p in report.problems] == [(f"{path}#{per_batch}", "IMPORT_DUPLICATE_ID")]
    assert f"the record at {path}#0 has the same id (source 'mem0:m-0')" in report.problems[0][2]


def test_a_record_that_differs_from_the_memory_holding_its_id_leaves_the_memory_as_it_is(
        make_vault: Callable[..., Vault], tmp_path: Path) -> None:
    """Re-importing an export after an edit, or a source's newer version of a record: the vault keeps what it
    has and says which record it did not take; when no record could be imported, the audit row says so."""
    vault = make_vault()
    first = write_lines(tmp_path / "first.jsonl", {"content": "Standup at 9:30", "source": "cal:standup"},
                        {"content": "Gym on Tuesdays", "source": "cal:gym"})
    assert vault.import_path(first).added == 2
    (standup,) = [m for m in vault.list() if m.source == "cal:standup"]
    vault.update(standup.id, content="Standup at 9:45")
    gym = next(m for m in vault.list() if m.source == "cal:gym")
    vault.delete(gym.id)

    again = vault.import_path(first)
    assert (again.added, again.skipped) == (0, 1)  # the deleted memory is present as it was: it stays deleted
    assert [(p[0], p[1]) for p in again.problems] == [(f"{first}:1", "IMPORT_ID_TAKEN")]
    assert f"memory {standup.id} (source 'cal:standup') is already in the vault with another content" in (
        again.problems[0][2])
    assert vault.get(standup.id).content == "Standup at 9:45"
    assert vault.get(gym.id).deleted

    newer = write_lines(tmp_path / "newer.jsonl", {"content": "Standup at 10:00", "source": "cal:standup",
                                                  "tags": ["work"]})
    report = vault.import_path(newer)
    assert report.all_failed and [p[1] for p in report.problems] == ["IMPORT_ID_TAKEN"]
    assert "another content, tags" in report.problems[0][2]
    rows = vault.log(limit=3)
    assert [(r.op, r.code) for r in rows] == [("import", "IMPORT_ALL_FAILED"), ("import", None), ("import", None)]
