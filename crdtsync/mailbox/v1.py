"""Reading relays of mailbox protocol v1 (crdtsync up to 9204cbf), for devices that have not written a v2 log.

A v1 device wrote, in each relay separately, its own log ``d/<device_id>/log/<seq:016x>`` (seq per relay,
bodies chained by ``prev``), snapshots ``d/<device_id>/snap/<seq>`` and a head ``d/<device_id>/head``
(``{seq, snap, first, acks}``, no digests). This version reads them, never writes them: once a device syncs
with this version its writes travel in its v2 log (its first entry holds its whole contribution), and its v1
objects are no longer read. What was applied of each v1 log is kept per relay in the ``cursors`` table
(scopes ``pull:<relay>``, ``chain:<relay>``, ``seen:<relay>``), as 9204cbf kept it.
"""

from __future__ import annotations

from typing import Protocol

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.crypto.keys import is_device_id
from crdtsync.errors import CrdtsyncError, MailboxError
from crdtsync.mailbox.ports import VaultReplica
from crdtsync.mailbox.relay import RelayView
from crdtsync.protocol.mailbox import part_key, vault_prefix
from crdtsync.protocol.messages import Batch, Entry
from crdtsync.protocol.sealing import Keyring, OpenedEntry, open_entry, open_head
from crdtsync.store.db import Store


class LegacyReader(Protocol):
    """What reading v1 logs needs of the sync that runs it (:class:`crdtsync.mailbox.sync.AuthorLogSync`)."""

    db: Store
    tag: str
    me: str
    replica: VaultReplica

    @property
    def keyring(self) -> Keyring:
        """The keys to open with."""

    def sender_key(self, device_id: str, epoch: int) -> bytes | None:
        """The registered signing key of ``device_id``."""

    def allowed_clients(self, author: str, batch: Batch) -> frozenset[int]:
        """The Yjs client ids an entry of ``author`` may write under."""

    def forget_registry(self) -> None:
        """Read the registry again when next needed."""


def devices_prefix(tag: str) -> str:
    """The folder of the v1 per-relay logs of every device that pushed with protocol v1."""
    return f"{vault_prefix(tag)}/d"


def head_key(tag: str, device_id: str) -> str:
    """The v1 head object of ``device_id``."""
    return f"{devices_prefix(tag)}/{device_id}/head"


def log_key(tag: str, device_id: str, seq: int) -> str:
    """The v1 log object ``seq`` of ``device_id``."""
    return f"{devices_prefix(tag)}/{device_id}/log/{seq:016x}"


def snap_key(tag: str, device_id: str, seq: int) -> str:
    """The v1 snapshot object of ``device_id`` as of ``seq``."""
    return f"{devices_prefix(tag)}/{device_id}/snap/{seq:016x}"


def pull_legacy(sync: LegacyReader, live: list[RelayView]) -> None:
    """Apply, from each relay of ``live``, the v1 logs of devices that have written no v2 log anywhere this
    sync looked (nor to this device), past what this device applied of them from that relay."""
    v2 = {author for relay in live for author in relay.heads} | set(sync.db.authors())
    for relay in live:
        prefix = f"{devices_prefix(sync.tag)}/"
        listed = {key[len(prefix):].split("/", 1)[0] for key in relay.objects if key.startswith(prefix)}
        for device in sorted(d for d in listed if is_device_id(d) and d not in v2 and d != sync.me):
            try:
                _pull_device(sync, relay, device)
            except CrdtsyncError as exc:
                relay.fail(exc, device)


def _pull_device(sync: LegacyReader, relay: RelayView, device: str) -> None:
    """Integrate ``device``'s v1 log in ``relay`` past this device's cursor (from its snapshot when the logs
    needed are gone); stops at the first object that cannot be read. A head that went back is refused
    (``MAILBOX_ROLLBACK``), a log that does not follow the one applied before raises the fork alarm."""
    db = sync.db
    applied = int(db.get_cursor(f"pull:{relay.name}", device) or b"0")
    seen = int(db.get_cursor(f"seen:{relay.name}", device) or b"0")
    key = head_key(sync.tag, device)
    data = relay.store.get(key)
    if data is None:
        return
    relay.report.objects_down += 1
    relay.report.bytes_down += len(data)
    head = open_head(sync.keyring, sync.sender_key, data, device, key)
    if head.seq < seen:
        raise MailboxError(f"device {device}'s head went back from seq {seen} to {head.seq}: the mailbox serves "
                           "an older state (rollback); refused", code="MAILBOX_ROLLBACK")
    with db.write():
        db.set_cursor(f"seen:{relay.name}", device, str(head.seq).encode())
    chain = b"" if applied == 0 else db.get_cursor(f"chain:{relay.name}", device) or b""
    if applied < head.first - 1:
        if not head.snap or head.snap < head.first - 1:
            raise MailboxError(f"device {device}'s log before seq {head.first} is gone and no snapshot covers it",
                               code="MAILBOX_OBJECT_MISSING")
        opened = _read(sync, relay, device, KIND_SNAPSHOT, head.snap)
        _apply(sync, relay, device, head.snap, opened, opened.batch.prev)
        applied, chain = head.snap, opened.batch.prev
    for seq in range(applied + 1, head.seq + 1):
        opened = _read(sync, relay, device, KIND_UPDATE, seq)
        if opened.batch.prev != chain:
            message = (f"device {device} has two different signed histories: its log {seq} does not follow the "
                       f"log {seq - 1} this device applied from relay {relay.name}. Its updates are refused from "
                       "here; check that device (restored from an old backup, or compromised?)")
            db.raise_alarm("MAILBOX_FORK", message, device=device, relay=relay.name)
            raise MailboxError(message, code="MAILBOX_FORK")
        chain = opened.digest
        _apply(sync, relay, device, seq, opened, chain)


def _read(sync: LegacyReader, relay: RelayView, device: str, kind: int, seq: int) -> OpenedEntry:
    key = (snap_key if kind == KIND_SNAPSHOT else log_key)(sync.tag, device, seq)
    parts: list[bytes] = []
    while True:
        part = part_key(key, len(parts))
        if parts and part not in relay.objects:
            break
        data = relay.store.get(part)
        if data is None:
            raise MailboxError(f"{part} is not in the mailbox (yet); it will be read on the next sync",
                               code="MAILBOX_OBJECT_MISSING")
        relay.report.objects_down += 1
        relay.report.bytes_down += len(data)
        parts.append(data)
    return open_entry(sync.keyring, sync.sender_key, Entry(device, kind, seq, tuple(parts)), key)


def _apply(sync: LegacyReader, relay: RelayView, device: str, seq: int, opened: OpenedEntry, chain: bytes) -> None:
    def stored() -> None:
        sync.db.set_cursor(f"pull:{relay.name}", device, str(seq).encode())
        sync.db.set_cursor(f"chain:{relay.name}", device, chain)

    (result,) = sync.replica.apply_updates([(opened.batch.update, device)], on_stored=stored,
                                           allowed_clients=[sync.allowed_clients(device, opened.batch)],
                                           limit_held=False)
    if result.status == "refused":
        relay.report.errors.append({"device": device, "code": result.code or "UPDATE_MALFORMED",
                                    "message": f"seq {seq}: {result.message}; quarantined"})
    relay.report.memories_changed.update(result.changed)
    if not opened.registered:
        sync.forget_registry()

