"""The decrypted vault Doc is plain Yjs: JavaScript Yjs (tests/js, ``npm install --prefix tests/js``) reads what
crdtsync writes, and crdtsync integrates what JavaScript Yjs writes in the v1 document layout.

Without ``node`` or ``tests/js/node_modules/yjs`` these tests skip, and fail when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crdtsync.model.records import Conflict, Memory, utc_now_iso
from crdtsync.model.schema import CLIENT_PREFIX, STATEMENT_PREFIX, read_record
from crdtsync.store.memories import new_memory_id
from crdtsync.vault import ApplyResult, Vault
from tests.conftest import PASSPHRASE, cheap_kdf

JS_DIR = Path(__file__).resolve().parents[1] / "js"
VAULT_NAME = "yjs-compat"
JS_DEVICE = "00000000000a11ce"
S = TypeVar("S")


def node_problem() -> str | None:
    """Why the JavaScript side cannot run here, or None when ``node`` and ``tests/js/node_modules/yjs`` exist."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (JS_DIR / "node_modules" / "yjs" / "package.json").is_file():
        return f"yjs is not installed in {JS_DIR}: run `npm install --prefix tests/js`"
    return None


def node_executable() -> str:
    """The ``node`` binary; when it or yjs is missing, fails the calling test under CI=true, else skips it."""
    problem = node_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI must run the Yjs compatibility tests)")
        pytest.skip(problem)
    return str(shutil.which("node"))


def ready(scenario: S | None) -> S:
    """The scenario a module fixture built; without node (the fixture then built none) the test fails under
    CI=true and skips elsewhere, from its own body so that it is reported as failed rather than errored."""
    node_executable()
    assert scenario is not None
    return scenario


def run_node(script: str, *args: str) -> str:
    """Run ``tests/js/SCRIPT ARGS`` with node and return its stdout; a failing script fails the test."""
    process = subprocess.run([node_executable(), str(JS_DIR / script), *args], capture_output=True, text=True,
                             timeout=60, check=False)
    assert process.returncode == 0, process.stderr
    return process.stdout


def new_vault(path: Path, device_name: str, *, agent: str | None = None) -> Vault:
    Vault.init(path, name=VAULT_NAME, device_name=device_name, passphrase=PASSPHRASE, kdf=cheap_kdf())
    return Vault.open(path, agent=agent)


def exchange(a: Vault, b: Vault, a_state: bytes, b_state: bytes) -> None:
    """Deliver to each vault what the other wrote since the given state vectors."""
    assert a.apply_update(b.encode_update(a_state), "b").status == "integrated"
    assert b.apply_update(a.encode_update(b_state), "a").status == "integrated"


# -- JavaScript reads what crdtsync wrote -------------------------------------------------------------------


@dataclass(frozen=True)
class ReadScenario:
    vault: Vault
    other: Vault
    level_0: Memory
    js: dict[str, Any]
    update: bytes


@pytest.fixture(scope="module")
def read_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadScenario | None]:
    """Vault ``laptop`` after adds (unicode, emoji, tags, metadata), a level-0 memory, an edit, a delete and two
    real conflicts with vault ``phone`` (whose writes carry an agent label), read by JavaScript Yjs."""
    if node_problem() is not None:
        yield None
        return
    root = tmp_path_factory.mktemp("yjs-read")
    laptop = new_vault(root / "laptop", "laptop")
    phone = new_vault(root / "phone", "phone", agent="claude-code")
    try:
        laptop.add("Prefers oolong 🍵 over green tea", category="prefs", tags=["drinks", "茶"], source="chat",
                   metadata={"count": 3, "ratio": 0.5, "nested": {"ok": True, "list": [1, "二", None]}})
        laptop.add("Lives in Lyon — près de la Saône", category="bio", tags=["home"])
        laptop.add("👩‍💻 writes Rust and Python; 日本語も大丈夫", tags=["work", "langs 🗣"])
        level_0 = laptop.add("Bank PIN hint: grandma's street", level=0)
        edited = laptop.add("Uses vim", tags=["editor"])
        laptop.update(edited.id, content="Uses neovim ✨", add_tags=["lua"], remove_tags=["editor"],
                      metadata={"since": 2019})
        gone = laptop.add("Temporary note, soon deleted")
        laptop.delete(gone.id)
        standup = laptop.add("Standup at 9:30", category="work")
        employer = laptop.add("Works at Acme")

        assert phone.apply_update(laptop.encode_update(), "laptop").status == "integrated"
        laptop_state, phone_state = laptop.state_vector(), phone.state_vector()
        laptop.update(standup.id, content="Standup at 10:00")
        phone.update(standup.id, content="Standup moved to 9:45 🕤", category="meetings")
        laptop.delete(employer.id)
        phone.update(employer.id, content="Works at Acme Corp (since 2021)")
        exchange(laptop, phone, laptop_state, phone_state)
        assert {(c.memory_id, c.field) for c in laptop.conflicts()} == {(standup.id, "content"),
                                                                         (employer.id, "deleted")}

        update = laptop.encode_update()
        update_file = root / "vault.update"
        update_file.write_bytes(update)
        js = json.loads(run_node("read_vault.mjs", str(update_file)))
        yield ReadScenario(laptop, phone, level_0, js, update)
    finally:
        laptop.close()
        phone.close()


def js_read_records(js: dict[str, Any]) -> dict[str, tuple[Memory, list[Conflict]]]:
    """Every record JavaScript read, interpreted by the v1 reader; a record it cannot read fails the test."""
    out = {}
    for memory_id, record in js["memories"].items():
        read = read_record(memory_id, record)
        assert read is not None, (memory_id, record)
        out[memory_id] = read
    return out


def test_javascript_yjs_reads_every_shared_memory_as_the_vault_lists_it(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    from_js = {memory_id: memory for memory_id, (memory, _) in js_read_records(scenario.js).items()}
    expected = {m.id: m for m in scenario.vault.list(include_deleted=True) if m.level == 1}
    assert from_js == expected


def test_javascript_yjs_reads_deleted_and_edited_memories(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    from_js = {memory.content: memory for memory, _ in js_read_records(scenario.js).values()}
    assert from_js["Temporary note, soon deleted"].deleted is True
    neovim = from_js["Uses neovim ✨"]
    assert (neovim.tags, neovim.metadata) == (frozenset({"lua"}), {"since": 2019})
    assert "Uses vim" not in from_js


def test_metadata_numbers_survive_javascript_as_python_ints(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    from_js = {memory.content: memory for memory, _ in js_read_records(scenario.js).values()}
    metadata = from_js["Prefers oolong 🍵 over green tea"].metadata
    assert metadata == {"count": 3, "ratio": 0.5, "nested": {"ok": True, "list": [1, "二", None]}}
    assert metadata is not None and type(metadata["count"]) is int


def test_level_0_memories_are_absent_from_the_doc_javascript_reads(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    assert scenario.level_0.id not in scenario.js["memories"]
    assert "grandma" not in json.dumps(scenario.js, ensure_ascii=False)
    assert b"grandma" not in scenario.update


def test_javascript_yjs_sees_the_same_conflicts_as_the_vault(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    records = js_read_records(scenario.js)
    from_js = [conflict for memory_id in sorted(records) for conflict in records[memory_id][1]]
    assert from_js == scenario.vault.conflicts()


def test_conflict_candidates_keep_the_agent_label_through_javascript(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    records = js_read_records(scenario.js)
    phone = scenario.other.device_id
    agents = {c.agent for _, conflicts in records.values() for conflict in conflicts for c in conflict.candidates
              if c.device == phone}
    assert agents == {"claude-code"}


def test_javascript_yjs_reads_the_device_registry(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    from_js = {}
    for device_id, entry in scenario.js["devices"].items():
        info = {k: v for k, v in entry.items() if not k.startswith((CLIENT_PREFIX, STATEMENT_PREFIX))}
        info["clients"] = sorted(int(k[len(CLIENT_PREFIX):]) for k, v in entry.items()
                                 if k.startswith(CLIENT_PREFIX) and v is True)
        info["statements"] = {k: v for k, v in entry.items() if k.startswith(STATEMENT_PREFIX)}
        from_js[device_id] = info
    assert from_js == scenario.vault.devices()


def test_javascript_yjs_reads_the_vault_root(read_scenario: ReadScenario | None) -> None:
    scenario = ready(read_scenario)
    assert scenario.js["vault"] == {"schema": 1, "name": VAULT_NAME}


# -- crdtsync integrates what JavaScript wrote --------------------------------------------------------------


@dataclass(frozen=True)
class WriteScenario:
    vault: Vault
    result: ApplyResult
    added_id: str
    edited: Memory
    spec: dict[str, Any]


@pytest.fixture(scope="module")
def write_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WriteScenario | None]:
    """A vault whose memory was edited (so its content register holds an entry with by/at), then a JavaScript
    Yjs Doc built from the vault's update adds one memory and rewrites the edited memory's content; the vault
    applies what JavaScript emitted past the vault's state vector."""
    if node_problem() is not None:
        yield None
        return
    root = tmp_path_factory.mktemp("yjs-write")
    vault = new_vault(root / "vault", "laptop")
    try:
        vault.add("Already here before JavaScript", tags=["old"])
        edited = vault.add("Drinks coffee", category="prefs", tags=["drinks"])
        edited = vault.update(edited.id, content="Drinks coffee, black")
        added_id = new_memory_id()
        spec = {
            "device": JS_DEVICE,
            # the wall time of the JavaScript writes: after every write of the vault, so they are the newest
            "at": utc_now_iso(datetime.now(UTC) + timedelta(seconds=2)),
            "add": {"id": added_id, "content": "Written by JavaScript Yjs 🟨 — ça marche", "category": "js",
                    "tags": ["from-js", "ユニコード"], "metadata": {"count": 7, "pi": 3.5, "list": [1, 2]}},
            "edit": {"id": edited.id, "content": "Switched to tea (edited in JavaScript) 🍵"},
        }
        (root / "vault.update").write_bytes(vault.encode_update())
        (root / "vault.sv").write_bytes(vault.state_vector())
        run_node("write_update.mjs", str(root / "vault.update"), str(root / "vault.sv"), json.dumps(spec),
                 str(root / "js.update"))
        result = vault.apply_update((root / "js.update").read_bytes(), "yjs")
        yield WriteScenario(vault, result, added_id, edited, spec)
    finally:
        vault.close()


def test_vault_integrates_the_javascript_update(write_scenario: WriteScenario | None) -> None:
    scenario = ready(write_scenario)
    assert scenario.result.status == "integrated", scenario.result
    assert set(scenario.result.changed) == {scenario.added_id, scenario.edited.id}


def test_memory_added_by_javascript_is_visible(write_scenario: WriteScenario | None) -> None:
    scenario = ready(write_scenario)
    memory = scenario.vault.get(scenario.added_id)
    add = scenario.spec["add"]
    assert (memory.content, memory.category, memory.tags) == (add["content"], "js", frozenset(add["tags"]))
    assert (memory.level, memory.deleted, memory.conflicts) == (1, False, ())
    at = scenario.spec["at"]
    assert (memory.created, memory.created_by, memory.updated, memory.updated_by) == (at, JS_DEVICE, at, JS_DEVICE)
    assert scenario.added_id in {m.id for m in scenario.vault.list()}


def test_metadata_written_by_javascript_keeps_integers(write_scenario: WriteScenario | None) -> None:
    scenario = ready(write_scenario)
    metadata = scenario.vault.get(scenario.added_id).metadata
    assert metadata == {"count": 7, "pi": 3.5, "list": [1, 2]}
    assert metadata is not None and type(metadata["count"]) is int


def test_memory_added_by_javascript_is_searchable(write_scenario: WriteScenario | None) -> None:
    scenario = ready(write_scenario)
    assert [m.id for m in scenario.vault.search("marche")] == [scenario.added_id]


def test_content_edited_by_javascript_replaces_the_value_without_a_conflict(
    write_scenario: WriteScenario | None,
) -> None:
    scenario = ready(write_scenario)
    memory = scenario.vault.get(scenario.edited.id)
    assert memory.content == scenario.spec["edit"]["content"]
    assert (memory.category, memory.tags) == (scenario.edited.category, scenario.edited.tags)
    at = scenario.spec["at"]
    assert (memory.updated_by, memory.updated, memory.conflicts, memory.deleted) == (JS_DEVICE, at, (), False)
    assert scenario.vault.conflicts() == []


def test_vault_update_after_the_javascript_write_reads_back_identically_in_javascript(
    write_scenario: WriteScenario | None, tmp_path: Path
) -> None:
    scenario = ready(write_scenario)
    update_file = tmp_path / "after.update"
    update_file.write_bytes(scenario.vault.encode_update())
    js = json.loads(run_node("read_vault.mjs", str(update_file)))
    from_js = {memory_id: memory for memory_id, (memory, _) in js_read_records(js).items()}
    assert from_js == {m.id: m for m in scenario.vault.list(include_deleted=True)}
