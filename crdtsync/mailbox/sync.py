"""Mailbox protocol v1, the driver: push, pull and join over a :class:`~crdtsync.mailbox.backend.BlobStore`.

Each device writes only its own keys (``d/<device_id>/...``), so two writers never race on one object.

- **push**: read our own head (a device restored from a backup first integrates its own log objects past
  its push state, which brings back the writes lost with the backup, and continues after the seq the mailbox
  already has instead of overwriting it), seal the update since the last push (the merge of this device's own logged
  updates past the push cursor; the device's whole contribution on a first push) as ``log/<seq+1>``, then
  write ``head``. Cost O(change): 1 get and 2 puts.
- **pull**: list ``d/`` (plus the devices in the registry, since listings lag), read each device's head,
  fetch only the log objects past our cursor, in order. A head that goes backwards is refused
  (``MAILBOX_ROLLBACK``); a missing, torn, corrupt or replaced object (``MAILBOX_OBJECT_MISSING``,
  ``MAILBOX_OBJECT_CORRUPT``, ``ENVELOPE_*``) is reported, that device's pull stops there and resumes at the
  same seq next time: nothing is skipped. The cursor advances in the same SQLite transaction that stores the
  received update, so what is acknowledged is on disk. Cost O(devices + new objects).
- **compaction**: every :data:`SNAPSHOT_EVERY` seqs a device writes ``snap/<seq>`` (its whole contribution)
  and deletes its log objects that every known device has acknowledged (``acks`` in their heads) and that the
  snapshot covers; a new device starts from the snapshot plus later logs.

Every envelope is checked by :func:`crdtsync.crypto.envelope.open_envelope`; an update may only carry structs
of Yjs client ids its sender registered (or announces in the same body when it is joining), else it is
quarantined with ``UPDATE_FOREIGN_CLIENT``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from filelock import FileLock, Timeout
from pycrdt import merge_updates

from crdtsync.crypto.envelope import (
    KIND_HEAD,
    KIND_SNAPSHOT,
    KIND_UPDATE,
)
from crdtsync.crypto.header import VaultHeader
from crdtsync.crypto.keys import is_device_id
from crdtsync.errors import CrdtsyncError, MailboxError, VaultError
from crdtsync.mailbox.backend import BlobStore, check_apart
from crdtsync.mailbox.format import (
    Batch,
    Head,
    chain_digest,
    devices_prefix,
    head_key,
    header_key,
    log_key,
    snap_key,
)
from crdtsync.mailbox.objects import SealedObjects
from crdtsync.model.yupdate import item_positions
from crdtsync.store import integration

if TYPE_CHECKING:
    from crdtsync.vault import Vault

#: A fetched log or snapshot: (seq, batch, sender already registered, chain digest of its body).
Fetched = tuple[int, Batch, bool, bytes]
#: A callback ``(objects done, objects in all)`` for long pulls.
Progress = Callable[[int, int], None]
#: A device writes a snapshot of its contribution every this many log objects.
SNAPSHOT_EVERY = 256
#: Seconds a sync waits for another process's sync of the same vault and relay before it reports SYNC_BUSY.
SYNC_LOCK_SECONDS = 120.0
#: Seconds a sync trusts that a relay still holds the header it confirmed there (then it reads it again).
HEADER_RECHECK_SECONDS = 24 * 3600
#: A pull integrates at most this many log objects, or bytes of updates, per transaction.
PULL_GROUP = 64
PULL_GROUP_BYTES = 64 * 1024 * 1024


@dataclass
class SyncReport:
    """What one push/pull/sync moved through one relay: objects and bytes each way, object operations,
    memories changed here, conflicts now in the vault, and errors (``{device, code, message}``)."""

    relay: str
    objects_up: int = 0
    bytes_up: int = 0
    objects_down: int = 0
    bytes_down: int = 0
    operations: int = 0
    memories_changed: set[str] = field(default_factory=set)
    conflicts: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``sync --json`` prints for this relay."""
        return {
            "relay": self.relay,
            "up": {"objects": self.objects_up, "bytes": self.bytes_up},
            "down": {"objects": self.objects_down, "bytes": self.bytes_down},
            "operations": self.operations,
            "memories_changed": len(self.memories_changed),
            "conflicts": self.conflicts,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _PushState:
    """What this device last wrote to a relay: its newest log ``seq``, snapshot ``snap``, lowest kept log
    ``first`` and ``chain`` (the hash of its newest log body, which the next one links to). (The log id of
    the last update pushed is the separate ``push`` cursor, which the store's compaction reads so that it
    never drops a local update not yet pushed to every relay.)"""

    seq: int = 0
    snap: int = 0
    first: int = 1
    chain: bytes = b""

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb([self.seq, self.snap, self.first, self.chain], use_bin_type=True)
        return packed

    @classmethod
    def unpack(cls, data: bytes | None) -> _PushState:
        if data is None:
            return cls()
        seq, snap, first, chain = msgpack.unpackb(data)
        return cls(seq, snap, first, chain)


def _int_cursor(data: bytes | None) -> int:
    return 0 if data is None else int(data.decode())


class Mailbox(SealedObjects):
    """One vault's view of one mailbox (a relay): the protocol on top of its sealed objects
    (:class:`~crdtsync.mailbox.objects.SealedObjects`, whose constructor it takes).
    """

    # -- header -----------------------------------------------------------------------------------------

    def publish_header(self, *, again: bool = True) -> bool:
        """Write ``vault.json`` (the public header, v2) unless the mailbox already holds a v2 header of this vault
        that commits to the vault keys this device holds: a missing, damaged, v1 (written before key commitments)
        or replaced header is written again. With ``again`` False, the header is not read when this device
        confirmed its current header there less than :data:`HEADER_RECHECK_SECONDS` ago (a sync of one edit
        costs no extra request; a lost or replaced header is healed within that time). Returns whether it
        wrote."""
        key = header_key(self.tag)
        ours = self.vault.header
        digest = hashlib.sha256(ours.to_json()).digest()
        db = self.vault.store
        now = int(time.time())
        confirmed = db.get_cursor("header", self.relay) or b""
        if (not again and confirmed[:32] == digest
                and 0 <= now - int.from_bytes(confirmed[32:] or b"\0", "big") < HEADER_RECHECK_SECONDS):
            return False
        wrote = self._publish(key, ours)
        with db.write():
            db.set_cursor("header", self.relay, digest + now.to_bytes(8, "big"))
        return wrote

    def _publish(self, key: str, ours: VaultHeader) -> bool:
        data = self.store.get(key)
        if data is not None:
            try:
                theirs = VaultHeader.from_json(data)
            except CrdtsyncError:
                theirs = None
            if theirs is not None and theirs.vault_id == ours.vault_id and theirs.commits and all(
                    theirs.commits.get(epoch) == commit for epoch, commit in ours.commits.items()):
                return False
        self.store.put(key, ours.to_json())
        return True

    # -- push -------------------------------------------------------------------------------------------

    def _own_clients(self) -> tuple[int, ...]:
        entry = self.registry().get(self.me, {})
        return tuple(entry.get("clients", ()))

    def push(self, report: SyncReport) -> None:
        """Send this device's updates past the push cursor as one log body (one object, or more with
        continuations past the object limit), then its head; first take back (and rebase over) our own log
        objects the mailbox holds past our push state (a restored device)."""
        db = self.vault.store
        pushed = _int_cursor(db.get_cursor("push", self.relay))
        state = _PushState.unpack(db.get_cursor("push-state", self.relay))
        remote = self.read_head(self.me)
        if remote is None and state.seq:
            raise MailboxError(
                f"this device's head (seq {state.seq}) is missing from {self.store.url}: the mailbox is not there as "
                "it was (a folder not mounted or not carried yet, another bucket or prefix); nothing was pushed. "
                f"If it was emptied on purpose, run `crdtsync relay rm {self.relay}` then `crdtsync relay add "
                f"{self.relay} URL` on every device: each then publishes again from the start",
                code="MAILBOX_OBJECT_MISSING")
        if remote is not None and remote.seq > state.seq:
            # Restored from a backup, or our push state was lost: take back what the mailbox holds of ours past
            # our push state (writes lost with the backup), then continue after it.
            recovered = max(state.seq, _int_cursor(db.get_cursor(f"pull:{self.relay}", self.me)))
            if recovered < remote.seq:
                self._rebase_reused_clocks(pushed, recovered, remote.seq)
                self._pull_device(self.me, remote, recovered, report, [0, 0, None])
            _, _, chain, _ = self._read_batch(log_key(self.tag, self.me, remote.seq), self.me, KIND_UPDATE,
                                              remote.seq)
            state = _PushState(seq=remote.seq, snap=remote.snap, first=remote.first, chain=chain)
        if self.vault.reapply_rebased():  # after a rebase (or a crash before it was re-applied)
            self._registry = None  # the writes went under a new client id, announced in the registry
        last_id = db.last_update_id()
        acks = {k: _int_cursor(v) for k, v in db.cursors(f"pull:{self.relay}").items()}
        if pushed == 0:
            update = self.vault.own_contribution()
        else:
            rows = self.vault.local_updates_after(pushed)
            if not rows:
                if remote is not None and remote.acks != acks:
                    self._put_head(Head(state.seq, state.snap, state.first, acks), report)
                return
            update = merge_updates(*[data for _, data in rows])
        seq = state.seq + 1
        clients = self._own_clients()
        body = Batch(seq, update, clients, prev=state.chain).to_body()
        chain = chain_digest(body)
        self._upload(log_key(self.tag, self.me, seq), KIND_UPDATE, body, report)
        snap = state.snap
        if seq - snap >= SNAPSHOT_EVERY:
            snap_body = Batch(seq, self.vault.own_contribution(), clients, prev=chain).to_body()
            self._upload(snap_key(self.tag, self.me, seq), KIND_SNAPSHOT, snap_body, report)
            if snap:
                self._delete_bodies("snap", [snap])
            snap = seq
        first = self._collect_garbage(state.first, snap)
        self._put_head(Head(seq, snap, first, acks), report)
        with db.write():
            db.set_cursor("push", self.relay, str(last_id).encode())
            db.set_cursor("push-state", self.relay, _PushState(seq, snap, first, chain).pack())

    def _rebase_reused_clocks(self, pushed: int, recovered: int, newest: int) -> None:
        """Before taking back our own log objects ``recovered + 1 .. newest`` (written by this device but unknown
        to its store: it was restored from a backup, or copied), make sure the writes it has not pushed yet did
        not reuse their Yjs clocks. A restore that also restored the state folder (:mod:`crdtsync.store.
        incarnation` then sees nothing) and was written to before this sync makes such writes: other devices
        would ignore them, and later writes that refer to them would land on the lost writes' Items there.
        When an unpushed write and a lost one are different Items under one ID
        (:func:`crdtsync.model.yupdate.item_positions`; a push whose cursor commit was lost holds the same Items),
        the unpushed writes are taken out of the vault and what they did is written again under a new client id
        (:meth:`crdtsync.vault.Vault.rebase_unpushed`), before the lost ones are taken back.

        Raises:
            MailboxError: ``DEVICE_CLOCKS_REUSED`` (with a persistent alarm) when they cannot be taken out (a
                snapshot holds them); nothing is pushed or taken back then.
        """
        mine = set(self._own_clients())
        unpushed = self.vault.local_updates_after(pushed)
        ours: dict[tuple[int, int], bytes] = {}
        for _, data in unpushed:
            ours.update((item, where) for item, where in item_positions(data).items() if item[0] in mine)
        if not ours:
            return
        reused = 0
        for seq in range(recovered + 1, newest + 1):
            batch, _, _, _ = self._read_batch(log_key(self.tag, self.me, seq), self.me, KIND_UPDATE, seq)
            lost = item_positions(batch.update)
            reused += sum(1 for item, where in ours.items() if lost.get(item, where) != where)
        if not reused:
            return
        try:
            self.vault.rebase_unpushed(unpushed, self.relay)
        except VaultError as exc:
            message = (f"this device was restored from a backup together with its state folder (or copied), and "
                       f"wrote before syncing: {reused} of its new Items reuse the Yjs clocks of writes that the "
                       f"backup lost and relay {self.relay} still holds, and {exc.message}. Pushing them would "
                       "make other devices ignore them or misplace later edits, so this relay is not synced from "
                       "this vault. Make a fresh copy with `crdtsync join` in a new folder and re-enter what was "
                       "written here since the restore (`crdtsync log` lists it)")
            self.vault.store.raise_alarm("DEVICE_CLOCKS_REUSED", message, relay=self.relay)
            raise MailboxError(message, code="DEVICE_CLOCKS_REUSED") from None
        # Re-applied before the lost writes come back, so that each is concurrent with them, as it was: where
        # both changed one field, both values show as a conflict.
        self.vault.reapply_rebased()
        self._registry = None

    def _upload(self, key: str, kind: int, body: bytes, report: SyncReport) -> None:
        for size in self._put_body(key, kind, body):
            report.objects_up += 1
            report.bytes_up += size

    def _put_head(self, head: Head, report: SyncReport) -> None:
        (sealed,) = self._seal(KIND_HEAD, head.to_body())
        self.store.put(head_key(self.tag, self.me), sealed)
        report.objects_up += 1
        report.bytes_up += len(sealed)

    def _collect_garbage(self, first: int, snap: int) -> int:
        """Delete our log objects below the snapshot that every other known device acknowledged."""
        others = [d for d in self.registry() if d != self.me]
        acked = {k: _int_cursor(v) for k, v in self.vault.store.cursors(f"acked:{self.relay}").items()}
        if not others or snap == 0:
            return first
        floor = min(min(acked.get(d, 0) for d in others), snap)
        self._delete_bodies("log", list(range(first, floor + 1)))
        return max(first, floor + 1)

    # -- pull -------------------------------------------------------------------------------------------

    def pull(self, report: SyncReport, progress: Progress | None = None) -> None:
        """Fetch and integrate every other device's log objects past our cursors. ``progress(done, total)`` is
        called with object counts once the heads are read and after each object."""
        # Only names shaped like device ids: a synced folder also collects .DS_Store, desktop.ini and the like.
        listed = {name for name in self.store.list(devices_prefix(self.tag)) if is_device_id(name)}
        heads: list[tuple[str, Head, int]] = []
        for device_id in sorted((listed | set(self.registry())) - {self.me}):
            try:
                checked = self._checked_head(device_id)
            except CrdtsyncError as exc:
                report.errors.append({"device": device_id, "code": exc.code, "message": exc.message})
                continue
            if checked is not None:
                heads.append((device_id, *checked))
        total = sum(head.seq - min(applied, head.seq) for _, head, applied in heads)
        counter = [0, total, progress]
        if progress is not None:
            progress(0, total)
        full: list[str] = []
        for device_id, head, applied in heads:
            try:
                self._pull_device(device_id, head, applied, report, counter)
            except CrdtsyncError as exc:
                if exc.code == "UPDATE_INBOX_FULL":
                    full.append(device_id)
                    continue
                report.errors.append({"device": device_id, "code": exc.code, "message": exc.message})
        # A device pulled later may have brought what the held updates waited for: go back once to those that
        # stopped on a full inbox, from where they stopped.
        for device_id, head, _ in heads:
            if device_id not in full:
                continue
            applied = _int_cursor(self.vault.store.get_cursor(f"pull:{self.relay}", device_id))
            try:
                self._pull_device(device_id, head, applied, report, counter)
            except CrdtsyncError as exc:
                report.errors.append({"device": device_id, "code": exc.code, "message": exc.message})

    def _checked_head(self, device_id: str) -> tuple[Head, int] | None:
        """The verified head of ``device_id`` and how far we applied its log, or None when it has no head;
        refuses a rollback and records what the head says (seen seq, its acks of us)."""
        db = self.vault.store
        applied = _int_cursor(db.get_cursor(f"pull:{self.relay}", device_id))
        seen = _int_cursor(db.get_cursor(f"seen:{self.relay}", device_id))
        head = self.read_head(device_id)
        if head is None:
            if seen:
                raise MailboxError(f"the head of device {device_id} disappeared from the mailbox",
                                   code="MAILBOX_OBJECT_MISSING")
            return None
        if head.seq < seen:
            raise MailboxError(f"device {device_id}'s head went back from seq {seen} to {head.seq}: the mailbox "
                               "serves an older state (rollback); refused", code="MAILBOX_ROLLBACK")
        with db.write():
            db.set_cursor(f"seen:{self.relay}", device_id, str(head.seq).encode())
            db.set_cursor(f"acked:{self.relay}", device_id, str(head.acks.get(self.me, 0)).encode())
        return head, applied

    def _pull_device(self, device_id: str, head: Head, applied: int, report: SyncReport, counter: list[Any]) -> None:
        """Integrate ``device_id``'s objects past ``applied`` (from its snapshot when the logs we need are gone),
        in groups of up to :data:`PULL_GROUP` objects; stops at the first object that cannot be read. Each log
        body must link to the hash of the one applied before it, else a fork alarm is raised. Stops too (with
        ``UPDATE_INBOX_FULL``, before fetching) when the inbox is full and this device already has updates
        waiting there (its next ones would wait behind them): the rest stays in the mailbox for a later sync,
        where a refusal would lose it for this device. A device with nothing waiting is still pulled: it may
        bring what the others wait for (the inbox overshoots by at most what one device sends)."""
        db = self.vault.store
        stored_chain = db.get_cursor(f"chain:{self.relay}", device_id)
        chain: bytes | None = b"" if applied == 0 else stored_chain
        if applied < head.first - 1:
            if not head.snap or head.snap < head.first - 1:
                raise MailboxError(f"device {device_id}'s log before seq {head.first} is gone and no snapshot "
                                   "covers it", code="MAILBOX_OBJECT_MISSING")
            snap = self._fetch(device_id, KIND_SNAPSHOT, head.snap, report)
            chain = snap[1].prev
            self._integrate(device_id, [snap], report, chain)
            applied = head.snap
        group: list[Fetched] = []
        size = 0
        try:
            for seq in range(applied + 1, head.seq + 1):
                if db.held_count() >= integration.MAX_HELD and device_id in db.held_origins():
                    raise MailboxError(
                        f"{integration.MAX_HELD} received updates wait for writes no relay has brought (`crdtsync "
                        f"status` shows whose); device {device_id}'s log from seq {seq} stays in the mailbox until "
                        "they integrate", code="UPDATE_INBOX_FULL")
                fetched = self._fetch(device_id, KIND_UPDATE, seq, report)
                if chain is not None and fetched[1].prev != chain:
                    message = (f"device {device_id} has two different signed histories: its log {seq} does not "
                               f"follow the log {seq - 1} this device applied from relay {self.relay}. Its "
                               "updates are refused from here; check that device (restored from an old backup, "
                               "or compromised?)")
                    db.raise_alarm("MAILBOX_FORK", message, device=device_id, relay=self.relay)
                    raise MailboxError(message, code="MAILBOX_FORK")
                chain = fetched[3]
                group.append(fetched)
                counter[0] += 1
                if counter[2] is not None:
                    counter[2](counter[0], counter[1])
                size += len(fetched[1].update)
                if len(group) >= PULL_GROUP or size >= PULL_GROUP_BYTES:
                    self._integrate(device_id, group, report, chain)
                    group, size = [], 0
        finally:
            if group:
                self._integrate(device_id, group, report, group[-1][3])

    def _allowed_clients(self, device_id: str, batch: Batch) -> set[int]:
        registry = self.registry()
        owned_elsewhere = {c for d, e in registry.items() if d != device_id for c in e.get("clients", ())}
        own = set(registry.get(device_id, {}).get("clients", ()))
        return own | (set(batch.clients) - owned_elsewhere)

    def _fetch(self, device_id: str, kind: int, seq: int, report: SyncReport) -> Fetched:
        key = (snap_key if kind == KIND_SNAPSHOT else log_key)(self.tag, device_id, seq)
        before = self.store.stats.bytes_down
        batch, registered, digest, parts = self._read_batch(key, device_id, kind, seq)
        report.objects_down += parts
        report.bytes_down += self.store.stats.bytes_down - before
        return seq, batch, registered, digest

    def _integrate(self, device_id: str, fetched: list[Fetched], report: SyncReport, chain: bytes | None) -> None:
        """Integrate fetched batches of one device in one call; the pull cursor (and hash chain) advance to the
        last of them in the transaction that stores them. Batches with structs of client ids the device does
        not own are quarantined (``UPDATE_FOREIGN_CLIENT``)."""
        db = self.vault.store
        last = fetched[-1][0]

        def stored() -> None:
            db.set_cursor(f"pull:{self.relay}", device_id, str(last).encode())
            if chain is not None:
                db.set_cursor(f"chain:{self.relay}", device_id, chain)

        results = self.vault.apply_updates(
            [(batch.update, device_id) for _, batch, _, _ in fetched],
            on_stored=stored,
            allowed_clients=[frozenset(self._allowed_clients(device_id, batch)) for _, batch, _, _ in fetched],
            limit_held=False,  # _pull_device bounds the inbox before it fetches; the cursor passes what is handed over
        )
        for (seq, _, _, _), result in zip(fetched, results, strict=True):
            if result.status == "refused":
                report.errors.append({"device": device_id, "code": result.code or "UPDATE_MALFORMED",
                                      "message": f"seq {seq}: {result.message}; quarantined"})
            report.memories_changed.update(result.changed)
        if not all(registered for _, _, registered, _ in fetched):
            self._registry = None


def sync_lock_path(vault_path: Path, relay: str) -> Path:
    """The lock file that keeps two processes from syncing one vault with one relay at once (in the vault
    folder, named after a hash of the relay name)."""
    return vault_path / f".sync-{hashlib.sha256(relay.encode()).hexdigest()[:16]}.lock"


def sync_relay(vault: Vault, store: BlobStore, relay: str, *, push: bool = True, pull: bool = True,
               progress: Progress | None = None, clock: Callable[[], float] = time.monotonic) -> SyncReport:
    """Push then pull one relay; returns what moved. ``progress(done, total)`` follows the objects pulled.
    Store errors of the whole relay (unreachable, denied) are reported in ``errors`` rather than raised, so a
    sync over several relays goes on; each sync writes an audit row.

    Two processes never sync one vault with one relay at once: both would write the next log object under the
    same seq and the device's history would fork (other devices raise ``MAILBOX_FORK`` and can lose the
    overwritten writes). The second waits for the first's OS file lock (:func:`sync_lock_path`, released when
    its process dies) for up to :data:`SYNC_LOCK_SECONDS`, then reports ``SYNC_BUSY`` and moves nothing."""
    started = clock()
    report = SyncReport(relay=relay)
    ops_before = store.stats.operations
    mailbox = Mailbox(vault, store, relay)
    try:
        check_apart(vault.path, store.url)  # a relay saved before crdtsync refused such a pair
        with FileLock(sync_lock_path(vault.path, relay), timeout=SYNC_LOCK_SECONDS):
            if push:
                mailbox.push(report)  # first: it refuses a mailbox that is not there as it was (an unmounted stick)
                if mailbox.publish_header(again=False):  # a v1 header is upgraded at the first sync
                    report.objects_up += 1
            if pull:
                mailbox.pull(report, progress)
                vault.devices()
    except Timeout:
        report.errors.append({"device": "", "code": "SYNC_BUSY", "message": (
            f"another process has been syncing this vault with relay {relay} for over {SYNC_LOCK_SECONDS:g} s; "
            "nothing was pushed or pulled: sync again once it is done")})
    except CrdtsyncError as exc:
        report.errors.append({"device": "", "code": exc.code, "message": exc.message})
    report.operations = store.stats.operations - ops_before
    report.conflicts = len(vault.conflicts())
    report.seconds = clock() - started
    vault.store.record_sync(relay, report.to_json())
    return report
