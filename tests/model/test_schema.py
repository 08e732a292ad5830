"""Document schema v1: registers, conflicts, tags and deletes on real pycrdt Docs (no IO)."""

from __future__ import annotations

import itertools

import pytest
from pycrdt import Doc, Map

from crdtsync.errors import InvalidInputError, NotFoundError
from crdtsync.model.schema import (
    MemoryDoc,
    WriteContext,
    check_record,
    read_record,
    statement_bytes,
    statement_key,
    statement_value,
)

_ops = itertools.count()


def ctx(device: str, at: str = "2026-01-01T00:00:00.000Z", agent: str | None = None) -> WriteContext:
    return WriteContext(device=device, at=at, new_op_id=lambda: f"op{next(_ops)}", agent=agent)


def replica(client_id: int) -> MemoryDoc:
    return MemoryDoc(Doc(client_id=client_id))


def sync(*docs: MemoryDoc) -> None:
    updates = [d.doc.get_update() for d in docs]
    for d in docs:
        for u in updates:
            d.doc.apply_update(u)


@pytest.fixture
def pair() -> tuple[MemoryDoc, MemoryDoc]:
    a, b = replica(1), replica(2)
    a.add("m", ctx("A"), content="tea", category="prefs", tags=["drinks"], metadata={"n": 1})
    sync(a, b)
    return a, b


def test_add_then_read_returns_every_field_and_keeps_integers_in_metadata() -> None:
    d = replica(1)
    d.add("m", ctx("A", agent="claude-code"), content="tea", category="c", tags=["x", "y"], source="s",
          metadata={"n": 1, "nested": {"k": [1, 2]}}, created="2020-01-01T00:00:00.000Z")
    read = d.read("m")
    assert read is not None
    memory, conflicts = read
    assert (memory.content, memory.category, memory.source) == ("tea", "c", "s")
    assert memory.tags == {"x", "y"}
    assert memory.metadata == {"n": 1, "nested": {"k": [1, 2]}}
    assert isinstance(memory.metadata["n"], int)
    assert memory.created == "2020-01-01T00:00:00.000Z"
    assert memory.created_by == "A" and not memory.deleted and conflicts == []


def test_concurrent_edits_of_different_fields_merge_without_conflict(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.write("m", ctx("A", "2026-01-02T00:00:00.000Z"), {"content": "green tea"})
    b.write("m", ctx("B", "2026-01-02T00:00:01.000Z"), {"category": "drinks"})
    sync(a, b)
    for d in (a, b):
        memory, conflicts = d.read("m") or (None, None)
        assert memory is not None
        assert (memory.content, memory.category) == ("green tea", "drinks")
        assert conflicts == []


def test_concurrent_edits_of_one_field_to_different_values_are_a_conflict_on_every_replica(
    pair: tuple[MemoryDoc, MemoryDoc],
) -> None:
    a, b = pair
    a.write("m", ctx("A", "2026-01-02T00:00:00.000Z", agent="claude-code"), {"content": "green tea"})
    b.write("m", ctx("B", "2026-01-02T00:00:01.000Z"), {"content": "black tea"})
    sync(a, b)
    ra, rb = a.read("m"), b.read("m")
    assert ra == rb and ra is not None
    memory, conflicts = ra
    assert memory.conflicts == ("content",)
    (conflict,) = conflicts
    assert [(c.value, c.device, c.agent) for c in conflict.candidates] == [
        ("green tea", "A", "claude-code"),
        ("black tea", "B", None),
    ]
    assert memory.content == "black tea"  # the latest candidate is shown, identically everywhere


def test_concurrent_edits_to_equal_values_are_not_a_conflict(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.write("m", ctx("A"), {"content": "same"})
    b.write("m", ctx("B"), {"content": "same"})
    sync(a, b)
    assert a.read("m") is not None and a.read("m")[1] == []  # type: ignore[index]


def test_resolving_a_conflict_is_an_ordinary_write_that_syncs(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.write("m", ctx("A"), {"content": "green tea"})
    b.write("m", ctx("B"), {"content": "black tea"})
    sync(a, b)
    a.write("m", ctx("A", "2026-01-03T00:00:00.000Z"), {"content": "oolong"})
    sync(a, b)
    for d in (a, b):
        memory, conflicts = d.read("m") or (None, None)
        assert memory is not None and memory.content == "oolong" and conflicts == []


def test_delete_concurrent_with_edit_is_a_conflict_not_a_loss(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.write("m", ctx("A"), {"deleted": True})
    b.write("m", ctx("B"), {"content": "still useful"})
    sync(a, b)
    memory, conflicts = a.read("m") or (None, None)
    assert memory is not None
    assert [c.field for c in conflicts or []] == ["deleted"]
    assert not memory.deleted and memory.content == "still useful"


def test_a_withdrawn_record_reads_as_absent_and_its_values_leave_the_encoded_state(
    pair: tuple[MemoryDoc, MemoryDoc],
) -> None:
    """Yjs keeps the key of a deleted Map entry (a tag's name is in its key), not its value."""
    a, b = pair
    a.withdraw("m", ctx("A"))
    sync(a, b)
    assert a.read("m") is None and b.read("m") is None
    for d in (a, b):
        assert not any(value in d.doc.get_update() for value in (b"tea", b"prefs", b'"n"'))


def test_an_edit_concurrent_with_a_withdrawal_brings_the_record_back_with_a_conflict(
    pair: tuple[MemoryDoc, MemoryDoc],
) -> None:
    a, b = pair
    a.withdraw("m", ctx("A"))
    b.write("m", ctx("B"), {"content": "green tea"})
    sync(a, b)
    for d in (a, b):
        memory, conflicts = d.read("m") or (None, None)
        assert memory is not None and memory.content == "green tea" and not memory.deleted
        assert [(c.field, sorted((x.value, x.device) for x in c.candidates)) for c in conflicts or []] == [
            ("deleted", [(False, "B"), (True, "A")])]


def test_sharing_a_withdrawn_record_again_writes_every_field_into_it(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.withdraw("m", ctx("A"))
    sync(a, b)
    a.share("m", ctx("A", at="2026-02-01T00:00:00.000Z"), created="2026-01-01T00:00:00.000Z", content="oolong",
            category=None, tags=["drinks", "daily"], source=None, metadata={"n": 2})
    b.write("m", ctx("B", at="2026-02-02T00:00:00.000Z"), {"category": "habits"})
    sync(a, b)
    memory, conflicts = b.read("m") or (None, None)
    assert memory is not None and (memory.content, memory.tags, memory.metadata) == (
        "oolong", {"drinks", "daily"}, {"n": 2})
    assert memory.updated == "2026-02-02T00:00:00.000Z" and [c.field for c in conflicts or []] == ["category"]


def test_restore_undoes_a_delete(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, _ = pair
    a.write("m", ctx("A"), {"deleted": True})
    assert a.read("m")[0].deleted  # type: ignore[index]
    a.write("m", ctx("A"), {"deleted": False})
    assert not a.read("m")[0].deleted  # type: ignore[index]


def test_tags_are_add_wins_and_a_removal_removes_only_what_it_saw(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.set_tags("m", ctx("A"), add=["x"], remove=["drinks"])
    b.set_tags("m", ctx("B"), add=["y", "drinks"], remove=[])  # "drinks" already there: not re-added
    sync(a, b)
    assert a.read("m")[0].tags == {"x", "y"}  # type: ignore[index]
    a.set_tags("m", ctx("A"), add=[], remove=["x"])
    b.set_tags("m", ctx("B"), add=["z"], remove=[])
    sync(a, b)
    assert a.read("m")[0].tags == b.read("m")[0].tags == {"y", "z"}  # type: ignore[index]


def test_a_tag_added_concurrently_with_its_removal_elsewhere_survives(pair: tuple[MemoryDoc, MemoryDoc]) -> None:
    a, b = pair
    a.set_tags("m", ctx("A"), add=["x"], remove=[])
    b.set_tags("m", ctx("B"), add=["x"], remove=[])
    b.set_tags("m", ctx("B"), add=[], remove=["x"])
    sync(a, b)
    assert "x" in a.read("m")[0].tags and "x" in b.read("m")[0].tags  # type: ignore[index]


def test_a_record_dropped_by_a_concurrent_creation_resurfaces_as_a_conflict() -> None:
    a, b = replica(1), replica(2)
    a.add("m", ctx("A"), content="imported", tags=["t"])
    b.add("m", ctx("B"), content="imported", tags=["t"])
    a.write("m", ctx("A", "2026-01-02T00:00:00.000Z"), {"content": "edited on A"})
    a.set_tags("m", ctx("A"), add=["mine"], remove=[])
    lost_record = a.memories["m"].to_py()
    sync(a, b)
    survivor = a.read("m")[0]  # type: ignore[index]
    assert survivor.content == "imported"  # B's record (higher client id) won the key; A's edit went with A's
    assert a.resurface("m", ctx("A"), lost_record)
    sync(a, b)
    for d in (a, b):
        memory, conflicts = d.read("m") or (None, [])
        assert memory is not None and "mine" in memory.tags
        values = {c.value for x in conflicts for c in x.candidates} | {memory.content}
        assert "edited on A" in values


def test_writing_an_unknown_memory_or_field_raises() -> None:
    d = replica(1)
    with pytest.raises(NotFoundError):
        d.write("nope", ctx("A"), {"content": "x"})
    d.add("m", ctx("A"), content="x")
    with pytest.raises(InvalidInputError) as info:
        d.write("m", ctx("A"), {"colour": "red"})
    assert info.value.code == "INVALID_FIELD"


@pytest.mark.parametrize(
    "record",
    [
        {"created": "t", "content@1": ["x"]},
        {"created": ["t", "A"]},
        {"created": ["t", "A"], "content@1": [5]},
        {"created": ["t", "A"], "content@1": "x"},
        {"created": ["t", "A"], "content@1": ["x", "B"]},
        {"created": ["t", "A"], "content@1": ["x"], "deleted@2": ["yes"]},
        {"created": ["t", "A"], "content@1": ["x"], "t:tag@1": "yes"},
        {"created": ["t", "A"], "content@1": ["x"], "t:tag": True},
        {"created": ["t", "A"], "content@1": ["x"], "metadata@2": ["[1]"]},
        {"created": ["t", "A"], "content@1": ["x"], "t:@1": True},
        {"created": ["t", "A"], "content@1": ["x"], "t:\x1b[2J@1": True},
        {"created": ["t", "A"], "content@1": ["x"], f"t:{'x' * 1025}@1": True},
    ],
)
def test_malformed_records_read_as_none(record: dict[str, object]) -> None:
    assert read_record("m", record) is None
    if record.get("created") != ["t", "A"] or len(record) > 1:
        with pytest.raises(ValueError):
            check_record("m", record)


@pytest.mark.parametrize("memory_id", ["", "x" * 129, "evil\x1b[2J", "line\nbreak"])
def test_a_record_under_an_id_no_device_writes_is_malformed(memory_id: str) -> None:
    with pytest.raises(ValueError):
        check_record(memory_id, {"created": ["t", "A"], "content@1": ["x"]})


@pytest.mark.parametrize("record", [
    {"created": ["t", "A"]},
    {"created": ["t", "A"], "category@1": ["work"], "t:tag@1": True, "deleted@2": [False, "B", "t2"]},
])
def test_a_well_formed_record_without_live_content_is_incomplete_not_malformed(record: dict[str, object]) -> None:
    """One device's snapshot can delete its own content entry that another device replaced, while the
    replacement arrives with the other device's update: the record is a partial view, absent until then."""
    assert check_record("m", record) is None


def test_an_incomplete_record_with_a_malformed_entry_is_still_malformed() -> None:
    with pytest.raises(ValueError):
        check_record("m", {"created": ["t", "A"], "t:tag@1": "yes"})
    with pytest.raises(ValueError):
        check_record("m", {"created": ["t", "A"], "category@1": [5]})


def test_registry_announces_client_ids() -> None:
    d = replica(1)
    d.register_device("dev", {"name": "laptop", "sign_pk": "aa"}, [1, 2])
    d.register_device("dev", {"name": "ignored"}, [3])
    assert d.registry() == {"dev": {"name": "laptop", "sign_pk": "aa", "clients": [1, 2, 3], "statements": {}}}


def test_a_statement_published_in_a_registry_entry_reads_back_as_its_bytes() -> None:
    d = replica(1)
    d.register_device("dev", {"name": "laptop"}, [1])
    data = bytes(range(256)) * 3
    key = statement_key(7, bytes(range(32)))
    d.publish_statement("dev", key, statement_value(data))
    assert key == "e:7:0001020304050607"
    stored = d.registry()["dev"]["statements"]
    assert list(stored) == [key] and statement_bytes(stored[key]) == data
    assert statement_bytes(stored[key] + "=") is None and statement_bytes(stored[key][:-1] + "!") is None
    with pytest.raises(ValueError):
        d.publish_statement("nobody", key, statement_value(data))


def test_layout_is_compact_one_map_per_memory() -> None:
    d = replica(1)
    d.add("m", ctx("A"), content="x", category="c", tags=["t"])
    record = d.memories["m"]
    assert isinstance(record, Map)
    assert not any(isinstance(v, Map) for v in record.values())


def test_creating_entries_are_bare_values_and_later_writes_are_lists() -> None:
    d = replica(1)
    d.add("m", ctx("A"), content="x", category="c")
    raw = d.memories["m"].to_py()
    assert raw["content@"] == "x" and raw["category@"] == "c"
    d.write("m", ctx("A"), {"content": "y"})
    raw = d.memories["m"].to_py()
    assert "content@" not in raw and any(k.startswith("content@") and v[0] == "y" for k, v in raw.items())
    assert read_record("m", {"created": ["t", "A"], "content@x": "bare is only for the creating entry"}) is None


def test_add_writes_the_bytes_pycrdt_s_public_api_writes() -> None:
    """add() calls yrs through pycrdt's integrated objects to skip its per-key wrapper; the update must be the
    one ``memories[id] = Map(record)`` produces, for a plain record and for one written with an agent."""
    fields = {"content": "tea", "category": "c", "tags": ["b", "a"], "source": "s", "metadata": {"z": 1, "a": [2]},
              "created": "2020-01-01T00:00:00.000Z"}
    for agent in (None, "claude-code"):
        fast = replica(7)
        fast.add("m", ctx("A", agent=agent), **fields)  # type: ignore[arg-type]
        fast.add("n", ctx("A", agent=agent), content="second")
        public = replica(7)
        tail = [] if agent is None else ["A", "2026-01-01T00:00:00.000Z", agent]

        def entry(value: object, tail: list[str] = tail) -> object:
            return [value, *tail] if tail else value

        public.memories["m"] = Map({
            "created": ["2020-01-01T00:00:00.000Z", "A"], "content@": entry("tea"), "category@": entry("c"),
            "source@": entry("s"), "metadata@": entry('{"a":[2],"z":1}'), "t:b@": True, "t:a@": True,
        })
        public.memories["n"] = Map({"created": ["2026-01-01T00:00:00.000Z", "A"], "content@": entry("second")})
        assert fast.doc.get_update() == public.doc.get_update()
    with pytest.raises(InvalidInputError) as info:
        fast.add("m", ctx("A"), content="again")
    assert info.value.code == "ALREADY_EXISTS"
