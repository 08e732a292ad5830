"""Integration worker: a child process that applies untrusted Yjs updates to a scratch Doc first.

pycrdt 0.14.13 (yrs 0.28.0) can panic, corrupt memory, segfault or spin forever with the GIL held on crafted
updates (``shared/data/pycrdt-hazards``). Updates that passed the strict reader are therefore applied here
first, in a process that may die or hang without harm: the parent waits at most a deadline (10 s by default)
per update and kills the child when it passes. After the apply the child sends, as msgpack (never pickle: the
child handled hostile bytes), the touched records as yrs reads them to JSON, in chunks, then the state vector
(so the parent can refuse clock jumps the content does not justify), the touched registry entries, the vault
root and the ids of records that were replaced. The parent runs the schema-v1 check itself on that JSON,
chunk by chunk while the child reads the next one, and builds the materialized rows from it.

The child is ``python -m crdtsync.store.worker FD`` started with :mod:`subprocess`, talking over a socket pair
with length-prefixed frames (:class:`multiprocessing.connection.Connection`). It never imports the caller's
``__main__``, so a script that applies updates at module level needs no ``if __name__ == "__main__"`` guard.
After any failure the worker is discarded; the parent loads a fresh one from its own store, which never saw
the failed update.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgpack
from pycrdt import Doc, Map

from crdtsync._hardening import disable_core_dumps, worker_environment
from crdtsync.crypto.epochs import MAX_STATEMENT_BYTES
from crdtsync.crypto.keys import is_device_id
from crdtsync.errors import UpdateRejectedError
from crdtsync.model.authorship import check_attribution
from crdtsync.model.records import MAX_LABEL_BYTES, believable_until
from crdtsync.model.schema import (
    CLIENT_PREFIX,
    ROOT_DEVICES,
    ROOT_MEMORIES,
    ROOT_VAULT,
    STATEMENT_PREFIX,
    EntryAudit,
    check_record,
)
from crdtsync.store.memories import MemoryRow, memory_row

#: A registry key of an epoch statement (:func:`crdtsync.model.schema.statement_key`), and the longest value one
#: may hold (unpadded base64url of :data:`crdtsync.crypto.epochs.MAX_STATEMENT_BYTES`).
_STATEMENT_KEY = re.compile(r"e:(0|[1-9][0-9]{0,19}):[0-9a-f]{16}")
_MAX_STATEMENT_TEXT = -(-MAX_STATEMENT_BYTES * 4 // 3)

#: Seconds one update may take to apply in the worker before it is killed.
DEFAULT_DEADLINE = 10.0
#: Touched records per message from the child, at most (or CHUNK_BYTES of JSON): the parent checks one chunk
#: while the child reads the next.
CHUNK_RECORDS = 4096
CHUNK_BYTES = 8 * 1024 * 1024
#: How the child is started: ``python <CHILD_ARGS> <socket fd>`` (tests substitute a misbehaving child).
CHILD_ARGS: tuple[str, ...] = ("-m", "crdtsync.store.worker")
#: Seconds the child may take to start (imports) and say it is ready.
STARTUP_SECONDS = 60.0
#: Seconds a message to or from the child may stall once it has started before the child counts as crashed.
FRAME_STALL_SECONDS = 5.0
#: Largest message accepted from the child (a corrupted child cannot make the parent allocate more).
MAX_FRAME_BYTES = 512 * 1024 * 1024
_WORKER_CODES = ("UPDATE_MALFORMED",)
_REGISTRY_TEXT_FIELDS = ("name", "sign_pk", "kx_pk", "added_by", "added_at", "revoked_at")

#: One touched memory: its id and its materialized row (:func:`crdtsync.store.memories.memory_row`), or None when
#: the memory is no longer in the Doc.
Row = tuple[str, "MemoryRow | None"]
#: A touched key of a root Map as the child reports it: ``[key, is_map, JSON text or None when absent]``.
_Entry = list[Any]


@dataclass(frozen=True)
class WorkerResult:
    """What applying one update in the worker produced: ``state_vector`` (Yjs encoded state vector bytes),
    ``rows`` (each memory whose record changed, as read after the apply and checked against schema v1; the
    parent stores these instead of reading its own Doc again), ``devices`` (each device whose registry entry
    changed: the entry as plain values, ``c:<client_id>`` keys included) and ``replaced`` (memory ids whose
    record Map the update replaced with another: a concurrent creation of one id); ``ahead``: an entry it wrote
    claims a time further ahead of this device's clock than the skew allowed (kept, shown clamped)."""

    state_vector: bytes
    rows: tuple[Row, ...]
    devices: dict[str, dict[str, Any]]
    replaced: frozenset[str] = frozenset()
    ahead: bool = False

    @property
    def changed(self) -> frozenset[str]:
        """The memory ids the update touched."""
        return frozenset(memory_id for memory_id, _ in self.rows)


def _violation(why: str) -> UpdateRejectedError:
    return UpdateRejectedError(why, code="UPDATE_SCHEMA_VIOLATION")


@dataclass(frozen=True)
class CheckedRecords:
    """What :func:`check_records` found: the ``rows``, and whether an entry the update wrote claims a time ahead
    of this device's clock by more than the skew allowed (``ahead``: it is kept and shown clamped)."""

    rows: list[Row]
    ahead: bool = False


def check_records(entries: Sequence[_Entry], *, authors: frozenset[str] | None = None,
                  written: Mapping[str, Sequence[str]] | None = None, bound: str | None = None) -> CheckedRecords:
    """Schema-v1 check of touched records as the child read them; returns their rows.

    Args:
        entries: ``[memory_id, is_map, JSON text of the record or None when the id left the Doc]`` each.
        authors: the authenticated author(s) of the update: then what it wrote must be written in their name
            (:func:`crdtsync.model.authorship.check_attribution`); None for an update of no known author.
        written: the keys each record gained, as the child reported them (a record not in it was created whole).
        bound: the latest claimed time believed (default: :func:`believable_until` now).

    Raises:
        UpdateRejectedError: ``UPDATE_SCHEMA_VIOLATION`` when a record is not a Map or is malformed under v1 (a
            well-formed record without a live content entry yet, see :func:`check_record`, reads as absent);
            ``UPDATE_AUTHOR_FORGED`` when it wrote in another device's name.
    """
    rows: list[Row] = []
    bound = bound or believable_until()
    written = written or {}
    ahead = False
    for memory_id, is_map, text in entries:
        if text is None:
            rows.append((memory_id, None))
            continue
        if not is_map:
            raise _violation(f"memory {memory_id[:40]!r} is not a Map")
        record = json.loads(text)
        keys = written.get(memory_id)
        audit = EntryAudit() if authors is not None and keys is None else None
        try:
            read = check_record(memory_id, record, bound, audit)
        except ValueError as exc:
            raise _violation(f"memory {memory_id[:40]!r} is not a valid v1 record: {exc}") from None
        if authors is not None:
            ahead = check_attribution(authors, memory_id, record, keys, bound, audit) or ahead
        rows.append((memory_id, None if read is None else memory_row(*read)))
    return CheckedRecords(rows, ahead)


def check_registry(entries: Sequence[_Entry], vault_text: str) -> dict[str, dict[str, Any]]:
    """Schema-v1 check of touched device registry entries (``[device_id, is_map, JSON text or None]``: keyed by
    a device id, fields of at most 1 KiB) and of the ``vault`` root's JSON text; returns the entries as plain
    values by device id. Raises UpdateRejectedError ``UPDATE_SCHEMA_VIOLATION``."""
    checked: dict[str, dict[str, Any]] = {}
    for device_id, is_map, text in entries:
        if not is_device_id(device_id):
            raise _violation(f"registry key {device_id[:40]!r} is not a device id")
        if text is None:
            raise _violation(f"device {device_id} was removed from the registry")
        entry = json.loads(text)
        if not is_map or not isinstance(entry, dict):
            raise _violation(f"registry entry {device_id} is not a Map")
        for key, value in entry.items():
            if key.startswith(CLIENT_PREFIX):
                if value is not True or not key[len(CLIENT_PREFIX) :].isdigit():
                    raise _violation(f"registry entry {device_id} has a bad client id {key!r}")
            elif key.startswith(STATEMENT_PREFIX):
                if not _STATEMENT_KEY.fullmatch(key) or not isinstance(value, str) or len(value) > _MAX_STATEMENT_TEXT:
                    raise _violation(f"registry entry {device_id} has a bad epoch statement {key[:40]!r}")
            elif key not in _REGISTRY_TEXT_FIELDS or not isinstance(value, str) or len(value) > MAX_LABEL_BYTES:
                raise _violation(f"registry entry {device_id} has a bad field {key[:40]!r}")
        checked[device_id] = entry
    vault = json.loads(vault_text)
    name = vault.get("name", "") if isinstance(vault, dict) else None
    if name is None or (vault and (vault.get("schema") != 1 or not isinstance(name, str)
                                   or len(name) > MAX_LABEL_BYTES)):
        raise _violation("the vault root is not schema 1")
    return checked


class ScratchDoc:
    """The worker's Doc. :meth:`apply` integrates an update and records which memory ids and device ids it
    touched (``changed``, ``devices_changed``) and which records it replaced (``replaced``); :meth:`entries`
    reads touched keys as JSON text. ``holds_records`` is False while the Doc has never held a memory record
    (a new device before its first pull): then every record after an apply was touched by it."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.memories: Map[Any] = self.doc.get(ROOT_MEMORIES, type=Map)
        self.devices: Map[Any] = self.doc.get(ROOT_DEVICES, type=Map)
        self.vault: Map[Any] = self.doc.get(ROOT_VAULT, type=Map)
        self.changed: set[str] = set()
        self.devices_changed: set[str] = set()
        self.replaced: set[str] = set()
        #: The keys each touched record gained (added or overwritten) in the last apply, or None for a record the
        #: update created or replaced whole.
        self.written: dict[str, set[str] | None] = {}
        self.holds_records = False

    def load(self, updates: Sequence[bytes]) -> None:
        """Apply the trusted updates that rebuild the replica's Doc (nothing is recorded as touched)."""
        for update in updates:
            self.doc.apply_update(update)
        self.holds_records = len(self.memories) > 0
        self._clear()

    def _clear(self) -> None:
        self.changed.clear()
        self.devices_changed.clear()
        self.replaced.clear()
        self.written.clear()

    def _on_devices(self, events: Any) -> None:
        for event in events:
            self.devices_changed.update([str(event.path[0])] if event.path else map(str, event.keys))

    def _on_memories(self, events: Any) -> None:
        for event in events:
            if event.path:  # keys of one record
                memory_id = str(event.path[0])
                self.changed.add(memory_id)
                keys = self.written.setdefault(memory_id, set())
                if keys is not None:
                    keys.update(str(k) for k, change in event.keys.items() if change.get("action") != "delete")
                continue
            for key, change in event.keys.items():  # whole records
                memory_id = str(key)
                self.changed.add(memory_id)
                if change.get("action") == "update":
                    self.replaced.add(memory_id)
                if change.get("action") != "delete":
                    self.written[memory_id] = None

    def apply(self, update: bytes) -> None:
        """Apply ``update`` (Yjs v1 bytes) and set ``changed``, ``devices_changed`` and ``replaced``. Into a Doc
        that holds no memory record yet (a first pull, a join: the Doc has only this device's registration)
        every key afterwards was touched and none was replaced, so the deep observers, which cost more than the
        apply itself at 100k records, are left out. Raises whatever pycrdt raises (a panic included)."""
        self._clear()
        if not self.holds_records:
            self.doc.apply_update(update)
            self.changed.update(self.memories.keys())  # each created whole: none in ``written``
            self.devices_changed.update(self.devices.keys())
            self.holds_records = bool(self.changed)
            return
        subscriptions = [  # held until unobserved: pycrdt drops an observer whose subscription is collected
            (self.memories, self.memories.observe_deep(self._on_memories)),
            (self.devices, self.devices.observe_deep(self._on_devices)),
        ]
        try:
            self.doc.apply_update(update)
        finally:
            for shared, subscription in subscriptions:
                shared.unobserve(subscription)

    @staticmethod
    def entries(root: Map[Any], keys: Sequence[str]) -> list[_Entry]:
        """``[key, is_map, JSON text]`` of each key of ``root`` (text None when absent). yrs writes the JSON in
        one call per key (``Map.to_py`` crosses into Python once per entry, about 3x slower). Faithful for
        schema-v1 content: the replica refuses updates whose content kinds JSON would blur (binary, undefined,
        NaN, Y types other than Map) before any Doc sees them (:data:`crdtsync.model.schema.CONTENT_KINDS`).
        Call inside a transaction."""
        out: list[_Entry] = []
        for key in keys:
            value = root.get(key)
            if value is None:
                out.append([key, False, None])
            else:
                is_map = isinstance(value, Map)
                out.append([key, is_map, str(value) if is_map else "null"])
        return out

    def report(self) -> Iterator[tuple[Any, ...]]:
        """The messages that describe what the last :meth:`apply` touched: ``("written", {memory_id: [key...]})``
        (the keys each touched record gained; a touched record not named was created or replaced whole), then
        ``("records", [entry...])`` chunks of at most CHUNK_RECORDS records or CHUNK_BYTES of JSON, then ``("ok",
        state vector, registry entries, vault root JSON, replaced ids)``. Reads inside one transaction held while
        the caller consumes them."""
        yield "written", {memory_id: sorted(keys) for memory_id, keys in self.written.items() if keys is not None}
        with self.doc.transaction():
            chunk: list[_Entry] = []
            size = 0
            for memory_id in sorted(self.changed):
                (entry,) = self.entries(self.memories, [memory_id])
                chunk.append(entry)
                size += len(entry[2] or "")
                if len(chunk) >= CHUNK_RECORDS or size >= CHUNK_BYTES:
                    yield "records", chunk
                    chunk, size = [], 0
            if chunk:
                yield "records", chunk
            devices = self.entries(self.devices, sorted(self.devices_changed))
            vault = str(self.vault)
        yield "ok", self.doc.get_state(), devices, vault, sorted(self.replaced)

    def check(self) -> list[Row]:
        """The whole schema check of what the last :meth:`apply` touched, in this process (the benchmark's
        in-process split of the worker's work). Raises UpdateRejectedError ``UPDATE_SCHEMA_VIOLATION``."""
        rows: list[Row] = []
        for message in self.report():
            if message[0] == "records":
                rows.extend(check_records(message[1]).rows)
            elif message[0] == "ok":
                check_registry(message[2], message[3])
        return rows


def is_verdict(exc: BaseException) -> bool:
    """Whether ``exc``, raised while pycrdt applied an update, is a verdict on the update: an ordinary exception,
    or a Rust panic (pyo3's ``pyo3_runtime.PanicException``, a BaseException that Python cannot import by name).
    An interrupt (KeyboardInterrupt, the SystemExit of a signal handler, a cancelled task's CancelledError) is
    not: it says nothing of the update, which stays to be applied again."""
    return isinstance(exc, Exception) or any(cls.__module__ == "pyo3_runtime" and cls.__name__ == "PanicException"
                                             for cls in type(exc).__mro__)


def _pack(*message: Any) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def _serve(conn: Connection) -> None:  # pragma: no cover - runs in the child process
    disable_core_dumps()  # it holds the vault's decrypted memories
    # A terminal's Ctrl-C reaches the whole process group: the parent stops, and kills this child as it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    scratch = ScratchDoc()
    conn.send_bytes(_pack("ready"))
    while True:
        try:
            op, data = msgpack.unpackb(conn.recv_bytes())
        except EOFError:
            return
        try:
            if op == "load":
                scratch.load(data)
            elif op == "all":  # report every record and registry entry, as if all were touched
                scratch.changed = set(map(str, scratch.memories.keys()))
                scratch.devices_changed = set(map(str, scratch.devices.keys()))
                scratch.replaced.clear()
            else:
                scratch.apply(data)
        except BaseException as exc:  # PanicException is a BaseException; the Doc is unusable afterwards
            if not is_verdict(exc):
                raise
            why = f"pycrdt refused the update: {type(exc).__name__}: {exc}"
            conn.send_bytes(_pack("error", "UPDATE_MALFORMED", why))
            return
        for message in scratch.report():
            conn.send_bytes(_pack(*message))


class IntegrationWorker:
    """A child process holding a scratch copy of the Doc, used to try untrusted updates first.

    Args:
        state: Yjs updates (a snapshot, then logged updates) that rebuild the parent's Doc; they are trusted
            (they come from the vault's own store) and applied without the schema check.
        deadline: seconds one :meth:`apply` may wait for the child before it is killed.

    Use as a context manager; :meth:`close` kills the child. After :meth:`apply` raises, the worker is closed
    and must be replaced (its Doc may hold the refused update). ``state_vector`` is the Yjs state vector of the
    child's Doc after the load or the last apply.

    Raises:
        UpdateRejectedError: ``UPDATE_WORKER_CRASHED`` (or ``UPDATE_WORKER_TIMEOUT``, ``UPDATE_MALFORMED``) if
            the child cannot start or load ``state``: a fault of the machine or of the stored state, never of
            an update being tried.
    """

    def __init__(self, state: Sequence[bytes], *, deadline: float = DEFAULT_DEADLINE) -> None:
        self.deadline = deadline
        mine, theirs = socket.socketpair()
        # A read or write that stalls mid-message fails (EAGAIN) instead of blocking: the deadline only covers
        # waiting for a message to start, and a corrupted child could announce one and never finish it, or stop
        # reading what we send.
        stall = struct.pack("ll", int(FRAME_STALL_SECONDS), 0)
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, stall)
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, stall)
        with mine, theirs:
            self._proc = subprocess.Popen(
                [sys.executable, *CHILD_ARGS, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=worker_environment(os.environ),
            )
            self._conn = Connection(mine.detach())
        self.alive = True
        try:
            # The child says when it is ready (its imports can take seconds on a slow phone), so that the stall
            # timeouts only ever apply to a child that is reading.
            if self._receive(STARTUP_SECONDS, [0.0]) != ["ready"]:
                raise self._fail("the integration worker did not start", "UPDATE_WORKER_CRASHED")
            size = sum(len(update) for update in state)
            loaded = self._call(["load", list(state)], deadline=max(deadline, 60.0 + size / 1e6))
        except BaseException:  # an interrupt included: no child outlives a worker that never started
            self.close()
            raise
        self.state_vector = loaded.state_vector

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def __enter__(self) -> IntegrationWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child process (killing it if needed). Idempotent."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._conn.close()
        self.alive = False

    def _fail(self, why: str, code: str) -> UpdateRejectedError:
        self.close()
        return UpdateRejectedError(why, code=code)

    def _receive(self, deadline: float, waited: list[float]) -> Any:
        """The child's next message; ``waited`` accumulates the seconds spent waiting for it."""
        started = time.monotonic()
        try:
            ready = self._conn.poll(max(0.0, deadline - waited[0]))
            message = msgpack.unpackb(self._conn.recv_bytes(MAX_FRAME_BYTES)) if ready else None
        except (EOFError, OSError, ValueError, msgpack.UnpackException):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)  # to report how it died; a child still running is killed below
            raise self._fail(f"the update crashed the integration worker (exit code {self._proc.poll()})",
                             "UPDATE_WORKER_CRASHED") from None
        waited[0] += time.monotonic() - started
        if message is None:
            raise self._fail(f"the update did not integrate within {deadline:.0f} s and was refused",
                             "UPDATE_WORKER_TIMEOUT")
        return message

    def _call(self, request: list[Any], *, deadline: float, on_rows: Callable[[list[Row]], None] | None = None,
              authors: frozenset[str] | None = None) -> WorkerResult:
        try:
            self._conn.send_bytes(_pack(*request))
        except OSError:
            raise self._fail("the integration worker is gone", "UPDATE_WORKER_CRASHED") from None
        waited = [0.0]
        rows: list[Row] = []
        written: dict[str, list[str]] = {}
        bound = believable_until()
        ahead = False
        while True:
            try:
                message = self._receive(deadline, waited)
                kind = message[0]
                if kind == "written":
                    written = {str(k): [str(key) for key in v] for k, v in message[1].items()}
                    continue
                if kind == "records":
                    checked = check_records(message[1], authors=authors, written=written, bound=bound)
                    rows.extend(checked.rows)
                    ahead = ahead or checked.ahead
                    if on_rows is not None:
                        on_rows(checked.rows)
                    continue
                if kind == "error" and message[1] in _WORKER_CODES:
                    raise self._fail(str(message[2]), message[1])
                if kind != "ok":
                    raise ValueError(kind)
                _, state, devices, vault, replaced = message
                entries = check_registry(devices, vault)
                if not isinstance(state, bytes) or not all(isinstance(k, str) for k in replaced):
                    raise ValueError("state")
                return WorkerResult(state, tuple(rows), entries, frozenset(replaced), ahead)
            except (TypeError, ValueError, IndexError, AttributeError, RecursionError):
                raise self._fail("the integration worker sent a malformed message",
                                 "UPDATE_WORKER_CRASHED") from None
            except BaseException:  # a refusal, on_rows failed, or an interrupt: the child's stream is not drained
                self.close()
                raise

    def read_all(self, *, on_rows: Callable[[list[Row]], None] | None = None) -> WorkerResult:
        """Every record and registry entry of the child's Doc, checked here as :meth:`apply` checks what an update
        touched (``rows`` and ``devices`` are then complete): what re-materializing the whole store needs.

        Raises:
            UpdateRejectedError: as :meth:`apply`; the worker is then closed.
        """
        return self._call(["all", None], deadline=max(self.deadline, 60.0), on_rows=on_rows)

    def apply(self, update: bytes, *, on_rows: Callable[[list[Row]], None] | None = None,
              patience: float = 1.0, authors: frozenset[str] | None = None) -> WorkerResult:
        """Apply ``update`` (Yjs v1 bytes that passed the strict reader) in the child and check what it touched
        against schema v1 here, within the deadline plus 0.5 s per MB of update (counting only the time spent
        waiting for the child), times ``patience`` (more than 1 for an update tried again after a timeout).
        ``on_rows`` receives the checked rows chunk by chunk as they arrive, so that the
        caller can store them while the child reads the next chunk; a later refusal means the caller must
        discard them (roll back its transaction). ``authors``: the device id(s) of the update's authenticated
        author: what it wrote must be in their name (None: no known author, nothing is checked).

        Raises:
            UpdateRejectedError: ``UPDATE_WORKER_TIMEOUT`` (past the deadline), ``UPDATE_WORKER_CRASHED`` (the
                child died, e.g. SIGSEGV, or sent something malformed), ``UPDATE_MALFORMED`` (pycrdt raised or
                panicked), ``UPDATE_SCHEMA_VIOLATION`` (a touched record or registry entry is not valid
                schema v1), ``UPDATE_AUTHOR_FORGED`` (an entry in another device's name). The worker is closed.
        """
        result = self._call(["apply", update], deadline=(self.deadline + len(update) / 2e6) * patience,
                            on_rows=on_rows, authors=authors)
        self.state_vector = result.state_vector
        return result


if __name__ == "__main__":  # pragma: no cover - the child process
    _serve(Connection(int(sys.argv[1])))
