"""Honest Yjs updates integrate whatever order they arrive in, and the materialized rows always equal the Doc.

Two minimized cases of JavaScript ``yjs`` 13.6.33 (shared/data/yjs-interop, see its README) that pycrdt left
pending or mis-observed, then a differential test: three JavaScript ``yjs`` replicas (tests/js/fuzz_replicas.mjs)
make random schema-v1 edits, and every update a vault could receive of them (each transaction, merges with
Skip structs, diffs against old state vectors, duplicates) is delivered to a vault in shuffled and reversed
orders, in batches; the vault must end where JavaScript ends: the same memories, conflicts and state vector,
nothing held or refused, also after reopening.

The differential runs skip without ``node`` or ``tests/js/node_modules/yjs`` and fail when CI=true.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from crdtsync.model.records import Conflict, Memory, believable_until
from crdtsync.model.schema import read_record
from crdtsync.model.ystate import decode_state_vector
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, shared_data
from tests.integration.test_yjs_compat import run_node

#: The JavaScript replicas' device ids (written into their entries; updates arrive under the label "yjs", so no
#: authorship rule applies) and the wall time of their first write (2025-01-01, a time every clock believes).
JS_DEVICES = ["0000000000000a11", "0000000000000b22", "0000000000000c33"]
START_MS = 1_735_689_600_000


def interop_case(name: str) -> list[bytes]:
    """The updates of a shared/data/yjs-interop case, in the order its README applies them."""
    return [bytes.fromhex(h) for h in json.loads(shared_data("yjs-interop", f"{name}.json").read_text())]


def new_vault(path: Path) -> Path:
    return Vault.init(path, name="reorder", device_name="vault", passphrase=PASSPHRASE, kdf=cheap_kdf())


def doc_reading(path: Path) -> dict[str, Memory]:
    """What the vault's own Doc says of each memory, read in a second Vault of the same folder (so the vault under
    test keeps its Doc loaded or not, as it was): records without a live content entry read as absent, as they
    do in the store."""
    with Vault.open(path) as other:
        doc: Doc[Any] = Doc()
        doc.apply_update(other.encode_update())
    records: dict[str, Any] = doc.get("memories", type=Map).to_py() or {}
    bound = believable_until()
    reading = {memory_id: read_record(memory_id, record, bound) for memory_id, record in records.items()}
    return {memory_id: read[0] for memory_id, read in reading.items() if read is not None}


def rows(vault: Vault) -> dict[str, Memory]:
    return {m.id: m for m in vault.list(include_deleted=True) if m.level == 1}


def assert_rows_equal_the_doc(vault: Vault) -> None:
    assert rows(vault) == doc_reading(vault.path)


# -- the minimized cases -----------------------------------------------------------------------------------


def test_rows_equal_the_doc_after_a_held_update_with_a_skip_struct_integrates(tmp_path: Path) -> None:
    """``stale-rows``: a merge of transactions 1 and 3 (a Skip struct where 2 is missing), then a diff from clock 3
    on. yrs showed the records past the Skip without counting their clocks, and then reported no change of the
    record the second update wrote into, so its row kept the old value for good."""
    path = new_vault(tmp_path / "v")
    first, second = interop_case("stale-rows")
    with Vault.open(path) as vault:
        assert vault.apply_updates([(first, "yjs")])[0].status == "pending"
        assert_rows_equal_the_doc(vault)
        assert vault.apply_updates([(second, "yjs")])[0].status == "integrated"
        assert_rows_equal_the_doc(vault)
        assert vault.get("01900000-0000-7000-8000-000000000002").source == "src"
        assert vault.store.held_count() == 0 and vault.store.quarantined() == []
    with Vault.open(path) as reopened:
        assert_rows_equal_the_doc(reopened)
        assert reopened.get("01900000-0000-7000-8000-000000000002").source == "src"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=lambda o: "".join(map(str, o)))
def test_three_honest_updates_integrate_in_every_order(tmp_path: Path, order: tuple[int, ...]) -> None:
    """``honest-clock-jump``: in the order 0, 1, 2 pycrdt stops at clock 6 of client 101 (it leaves the struct
    that one update adds and deletes at clock 6 pending although the third update fills the gap before it), so
    the vault refused all three as UPDATE_CLOCK_JUMP. JavaScript integrates them to {101: 10} in any order."""
    path = new_vault(tmp_path / "v")
    updates = interop_case("honest-clock-jump")
    with Vault.open(path) as vault:
        results = [vault.apply_updates([(updates[i], "yjs")])[0] for i in order]
        assert [r.status for r in results][-1] == "integrated", results
        assert all(r.status in ("pending", "integrated") for r in results), results
        assert vault.store.held_count() == 0 and vault.store.quarantined() == []
        assert decode_state_vector(vault.state_vector())[101] == 10
        assert {m.content for m in vault.list()} == {"one", "two", "three"}
        assert_rows_equal_the_doc(vault)
    with Vault.open(path) as reopened:
        assert decode_state_vector(reopened.state_vector())[101] == 10
        assert_rows_equal_the_doc(reopened)


# -- differential against JavaScript yjs -------------------------------------------------------------------

#: (seed, order, whether the vault has its Doc loaded while it integrates): each runs in about a second.
RUNS = [(1, "shuffled", False), (2, "shuffled", True), (3, "shuffled", False), (1, "reversed", True),
        (2, "reversed", False), (4, "reversed", False)]


def js_replicas(folder: Path, base: bytes, seed: int, steps: int = 80) -> dict[str, Any]:
    """Run tests/js/fuzz_replicas.mjs: three JavaScript replicas of the Doc ``base`` (a vault's full update)
    make ``steps`` random edits; returns its output (every update made, in order, and the final roots)."""
    spec = {"seed": seed, "base": base.hex(), "replicas": 3, "steps": steps, "devices": JS_DEVICES,
            "start_ms": START_MS}
    (folder / "spec.json").write_text(json.dumps(spec))
    run_node("fuzz_replicas.mjs", str(folder / "spec.json"), str(folder / "out.json"))
    out: dict[str, Any] = json.loads((folder / "out.json").read_text())
    return out


def js_reading(js: dict[str, Any]) -> tuple[dict[str, Memory], list[Conflict]]:
    """The memories and conflicts JavaScript's final Doc holds, read by the v1 reader (conflicts in the order
    :meth:`Vault.conflicts` lists them)."""
    memories: dict[str, Memory] = {}
    conflicts: list[Conflict] = []
    for memory_id in sorted(js["memories"]):
        read = read_record(memory_id, js["memories"][memory_id])
        assert read is not None, (memory_id, js["memories"][memory_id])
        memories[memory_id] = read[0]
        conflicts += read[1]
    return memories, conflicts


def delivered(updates: list[bytes], order: str, rng: random.Random) -> list[list[bytes]]:
    """``updates`` in ``order`` ("shuffled" or "reversed"), cut into batches of 1 to 6 (one apply_updates call
    each)."""
    ordered = list(reversed(updates)) if order == "reversed" else rng.sample(updates, len(updates))
    batches = []
    while ordered:
        size = rng.randint(1, 6)
        batches.append(ordered[:size])
        ordered = ordered[size:]
    return batches


def assert_vault_equals_javascript(vault: Vault, js: dict[str, Any]) -> None:
    memories, conflicts = js_reading(js)
    assert rows(vault) == memories
    assert vault.conflicts() == conflicts
    assert decode_state_vector(vault.state_vector()) == {int(c): k for c, k in js["state_vector"].items()}
    assert vault.store.held_count() == 0
    assert vault.store.quarantined() == []


@pytest.mark.parametrize(("seed", "order", "live_doc"), RUNS)
def test_updates_of_javascript_replicas_integrate_in_any_order_to_what_javascript_holds(
    tmp_path: Path, seed: int, order: str, live_doc: bool
) -> None:
    path = new_vault(tmp_path / "v")
    with Vault.open(path) as founder:
        base = founder.encode_update()
    js = js_replicas(tmp_path, base, seed)
    updates = [bytes.fromhex(h) for h in js["updates"]]
    assert len(updates) > 40, "the replicas made too few updates to test anything"
    with Vault.open(path) as vault:
        if live_doc:
            vault.state_vector()  # loads the Doc: each update is then applied to it too
        assert vault.doc_loaded is live_doc
        for batch in delivered(updates, order, random.Random(seed)):
            results = vault.apply_updates([(update, "yjs") for update in batch])
            assert all(r.status != "refused" for r in results), results
            assert_rows_equal_the_doc(vault)
        assert_vault_equals_javascript(vault, js)
    with Vault.open(path) as reopened:
        assert_vault_equals_javascript(reopened, js)
        assert_rows_equal_the_doc(reopened)
