"""An interrupt is never a verdict on an update: Ctrl-C (KeyboardInterrupt) or a SIGTERM that a service turns
into SystemExit, arriving while a received update is applied, stops the process and leaves the update held, to
integrate at the next sync; a pycrdt panic is still a verdict (the update is refused)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from crdtsync.model.records import believable_until
from crdtsync.model.schema import read_record
from crdtsync.store.worker import IntegrationWorker, is_verdict
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, shared_data
from tests.integration.test_crash_safety import CHILD_START_TIMEOUT, running

pytestmark = pytest.mark.slow

#: Tag entries the big update writes into one record: yrs takes about 0.3 s to apply them (measured on a shared
#: 2-core machine), the window in which the interrupt must land.
ENTRIES = 150_000
MEMORY = "01900000-0000-7000-8000-00000000b16b"

APPLY_SCRIPT = """
import signal, sys, traceback
import pycrdt
from crdtsync.vault import Vault

def main() -> None:
    path, how, watched, files = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read(), sys.argv[4:]
    updates = [open(name, "rb").read() for name in files]
    if how == "SIGTERM":  # as a service does: SIGTERM unwinds the stack as Ctrl-C does
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    applied = pycrdt.Doc.apply_update

    def announced(doc, update):  # the live Doc starts the long apply of ``watched``: the moment to interrupt it
        if update == watched:
            print("applying", flush=True)
        applied(doc, update)

    pycrdt.Doc.apply_update = announced
    with Vault.open(path) as vault:
        vault.state_vector()  # loads the Doc: a received update is applied to it after the worker checked it
        print("ready", flush=True)
        try:
            results = vault.apply_updates([(update, "sender") for update in updates])
        except BaseException as exc:
            frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
            print("interrupted", type(exc).__name__, *frames, flush=True)
            raise
        print("done", *(f"{r.status}:{r.code}" for r in results), flush=True)

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def updates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two updates of one sender (Yjs client 7): a small one that creates a memory, and a big one (about 2 MB)
    that writes :data:`ENTRIES` entries of tag ``x`` into it, so it waits for the small one."""
    folder = tmp_path_factory.mktemp("sender")
    doc: Doc[Any] = Doc(client_id=7)
    memories = doc.get("memories", type=Map)
    memories[MEMORY] = Map({"created": ["2025-01-01T00:00:00.000Z", "0000000000000777"], "content@": "tagged"})
    small = doc.get_update()
    after_small = doc.get_state()
    record = memories[MEMORY]
    with doc.transaction():
        for n in range(ENTRIES):
            record[f"t:x@{n}"] = True
    (folder / "small").write_bytes(small)
    (folder / "big").write_bytes(doc.get_update(after_small))
    return folder / "small", folder / "big"


def assert_rows_equal_the_doc(vault: Vault) -> None:
    doc: Doc[Any] = Doc()
    doc.apply_update(vault.encode_update())
    records: dict[str, Any] = doc.get("memories", type=Map).to_py() or {}
    reading = {memory_id: read_record(memory_id, record, believable_until()) for memory_id, record in records.items()}
    assert {m.id: m for m in vault.list(include_deleted=True)} == {
        memory_id: read[0] for memory_id, read in reading.items() if read is not None}


@pytest.mark.parametrize(("how", "held_before"), [("SIGINT", False), ("SIGTERM", True)],
                         ids=["ctrl-c on a fresh update", "sigterm on an update that waited"])
def test_an_interrupted_live_apply_leaves_the_update_held_and_the_next_sync_integrates_it(
    tmp_path: Path, updates: tuple[Path, Path], how: str, held_before: bool
) -> None:
    """The child applies the big update and is interrupted while yrs applies it to the live Doc (after the
    worker accepted it). ``held_before``: the big update came first and waited for the small one, which the
    child brings: the big one, last tried before the small one integrated, must be due a try, or no sync would
    try it again until the sender wrote more."""
    small, big = updates
    path = Vault.init(tmp_path / "v", name="interrupt", device_name="v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    if held_before:
        with Vault.open(path) as vault:
            assert vault.apply_updates([(big.read_bytes(), "sender")])[0].status == "pending"
    script = tmp_path / "apply.py"
    script.write_text(APPLY_SCRIPT)
    delivered = [small] if held_before else [small, big]
    with running(script, str(path), how, str(big), *map(str, delivered)) as child:
        assert child.wait_for(lambda line: line == "applying", CHILD_START_TIMEOUT), child.lines
        if how == "SIGINT":
            os.killpg(child.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: its integration worker too
        else:
            os.kill(child.proc.pid, signal.SIGTERM)
        child.proc.wait(timeout=CHILD_START_TIMEOUT)
        assert child.wait_for(lambda line: line.startswith(("interrupted", "done")), 5.0)
    (outcome,) = [line.split() for line in child.lines if line.startswith(("interrupted", "done"))]
    assert outcome[:2] == ["interrupted", "KeyboardInterrupt" if how == "SIGINT" else "SystemExit"], outcome
    assert {"_integrate_checked", "announced"} <= set(outcome), f"the interrupt missed the live apply: {outcome}"
    assert child.proc.returncode == (-signal.SIGINT if how == "SIGINT" else 143)

    with Vault.open(path) as vault:
        assert vault.store.quarantined() == []
        assert [data for _, _, data in vault.store.held()] == [big.read_bytes()]
        assert vault.store.due_count() == 1
        assert vault.get(MEMORY).tags == frozenset()  # the small update integrated before the interrupt
        assert_rows_equal_the_doc(vault)
        vault.add_relay("box", (tmp_path / "box").as_uri())
        (report,) = vault.sync()
        assert report.errors == []
        assert vault.store.held_count() == 0 and vault.store.quarantined() == []
        assert vault.get(MEMORY).tags == frozenset({"x"})
        assert_rows_equal_the_doc(vault)


def test_a_ctrl_c_that_reaches_the_integration_worker_is_no_verdict() -> None:
    """A terminal sends Ctrl-C to its whole foreground process group, the integration worker included: the worker
    ignores it (the parent stops and kills it), rather than dying and getting the update it was given refused as
    UPDATE_WORKER_CRASHED or, caught by its panic handler, UPDATE_MALFORMED."""
    doc: Doc[Any] = Doc(client_id=7)
    doc.get("memories", type=Map)[MEMORY] = Map({"created": ["2025-01-01T00:00:00.000Z", "0000000000000777"],
                                                 "content@": "tagged"})
    with IntegrationWorker([], deadline=10.0) as worker:
        os.kill(worker.pid, signal.SIGINT)
        result = worker.apply(doc.get_update())
        assert [memory_id for memory_id, _ in result.rows] == [MEMORY] and worker.alive


def test_a_panic_is_a_verdict_and_an_interrupt_is_not() -> None:
    cases = json.loads(shared_data("pycrdt-hazards", "cases.json").read_text())["cases"]
    (case,) = [c for c in cases if c["name"] == "panic-empty"]  # pycrdt panics on it in an empty Doc
    with pytest.raises(BaseException) as raised:  # a Doc that panicked is dropped, never read
        Doc().apply_update(bytes.fromhex(case["updates"][0]))
    assert not isinstance(raised.value, Exception), "pyo3's PanicException is a BaseException"
    assert is_verdict(raised.value)
    assert is_verdict(ValueError("a refusal"))
    assert not is_verdict(KeyboardInterrupt())
    assert not is_verdict(SystemExit(143))
