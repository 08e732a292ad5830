"""Integration worker: a child process that applies untrusted Yjs updates to a scratch Doc first.

pycrdt 0.14.13 (yrs 0.28.0) can panic, corrupt memory, segfault or spin forever with the GIL held on crafted
updates (``shared/data/pycrdt-hazards``). Updates that passed the strict reader are therefore applied here
first, in a process that may die or hang without harm: the parent waits at most a deadline (10 s by default)
per update and kills the child when it passes. The worker reports the state vector after the apply (so the
parent can refuse clock jumps the content does not justify), the memory ids the update touched, and whether
every touched record still reads as a valid schema-v1 record. After any failure the worker is discarded; the
parent reloads a fresh one from its own state, which never saw the failed update.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from pycrdt import Doc, Map

from crdtsync.errors import UpdateRejectedError
from crdtsync.model.records import Conflict, Memory
from crdtsync.model.schema import CLIENT_PREFIX, ROOT_DEVICES, ROOT_MEMORIES, ROOT_VAULT, read_record

#: Seconds one update may take to apply in the worker before it is killed.
DEFAULT_DEADLINE = 10.0
_REGISTRY_TEXT_FIELDS = ("name", "sign_pk", "kx_pk", "added_by", "added_at", "revoked_at")


@dataclass(frozen=True)
class WorkerResult:
    """What applying one update in the worker produced: ``state_vector`` (Yjs encoded state vector bytes),
    ``rows`` (each memory whose record changed, as read after the apply: its Memory and conflicts, or None
    when it left the Doc; the parent stores these instead of reading its own Doc again) and
    ``devices_changed`` (device ids whose registry entry changed)."""

    state_vector: bytes
    rows: tuple[Row, ...]
    devices_changed: frozenset[str]

    @property
    def changed(self) -> frozenset[str]:
        """The memory ids the update touched."""
        return frozenset(memory_id for memory_id, _ in self.rows)


Row = tuple[str, "tuple[Memory, list[Conflict]] | None"]


def _schema_problem(doc: Doc[Any], changed: set[str], devices_changed: set[str], rows: list[Row]) -> str | None:
    """Check every touched record and registry entry against schema v1; fill ``rows`` with the touched
    memories as read (None for a memory no longer in the Doc). Returns what is wrong, or None."""
    memories: Map[Any] = doc.get(ROOT_MEMORIES, type=Map)
    for memory_id in sorted(changed):
        if memory_id not in memories:
            rows.append((memory_id, None))
            continue
        record = memories[memory_id]
        if not isinstance(record, Map):
            return f"memory {memory_id} is not a Map"
        read = read_record(memory_id, record.to_py() or {})
        if read is None:
            return f"memory {memory_id} is not a valid v1 record"
        rows.append((memory_id, read))
    devices: Map[Any] = doc.get(ROOT_DEVICES, type=Map)
    for device_id in devices_changed:
        if device_id not in devices:
            return f"device {device_id} was removed from the registry"
        entry = devices[device_id]
        if not isinstance(entry, Map):
            return f"registry entry {device_id} is not a Map"
        for key, value in (entry.to_py() or {}).items():
            if key.startswith(CLIENT_PREFIX):
                if value is not True or not key[len(CLIENT_PREFIX) :].isdigit():
                    return f"registry entry {device_id} has a bad client id {key!r}"
            elif key not in _REGISTRY_TEXT_FIELDS or not isinstance(value, str):
                return f"registry entry {device_id} has a bad field {key!r}"
    vault = doc.get(ROOT_VAULT, type=Map).to_py() or {}
    if vault and (vault.get("schema") != 1 or not isinstance(vault.get("name", ""), str)):
        return "the vault root is not schema 1"
    return None


class ScratchDoc:
    """The worker's Doc with deep observers that collect which memory ids and device ids each apply touches
    (``changed``, ``devices_changed``; clear them before an apply). :meth:`problem` runs the schema check."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.changed: set[str] = set()
        self.devices_changed: set[str] = set()
        self._subscriptions = [  # kept alive: pycrdt drops an observer whose subscription is collected
            self.doc.get(ROOT_MEMORIES, type=Map).observe_deep(self._collect(self.changed)),
            self.doc.get(ROOT_DEVICES, type=Map).observe_deep(self._collect(self.devices_changed)),
        ]

    @staticmethod
    def _collect(target: set[str]) -> Any:
        def callback(events: Any) -> None:
            for event in events:
                if event.path:
                    target.add(str(event.path[0]))
                else:
                    target.update(str(k) for k in event.keys)

        return callback

    def problem(self, rows: list[Row]) -> str | None:
        """The schema check of what the last apply touched (see :func:`_schema_problem`); fills ``rows``."""
        return _schema_problem(self.doc, self.changed, self.devices_changed, rows)


def _serve(conn: Connection) -> None:  # pragma: no cover - runs in the child process
    scratch = ScratchDoc()
    doc = scratch.doc
    while True:
        try:
            op, data = conn.recv()
        except EOFError:
            return
        scratch.changed.clear()
        scratch.devices_changed.clear()
        try:
            for update in data if op == "load" else [data]:
                doc.apply_update(update)
        except BaseException as exc:  # PanicException is a BaseException; the Doc is unusable afterwards
            conn.send(("error", "UPDATE_MALFORMED", f"pycrdt refused the update: {type(exc).__name__}: {exc}"))
            return
        if op == "load":
            conn.send(("ok", doc.get_state(), [], []))  # a load reports no rows
            continue
        rows: list[Row] = []
        problem = scratch.problem(rows)
        if problem is not None:
            conn.send(("error", "UPDATE_SCHEMA_VIOLATION", problem))
            return
        conn.send(("ok", doc.get_state(), rows, sorted(scratch.devices_changed)))


class IntegrationWorker:
    """A child process holding a scratch copy of the Doc, used to try untrusted updates first.

    Args:
        state: Yjs updates (a snapshot, then logged updates) that rebuild the parent's Doc; they are trusted
            (they come from the vault's own store) and applied without the schema check.
        deadline: seconds one :meth:`apply` may take before the child is killed.

    Use as a context manager; :meth:`close` kills the child. After :meth:`apply` raises, the worker is closed
    and must be replaced (its Doc may hold the refused update).
    """

    def __init__(self, state: Sequence[bytes], *, deadline: float = DEFAULT_DEADLINE) -> None:
        self.deadline = deadline
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="crdtsync-integration-worker")
        self._proc.start()
        child.close()
        self.alive = True
        size = sum(len(update) for update in state)
        self._call("load", list(state), deadline=max(deadline, 60.0 + size / 1e6))

    def __enter__(self) -> IntegrationWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child process (killing it if needed). Idempotent."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._conn.close()
        self.alive = False

    def _call(self, op: str, data: bytes | list[bytes], *, deadline: float) -> WorkerResult:
        try:
            self._conn.send((op, data))
            ready = self._conn.poll(deadline)
            reply = self._conn.recv() if ready else None
        except (EOFError, OSError, BrokenPipeError):
            self.close()
            raise UpdateRejectedError(
                f"the update crashed the integration worker (exit code {self._proc.exitcode})",
                code="UPDATE_WORKER_CRASHED",
            ) from None
        if reply is None:
            self.close()
            raise UpdateRejectedError(
                f"the update did not integrate within {deadline:.0f} s and was refused",
                code="UPDATE_WORKER_TIMEOUT",
            )
        if reply[0] == "error":
            self.close()
            raise UpdateRejectedError(reply[2], code=reply[1])
        return WorkerResult(bytes(reply[1]), tuple(reply[2]), frozenset(reply[3]))

    def apply(self, update: bytes) -> WorkerResult:
        """Apply ``update`` (Yjs v1 bytes that passed the strict reader) in the child, within the deadline plus
        0.5 s per MB of update (an honest full state of 100k memories takes ~10 s to apply and check).

        Raises:
            UpdateRejectedError: ``UPDATE_WORKER_TIMEOUT`` (past the deadline), ``UPDATE_WORKER_CRASHED`` (the
                child died, e.g. SIGSEGV), ``UPDATE_MALFORMED`` (pycrdt raised or panicked),
                ``UPDATE_SCHEMA_VIOLATION`` (a touched record is not valid schema v1). The worker is closed.
        """
        return self._call("apply", update, deadline=self.deadline + len(update) / 2e6)
