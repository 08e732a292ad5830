"""The defended apply path: the strict reader, the integration worker and the live Doc, on the pycrdt hazards
of shared/data/pycrdt-hazards and on honest updates (out of order, duplicated, of the wrong schema)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

import crdtsync.store.replica as replica_module
from crdtsync.errors import NotFoundError, UpdateRejectedError, VaultError
from crdtsync.model.ystate import decode_state_vector
from crdtsync.model.yupdate import decode_update
from crdtsync.store.worker import IntegrationWorker, check_registry
from crdtsync.vault import Vault
from tests.conftest import crash_workers_applying, shared_data

MakeVault = Callable[..., Vault]
POISON_CLOCK = 1 << 31


def hazard_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(shared_data("pycrdt-hazards", "cases.json").read_text())["cases"]
    return cases


def case(name: str) -> list[bytes]:
    (found,) = [c for c in hazard_cases() if c["name"] == name]
    return [bytes.fromhex(u) for u in found["updates"]]


def vault_fingerprint(vault: Vault) -> tuple[Any, ...]:
    return (
        [m.to_json() for m in vault.list(include_deleted=True)],
        vault.encode_update(),
        vault.store.updates_after(0),
    )


@pytest.mark.parametrize("name", ["panic-after-client-7-entry", "clock-jump-silent", "panic-empty", "hang", "hang-2"])
def test_hazard_case_is_refused_or_held_and_the_vault_survives(name: str, make_vault: MakeVault) -> None:
    vault = make_vault(deadline=5.0)
    honest = vault.add("an honest memory written before the attack")
    results = vault.apply_updates([(u, "attacker") for u in case(name)])
    assert len(results) == len(case(name))
    assert all(r.status in ("integrated", "pending", "refused") for r in results)
    assert any(r.status != "integrated" for r in results)
    state = decode_state_vector(vault.state_vector())
    assert all(clock < POISON_CLOCK for clock in state.values()), state
    assert vault.get(honest.id).content == "an honest memory written before the attack"
    after = vault.add("a write after the attack")
    assert vault.get(after.id).content == "a write after the attack"


def test_vault_reopens_in_a_fresh_process_after_every_hazard_case(tmp_path: Path, make_vault: MakeVault) -> None:
    vault = make_vault(deadline=5.0)
    for c in hazard_cases():
        vault.apply_updates([(bytes.fromhex(u), c["name"]) for u in c["updates"]])
    expected = sorted(m.id for m in vault.list())
    vault.close()
    script = textwrap.dedent(
        f"""
        from pycrdt import Doc
        from crdtsync.vault import Vault
        with Vault.open({str(tmp_path / "a")!r}) as v:
            v.add("still writable")
            doc = Doc()
            doc.apply_update(v.encode_update())
            print(len(v.list()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == len(expected) + 1


def test_worker_survives_a_panic_and_reports_it() -> None:
    with IntegrationWorker([], deadline=5.0) as worker:
        with pytest.raises(UpdateRejectedError) as info:
            worker.apply(case("panic-empty")[0])
        assert info.value.code in ("UPDATE_MALFORMED", "UPDATE_WORKER_CRASHED")
        assert not worker.alive


def test_worker_that_stops_answering_is_killed_at_the_deadline() -> None:
    with IntegrationWorker([], deadline=1.0) as worker:
        os.kill(worker.pid, signal.SIGSTOP)  # stands for yrs spinning with the GIL held
        started = time.monotonic()
        with pytest.raises(UpdateRejectedError) as info:
            worker.apply(case("hang")[0])
        assert info.value.code == "UPDATE_WORKER_TIMEOUT"
        assert time.monotonic() - started < 10 and not worker.alive


def test_the_hang_case_never_holds_the_caller_past_the_deadline() -> None:
    """Whether yrs spins on the last update depends on the process (see the case's README): the caller either
    gets UPDATE_WORKER_TIMEOUT at the deadline or a result, never a hang."""
    updates = case("hang")
    with IntegrationWorker(updates[:-1], deadline=3.0) as worker:
        started = time.monotonic()
        try:
            worker.apply(updates[-1])
        except UpdateRejectedError as exc:
            assert exc.code == "UPDATE_WORKER_TIMEOUT" and not worker.alive
        assert time.monotonic() - started < 3.0 + 5


def test_worker_reveals_the_silent_clock_jump_that_the_reader_refuses_first() -> None:
    update = case("clock-jump-silent")[0]
    with IntegrationWorker([], deadline=5.0) as worker:
        jumped = decode_state_vector(worker.apply(update).state_vector)
    assert jumped.get(7, 0) > POISON_CLOCK
    from crdtsync.model.yupdate import decode_update

    with pytest.raises(UpdateRejectedError):
        decode_update(update)


def _foreign_doc(client_id: int) -> Doc:
    return Doc(client_id=client_id)


def test_out_of_order_updates_wait_then_integrate(make_vault: MakeVault) -> None:
    source, sink = make_vault("a"), make_vault("b")
    m = source.add("first")
    first = source.store.local_updates_after(0)
    source.update(m.id, content="second")
    second = source.store.local_updates_after(first[-1][0])
    (late,) = sink.apply_updates([(second[0][1], "a")])
    assert late.status == "pending" and sink.store.held_count() == 1
    results = sink.apply_updates([(data, "a") for _, data in first])
    assert results[-1].status == "integrated"
    assert sink.store.held_count() == 0 and sink.get(m.id).content == "second"


def test_a_full_inbox_refuses_only_updates_that_would_wait(
    monkeypatch: pytest.MonkeyPatch, make_vault: MakeVault,
) -> None:
    import crdtsync.store.integration as integration_module

    monkeypatch.setattr(integration_module, "MAX_HELD", 2)
    source, sink = make_vault("a"), make_vault("b")
    m = source.add("v0")
    updates = [data for _, data in source.store.local_updates_after(0)]
    for n in range(1, 5):
        last = source.store.last_update_id()
        source.update(m.id, content=f"v{n}")
        updates += [data for _, data in source.store.local_updates_after(last)]
    first, later = updates[:-4], updates[-4:]
    results = sink.apply_updates([(data, "a") for data in later])  # all wait for `first`
    assert [r.status for r in results] == ["pending", "pending", "refused", "refused"]
    assert {r.code for r in results[2:]} == {"UPDATE_INBOX_FULL"} and sink.store.held_count() == 2
    assert [r.status for r in sink.apply_updates([(data, "a") for data in first])][-1] == "integrated"
    assert sink.store.held_count() == 0 and sink.get(m.id).content == "v2"  # v3, v4 were refused
    assert [r.status for r in sink.apply_updates([(data, "a") for data in later[2:]])] == ["integrated"] * 2
    assert sink.get(m.id).content == "v4"


def test_one_devices_contribution_applies_before_the_device_that_replaced_its_content(
    make_vault: MakeVault,
) -> None:
    """b writes a memory, a edits its content. b's contribution (a first push to a new relay, a mailbox
    snapshot) carries the whole delete set b knows, so b's content entry arrives deleted, while a's entry comes
    with a's contribution. A device that joins and pulls b before a saw a record without content: it was
    refused as a schema violation, and a's contribution then waited for the refused structs for ever."""
    a, b, joiner = make_vault("a"), make_vault("b"), make_vault("joiner")
    # These vaults were each founded on their own, so their `vault` roots conflict and b's delete set may name
    # a's founding entries: give the joiner those first, as a real joiner (which founds nothing) needs not.
    joiner.apply_update(a.encode_update(), "a")
    memory = b.add("written on b", tags=["x"])
    a.apply_update(b.encode_update(), "b")
    a.update(memory.id, content="edited on a")
    b.apply_update(a.encode_update(), "a")
    from_b, from_a = b.own_contribution(), a.own_contribution()
    assert joiner.apply_update(from_b, "b").status == "integrated"
    with pytest.raises(NotFoundError):
        joiner.get(memory.id)  # a partial view until a's part arrives
    assert joiner.apply_update(from_a, "a").status == "integrated"
    assert joiner.get(memory.id).content == "edited on a" and joiner.get(memory.id).tags == {"x"}
    assert joiner.store.quarantined() == [] and joiner.list() == a.list()


def test_two_contributions_that_wait_on_each_other_both_integrate(make_vault: MakeVault) -> None:
    """a writes a memory; b tags it and removes the tag again, so b's tag entry (inside a's record Map) is
    deleted. a's contribution carries the whole delete set a knows, b's deleted entry included; b's carries
    that entry, whose parent is a's record. Held whole, each waited on the other for ever; a's structs now
    integrate while the delete of b's entry waits apart."""
    a, b, joiner = make_vault("a"), make_vault("b"), make_vault("joiner")
    joiner.apply_update(a.encode_update(), "a")  # a's founding entries (see the test above)
    joiner.apply_update(b.encode_update(), "b")
    memory = a.add("written on a")
    b.apply_update(a.encode_update(), "a")
    b.update(memory.id, add_tags=["draft"])
    b.update(memory.id, remove_tags=["draft"])
    a.apply_update(b.encode_update(), "b")
    from_a, from_b = a.own_contribution(), b.own_contribution()
    assert joiner.apply_update(from_a, "a").status == "integrated"  # a's structs are in
    assert joiner.get(memory.id).content == "written on a"
    assert joiner.store.held_count() == 1  # the delete of b's tag entry waits apart
    assert joiner.apply_update(from_b, "b").status == "integrated"
    assert joiner.store.held_count() == 0 and joiner.store.quarantined() == []
    assert joiner.get(memory.id).tags == frozenset() and joiner.list() == a.list() == b.list()


def test_snapshots_of_two_devices_that_edited_each_others_memories_integrate_together(
    make_vault: MakeVault,
) -> None:
    """a and b each edit a memory the other wrote, then each sends its whole contribution (a mailbox snapshot,
    a first push to a new relay). a's holds entries inside b's record and b's entries inside a's: neither is
    complete alone, so a joiner held both for ever. Together they are complete, and Yjs integrates them in
    turn."""
    a, b, joiner = make_vault("a"), make_vault("b"), make_vault("joiner")
    joiner.apply_update(a.encode_update(), "a")  # the founding entries of these separately founded vaults
    joiner.apply_update(b.encode_update(), "b")
    from_a_memory, from_b_memory = a.add("written on a"), b.add("written on b")
    b.apply_update(a.encode_update(), "a")
    a.apply_update(b.encode_update(), "b")
    a.update(from_b_memory.id, content="written on b, edited on a")
    b.update(from_a_memory.id, content="written on a, edited on b", add_tags=["b"])
    b.apply_update(a.encode_update(), "a")
    a.apply_update(b.encode_update(), "b")
    from_a, from_b = a.own_contribution(), b.own_contribution()
    assert joiner.apply_update(from_a, "a").status == "pending"
    assert joiner.apply_update(from_b, "b").status == "integrated"
    assert joiner.store.held_count() == 0 and joiner.store.quarantined() == []
    assert joiner.get(from_a_memory.id).content == "written on a, edited on b"
    assert joiner.get(from_b_memory.id).content == "written on b, edited on a"
    assert joiner.list() == a.list() == b.list()


def test_duplicates_change_nothing(make_vault: MakeVault) -> None:
    source, sink = make_vault("a"), make_vault("b")
    source.add("once")
    update = source.encode_update()
    sink.apply_update(update, "a")
    before = [x.to_json() for x in sink.list()]
    assert sink.apply_update(update, "a").status == "integrated"
    assert [x.to_json() for x in sink.list()] == before


@pytest.mark.parametrize("cut", [1, 5, 17, -1])
def test_truncated_or_garbage_updates_are_refused_and_change_nothing(make_vault: MakeVault, cut: int) -> None:
    source, sink = make_vault("a"), make_vault("b")
    source.add("some memory")
    sink.add("already here")
    before = vault_fingerprint(sink)
    with pytest.raises(UpdateRejectedError) as info:
        sink.apply_update(source.encode_update()[:cut], "a")
    assert info.value.code == "UPDATE_MALFORMED"
    assert vault_fingerprint(sink) == before
    assert sink.store.quarantined()[-1][2] == "UPDATE_MALFORMED"


def _write_record(record: dict[str, Any], root: str = "memories") -> bytes:
    doc = Doc(client_id=99)
    doc.get(root, type=Map)["m"] = Map(record)
    return doc.get_update()


@pytest.mark.parametrize(
    "record",
    [
        {"created": ["2026-01-01T00:00:00.000Z", "x"], "content@1": [42]},
        {"created": ["2026-01-01T00:00:00.000Z", "x"], "content@1": ["ok"], "deleted@2": ["no"]},
        {"created": [5, "x"], "content@1": ["ok"]},
    ],
)
def test_a_synced_field_of_the_wrong_type_is_refused(make_vault: MakeVault, record: dict[str, Any]) -> None:
    vault = make_vault()
    vault.add("already here")
    before = vault_fingerprint(vault)
    with pytest.raises(UpdateRejectedError) as info:
        vault.apply_update(_write_record(record), "peer")
    assert info.value.code == "UPDATE_SCHEMA_VIOLATION"
    assert vault_fingerprint(vault) == before


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (lambda: Text("a Y.Text"), "type:text"),
        (lambda: Array(["a Y.Array"]), "type:array"),
        (lambda: b"bytes", "any:binary"),
        (lambda: float("nan"), "any:nonfinite"),
        (lambda: float("inf"), "any:nonfinite"),
    ],
)
def test_content_that_schema_v1_never_writes_is_refused_before_any_doc_sees_it(
    make_vault: MakeVault, value: Callable[[], Any], kind: str
) -> None:
    """A JSON reading of the Doc (what the worker sends) would blur these, so the strict reader's content kinds
    refuse them first: the vault is unchanged and the quarantine names the kind."""
    vault = make_vault()
    vault.add("already here")
    before = vault_fingerprint(vault)
    record = {"created": ["2026-01-01T00:00:00.000Z", "x"], "content@": "ok", "category@1": value()}
    with pytest.raises(UpdateRejectedError) as info:
        vault.apply_update(_write_record(record), "peer")
    assert info.value.code == "UPDATE_SCHEMA_VIOLATION" and kind in info.value.message
    assert vault_fingerprint(vault) == before


def test_a_script_without_a_main_guard_can_apply_updates(tmp_path: Path, make_vault: MakeVault) -> None:
    """The worker runs ``-m crdtsync.store.worker``: it never re-imports the caller's ``__main__``."""
    source = make_vault("a")
    memory = source.add("applied from a script at module level")
    (tmp_path / "update.bin").write_bytes(source.encode_update())
    target = make_vault("b")
    target.close()
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from crdtsync.vault import Vault
        with Vault.open({str(target.path)!r}) as vault:
            print(vault.apply_update(Path({str(tmp_path / "update.bin")!r}).read_bytes(), "a").status)
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["integrated"]
    with Vault.open(target.path) as vault:
        assert vault.get(memory.id).content == "applied from a script at module level"


def test_an_update_writing_an_unknown_root_is_refused(make_vault: MakeVault) -> None:
    vault = make_vault()
    with pytest.raises(UpdateRejectedError) as info:
        vault.apply_update(_write_record({"x": 1}, root="elsewhere"), "peer")
    assert info.value.code == "UPDATE_SCHEMA_VIOLATION"


def test_a_valid_foreign_record_integrates_and_is_materialized(make_vault: MakeVault) -> None:
    vault = make_vault()
    record = {"created": ["2026-01-01T00:00:00.000Z", "x"], "content@1": ["from yjs"], "t:a@x1": True}
    result = vault.apply_update(_write_record(record), "peer")
    assert result.status == "integrated" and result.changed == ("m",)
    assert vault.get("m").content == "from yjs" and vault.get("m").tags == {"a"}


def test_a_worker_whose_caller_fails_mid_stream_is_closed_not_reused(make_vault: MakeVault) -> None:
    source = make_vault("a")
    for i in range(3):
        source.add(f"memory {i}")

    def failing(rows: Any) -> None:
        raise RuntimeError("disk full while storing rows")

    with IntegrationWorker([], deadline=5.0) as worker:
        with pytest.raises(RuntimeError):
            worker.apply(source.encode_update(), on_rows=failing)
        assert not worker.alive
    with IntegrationWorker([], deadline=5.0) as worker:
        assert len(worker.apply(source.encode_update()).changed) == 3


_ROGUE_CHILD = """
import sys, time, msgpack
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
conn.send_bytes(msgpack.packb(["ready"]))
conn.recv_bytes()
conn.send_bytes(msgpack.packb(["ok", b"\\\\x00", [], "{{}}", []]))
conn.recv_bytes()
{reply}
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("conn._send((2**31 - 1).to_bytes(4, 'big'))", "UPDATE_WORKER_CRASHED"),  # announces 2 GiB: not allocated
        ("conn._send((100).to_bytes(4, 'big') + b'half')", "UPDATE_WORKER_CRASHED"),  # then stalls mid-frame
        ('conn.send_bytes(b"\\\\xc1 not msgpack")', "UPDATE_WORKER_CRASHED"),
        ('conn.send_bytes(msgpack.packb(["ok", 5, [], "{}", []]))', "UPDATE_WORKER_CRASHED"),
        ('conn.send_bytes(msgpack.packb(["error", "SOMETHING_ELSE", "x"]))', "UPDATE_WORKER_CRASHED"),
        ("conn.send_bytes(msgpack.packb(['records', [['m', True, '{\"content@\": 1}']]]))",
         "UPDATE_SCHEMA_VIOLATION"),
        ("conn.send_bytes(msgpack.packb(['ok', b'', [['d', True, '{\"name\": 3}']], '{}', []]))",
         "UPDATE_SCHEMA_VIOLATION"),
    ],
)
def test_a_corrupted_worker_cannot_make_the_parent_hang_allocate_or_accept_a_bad_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reply: str, code: str
) -> None:
    """The child handled hostile bytes and may be corrupted: whatever it sends, the parent refuses the update
    with a code, kills the child and returns promptly (it never waits for a child that keeps running)."""
    import crdtsync.store.worker as worker_module

    script = tmp_path / "rogue.py"
    script.write_text(_ROGUE_CHILD.format(reply=reply))
    monkeypatch.setattr(worker_module, "CHILD_ARGS", (str(script),))
    with IntegrationWorker([], deadline=20.0) as worker:
        started = time.monotonic()
        with pytest.raises(UpdateRejectedError) as info:
            worker.apply(b"\x00\x00")
        assert info.value.code == code
        assert not worker.alive and time.monotonic() - started < 10


@pytest.mark.parametrize("entry", [
    ["not-a-device-id", True, '{"name": "phone"}'],
    ["0123456789abcdef", True, json.dumps({"name": "x" * 1025})],
    ["0123456789abcdef", True, '{"name": "phone", "colour": "red"}'],
])
def test_a_registry_entry_outside_schema_v1_is_a_violation(entry: list[object]) -> None:
    assert check_registry([["0123456789abcdef", True, '{"name": "phone"}']], "{}")
    with pytest.raises(UpdateRejectedError) as info:
        check_registry([entry], "{}")
    assert info.value.code == "UPDATE_SCHEMA_VIOLATION"


@pytest.mark.parametrize("vault", ['{"schema": 2, "name": "v"}', json.dumps({"schema": 1, "name": "x" * 1025}),
                                   '{"schema": 1, "name": 5}', "[1]"])
def test_a_vault_root_outside_schema_v1_is_a_violation(vault: str) -> None:
    assert check_registry([], '{"schema": 1, "name": "memories"}') == {}
    with pytest.raises(UpdateRejectedError) as info:
        check_registry([], vault)
    assert info.value.code == "UPDATE_SCHEMA_VIOLATION"


def test_a_worker_slower_to_start_than_the_stall_timeout_still_integrates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_vault: MakeVault
) -> None:
    """A child whose imports take long (a slow phone) says when it is ready: the parent's send of the state
    does not stall on a child that is not reading yet."""
    import crdtsync.store.worker as worker_module

    source = make_vault("a")
    memory = source.add("arrives through a slow worker")
    script = tmp_path / "slow.py"
    script.write_text("import runpy, time\ntime.sleep(2)\n"
                      "runpy.run_module('crdtsync.store.worker', run_name='__main__')\n")
    monkeypatch.setattr(worker_module, "CHILD_ARGS", (str(script),))
    monkeypatch.setattr(worker_module, "FRAME_STALL_SECONDS", 1.0)
    sink = make_vault("b")
    for i in range(20):  # a stored state of ~1.2 MB: more than a socket buffer holds
        sink.add(f"{i} " + "x" * 60_000)
    assert sink.apply_update(source.encode_update(), "a").status == "integrated"
    assert sink.get(memory.id).content == "arrives through a slow worker"


def test_a_worker_that_cannot_load_the_stored_state_blames_no_received_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_vault: MakeVault
) -> None:
    import crdtsync.store.worker as worker_module

    source = make_vault("a")
    memory = source.add("innocent")
    update = source.encode_update()
    sink = make_vault("b")
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(worker_module, "CHILD_ARGS", (str(script),))
    with pytest.raises(VaultError) as info:
        sink.apply_update(update, "a")
    assert info.value.code == "VAULT_REBUILD_FAILED"
    assert sink.store.quarantined() == [] and [data for _, _, data in sink.store.held()] == [update]
    assert [a["code"] for a in sink.status()["alarms"]] == ["VAULT_REBUILD_FAILED"]
    monkeypatch.undo()
    sink.apply_updates([])  # the next sync drains the inbox
    assert sink.get(memory.id).content == "innocent" and sink.store.held() == []


def test_a_stored_update_that_breaks_every_rebuild_is_found_and_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_vault: MakeVault
) -> None:
    """The issue: "if a rebuild itself fails, find the stored update that causes it and quarantine it". Received
    updates logged after it go back to the inbox: those that do not depend on it integrate again, one that
    does stays held; the memories are re-read from what remains."""

    a, c, sink = make_vault("a"), make_vault("c"), make_vault("sink")
    kept = a.add("from a, before")
    sink.apply_update(a.encode_update(), "a")
    sv = a.state_vector()
    culprit_memory = a.add("the record whose update later breaks every rebuild")
    culprit = a.encode_update(sv)
    sink.apply_update(culprit, "a")
    independent = c.add("from c, unrelated")
    sink.apply_update(c.encode_update(), "c")
    sv = a.state_vector()
    a.update(culprit_memory.id, content="an edit that depends on the culprit")
    dependent = a.encode_update(sv)
    sink.apply_update(dependent, "a")
    sink.add("a local write, so the next received update needs a fresh worker")
    crash_workers_applying(culprit, tmp_path, monkeypatch)
    later = c.add("from c, after the failure")
    assert sink.apply_update(c.encode_update(), "c").status == "integrated"

    assert [q[2] for q in sink.store.quarantined()] == ["UPDATE_REBUILD_FAILED"]
    assert [data for _, _, data in sink.store.held()] == [dependent]
    assert {m.id for m in sink.list()} >= {kept.id, independent.id, later.id}
    assert culprit_memory.id not in {m.id for m in sink.list()}
    assert "UPDATE_REBUILD_FAILED" in [alarm["code"] for alarm in sink.status()["alarms"]]


def test_other_processes_reload_their_doc_and_worker_after_a_stored_update_is_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_vault: MakeVault
) -> None:
    """A second process holding the vault open (an agent's long-running session) loaded its Doc and worker with
    the update that a rebuild in the first process later takes out of the log. It must reload both: else its
    writes and pushes carry the quarantined structs, and the same update arriving again (through another relay)
    integrates through its stale worker and is logged again."""

    a, c, sink = make_vault("a"), make_vault("c"), make_vault("sink")
    sink.apply_update(a.encode_update(), "a")
    sv = a.state_vector()
    a.add("the record whose update later breaks every rebuild")
    culprit = a.encode_update(sv)
    other = make_vault("sink")
    assert other.apply_update(culprit, "a").status == "integrated"  # its worker and Doc now hold the culprit
    other.add("a write, so that the other process has its Doc loaded")
    crash_workers_applying(culprit, tmp_path, monkeypatch)
    c.add("from c, after the failure")
    assert sink.apply_update(c.encode_update(), "c").status == "integrated"  # the repair runs here
    assert [q[2] for q in sink.store.quarantined()] == ["UPDATE_REBUILD_FAILED"]

    assert other.state_vector() == sink.state_vector()
    assert culprit not in other.encode_update() and other.encode_update() == sink.encode_update()
    with pytest.raises(UpdateRejectedError) as info:
        other.apply_update(culprit, "a")
    assert info.value.code == "UPDATE_WORKER_CRASHED"
    assert [q[2] for q in sink.store.quarantined()] == ["UPDATE_REBUILD_FAILED", "UPDATE_WORKER_CRASHED"]


def test_a_local_write_on_top_of_a_quarantined_update_is_kept_and_its_clocks_are_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_vault: MakeVault
) -> None:
    """This device edited a memory that a received update created; a later rebuild quarantines that update. The
    edit stays in the log, pending in yrs, which leaves it out of ``Doc.get_update``: compactions carry it past
    their snapshot (an alarm says why), so the log stays bounded and the edit is never lost, and later writes
    take a fresh client id instead of reusing the edit's clocks (the Doc's clock of the edit's client stays
    behind the log)."""
    monkeypatch.setattr(replica_module, "COMPACT_AFTER_UPDATES", 10)
    a, sink = make_vault("a"), make_vault("sink")
    culprit_memory = a.add("the record whose update later breaks every rebuild")
    culprit = a.encode_update()
    sink.apply_update(culprit, "a")
    sink.add("a write of its own first, so the edit below is an update of its own")
    written = sink.store.last_update_id()
    sink.update(culprit_memory.id, content="edited here, on top of it")
    (edit,) = [data for _, data in sink.store.local_updates_after(written)]
    crash_workers_applying(culprit, tmp_path, monkeypatch)
    assert sink.apply_update(make_vault("c").encode_update(), "c").status == "integrated"  # the repair runs here
    assert [q[2] for q in sink.store.quarantined()] == ["UPDATE_REBUILD_FAILED"]

    written = sink.store.last_update_id()
    for i in range(25):
        sink.add(f"written after the repair {i}")
    snapshot = sink.store.latest_snapshot()
    assert snapshot is not None and snapshot[0] > written  # compaction ran, twice
    assert sink.store.updates_since_snapshot()[0] < 12
    assert edit in [data for _, data in sink.store.updates_after(snapshot[0])]  # carried past it
    assert "VAULT_UPDATES_PENDING" in [alarm["code"] for alarm in sink.status()["alarms"]]
    after = [decode_update(data) for i, data in sink.store.local_updates_after(written) if data != edit]
    assert set(decode_update(edit).structs).isdisjoint(c for update in after for c in update.structs)
    sink.close()
    with Vault.open(sink.path) as reopened:
        assert edit in [data for _, data in reopened.store.updates_after(0)]
        late = make_vault("late")
        assert late.apply_update(reopened.encode_update(), "sink").status == "integrated"
        assert [m.id for m in late.list()] == [m.id for m in reopened.list()] and len(reopened.list()) == 26


def test_a_store_failure_after_the_worker_applied_leaves_no_stale_worker_behind(
    make_vault: MakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker applied an update, then logging it failed (a full disk): the transaction rolls back, so the
    worker's Doc is ahead of the store. Retried, the update must integrate in a fresh worker and its memories
    show; a reused worker would find nothing touched and store no rows for them."""
    source, sink = make_vault("a"), make_vault("sink")
    sink.add("a write of its own, so the sink's worker is not fresh")
    memory = source.add("arrives while the disk is full")
    update = source.encode_update()
    append = sink.store.append_update
    failures = iter([sqlite3.OperationalError("database or disk is full")])

    def full_disk(*args: Any, **kwargs: Any) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return append(*args, **kwargs)

    monkeypatch.setattr(sink.store, "append_update", full_disk)
    with pytest.raises(sqlite3.OperationalError):
        sink.apply_update(update, "a")
    assert sink.apply_update(update, "a").status == "integrated"
    assert sink.get(memory.id).content == memory.content
