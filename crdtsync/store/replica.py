"""The live replica of one vault in this process: the pycrdt Doc kept in step with the SQLite store.

:class:`Replica` owns everything that touches the Doc: the client-id lease, loading (newest snapshot plus
later updates) and catching up with other processes' writes, local writes (each one SQLite transaction that
logs the Yjs update and the materialized rows), compaction, and the defended integration of updates from
outside the process (strict reader, inbox, integration worker under a deadline, live apply). The Vault API
(:mod:`crdtsync.vault`) is a thin layer over it; everything here is private to crdtsync.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pycrdt import Doc, Map, merge_updates

from crdtsync.crypto.keys import DeviceKeys
from crdtsync.errors import UpdateRejectedError, VaultError
from crdtsync.model.records import Conflict, Memory, utc_now_iso
from crdtsync.model.schema import CONTENT_KINDS, ROOTS, MemoryDoc, WriteContext, registry_entry
from crdtsync.model.ystate import decode_state_vector, encode_state_vector, expected_state, missing_dependencies
from crdtsync.model.yupdate import DecodedUpdate, decode_update
from crdtsync.store.db import Store
from crdtsync.store.incarnation import ALARM as INCARNATION_ALARM
from crdtsync.store.incarnation import check_incarnation, state_dir
from crdtsync.store.worker import IntegrationWorker, Row, WorkerResult

T = TypeVar("T")

#: Compact the local log when this many updates, or this many bytes in at least COMPACT_MIN_UPDATES updates,
#: follow the newest snapshot. A few large updates (a first pull) are left alone: merging them would cost a
#: Doc load and gain nothing at open time.
COMPACT_AFTER_UPDATES = 2000
COMPACT_AFTER_BYTES = 32 * 1024 * 1024
COMPACT_MIN_UPDATES = 64
#: Received updates that may wait for missing dependencies at once; more are refused (UPDATE_INBOX_FULL).
MAX_HELD = 10_000
_EMPTY_UPDATE = b"\x00\x00"
#: ``meta`` keys of the device registry kept beside the Doc, and of the mark that it is exact.
_REGISTRY_META = "registry"
_REGISTRY_EXACT = "registry_exact"


def _new_op_id() -> str:
    return secrets.token_urlsafe(6)


def _process_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def _holder_alive(holder: str) -> bool:
    pid_text, start, _token = holder.split(":", 2)
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _process_start(pid) == start


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of one received update: ``status`` is ``"integrated"`` (now in the Doc and the store),
    ``"pending"`` (stored, waiting for updates it depends on; it integrates when they arrive) or ``"refused"``
    (quarantined; ``code`` says why, nothing of it was applied). ``changed`` lists memory ids it touched."""

    status: str
    code: str | None = None
    message: str | None = None
    changed: tuple[str, ...] = ()


class Replica:
    """The live Doc of one vault in this process.

    Args:
        store: the vault's open :class:`~crdtsync.store.db.Store`.
        keys: returns this device's keys (read lazily: only registering the device needs them).
        agent: the writing agent recorded with each write, or None.
        deadline: seconds one received update may take in the integration worker (plus 0.5 s per MB).
    """

    def __init__(
        self, store: Store, *, keys: Callable[[], DeviceKeys], agent: str | None, deadline: float
    ) -> None:
        self._store = store
        self._keys = keys
        self.agent = agent
        self.deadline = deadline
        self._doc: MemoryDoc | None = None
        self._seen = 0
        self._client_id: int | None = None
        self._holder = f"{os.getpid()}:{_process_start(os.getpid())}:{secrets.token_hex(4)}"
        self._worker: IntegrationWorker | None = None
        self._worker_at = -1
        self._registered = False
        self._decoded: dict[int, DecodedUpdate] = {}

    @property
    def device_id(self) -> str:
        """This device's id, from the store."""
        return str(self._store.get_meta("device_id"))

    @property
    def loaded(self) -> bool:
        """Whether the Doc is loaded in this process (reads never load it)."""
        return self._doc is not None

    def close(self) -> None:
        """Stop the integration worker and release the client-id lease. Idempotent."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self.release_lease()
        self._doc = None

    def _acquire_lease(self) -> int:
        if self._client_id is not None:
            return self._client_id
        with self._store.write():
            if check_incarnation(self._store, self.device_id):
                retired = self._store.retire_leases()
                self._store.raise_alarm(INCARNATION_ALARM, (
                    "this vault's store is not the one this device last wrote with: it was restored from a "
                    "backup, copied, or another copy of the folder was used since (or the state folder "
                    f"{state_dir()} was cleared). It now writes under a new Yjs client id instead of "
                    f"{', '.join(map(str, retired)) or 'its old one'}, so nothing it writes can collide with "
                    "writes the old store made after the copy. Writes lost with the backup come back on the next "
                    "sync. If another copy of this folder is in use, keep only one: each device needs its own "
                    "folder (`crdtsync join`)."))
            taken = {cid for cid, holder in self._store.leases() if holder and _holder_alive(holder)}
            free = [cid for cid, _ in self._store.leases() if cid not in taken]
            client_id = free[0] if free else secrets.randbits(32) or 1
            self._store.set_lease(client_id, self._holder)
        self._client_id = client_id
        return client_id

    def release_lease(self) -> None:
        if self._client_id is None:
            return
        with self._store.write():
            self._store.set_lease(self._client_id, None)
        self._client_id = None
        self._registered = False

    def _stored_updates(self) -> Iterator[tuple[int, bytes]]:
        """The store's state as (update id, Yjs update): the newest snapshot (at the id it covers), then every
        later logged update. Applied in order to an empty Doc they rebuild the shared Doc."""
        snapshot = self._store.latest_snapshot()
        if snapshot is not None:
            yield snapshot
        yield from self._store.updates_after(snapshot[0] if snapshot is not None else 0)

    def _load_doc(self) -> MemoryDoc:
        doc: Doc[Any] = Doc(client_id=self._acquire_lease())
        for _, data in self._stored_updates():
            doc.apply_update(data)
        self._seen = self._store.last_update_id()
        loaded = MemoryDoc(doc)
        self._save_registry(loaded.registry())
        return loaded

    def _save_registry(self, registry: Mapping[str, Mapping[str, Any]]) -> None:
        """Store the device registry in ``meta`` and mark it exact: from here on every write that changes the
        registry (:meth:`register_self`, an integrated update) updates it in its own transaction, so
        :meth:`devices` and ``status`` answer without the Doc. Call inside a write transaction."""
        self._store.set_meta(_REGISTRY_META, json.dumps(registry, sort_keys=True))
        self._store.set_meta(_REGISTRY_EXACT, "1")

    def _stored_registry(self) -> dict[str, dict[str, Any]] | None:
        """The registry kept in ``meta``, or None when it is not known to be exact (a vault last written by a
        version that did not keep it)."""
        if self._store.get_meta(_REGISTRY_EXACT) != "1":
            return None
        registry: dict[str, dict[str, Any]] = json.loads(self._store.get_meta(_REGISTRY_META) or "{}")
        return registry

    def _current_doc(self) -> MemoryDoc:
        """The live Doc, caught up with every update other processes logged. Call inside a write transaction
        so that nothing is logged between the catch-up and the caller's own write."""
        if self._doc is None or self._store.snapshot_upto() > self._seen:
            self._doc = self._load_doc()
            return self._doc
        for update_id, data in self._store.updates_after(self._seen):
            self._doc.doc.apply_update(data)
            self._seen = update_id
        return self._doc

    def context(self) -> WriteContext:
        return WriteContext(device=self.device_id, at=utc_now_iso(), new_op_id=_new_op_id, agent=self.agent)

    def _materialize(self, doc: MemoryDoc, memory_ids: Iterable[str]) -> None:
        for memory_id in memory_ids:
            if self._store.memory_level(memory_id) == 0:
                continue
            read = doc.read(memory_id)
            if read is None:
                self._store.drop_memory(memory_id)
            else:
                self._store.put_memory(*read)

    def local_write(
        self,
        fn: Callable[[MemoryDoc], T],
        touched: Iterable[str],
        *,
        rows: Sequence[tuple[Memory, list[Conflict]]] = (),
    ) -> T:
        """Run ``fn`` on the live Doc inside one SQLite write transaction; log the Yjs update it produced and
        re-materialize ``touched`` memory ids (read back from the Doc) and store ``rows`` (materialized rows the
        caller computed from what it wrote: an import) in that same transaction. On any failure the Doc is
        dropped (it may be ahead of the store) and reloaded from the store on next use."""
        try:
            with self._store.write():
                doc = self._current_doc()
                produced: list[bytes] = []
                subscription = doc.doc.observe(lambda event: produced.append(event.update))
                try:
                    result = fn(doc)
                finally:
                    doc.doc.unobserve(subscription)
                for update in produced:
                    if update != _EMPTY_UPDATE:
                        self._seen = self._store.append_update(update, origin=self.device_id, local=True)
                self._materialize(doc, touched)
                if rows:
                    self._store.put_memories(rows)
        except BaseException:
            self._doc = None
            raise
        self._maybe_compact()
        return result

    def register_self(self) -> None:
        """Announce this device and the client id this process writes with in the Doc's device registry."""
        keys = self._keys()

        def register(doc: MemoryDoc) -> None:
            info = {
                "name": str(self._store.get_meta("device_name")),
                "sign_pk": keys.sign_pk.hex(),
                "kx_pk": keys.kx_pk.hex(),
                "added_by": keys.device_id,
                "added_at": utc_now_iso(),
            }
            assert self._client_id is not None
            doc.register_device(keys.device_id, info, [self._client_id])
            self._save_registry(doc.registry())

        self.local_write(register, ())

    def _ensure_registered(self) -> None:
        with self._store.write():
            registry = self._stored_registry() if self._doc is None else None
            entry = (self._current_doc().registry() if registry is None else registry).get(self.device_id)
        if entry is None or self._client_id not in entry["clients"]:
            self.register_self()

    def _maybe_compact(self) -> None:
        count, size = self._store.updates_since_snapshot()
        if count < COMPACT_AFTER_UPDATES and (size < COMPACT_AFTER_BYTES or count < COMPACT_MIN_UPDATES):
            return
        with self._store.write():
            if self._store.held_count():
                return
            doc = self._current_doc()
            keep_after = min(
                (int(v) for v in self._store.cursors("push").values()), default=self._store.last_update_id()
            )
            self._store.save_snapshot(self._seen, doc.doc.get_update(), keep_local_after=keep_after)

    def ensure_lease_registered(self) -> None:
        """Hold a client-id lease and make sure the registry announces it (once per Vault object)."""
        if self._registered:
            return
        self._acquire_lease()
        self._ensure_registered()
        self._registered = True

    def state_vector(self) -> bytes:
        """The Yjs state vector (``encodeStateVector`` format) of the shared Doc. Loads the Doc."""
        with self._store.write():
            return self._current_doc().doc.get_state()

    def encode_update(self, since: bytes | None = None) -> bytes:
        """A Yjs v1 update holding everything the shared Doc has past state vector ``since`` (everything when
        None). Level-0 memories are never in it. Loads the Doc."""
        with self._store.write():
            doc = self._current_doc().doc
            return doc.get_update(since) if since is not None else doc.get_update()

    def own_contribution(self) -> bytes:
        """A Yjs v1 update holding every struct this device wrote (under any of its client ids) and the deletes
        it made or knows: what a first push to a new relay, or a mailbox snapshot, sends. While the log was
        never compacted and the Doc is not loaded, that is the merge of this device's logged updates (no Doc
        load: a device that just joined pushes its registration cheaply); otherwise it is read from the Doc,
        with the Doc's whole delete set."""
        with self._store.write():
            if self._doc is None and self._store.snapshot_upto() == 0:
                logged = [data for _, data in self._store.local_updates_after(0)]
                return merge_updates(*logged) if logged else _EMPTY_UPDATE
            doc = self._current_doc()
            own = set(doc.registry().get(self.device_id, {}).get("clients", ()))
            state = decode_state_vector(doc.doc.get_state())
            others = {client: clock for client, clock in state.items() if client not in own}
            return doc.doc.get_update(encode_state_vector(others))

    def apply_updates(
        self,
        updates: Sequence[tuple[bytes, str]],
        *,
        on_stored: Callable[[], None] | None = None,
        allowed_clients: Sequence[frozenset[int] | None] | None = None,
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
           materialized in one transaction. Updates that wait for others stay held (``"pending"``).

        Returns one :class:`ApplyResult` per input, in order. Never raises for a bad update.
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
                    if self._store.held_count() >= MAX_HELD:
                        raise UpdateRejectedError(
                            f"{MAX_HELD} received updates already wait for missing ones; refusing more until "
                            "they integrate (`crdtsync status` shows them)", code="UPDATE_INBOX_FULL")
                except UpdateRejectedError as exc:
                    self._store.quarantine(bytes(data), origin=origin, code=exc.code, message=exc.message)
                    outcomes.append(ApplyResult("refused", exc.code, exc.message))
                    continue
                inbox_id = self._store.hold(bytes(data), origin=origin, waiting="not yet tried")
                self._decoded[inbox_id] = decoded
                outcomes.append(inbox_id)
            if on_stored is not None:
                on_stored()
        done = self._drain_inbox()
        held = {row[0] for row in self._store.held()}
        results = []
        for outcome in outcomes:
            if isinstance(outcome, ApplyResult):
                results.append(outcome)
            elif outcome in done:
                results.append(done[outcome])
            else:
                results.append(ApplyResult("pending" if outcome in held else "integrated"))
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
        head = self._store.last_update_id()
        worker = self._worker
        if worker is not None and worker.alive and self._worker_at == head:
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
                head = self._store.last_update_id()
        self._worker_at = head
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

    def _drain_inbox(self) -> dict[int, ApplyResult]:
        """Integrate every held update whose dependencies are present, until no more progress is possible.
        Strict-reader results are cached per inbox id for as long as the update stays held. The worker's state
        vector (equal to the store's) decides what is missing, so a pull never needs the live Doc."""
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
                        if missing:
                            self._store.conn.execute(
                                "UPDATE inbox SET waiting = ? WHERE id = ?", (repr(missing), inbox_id))
                            continue
                        result = worker.apply(data, on_rows=self._store_rows)
                        if decode_state_vector(result.state_vector) != expected_state(decoded, state):
                            worker.close()
                            raise UpdateRejectedError(
                                "the update moved a client's clock further than its content justifies",
                                code="UPDATE_CLOCK_JUMP")
                        self._worker_at = self._integrate_checked(data, origin, result)
                        self._store.release(inbox_id)
                        cache.pop(inbox_id, None)
                        done[inbox_id] = ApplyResult("integrated", changed=tuple(r[0] for r in result.rows))
                        progress = True
                except UpdateRejectedError as exc:
                    with self._store.write():
                        self._store.release(inbox_id)
                        self._store.quarantine(data, origin=origin, code=exc.code, message=exc.message)
                    cache.pop(inbox_id, None)
                    done[inbox_id] = ApplyResult("refused", exc.code, exc.message)
                    progress = True
                except VaultError as exc:
                    if exc.code == "VAULT_REBUILD_FAILED":  # outside the rolled-back transaction, so it stays
                        self._store.raise_alarm(exc.code, exc.message)
                    raise
        self._maybe_compact()
        return done

    def _store_rows(self, rows: Sequence[Row]) -> None:
        """Store the materialized rows a worker apply produced (in the caller's transaction; memories that are
        level 0 here keep their local row)."""
        local = self._store.existing_ids((memory_id for memory_id, _ in rows), level=0)
        self._store.put_rows(row for memory_id, row in rows if row is not None and memory_id not in local)
        for memory_id, row in rows:
            if row is None and memory_id not in local:
                self._store.drop_memory(memory_id)

    def _integrate_checked(self, data: bytes, origin: str, result: WorkerResult) -> int:
        """Log a worker-checked update whose rows are stored; apply it to the live Doc if this process has one
        loaded (a pull into an unloaded vault never loads it). When the update replaced records held here (a
        concurrent creation of one id), the live Doc is loaded to read what they held and it is resurfaced.
        Returns the id the update was logged under."""
        lost_ids = [k for k in result.replaced if self._store.memory_level(k) == 1]
        if lost_ids or self._doc is not None:
            doc = self._current_doc()  # the store does not hold this update yet: the state before it
            before = {k: doc.memories[k].to_py() or {} for k in lost_ids if isinstance(doc.memories.get(k), Map)}
            try:
                doc.doc.apply_update(data)
            except BaseException:
                self._doc = None
                raise UpdateRejectedError("pycrdt refused an update the worker accepted",
                                          code="UPDATE_MALFORMED") from None
        update_id = self._store.append_update(data, origin=origin, local=False)
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

    def devices(self) -> dict[str, dict[str, Any]]:
        """The device registry replicated in the Doc (see :meth:`crdtsync.vault.Vault.devices`), from the copy
        kept exact in ``meta`` (no Doc load) unless this process has the Doc loaded or the copy is not known to
        be exact."""
        with self._store.write():
            stored = self._stored_registry() if self._doc is None else None
            if stored is not None:
                return stored
            registry = self._current_doc().registry()
            self._save_registry(registry)
            return registry
