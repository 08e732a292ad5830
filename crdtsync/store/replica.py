"""The live replica of one vault in this process: the pycrdt Doc kept in step with the SQLite store.

:class:`Replica` owns everything that touches the Doc: the client-id lease, loading (newest snapshot plus
later updates) and catching up with other processes' writes, local writes (each one SQLite transaction that
logs the Yjs update and the materialized rows), compaction, and the defended integration of updates from
outside the process (strict reader, inbox, integration worker under a deadline, live apply), which it inherits
from :class:`~crdtsync.store.integration.UpdateIntegration`. The Vault API (:mod:`crdtsync.vault`) is a thin
layer over it; everything here is private to crdtsync.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from pycrdt import Doc, merge_updates

from crdtsync._process import process_alive, process_token
from crdtsync.crypto.epochs import EpochStatement
from crdtsync.crypto.keys import DeviceKeys
from crdtsync.errors import VaultError
from crdtsync.model.records import Conflict, Memory, believable_until, utc_now_iso
from crdtsync.model.schema import MemoryDoc, WriteContext, statement_key, statement_value
from crdtsync.model.ystate import Missing, decode_state_vector, encode_state_vector
from crdtsync.model.yupdate import MAX_CLOCK, DecodedUpdate, decode_update
from crdtsync.store.db import Store
from crdtsync.store.incarnation import ALARM as INCARNATION_ALARM
from crdtsync.store.incarnation import check_incarnation, state_dir
from crdtsync.store.integration import UpdateIntegration
from crdtsync.store.worker import IntegrationWorker, ScratchDoc

T = TypeVar("T")

#: Compact the local log when this many updates, or this many bytes in at least COMPACT_MIN_UPDATES updates,
#: follow the newest snapshot. A few large updates (a first pull) are left alone: merging them would cost a
#: Doc load and gain nothing at open time.
COMPACT_AFTER_UPDATES = 2000
COMPACT_AFTER_BYTES = 32 * 1024 * 1024
COMPACT_MIN_UPDATES = 64
#: With compaction deferred, writes and integrations still compact past this many times the bounds.
DEFERRED_FACTOR = 4
#: The alarm raised when compaction carries logged updates that are pending in the Doc past its snapshot.
PENDING_ALARM = "VAULT_UPDATES_PENDING"
_CHECKED_GENERATION_META = "log_checked_generation"
_EMPTY_UPDATE = b"\x00\x00"
#: ``meta`` keys of the device registry kept beside the Doc, and of the mark that it is exact.
_REGISTRY_META = "registry"
_REGISTRY_EXACT = "registry_exact"


def _new_op_id() -> str:
    return secrets.token_urlsafe(6)


class Replica(UpdateIntegration):
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
        self._generation = -1
        self._client_id: int | None = None
        self._holder = process_token()
        self._worker: IntegrationWorker | None = None
        self._worker_at = -1
        self._worker_generation = -1
        self._registered = False
        self._decoded: dict[int, DecodedUpdate] = {}
        self._stuck: dict[int, Missing] = {}
        #: Set by a ``serve`` daemon: writes and integrations leave compaction (a Doc load and encode, seconds at
        #: 100k memories) to :meth:`compact_if_due`, which the daemon calls between entries.
        self.defer_compaction = False

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
            taken = {cid for cid, holder in self._store.leases() if holder and process_alive(holder)}
            free = [cid for cid, _ in self._store.leases() if cid not in taken]
            client_id = free[0] if free else self._fresh_client_id()
            self._store.set_lease(client_id, self._holder)
        self._client_id = client_id
        return client_id

    def _fresh_client_id(self) -> int:
        """A random non-zero 32-bit Yjs client id, as Yjs picks one, that no device of the registry announced
        (this device's retired ones included): writing under another device's client id would get this
        device's envelopes refused and its writes mixed with that device's."""
        known = {c for entry in (self._stored_registry() or {}).values() for c in entry.get("clients", ())}
        while True:
            client_id = secrets.randbits(32)
            if client_id and client_id not in known:
                return client_id

    def restart(self) -> None:
        """Forget the live Doc, the integration worker and the client id: the next write loads the Doc from the
        store again and takes (and announces) a fresh client-id lease."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._doc = None
        self._client_id = None
        self._registered = False

    def drop_unpushed(self, updates: Sequence[tuple[int, bytes]], keep: Callable[[set[str]], None]) -> set[str]:
        """Take this device's own logged updates ``updates`` ((update id, Yjs v1 bytes), oldest first, as
        :meth:`Store.local_updates_after` returns them) out of the vault: they reuse Yjs clocks of writes lost
        with a backup (see :meth:`crdtsync.vault.Vault.rebase_unpushed`). In one transaction: the log loses them
        (a new state generation, so every process reloads its Doc and worker without them), every client-id lease
        is retired (so no process writes under those clocks again), the memories they touched are materialized
        again without them, and ``keep(touched memory ids)`` runs (to store what to re-apply). Returns the
        touched ids.

        Raises:
            VaultError: ``DEVICE_CLOCKS_REUSED`` when a snapshot already holds some of them (compaction ran after
                they were written), so the Doc cannot be rebuilt without them.
        """
        dropped = {update_id for update_id, _ in updates}
        if not dropped:
            return set()
        if self._store.snapshot_upto() >= min(dropped):
            raise VaultError("the writes made since the restore were compacted into a snapshot and cannot be taken "
                             "out", code="DEVICE_CLOCKS_REUSED")
        scratch = ScratchDoc()
        scratch.load([data for update_id, data in self._stored_updates() if update_id not in dropped])
        rebuilt: Doc[Any] = Doc()
        rebuilt.apply_update(scratch.doc.get_update())  # the Doc without them, kept for the rows
        touched: set[str] = set()
        for _, data in updates:
            scratch.apply(data)
            touched |= scratch.changed
        without = MemoryDoc(rebuilt)
        with self._store.write():
            keep(touched)
            self._store.drop_local_updates(dropped)
            self._store.new_state_generation()  # every process reloads its Doc and worker without them
            self._store.retire_leases()
            self._materialize(without, touched)
            self._save_registry(without.registry())
        self.restart()
        return touched

    def _lease_lost(self) -> bool:
        """Whether this process's client-id lease was retired by another (a rebase, a restore seen elsewhere)."""
        return self._client_id is not None and self._store.lease_holder(self._client_id) != self._holder

    def release_lease(self) -> None:
        if self._client_id is None:
            return
        with self._store.write():
            self._store.free_lease(self._client_id, self._holder)
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
        self._generation = self._store.state_generation()
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
        if (self._doc is None or self._store.snapshot_upto() > self._seen
                or self._store.state_generation() != self._generation):
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
            read = doc.read(memory_id, believable_until())
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

    def rename_self(self, name: str) -> None:
        """Give this device ``name`` in its registry entry (replicated) and in the store, in one commit."""
        self.ensure_lease_registered()

        def rename(doc: MemoryDoc) -> None:
            doc.rename_device(self.device_id, name)
            self._store.set_meta("device_name", name)
            self._save_registry(doc.registry())

        self.local_write(rename, ())

    def publish_statement(self, statement: EpochStatement, *, extra_meta: Mapping[str, bytes]) -> None:
        """Write this device's epoch ``statement`` into its registry entry (replicated) and store ``extra_meta``
        in the same commit."""

        def publish(doc: MemoryDoc) -> None:
            data = statement.to_bytes()
            doc.publish_statement(self.device_id, statement_key(statement.epoch, statement.digest),
                                  statement_value(data))
            for key, value in extra_meta.items():
                self._store.set_meta(key, value)
            self._save_registry(doc.registry())

        self.local_write(publish, ())

    def _ensure_registered(self) -> None:
        with self._store.write():
            registry = self._stored_registry() if self._doc is None else None
            entry = (self._current_doc().registry() if registry is None else registry).get(self.device_id)
        if entry is None or self._client_id not in entry["clients"]:
            self.register_self()

    def _maybe_compact(self, *, now: bool = False) -> None:
        """Compact when the log is past its bounds (see :data:`COMPACT_AFTER_UPDATES`); with :attr:`defer_compaction`
        only when called with ``now`` (the daemon, between entries) or past :data:`DEFERRED_FACTOR` times them."""
        count, size = self._store.updates_since_snapshot()
        factor = DEFERRED_FACTOR if self.defer_compaction and not now else 1
        if count < factor * COMPACT_AFTER_UPDATES and (
                size < factor * COMPACT_AFTER_BYTES or count < COMPACT_MIN_UPDATES):
            return
        with self._store.write():
            if self._store.held_count():
                return
            doc = self._current_doc()
            pending = self._pending_in_log(doc)
            if pending:  # rare (after a repair): all in one transaction
                self._save_snapshot(doc, pending)
                self._seen = self._store.last_update_id()  # the live Doc holds the carried updates (pending)
                return
            upto, generation, snapshot = self._seen, self._store.state_generation(), self._store.snapshot_upto()
        # Encoding the Doc takes most of the time (0.9 s at 100k memories): it runs outside the write lock, so
        # other processes (a serve daemon storing entries) go on meanwhile. The Doc holds exactly the updates up
        # to ``upto``; the snapshot covers those, and whatever is logged meanwhile stays in the log.
        data = doc.doc.get_update()
        with self._store.write():
            if (self._store.snapshot_upto() != snapshot or self._store.state_generation() != generation
                    or self._store.held_count()):
                return  # another process compacted, or the state changed: the next write tries again
            self._save_snapshot(doc, [], upto=upto, data=data)

    def _save_snapshot(self, doc: MemoryDoc, pending: list[int], *, upto: int | None = None,
                       data: bytes | None = None) -> None:
        """Store the snapshot of ``doc`` (``data``, encoded as of update ``upto``; by default now and
        :attr:`_seen`), keeping this device's rows not yet logged by every push cursor. Call inside a write
        transaction."""
        keep_after = min(
            (int(v) for v in self._store.cursors("push").values()), default=self._store.last_update_id()
        )
        self._store.save_snapshot(self._seen if upto is None else upto,
                                  doc.doc.get_update() if data is None else data,
                                  keep_local_after=keep_after, carry=pending)

    def compact_if_due(self) -> None:
        """Compact now if the log is past its bounds (a daemon calls it when no entry is on the way)."""
        self._maybe_compact(now=True)

    def _pending_in_log(self, doc: MemoryDoc) -> list[int]:
        """The ids of the updates logged since the last snapshot that have structs the live Doc does not hold:
        yrs keeps them pending (they wait for a struct the log lacks, as after a repair took a received update
        out) and ``Doc.get_update`` leaves them out, so a compaction carries them past its snapshot
        (:meth:`Store.save_snapshot`). They can only follow a change of state generation: the log is decoded
        then, and at every compaction while some remain, with the ``VAULT_UPDATES_PENDING`` alarm. Call inside
        a write transaction."""
        generation = self._store.state_generation()
        if int(self._store.get_meta(_CHECKED_GENERATION_META) or 0) == generation:
            return []
        state = decode_state_vector(doc.doc.get_state())
        waiting = [update_id for update_id, data in self._store.updates_after(self._store.snapshot_upto())
                   if any(ranges[-1][1] > state.get(client, 0)
                          for client, ranges in decode_update(data, max_run=MAX_CLOCK).structs.items())]
        if waiting:
            self._store.raise_alarm(PENDING_ALARM, (
                f"{len(waiting)} logged updates wait for writes this vault no longer holds (taken out by a repair): "
                "the memories they change show as they were before them. Compaction carries them forward, so "
                "they are not lost"))
        else:
            self._store.set_meta(_CHECKED_GENERATION_META, str(generation))
        return waiting

    def ensure_lease_registered(self) -> None:
        """Hold a client-id lease and make sure the registry announces it (once per Vault object, and again when
        another process retired the lease)."""
        if self._lease_lost():
            self.restart()
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

    def devices(self) -> dict[str, dict[str, Any]]:
        """The device registry replicated in the Doc (see :meth:`crdtsync.vault.Vault.devices`), from the copy
        kept exact in ``meta`` (no Doc load) unless this process has the Doc loaded or the copy is not known to
        be exact."""
        with self._store.write():
            stored = self._stored_registry()
            if stored is not None and self._doc is None:
                return stored
            registry = self._current_doc().registry()
            if registry != stored:  # else the transaction writes nothing: no commit to sync to disk
                self._save_registry(registry)
            return registry
