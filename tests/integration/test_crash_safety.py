"""Crash safety: a process writing to a vault is killed with SIGKILL at random points; the vault must reopen
with every acknowledged write, its materialized memories must match its Doc, and it must take new writes.

Three kinds of work are interrupted, each in its own child process (a real ``python`` running a small script
that prints, and flushes, a line after each acknowledged step): a loop of adds and edits, a bulk import of a
JSONL file made from LoCoMo text, and the integration of a big update received from another vault (killed
while the integration worker runs, among other moments). Every wait is bounded in time and every loop in
count; the child's process group is killed at the end of each round so no integration worker outlives it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from crdtsync.errors import VaultError
from crdtsync.imports import ImportRecord, read_import
from crdtsync.model.schema import read_record
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, shared_data

pytestmark = pytest.mark.slow

#: Longest wait for a child to start (imports, open) or to print its next line.
CHILD_START_TIMEOUT = 30.0

WRITER_SCRIPT = """
import random, sys
from crdtsync.vault import Vault

def main() -> None:
    path, round_no, texts = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], encoding="utf-8").read().splitlines()
    rng = random.Random(round_no)
    with Vault.open(path) as vault:
        ids = [m.id for m in vault.list()]
        print("ready", flush=True)
        for step in range(100_000):
            content = f"r{round_no} w{step}: {rng.choice(texts)}"
            if ids and rng.random() < 0.4:
                target = rng.choice(ids)
                vault.update(target, content=content)
            else:
                target = vault.add(content, category=rng.choice(["Caroline", "Melanie", None]),
                                   tags=rng.sample(["locomo", "crash", "kill -9"], 2)).id
                ids.append(target)
            print(f"ack {target} {step}", flush=True)

if __name__ == "__main__":
    main()
"""

IMPORT_SCRIPT = """
import sys
import crdtsync._vault_import
from crdtsync.vault import Vault

crdtsync._vault_import.IMPORT_BATCH = 2000  # more batch boundaries for the kills to land between

def main() -> None:
    with Vault.open(sys.argv[1]) as vault:
        print("ready", flush=True)
        vault.import_path(sys.argv[2], progress=lambda handled: print(f"handled {handled}", flush=True))
        print("done", flush=True)

if __name__ == "__main__":
    main()
"""

APPLY_SCRIPT = """
import sys
from crdtsync.vault import Vault

def main() -> None:
    update = open(sys.argv[2], "rb").read()
    with Vault.open(sys.argv[1]) as vault:
        print("ready", flush=True)
        (result,) = vault.apply_updates([(update, "sender")], on_stored=lambda: print("storing", flush=True))
        print(f"done {result.status}", flush=True)

if __name__ == "__main__":
    main()
"""


# -- a child process we can kill ------------------------------------------------------------------------


@dataclass
class Child:
    """A child Python process whose stdout lines are collected by a thread as they arrive."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, script: Path, *args: str) -> Child:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, cwd=Path(__file__).resolve().parents[2],
        )
        child = cls(proc)
        child.reader = threading.Thread(target=child._read, daemon=True)
        child.reader.start()
        return child

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.arrived:
                self.lines.append(line.strip())
                self.arrived.notify_all()
        with self.arrived:
            self.arrived.notify_all()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until a collected line satisfies ``predicate`` or the child ends; True when one does."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not any(predicate(line) for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return any(predicate(line) for line in self.lines)
                self.arrived.wait(min(left, 0.05))
        return True

    def workers(self) -> list[int]:
        """Pids of the child's integration workers: its children running ``-m crdtsync.store.worker``."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid and b"crdtsync.store.worker" in cmdline:
                found.append(int(entry.name))
        return found

    def kill(self) -> None:
        """SIGKILL the child, then its process group (an integration worker it started), and collect output."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        assert self.reader is not None
        self.reader.join(timeout=30)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@contextmanager
def running(script: Path, *args: str) -> Iterator[Child]:
    child = Child.start(script, *args)
    try:
        assert child.wait_for(lambda line: line == "ready", CHILD_START_TIMEOUT), child_failure(child)
        yield child
    finally:
        child.kill()
        if child.proc.stderr is not None:
            child.proc.stderr.close()


def child_failure(child: Child) -> str:
    child.kill()
    return f"the child did not start: exit {child.proc.returncode}: {child.stderr()[-2000:]}"


# -- what a reopened vault must satisfy ------------------------------------------------------------------


def new_vault(path: Path) -> Path:
    return Vault.init(path, name="crash", device_name=path.name, passphrase=PASSPHRASE, kdf=cheap_kdf())


def assert_store_matches_doc(vault: Vault) -> None:
    """The materialized level-1 memories are exactly what the shared Doc reads as."""
    doc: Doc[Any] = Doc()
    doc.apply_update(vault.encode_update())
    records: dict[str, Any] = doc.get("memories", type=Map).to_py() or {}
    from_doc = {}
    for memory_id, record in records.items():
        read = read_record(memory_id, record)
        assert read is not None, f"{memory_id} is not a valid record in the Doc"
        from_doc[memory_id] = read[0].to_json()
    listed = {m.id: m.to_json() for m in vault.list(include_deleted=True) if m.level == 1}
    assert listed.keys() == from_doc.keys()
    assert listed == from_doc


def assert_takes_a_new_write(vault: Vault) -> None:
    memory = vault.add("written after the crash")
    assert vault.get(memory.id).content == "written after the crash"


def locomo_texts(limit: int | None = None) -> list[str]:
    texts = [r.content.replace("\n", " ") for r in read_import(shared_data("locomo"))
             if isinstance(r, ImportRecord) and r.content.strip()]
    return texts[:limit]


# -- killed while writing --------------------------------------------------------------------------------

WRITE_ROUNDS = 8


@dataclass
class Ack:
    round_no: int
    step: int


def parse_seq(content: str) -> tuple[int, int]:
    head = content.split(":", 1)[0]  # "r3 w17"
    r, w = head.split()
    return int(r[1:]), int(w[1:])


def test_every_acknowledged_write_survives_kill_9_at_random_points(tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(locomo_texts(2000)), encoding="utf-8")
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    path = new_vault(tmp_path / "v")
    rng = random.Random(9)
    acked: dict[str, Ack] = {}
    for round_no in range(WRITE_ROUNDS):
        with running(script, str(path), str(round_no), str(texts)) as child:
            time.sleep(rng.uniform(0.05, 1.2))
        last_step = -1
        for line in child.lines:
            if line.startswith("ack "):
                _, memory_id, step = line.split()
                acked[memory_id] = Ack(round_no, int(step))
                last_step = int(step)
        with Vault.open(path) as vault:
            memories = {m.id: m for m in vault.list(include_deleted=True)}
            assert acked.keys() <= memories.keys(), f"round {round_no}: an acknowledged add is gone"
            for memory_id, ack in acked.items():
                stored = parse_seq(memories[memory_id].content)
                if stored == (round_no, last_step + 1):  # the write in flight when killed had committed
                    acked[memory_id] = Ack(*stored)
                    continue
                assert stored == (ack.round_no, ack.step), (
                    f"round {round_no}: {memory_id} holds write {stored}, the last acknowledged was {ack}")
            assert_store_matches_doc(vault)
            assert_takes_a_new_write(vault)
    assert len(acked) > WRITE_ROUNDS, "the children acknowledged too few writes to test anything"


# -- killed while creating a vault -----------------------------------------------------------------------

INIT_SCRIPT = """
import sys, time
from pathlib import Path
import crdtsync.store.secrets_file as secrets_file
from crdtsync.crypto.header import KdfParams
from crdtsync.vault import Vault

written = secrets_file.atomic_write

def announced(path, data, **kwargs):  # a kill aimed at "keys" lands after the key file, before the store commits
    written(path, data, **kwargs)
    print("keys", flush=True)
    time.sleep(float(sys.argv[2]))

secrets_file.atomic_write = announced

def main() -> None:
    root = Path(sys.argv[1])
    print("ready", flush=True)
    for i in range(1000):
        Vault.init(root / f"v{i}", passphrase="pw", kdf=KdfParams.new(iterations=2, lanes=1, memory_cost=19 * 1024))
        print(f"ack {i}", flush=True)

if __name__ == "__main__":
    main()
"""

INIT_ROUNDS = 6


def assert_whole_vault(path: Path) -> None:
    """``path`` opens as a vault whose key file belongs to its device, and takes a write."""
    with Vault.open(path) as vault:
        assert vault.secrets.device.device_id == vault.device_id
        assert_takes_a_new_write(vault)


def test_a_vault_creation_killed_at_any_point_leaves_a_whole_vault_or_one_init_can_redo(tmp_path: Path) -> None:
    """``init`` (and ``join``, which creates its folder the same way) killed with SIGKILL: every acknowledged
    vault is whole, and the one being created is either whole or refused by ``open`` (``VAULT_NOT_FOUND``: an
    empty folder, or what a creation stopped before its commit left) and created by the next ``init`` (before, a
    kill after the key file was written left a folder ``init`` refused)."""
    script = tmp_path / "creator.py"
    script.write_text(INIT_SCRIPT)
    rng = random.Random(11)
    unfinished = 0
    for round_no in range(INIT_ROUNDS):
        root = tmp_path / f"round{round_no}"
        aimed = round_no % 2 == 0
        with running(script, str(root), "0.5" if aimed else "0") as child:
            if aimed:
                assert child.wait_for(lambda line: line == "keys", CHILD_START_TIMEOUT), child_failure(child)
            else:
                time.sleep(rng.uniform(0.05, 0.5))
        acked = {int(line.split()[1]) for line in child.lines if line.startswith("ack ")}
        for folder in sorted(root.iterdir()) if root.exists() else []:
            if int(folder.name[1:]) in acked:
                assert_whole_vault(folder)
                continue
            try:
                assert_whole_vault(folder)  # killed after its commit, before the child printed the ack
            except VaultError as exc:  # "run it again", or for a kill before the store existed "crdtsync init"
                assert exc.code == "VAULT_NOT_FOUND", exc
                unfinished += "run it again" in exc.message
                new_vault(folder)
                assert_whole_vault(folder)
    assert unfinished >= INIT_ROUNDS // 2, "the kills aimed between key file and store missed"


# -- killed during a bulk import -------------------------------------------------------------------------

IMPORT_COPIES = 6
IMPORT_ROUNDS = 4


def big_jsonl(folder: Path) -> tuple[Path, list[str]]:
    """A JSONL file of every LoCoMo turn, IMPORT_COPIES times (distinct sources), and its ids in file order."""
    records = [r for r in read_import(shared_data("locomo")) if isinstance(r, ImportRecord)]
    path = folder / "locomo-copies.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for copy in range(IMPORT_COPIES):
            for r in records:
                out.write(json.dumps({"content": r.content, "category": r.category, "tags": sorted(r.tags),
                                      "created": r.created, "source": f"{r.source}~{copy}",
                                      "metadata": r.metadata}, ensure_ascii=False) + "\n")
    ids = [r.id for r in read_import(path) if isinstance(r, ImportRecord)]
    assert len(ids) == len(set(ids)) == IMPORT_COPIES * len(records)
    return path, ids


def test_an_import_killed_midway_keeps_every_committed_batch_and_resumes(tmp_path: Path) -> None:
    source, ids = big_jsonl(tmp_path)
    script = tmp_path / "importer.py"
    script.write_text(IMPORT_SCRIPT)
    path = new_vault(tmp_path / "v")
    rng = random.Random(4)
    durable = killed_midway = 0
    for round_no in range(IMPORT_ROUNDS):
        with running(script, str(path), str(source)) as child:
            child.wait_for(lambda line: line == "done", rng.uniform(0.2, 2.5))
        handled = [int(line.split()[1]) for line in child.lines if line.startswith("handled ")]
        durable = max([durable, *handled])
        killed_midway += not any(line == "done" for line in child.lines)
        with Vault.open(path) as vault:
            present = {m.id for m in vault.list(include_deleted=True)}
            assert set(ids[:durable]) <= present, f"round {round_no}: a committed import batch is gone"
            assert present <= set(ids), f"round {round_no}: memories that were never imported"
            assert_store_matches_doc(vault)
    assert durable > 0 and killed_midway > 0, "no kill landed between committed batches: nothing was tested"
    with Vault.open(path) as vault:
        report = vault.import_path(source)
        assert report.problems == [] and report.added + report.skipped == len(ids)
        assert sorted(m.id for m in vault.list()) == sorted(ids)
        assert_store_matches_doc(vault)
        assert_takes_a_new_write(vault)


# -- killed while integrating a received update ---------------------------------------------------------

APPLY_ROUNDS = 8
#: How each round picks its moment: while the worker checks the update (it starts right after the inbox commit
#: and takes about a second for this update), just around the inbox commit, or anywhere in the ~1.3 s apply.
KILL_MODES = ("while the worker runs", "right after storing", "at a random moment", "at a random moment")


@pytest.fixture(scope="module")
def big_update(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A whole-Doc update of a vault holding every LoCoMo turn (about 3 MB), and its memory ids."""
    folder = tmp_path_factory.mktemp("sender")
    sender = new_vault(folder / "sender")
    with Vault.open(sender) as vault:
        vault.import_path(shared_data("locomo"))
        (folder / "update.bin").write_bytes(vault.encode_update())
        ids = sorted(m.id for m in vault.list())
    return folder / "update.bin", ids


def kill_during_apply(child: Child, mode: str, rng: random.Random) -> None:
    if mode == "while the worker runs":
        deadline = time.monotonic() + CHILD_START_TIMEOUT
        while not child.workers() and child.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))  # the worker starts, loads and applies ~3 MB in about 0.3 s
    elif mode == "right after storing":
        child.wait_for(lambda line: line == "storing", CHILD_START_TIMEOUT)
        time.sleep(rng.uniform(0.0, 0.05))
    else:
        time.sleep(rng.uniform(0.0, 1.5))


@pytest.mark.parametrize("round_no", range(APPLY_ROUNDS))
def test_a_receiver_killed_while_integrating_a_big_update_reopens_and_a_retry_completes(
    tmp_path: Path, big_update: tuple[Path, list[str]], round_no: int
) -> None:
    update_file, ids = big_update
    update = update_file.read_bytes()
    script = tmp_path / "apply.py"
    script.write_text(APPLY_SCRIPT)
    path = new_vault(tmp_path / "receiver")
    rng = random.Random(round_no)
    mode = KILL_MODES[round_no % len(KILL_MODES)]
    with running(script, str(path), str(update_file)) as child:
        kill_during_apply(child, mode, rng)
    if mode == "while the worker runs":
        assert not [line for line in child.lines if line.startswith("done")], "the kill came after the apply"
    with Vault.open(path) as vault:
        present = {m.id for m in vault.list()} & set(ids)
        held = vault.store.held()
        assert present in (set(), set(ids)), f"killed {mode}: {len(present)} of {len(ids)} memories integrated"
        assert all(data == update for _, _, data in held)
        assert not (present and held), "integrated yet still held: the inbox row outlived its integration"
        assert vault.store.quarantined() == []
        assert_store_matches_doc(vault)
        (result,) = vault.apply_updates([(update, "sender")])
        assert result.status == "integrated"
        assert vault.store.held_count() == 0 and vault.store.quarantined() == []
        assert sorted(m.id for m in vault.list()) == ids
        assert_store_matches_doc(vault)
        assert_takes_a_new_write(vault)
