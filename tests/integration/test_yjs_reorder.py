"""Honest Yjs updates integrate whatever order they arrive in, and the materialized rows always equal the Doc.

Two minimized cases of JavaScript ``yjs`` 13.6.33 (shared/data/yjs-interop, see its README) that pycrdt left
pending or mis-observed.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from crdtsync.model.records import Memory, believable_until
from crdtsync.model.schema import read_record
from crdtsync.model.ystate import decode_state_vector
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, shared_data


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
