"""Integration of updates received from outside the process: the defended apply path of a replica.

pycrdt can panic, corrupt memory or hang on a crafted update (README "Trust boundaries"), so a received update
reaches the live Doc only through the steps here: the strict Yjs v1 reader and the schema and client-id
checks, the durable inbox (``Store.hold``) where it waits for what it depends on, the integration worker
(:mod:`crdtsync.store.worker`) that applies it first under a deadline and returns its materialized rows, the
clock-jump check, then logging and the live apply; a stored state that no longer loads is bisected and its
culprit quarantined. :class:`UpdateIntegration` holds these steps as a mixin of
:class:`crdtsync.store.replica.Replica`, which owns the Doc, the lease, local writes and compaction that they
use; everything here is private to crdtsync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pycrdt import Map

from crdtsync.crypto.keys import is_device_id
from crdtsync.errors import UpdateRejectedError, VaultError
from crdtsync.model.authorship import FORGERY_CODES, check_registry_change
from crdtsync.model.records import MAX_CLOCK_SKEW, Conflict, Memory
from crdtsync.model.schema import CONTENT_KINDS, ROOTS, MemoryDoc, WriteContext, registry_entry
from crdtsync.model.ystate import (
    Missing,
    decode_state_vector,
    expected_state,
    missing_dependencies,
    split_integrable,
    split_unknown_deletes,
)
from crdtsync.model.yupdate import DecodedUpdate, decode_update
from crdtsync.store.db import UNTRIED, Store
from crdtsync.store.memories import new_memory_id
from crdtsync.store.worker import IntegrationWorker, Row, WorkerResult, is_verdict

T = TypeVar("T")

#: Received updates that may wait for missing dependencies at once; past it, an update that would wait too is
#: refused (UPDATE_INBOX_FULL), or with ``limit_held=False`` left to the caller (the mailbox stops fetching).
MAX_HELD = 10_000
#: How many times in all an update refused for a reason that may not be its fault
#: (:data:`~crdtsync.store.db.RETRYABLE`) is tried: :meth:`UpdateIntegration.retry_refused` tries it once more
#: per call (a sync calls it once).
MAX_ATTEMPTS = 3
#: The alarm raised when another device's edit brings back a memory that is level 0 here (see ``_store_rows``).
LEVEL_CONFLICT = "MEMORY_LEVEL_CONFLICT"


def _authors(origin: str) -> frozenset[str] | None:
    """The authenticated author of an update from ``origin``: None when it is a local caller's label rather than
    a device id (nothing to check its writes against)."""
    return frozenset({origin}) if is_device_id(origin) else None


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of one received update: ``status`` is ``"integrated"`` (now in the Doc and the store),
    ``"pending"`` (stored, waiting for updates it depends on; it integrates when they arrive) or ``"refused"``
    (quarantined; ``code`` says why; nothing of it was applied, or, of an update part of which integrated while
    the rest waited, nothing of that rest). ``changed`` lists memory ids it touched (for a pending update, those
    the part of it that could integrate already touched)."""

    status: str
    code: str | None = None
    message: str | None = None
    changed: tuple[str, ...] = ()


class UpdateIntegration:
    """Mixin of :class:`~crdtsync.store.replica.Replica`: integration of received updates
    (:meth:`apply_updates` and its steps).

    It keeps no state of its own making: the attributes annotated below are set by ``Replica.__init__``, and the
    methods declared for type checking only are the replica's (the Doc, the registry copy, local writes,
    compaction)."""

    _store: Store
    deadline: float
    _doc: MemoryDoc | None
    _seen: int
    #: The integration worker (None until needed or after a failure), the store's last update id its scratch
    #: Doc holds and the state generation it was loaded under, the strict reader's results for held updates by
    #: inbox id, and for those of which nothing could integrate at their last try, what they missed then.
    _worker: IntegrationWorker | None
    _worker_at: int
    _worker_generation: int
    _decoded: dict[int, DecodedUpdate]
    _stuck: dict[int, Missing]

    if TYPE_CHECKING:
        def _stored_updates(self) -> Iterator[tuple[int, bytes]]: ...
        def _current_doc(self) -> MemoryDoc: ...
        def _save_registry(self, registry: Mapping[str, Mapping[str, Any]]) -> None: ...
        def _stored_registry(self) -> dict[str, dict[str, Any]] | None: ...
        def devices(self) -> dict[str, dict[str, Any]]: ...
        def _maybe_compact(self) -> None: ...
        def ensure_lease_registered(self) -> None: ...
        def context(self) -> WriteContext: ...
        def local_write(self, fn: Callable[[MemoryDoc], T], touched: Iterable[str], *,
                        rows: Sequence[tuple[Memory, list[Conflict]]] = ()) -> T: ...

    def apply_updates(
        self,
        updates: Sequence[tuple[bytes, str]],
        *,
        on_stored: Callable[[], None] | None = None,
        allowed_clients: Sequence[frozenset[int] | None] | None = None,
        limit_held: bool = True,
    ) -> list[ApplyResult]:
        """Integrate received updates, defending against the pycrdt hazards (README "Trust boundaries").

        1. Each update is decoded by the strict Yjs v1 reader; a refusal is quarantined with its code. When
           ``allowed_clients`` gives a set for an update (the Yjs client ids its authenticated sender owns),
           structs of any other client quarantine it (``UPDATE_FOREIGN_CLIENT``).
        2. Every accepted update is stored in the inbox, durably, in one transaction; ``on_stored`` runs inside
           that transaction (a sync layer advances its cursor there, so what it acknowledges is on disk).
        3. Each held update whose dependencies are all known here is applied in the integration worker under
           the deadline; a panic, crash, hang, schema violation or a state vector other than the one the
           update's content justifies quarantines it. Otherwise it is applied to the live Doc, logged and
           materialized in one transaction. Updates that wait for others stay held (``"pending"``), up to
           :data:`MAX_HELD` held updates in all: past it, those of this call that still wait are refused
           (``UPDATE_INBOX_FULL``), newest first; an update that integrates is never refused for a full inbox.
           ``limit_held=False`` holds them all: for a caller that bounds what it hands over itself (a
           mailbox pull, whose cursor moves past what it hands over). Of an update that waits for structs,
           what can integrate now does and the rest stays held (``"pending"``, ``changed`` naming what its
           integrated part touched), so updates that are complete together integrate whatever order they
           arrive in; one that only waits to delete structs not here yet integrates the rest
           (``"integrated"``) and holds those deletes apart.

        Returns one :class:`ApplyResult` per input, in order. Never raises for a bad update.

        Raises:
            KeyboardInterrupt: (or any other exception that is not a verdict on an update, such as the
                ``SystemExit`` of a SIGTERM handler) as it came: the update it interrupted stays held, nothing of
                it logged, and integrates at the next call or :meth:`resume_held` (a sync).
            VaultError: ``VAULT_REBUILD_FAILED`` (see :meth:`_worker_for`); the store's errors.
        """
        outcomes: list[ApplyResult | int] = []
        with self._store.write():
            for n, (data, origin) in enumerate(updates):
                try:
                    decoded = decode_update(bytes(data))
                    unknown = decoded.root_names - ROOTS
                    if unknown:
                        raise UpdateRejectedError(f"the update writes unknown roots {sorted(unknown)}",
                                                  code="UPDATE_SCHEMA_VIOLATION")
                    foreign_kinds = decoded.kinds - CONTENT_KINDS
                    if foreign_kinds:
                        raise UpdateRejectedError(
                            f"the update carries content schema v1 never writes: {', '.join(sorted(foreign_kinds))}",
                            code="UPDATE_SCHEMA_VIOLATION")
                    allowed = allowed_clients[n] if allowed_clients is not None else None
                    foreign = set(decoded.structs) - allowed if allowed is not None else set()
                    if foreign:
                        raise UpdateRejectedError(
                            f"{origin} sent structs of Yjs client ids {sorted(foreign)} it does not own",
                            code="UPDATE_FOREIGN_CLIENT")
                except UpdateRejectedError as exc:
                    self._store.quarantine(bytes(data), origin=origin, code=exc.code, message=exc.message)
                    self._alarm_on_forgery(exc, origin)
                    outcomes.append(ApplyResult("refused", exc.code, exc.message))
                    continue
                inbox_id = self._store.hold(bytes(data), origin=origin, waiting=UNTRIED)
                self._decoded[inbox_id] = decoded
                outcomes.append(inbox_id)
            if on_stored is not None:
                on_stored()
        done = self._drain_inbox()
        held = {row[0] for row in self._store.held()}
        if limit_held and len(held) > MAX_HELD:
            message = (f"{MAX_HELD} received updates already wait for missing ones; refusing more until they "
                       "integrate (`crdtsync status` shows whose writes they wait for)")
            with self._store.write():
                for outcome, (data, origin) in reversed(list(zip(outcomes, updates, strict=True))):
                    if len(held) <= MAX_HELD:
                        break
                    if isinstance(outcome, int) and outcome in held:
                        self._store.release(outcome)
                        self._store.quarantine(bytes(data), origin=origin, code="UPDATE_INBOX_FULL",
                                               message=message)
                        self._decoded.pop(outcome, None)
                        self._stuck.pop(outcome, None)
                        held.discard(outcome)
                        done[outcome] = ApplyResult("refused", "UPDATE_INBOX_FULL", message)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, ApplyResult):
                results.append(outcome)
            elif outcome in done:
                results.append(done[outcome])
            else:
                results.append(ApplyResult("pending" if outcome in held else "integrated"))
        return results

    def resume_held(self) -> dict[int, ApplyResult]:
        """Integrate the held updates due a try (:meth:`Store.due_count`): a process stopped between storing an
        update and integrating it (a join or sync that the OS or kill -9 stopped, an interrupt) leaves it
        untried, and one stopped between integrating an update and trying those that waited for it leaves those
        tried too early; the relay's cursor has moved past them, so no pull brings them again. Returns the
        outcomes by inbox id (none when every held update was tried since the last received update integrated:
        those wait for updates still to come, which trigger them).

        Raises:
            VaultError: ``VAULT_REBUILD_FAILED`` as :meth:`apply_updates` can.
        """
        if not self._store.due_count():
            return {}
        return self._drain_inbox()

    def retry_refused(self) -> list[ApplyResult]:
        """Try again the refused updates whose refusal may not be their fault
        (:data:`~crdtsync.store.db.RETRYABLE`: the integration worker timed out or died, as on a slow or busy
        device or when the OS reclaims memory), each once per call and :data:`MAX_ATTEMPTS` times in all, the
        deadline doubled at each try; an audit row records what it did. Returns each retried update's outcome:
        ``"integrated"``, ``"pending"`` or ``"refused"`` again."""
        with self._store.write():
            requeued = self._store.requeue_quarantined(max_attempts=MAX_ATTEMPTS)
        if not requeued:
            return []
        done = self._drain_inbox(patience=2.0 ** (max(attempt for _, attempt in requeued) - 1))
        held = {row[0] for row in self._store.held()}
        results = [done.get(i) or ApplyResult("pending" if i in held else "integrated") for i, _ in requeued]
        self._store.audit("retry refused", tried=len(results),
                          integrated=sum(r.status == "integrated" for r in results))
        return results

    def _worker_for(self) -> IntegrationWorker:
        """The integration worker, reused while its scratch Doc holds exactly the store's updates (nothing but
        worker-checked updates was logged since it was loaded), else a fresh one loaded from the store. Call
        inside a write transaction.

        Raises:
            VaultError: ``VAULT_REBUILD_FAILED`` when two fresh workers in a row cannot load the stored state and
                no received stored update can be found and quarantined as the cause
                (:meth:`_quarantine_unloadable`). The update being tried is never blamed: it stays held
                (:meth:`_drain_inbox` raises the alarm).
        """
        head, generation = self._store.last_update_id(), self._store.state_generation()
        worker = self._worker
        if worker is not None and worker.alive and (self._worker_at, self._worker_generation) == (head, generation):
            return worker
        if worker is not None:
            worker.close()
        self._worker = None
        stored = list(self._stored_updates())
        state = [data for _, data in stored]
        try:
            self._worker = IntegrationWorker(state, deadline=self.deadline)
        except UpdateRejectedError:
            try:  # yrs's memory faults depend on the process (hazard hang-2): one more try in a fresh one
                self._worker = IntegrationWorker(state, deadline=self.deadline)
            except UpdateRejectedError as exc:
                self._worker = self._quarantine_unloadable(stored, exc)
                head, generation = self._store.last_update_id(), self._store.state_generation()
        self._worker_at, self._worker_generation = head, generation
        return self._worker

    def _loads(self, state: Sequence[bytes]) -> bool:
        try:
            IntegrationWorker(state, deadline=self.deadline).close()
        except UpdateRejectedError:
            return False
        return True

    def _quarantine_unloadable(self, stored: Sequence[tuple[int, bytes]], failure: UpdateRejectedError,
                               ) -> IntegrationWorker:
        """The stored state does not load: find the stored update that makes it fail (bisecting over prefixes
        loaded in fresh workers), quarantine it (``UPDATE_REBUILD_FAILED``) when it is a received log row, move
        the received rows logged after it back to the inbox, re-materialize every row from a worker loaded
        without it, and return that worker. Call inside a write transaction.

        Raises:
            VaultError: ``VAULT_REBUILD_FAILED`` when the culprit is this vault's snapshot or its own write, or
                when the state still does not load without it.
        """
        environment = not self._loads([])  # no worker starts at all: the machine, not the state
        good, bad = 0, len(stored)  # stored[:good] loads, stored[:bad] does not
        while bad - good > 1 and not environment:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if self._loads([data for _, data in stored[:middle]]) else (good, middle)
        update_id = stored[bad - 1][0]
        snapshot = bad == 1 and self._store.snapshot_upto() > 0
        if environment or snapshot or not self._store.is_received(update_id):
            raise VaultError(f"the integration worker cannot load this vault's own stored state ({failure.code}: "
                             f"{failure.message}); received updates stay held and are retried at the next sync",
                             code="VAULT_REBUILD_FAILED")
        message = (f"the stored update {update_id} makes the vault's state impossible to load "
                   f"({failure.code}); it was taken out of the log")
        requeued = self._store.unlog_received(update_id, code="UPDATE_REBUILD_FAILED", message=message)
        self._store.new_state_generation()  # every process reloads its Doc and worker without it
        # A write of this device made on top of it stays in the log but pending in yrs, so the Doc's clock of
        # its client falls behind the log: no process may write under that client again.
        self._store.retire_leases()
        self._doc = None
        try:
            worker = IntegrationWorker([data for _, data in self._stored_updates()], deadline=self.deadline)
            everything = worker.read_all()
        except UpdateRejectedError as exc:
            raise VaultError(f"the vault's stored state still does not load after quarantining update "
                             f"{update_id} ({exc.code}: {exc.message})", code="VAULT_REBUILD_FAILED") from None
        present = {memory_id for memory_id, _ in everything.rows}
        self._store_rows([*everything.rows, *((gone, None) for gone in self._store.shared_ids() - present)])
        self._save_registry({d: registry_entry(entry) for d, entry in everything.devices.items()})
        self._store.raise_alarm("UPDATE_REBUILD_FAILED", f"{message}; {requeued} later received updates are "
                                "checked again, memories were re-read from what remains")
        return worker

    def _drain_inbox(self, *, patience: float = 1.0) -> dict[int, ApplyResult]:
        """Integrate what the held updates hold that can integrate, until no more progress is possible.

        A held update whose dependencies are all present is applied whole. Of one that waits for structs, the
        part that can integrate now (:func:`~crdtsync.model.ystate.split_integrable`) is applied and logged and
        the rest stays held under its inbox id: yrs never keeps a struct pending (it integrates pending structs
        wrongly), and updates that are complete together integrate piece by piece whatever order they came
        in. One that only waits to delete structs not here yet integrates the rest and holds those deletes apart
        (:func:`~crdtsync.model.ystate.split_unknown_deletes`). Strict-reader results are cached per inbox id
        for as long as the update stays held. The worker's state vector (equal to the store's) decides what is
        missing, so a pull never needs the live Doc. The worker's deadline is multiplied by ``patience``.

        Returns by inbox id the outcome of each held update that integrated or was refused, and ``"pending"``
        with the memories its integrated part changed for one still held after part of it integrated.
        """
        done: dict[int, ApplyResult] = {}
        cache = self._decoded
        def decoded_of(inbox_id: int, data: bytes) -> DecodedUpdate:
            if inbox_id not in cache:
                cache[inbox_id] = decode_update(data)
            return cache[inbox_id]

        def start(row: tuple[int, str, bytes]) -> int:
            try:
                structs = decoded_of(row[0], row[2]).structs
            except UpdateRejectedError:
                return 0
            return min((ranges[0][0] for ranges in structs.values() if ranges), default=0)

        progress = True
        while progress and self._store.held_count():
            progress = False
            # Earliest clocks first: a stream delivered in reverse integrates in one pass, not n passes.
            for inbox_id, origin, data in sorted(self._store.held(), key=start):
                try:
                    with self._store.write():  # a rebuild, and any repair of the stored state, commits alone
                        self._worker_for()
                    with self._store.write():
                        worker = self._worker_for()
                        state = decode_state_vector(worker.state_vector)
                        decoded = decoded_of(inbox_id, data)
                        missing = missing_dependencies(decoded, state)
                        if decoded.structs and missing.deletes and not (missing.gaps or missing.references):
                            # It only waits to delete structs not here yet: integrate the rest now and let
                            # those deletes wait apart (a wait that could otherwise go round in a circle).
                            known, known_decoded, rest = split_unknown_deletes(data, decoded, state)
                            self._store.split_held(inbox_id, known, rest)
                            cache[inbox_id] = known_decoded
                            progress = True
                            continue
                        parts = None
                        # Nothing of it can integrate while it misses the same: every struct it cannot take roots
                        # in what it misses. So a big held snapshot is not cut again at every pull.
                        if (missing.gaps or missing.references) and self._stuck.get(inbox_id) != missing:
                            parts = split_integrable(data, decoded, state)
                            if parts is None:
                                self._stuck[inbox_id] = missing
                        if missing and parts is None:
                            self._store.wait_for(inbox_id, missing.clients())
                            continue
                        self._stuck.pop(inbox_id, None)
                        earlier = done[inbox_id].changed if inbox_id in done else ()
                        if parts is None:
                            result = self._integrate_one(worker, data, decoded, state, origin, patience)
                            self._store.release(inbox_id)
                            cache.pop(inbox_id, None)
                            outcome = ApplyResult("integrated", changed=(*earlier, *(r[0] for r in result.rows)))
                        else:
                            now, rest = parts
                            now_decoded = decode_update(now)
                            result = self._integrate_one(worker, now, now_decoded, state, origin, patience)
                            self._store.forget_quarantined(data)  # a retried update: it is not refused any more
                            rest_decoded = decode_update(rest)
                            waits = missing_dependencies(rest_decoded, expected_state(now_decoded, state))
                            self._store.narrow_held(inbox_id, rest, waits.clients())
                            cache[inbox_id] = rest_decoded
                            outcome = ApplyResult("pending", changed=(*earlier, *(r[0] for r in result.rows)))
                    done[inbox_id] = outcome
                    progress = True
                except UpdateRejectedError as exc:
                    with self._store.write():
                        self._store.release(inbox_id)
                        self._store.quarantine(data, origin=origin, code=exc.code, message=exc.message)
                        self._alarm_on_forgery(exc, origin)
                    cache.pop(inbox_id, None)
                    self._stuck.pop(inbox_id, None)
                    done[inbox_id] = ApplyResult("refused", exc.code, exc.message)
                    progress = True
                except VaultError as exc:
                    if exc.code == "VAULT_REBUILD_FAILED":  # outside the rolled-back transaction, so it stays
                        self._store.raise_alarm(exc.code, exc.message)
                    raise
        self._maybe_compact()
        return done

    def _integrate_one(self, worker: IntegrationWorker, data: bytes, decoded: DecodedUpdate, state: dict[int, int],
                       origin: str, patience: float) -> WorkerResult:
        """Integrate ``data`` (Yjs v1 bytes the strict reader read as ``decoded``, complete at the worker's state
        vector ``state``), in the caller's write transaction: apply it in ``worker`` (its materialized rows are
        stored as they arrive), refuse it when the state vector moved other than its content justifies or it
        broke the registry's rules, then log it and apply it to the live Doc when one is loaded. Returns the
        worker's result; on any failure the worker is closed.

        Raises:
            UpdateRejectedError: the worker's codes (:meth:`IntegrationWorker.apply`), ``UPDATE_CLOCK_JUMP``, the
                registry's (:meth:`_check_authorship`), ``UPDATE_MALFORMED`` when the live Doc refuses it.
        """
        with self._closing_on_failure(worker):
            result = worker.apply(data, on_rows=self._store_rows, patience=patience, authors=_authors(origin))
            if decode_state_vector(result.state_vector) != expected_state(decoded, state):
                raise UpdateRejectedError("the update moved a client's clock further than its content justifies",
                                          code="UPDATE_CLOCK_JUMP")
            self._check_authorship(origin, result)
            self._worker_at = self._integrate_checked(data, origin, result)
            self._alarm_on_clock_ahead(origin, result)
        return result

    def _check_authorship(self, origin: str, result: WorkerResult) -> None:
        """Refuse a worker-checked update whose author (``origin``, when it is a device id: the mailbox's
        authenticated sender) broke the registry's rules (:mod:`crdtsync.model.authorship`). An ``origin`` that
        is not a device id is a local caller's label (tests, benchmarks): nothing to check it against.

        Raises:
            UpdateRejectedError: ``UPDATE_REGISTRY_FORGED``, ``UPDATE_CLIENT_CLAIMED``,
                ``UPDATE_UNREGISTERED_SENDER``.
        """
        if not is_device_id(origin):
            return
        before = self._stored_registry()
        if before is None:  # a vault written before the registry copy was kept exact
            before = self.devices()
        check_registry_change(origin, before, {d: registry_entry(e) for d, e in result.devices.items()})

    def _alarm_on_clock_ahead(self, origin: str, result: WorkerResult) -> None:
        """Raise an alarm naming ``origin`` when an update it wrote claims a time this device does not believe."""
        if result.ahead:
            self._store.raise_alarm("CLOCK_AHEAD", (
                f"device {origin} wrote edits dated more than {MAX_CLOCK_SKEW / 60:g} minutes ahead of this device's "
                "clock. They are kept, shown at the memory's creation time, and never win a conflict's display: "
                "check that device's clock (and this one's)"), device=origin)

    def _alarm_on_forgery(self, refusal: UpdateRejectedError, origin: str) -> None:
        """Raise a persistent alarm naming ``origin`` when ``refusal`` says a device wrote what it may not."""
        if refusal.code in FORGERY_CODES:
            self._store.raise_alarm(refusal.code, f"an update from device {origin} was refused: {refusal.message}. "
                                    "A device of this vault, or someone holding its key, is writing what it may not: "
                                    "check `crdtsync devices`", device=origin)

    @staticmethod
    @contextmanager
    def _closing_on_failure(worker: IntegrationWorker) -> Iterator[None]:
        """Close ``worker`` when the block raises: its Doc may then hold an update the store does not."""
        try:
            yield
        except BaseException:
            worker.close()
            raise

    def _store_rows(self, rows: Sequence[Row]) -> None:
        """Store the materialized rows a worker apply produced (in the caller's transaction). A memory that is
        level 0 here keeps its local row while the Doc shows it absent (:meth:`MemoryDoc.withdraw` left its
        record). When another device's concurrent edit brings that record back (or that device imported the same
        record at level 1), both are kept: the local row takes a fresh id (an audit row each) and the shared
        memory shows under its own id (after an edit, with a conflict on ``deleted``); a
        ``MEMORY_LEVEL_CONFLICT`` alarm for the batch says so."""
        local = self._store.existing_ids((memory_id for memory_id, _ in rows), level=0)
        renamed = {memory_id: new_memory_id() for memory_id in sorted(m for m, row in rows if row is not None
                                                                     and m in local)}
        for memory_id, new_id in renamed.items():
            self._store.rename_memory(memory_id, new_id)
            self._store.audit("level-0 copy renamed", code=LEVEL_CONFLICT, memory=memory_id, private_copy=new_id)
            local.discard(memory_id)
        if renamed:
            first, private = next(iter(renamed.items()))
            self._store.raise_alarm(LEVEL_CONFLICT, (
                f"{len(renamed)} memories that are level 0 (this device only) here came back shared from another "
                "device, which edited them while they were level 0 here (or imported the same records at level 1). "
                f"Both are kept: the shared memory under its id, and the copy kept on this device only under a new "
                f"one (memory {first} -> {private}; `crdtsync log` lists each)"), memory=first, private_copy=private)
        self._store.put_rows(row for memory_id, row in rows if row is not None and memory_id not in local)
        for memory_id, row in rows:
            if row is None and memory_id not in local:
                self._store.drop_memory(memory_id)

    def _integrate_checked(self, data: bytes, origin: str, result: WorkerResult) -> int:
        """Log a worker-checked update whose rows are stored; apply it to the live Doc if this process has one
        loaded (a pull into an unloaded vault never loads it). When the update replaced records held here (a
        concurrent creation of one id), the live Doc is loaded to read what they held and it is resurfaced.
        Returns the id the update was logged under.

        Raises:
            UpdateRejectedError: ``UPDATE_MALFORMED`` when pycrdt raises or panics on it in the live Doc.
            KeyboardInterrupt: (or another exception that is not a verdict: :func:`is_verdict`) as it came, the live
                Doc dropped (it is reloaded from the store, which does not hold the update, on next use).
        """
        lost_ids = [k for k in result.replaced if self._store.memory_level(k) == 1]
        if lost_ids or self._doc is not None:
            doc = self._current_doc()  # the store does not hold this update yet: the state before it
            before = {k: doc.memories[k].to_py() or {} for k in lost_ids if isinstance(doc.memories.get(k), Map)}
            try:
                doc.doc.apply_update(data)
            except BaseException as exc:
                self._doc = None  # it may hold the update (an interrupt comes once yrs returns) or be broken
                if not is_verdict(exc):
                    raise
                raise UpdateRejectedError("pycrdt refused an update the worker accepted",
                                          code="UPDATE_MALFORMED") from None
        update_id = self._store.append_update(data, origin=origin, local=False)
        self._store.forget_quarantined(data)  # an update tried again after a refusal (retry_refused)
        if self._doc is not None:
            self._seen = update_id
        registry = self._stored_registry()
        if result.devices and registry is not None:
            registry.update({device_id: registry_entry(entry) for device_id, entry in result.devices.items()})
            self._save_registry(registry)
        if lost_ids and self._doc is not None:
            self._resurface(self._doc, before)
        return update_id

    def _resurface(self, doc: MemoryDoc, lost: Mapping[str, Mapping[str, Any]]) -> None:
        """Re-insert what records dropped by a concurrent creation of the same id held (``lost``: each as this
        replica held it just before; see :meth:`MemoryDoc.resurface`), as a local write in the current
        transaction."""
        self.ensure_lease_registered()
        ctx = self.context()
        self.local_write(lambda d: [d.resurface(k, ctx, raw) for k, raw in lost.items()], lost)
