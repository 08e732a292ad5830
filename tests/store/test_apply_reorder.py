"""Held updates integrate whatever order they arrive in: the part of an update that can integrate does, the rest
waits (tests/integration/test_yjs_reorder.py runs the same against JavaScript ``yjs``; this one needs no node).

Three pycrdt writers make random schema-v1 edits through :class:`MemoryDoc` and sync with each other now and
then; every update a vault could receive of them (each transaction, merges of a writer's transactions with
holes between them, diffs against an old state vector, duplicates) is delivered in an order hypothesis picks.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, merge_updates

from crdtsync.model import ystate
from crdtsync.model.records import Memory, believable_until
from crdtsync.model.schema import MemoryDoc, WriteContext, read_record
from crdtsync.model.ystate import decode_state_vector, expected_state, missing_dependencies, split_integrable
from crdtsync.model.yupdate import StructSpan, decode_update, struct_layout
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

WRITERS = 3
STEPS = 30


def history(seed: int) -> tuple[list[bytes], Doc[Any]]:
    """Every update of a random history of :data:`WRITERS` pycrdt writers (in the order made), and a Doc holding
    all of it."""
    rng = random.Random(seed)
    docs = [MemoryDoc(Doc(client_id=1000 + n)) for n in range(WRITERS)]
    local: list[list[bytes]] = [[] for _ in docs]
    updates: list[bytes] = []
    syncing = [False]
    for n, doc in enumerate(docs):
        doc.doc.observe(lambda event, n=n: None if syncing[0] else local[n].append(event.update))
    old_states: list[tuple[int, bytes]] = []
    for step in range(STEPS):
        n = rng.randrange(WRITERS)
        doc = docs[n]
        ctx = WriteContext(device=f"{n + 1:016x}", at=f"2025-01-01T00:{step // 60:02d}:{step % 60:02d}.000Z",
                           new_op_id=lambda: f"{rng.getrandbits(32):08x}")
        ids = sorted(m for m in doc.memory_ids() if isinstance(doc.memories.get(m), Map))
        made = len(local[n])
        roll = rng.random()
        if roll < 0.25 or not ids:
            doc.add(f"0190{rng.getrandbits(32):08x}-0000-7000-8000-000000000000", ctx, content=f"memory {step}",
                    tags=rng.sample(["a", "b", "c"], rng.randrange(3)))
        elif roll < 0.5:
            doc.write(rng.choice(ids), ctx, {rng.choice(["content", "category", "source"]): f"value {step}"})
        elif roll < 0.62:
            doc.set_tags(rng.choice(ids), ctx, add=[rng.choice("abc")], remove=[rng.choice("abc")])
        elif roll < 0.7:
            doc.write(rng.choice(ids), ctx, {"deleted": True})
        elif roll < 0.85:
            other = rng.choice(docs)
            syncing[0] = True
            doc.doc.apply_update(other.doc.get_update(doc.doc.get_state()))
            syncing[0] = False
        elif roll < 0.93:
            old_states.append((n, doc.doc.get_state()))
        elif old_states:
            was, state = rng.choice(old_states)
            updates.append(docs[was].doc.get_update(state))
        updates += local[n][made:]
    for n in range(WRITERS):
        chosen = [u for u in local[n] if rng.random() < 0.4]
        if len(chosen) >= 2:
            updates.append(merge_updates(*chosen))
    updates += [u for u in updates if rng.random() < 0.1]
    everything: Doc[Any] = Doc()
    for doc in docs:
        everything.apply_update(doc.doc.get_update())
    return updates, everything


def reading(doc: Doc[Any]) -> dict[str, Memory]:
    """The memories ``doc`` holds as the v1 reader reads them (records without content read as absent)."""
    records: dict[str, Any] = doc.get("memories", type=Map).to_py() or {}
    read = {memory_id: read_record(memory_id, record, believable_until()) for memory_id, record in records.items()}
    return {memory_id: r[0] for memory_id, r in read.items() if r is not None}


def rows_equal_the_doc(vault: Vault) -> bool:
    doc: Doc[Any] = Doc()
    doc.apply_update(vault.encode_update())
    return {m.id: m for m in vault.list(include_deleted=True)} == reading(doc)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_updates_of_several_writers_integrate_in_any_order(seed: int, data: st.DataObject) -> None:
    updates, everything = history(seed)
    delivered = data.draw(st.permutations(updates), label="delivery order")
    with tempfile.TemporaryDirectory() as folder:
        path = Vault.init(Path(folder) / "v", name="reorder", passphrase=PASSPHRASE, kdf=cheap_kdf())
        with Vault.open(path) as vault:
            while delivered:
                size = data.draw(st.integers(1, 5), label="batch")
                results = vault.apply_updates([(u, "writers") for u in delivered[:size]])
                delivered = delivered[size:]
                assert all(r.status != "refused" for r in results), results
                assert rows_equal_the_doc(vault)
            assert vault.store.held_count() == 0 and vault.store.quarantined() == []
            assert {m.id: m for m in vault.list(include_deleted=True)} == reading(everything)
            state = decode_state_vector(vault.state_vector())
            writers = decode_state_vector(everything.get_state())
            assert {c: state.get(c) for c in writers} == writers


def covered(ranges: dict[int, tuple[tuple[int, int], ...]], state: dict[int, int]) -> set[tuple[int, int]]:
    """Every ID ``(client, clock)`` that ``ranges`` (client -> ``[start, end)`` clock ranges) cover and ``state``
    (client -> next clock) does not."""
    return {(c, k) for c, rs in ranges.items() for start, end in rs for k in range(max(start, state.get(c, 0)), end)}


@given(seed=st.integers(0, 2**32 - 1), data=st.data())
@settings(max_examples=40, deadline=None)
def test_an_update_that_waits_is_cut_into_what_integrates_now_and_what_still_waits(
    seed: int, data: st.DataObject
) -> None:
    """:func:`split_integrable` on an update that waits for structs, at the state a Doc reached from the updates
    made before some point: the part for now needs nothing more and moves the clocks exactly over its structs
    (yrs keeps nothing of it pending), the rest still waits, and together they hold the update's structs not
    known yet and its delete set."""
    updates, _ = history(seed)
    before = data.draw(st.integers(0, len(updates)), label="updates known")
    base: Doc[Any] = Doc()
    for known in updates[:before]:  # each needs only what was made before it, so none waits
        base.apply_update(known)
    state = decode_state_vector(base.get_state())
    waiting = [u for u in updates if missing_dependencies(decode_update(u), state).gaps
               or missing_dependencies(decode_update(u), state).references]
    cut = [(u, parts) for u in waiting if (parts := split_integrable(u, decode_update(u), state)) is not None]
    assume(cut)
    update, parts = data.draw(st.sampled_from(cut), label="update")
    decoded = decode_update(update)
    now, rest = (decode_update(part) for part in parts)
    assert not missing_dependencies(now, state)
    base.apply_update(parts[0])
    assert decode_state_vector(base.get_state()) == expected_state(now, state)
    assert missing_dependencies(rest, expected_state(now, state))
    assert covered(now.structs, state) | covered(rest.structs, state) == covered(decoded.structs, state)
    merged_deletes = covered({c: now.deletes.get(c, ()) + rest.deletes.get(c, ()) for c in decoded.deletes}, {})
    assert merged_deletes == covered(decoded.deletes, {})



def test_an_update_held_for_a_missing_reference_is_not_cut_again_while_it_misses_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every drain tries every held update, and cutting one reads all its structs (seconds for a big snapshot).
    One of which nothing could integrate is not read again while it misses the same: not at the five pulls of a
    third writer's updates here; once what it refers to arrives, it integrates."""
    a, b, c = (MemoryDoc(Doc(client_id=client)) for client in (7, 8, 9))
    ctx = WriteContext(device="0000000000000777", at="2025-01-01T00:00:00.000Z", new_op_id=lambda: "op")
    a.add("01900000-0000-7000-8000-00000000000a", ctx, content="written on a")
    b.add("01900000-0000-7000-8000-00000000000b", ctx, content="written on b")
    from_a, from_b = a.doc.get_update(), b.doc.get_update()
    b.doc.apply_update(from_a)
    before_edit = b.doc.get_state()
    b.write("01900000-0000-7000-8000-00000000000a", ctx, {"content": "edited on b"})
    edit = b.doc.get_update(before_edit)  # b's structs inside a's record: each refers to it
    reads: list[bytes] = []

    def counted(data: bytes) -> list[tuple[int, tuple[StructSpan, ...]]]:
        reads.append(data)
        return struct_layout(data)

    monkeypatch.setattr(ystate, "struct_layout", counted)
    path = Vault.init(tmp_path / "v", name="reorder", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(path) as vault:
        assert [r.status for r in vault.apply_updates([(from_b, "b"), (edit, "b")])] == ["integrated", "pending"]
        assert reads == [edit]  # b's clock is known here, so its structs were read: the first needs a's record
        for n in range(5):
            known = c.doc.get_state()
            c.add(f"01900000-0000-7000-8000-0000000000c{n}", ctx, content=f"written on c {n}")
            assert vault.apply_updates([(c.doc.get_update(known), "c")])[0].status == "integrated"
        assert reads == [edit]
        assert vault.apply_updates([(from_a, "a")])[0].status == "integrated"
        assert vault.store.held_count() == 0
        assert vault.get("01900000-0000-7000-8000-00000000000a").content == "edited on b"
