"""This device's author logs (protocol v2) over its vault, whatever carries them: what it holds of every author
(summaries, entries, heads), taking in entries and heads from anyone (checked, kept as received, integrated),
its own next entry and head, and compaction. The mailbox driver (:mod:`crdtsync.mailbox.sync`) and the live
sessions (:mod:`crdtsync.protocol.session` over a transport) move entries; the decisions are here and in
:mod:`crdtsync.protocol.authorlog`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from pycrdt import merge_updates

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.crypto.epochs import EpochView
from crdtsync.crypto.keys import is_device_id, vault_tag
from crdtsync.errors import CrdtsyncError, EnvelopeError, MailboxError
from crdtsync.mailbox.backend import MAX_OBJECT_BYTES
from crdtsync.mailbox.ports import VaultReplica
from crdtsync.model.authorship import epoch_view, registered_key
from crdtsync.protocol.authorlog import check_entry, compaction_floor, contradicts, fork_error
from crdtsync.protocol.messages import Ack, Batch, Entry, Head, Summary, chain_digest
from crdtsync.protocol.sealing import Keyring, OpenedEntry, open_entry, open_head, seal_entry, seal_head
from crdtsync.store import integration
from crdtsync.store.integration import ApplyResult

#: A device writes a snapshot of its contribution every this many log entries.
SNAPSHOT_EVERY = 256
#: Codes of an envelope that may open once an epoch statement this device has not integrated yet gives it the key:
#: an epoch it does not hold, or (two statements made one epoch number at once) another key of that number.
KEY_NOT_HELD_CODES = frozenset({"ENVELOPE_UNKNOWN_EPOCH", "ENVELOPE_DECRYPT_FAILED"})
#: ``meta`` key: how many envelopes this device sealed under an epoch (``sealed:<epoch>``).
SEALED_META = "sealed:{epoch}"
#: ``cursors`` scope and key of the id of the newest local update this device's own log holds (the store's
#: compaction keeps every local update past it).
LOGGED_SCOPE, LOGGED_KEY = "push", ""


@dataclass(frozen=True)
class Accepted:
    """An entry checked against its author's chain and ready to integrate: the entry as received, its opened
    body, and the chain digest the author's log has once it is applied."""

    entry: Entry
    opened: OpenedEntry
    chain: bytes


class AuthorLogReplica:
    """This device's author logs over ``replica`` (see the module docstring).

    Args:
        replica: the vault (:class:`~crdtsync.mailbox.ports.VaultReplica`).
        randbytes: the nonce source of the envelopes this device seals.
        snapshot_every: how many log entries between this device's snapshots (:data:`SNAPSHOT_EVERY`).
    """

    def __init__(self, replica: VaultReplica, randbytes: Callable[[int], bytes] = os.urandom,
                 snapshot_every: int | None = None) -> None:
        self.replica = replica
        self.db = replica.store
        secrets = replica.secrets
        self.me = secrets.device.device_id
        self.tag = vault_tag(secrets.vault_id)
        self.randbytes = randbytes
        self.snapshot_every = snapshot_every or SNAPSHOT_EVERY
        self._registry: dict[str, dict[str, Any]] | None = None
        self._view: EpochView | None = None
        #: Authors revoked past the point their pending head names: that head stands in for a newer one of
        #: theirs and is never stored.
        self.clamped: set[str] = set()
        #: Verified heads newer than the ones stored (author -> (head, envelope as received)): an author's is
        #: stored once its entries up to it are applied.
        self.pending: dict[str, tuple[Head, bytes]] = {}

    # -- keys and registry ------------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keys to seal and open with, as this device holds them now (a settled epoch changes them)."""
        secrets = self.replica.secrets
        return Keyring(secrets.vault_id, secrets.epochs, secrets.current_epoch, secrets.device,
                       secrets.alternates)

    def view(self) -> EpochView:
        """What the epoch statements of the registry mean (cached with the registry)."""
        if self._view is None:
            self._view = epoch_view(self.registry(), self.replica.secrets.vault_id)
        return self._view

    def settle(self) -> bool:
        """Take up the keys and current epoch the statements give this device (see
        :meth:`crdtsync.vault.Vault.settle_epochs`); returns whether they changed.

        Raises:
            VaultError: ``DEVICE_REVOKED``.
        """
        changed = self.replica.settle_epochs()
        self.forget_registry()
        for author, (head, data) in list(self.pending.items()):
            if author not in self.clamped and self.past_limit(author, head.seq):
                del self.pending[author]
                self._take_revoked_head(author, head, data)
        return changed

    def refuse_revoked(self, author: str, seq: int, where: str) -> None:
        """Refuse entry ``seq`` of ``author`` when it is past what this device takes of a revoked author
        (:meth:`limit`).

        Raises:
            EnvelopeError: ``ENVELOPE_REVOKED_SENDER``.
        """
        if self.past_limit(author, seq):
            revocation = self.view().revoked[author]
            raise EnvelopeError(
                f"{where} is entry {seq} of device {author}, which device {revocation.by} revoked after its entry "
                f"{revocation.seq} (no active device applied it either): what a revoked device writes later is "
                "refused, whoever relays it", code="ENVELOPE_REVOKED_SENDER")

    def limit(self, author: str) -> int | None:
        """The last entry of ``author`` this device takes when it is revoked (None: it is not): its revocation
        point, or further when an active device's signed head acknowledges more of it (a member that applied
        entries of it before the revocation reached it; taking them too keeps every member's memories the same)."""
        revocation = self.view().revoked.get(author)
        if revocation is None:
            return None
        revoked = self.view().revoked
        heads = {device: head for device, (head, _) in self.pending.items()}
        for device, row in self.db.authors().items():
            if device not in heads and row.head is not None and device not in revoked:
                try:
                    heads[device] = open_head(self.keyring, self.sender_key, row.head, device, "a stored head")
                except CrdtsyncError:
                    continue
        acked = max((head.acks.get(author, Ack(0)).seq for device, head in heads.items()
                     if device not in revoked and device != author), default=0)
        return max(revocation.seq, acked)

    def past_limit(self, author: str, seq: int) -> bool:
        """Whether entry ``seq`` of ``author`` is past what this device takes of it (:meth:`limit`)."""
        limit = self.limit(author)
        return limit is not None and seq > limit

    def registry(self) -> dict[str, dict[str, Any]]:
        """The device registry of the vault (cached until :meth:`forget_registry`)."""
        if self._registry is None:
            self._registry = self.replica.devices()
        return self._registry

    def forget_registry(self) -> None:
        """Read the registry again when next needed (an update that registered a device or made an epoch
        statement was applied)."""
        self._registry = None
        self._view = None

    def sender_key(self, device_id: str, epoch: int) -> bytes | None:
        """The registered signing key of ``device_id`` (see :data:`crdtsync.protocol.sealing.SenderKey`)."""
        return registered_key(self.registry(), device_id)

    def allowed_clients(self, author: str, batch: Batch) -> frozenset[int]:
        """The Yjs client ids an entry of ``author`` may write under: those it registered, and those its body
        announces that no other device owns (a joining device's)."""
        registry = self.registry()
        owned_elsewhere = {c for d, e in registry.items() if d != author for c in e.get("clients", ())}
        own = set(registry.get(author, {}).get("clients", ()))
        return frozenset(own | (set(batch.clients) - owned_elsewhere))

    def _sealed_count(self) -> int:
        return int(self.db.get_meta(SEALED_META.format(epoch=self.keyring.epoch)) or 0)

    # -- what this device holds -------------------------------------------------------------------------

    def summary(self) -> Summary:
        """What this device holds of every author it holds anything of (its own log included)."""
        return {author: self.db.have(author) for author in self.db.authors()}

    def entry(self, author: str, kind: int, seq: int) -> Entry | None:
        """A held entry as it was received (or sealed here), or None."""
        parts = self.db.entry_parts(author, kind, seq)
        return None if parts is None else Entry(author, kind, seq, tuple(parts))

    def stored_head(self, author: str) -> Head | None:
        """The newest verified head of ``author`` this device holds, opened (None: none)."""
        data = self.db.author(author).head
        return None if data is None else open_head(self.keyring, self.sender_key, data, author, "a stored head")

    # -- heads ------------------------------------------------------------------------------------------

    def take_head(self, author: str, data: bytes, where: str) -> Head:
        """Verify the head envelope ``data`` of ``author`` from ``where``; raise the fork alarm when it (or an ack
        in it) gives a digest this device holds otherwise; keep it as pending when newer than what this device
        holds (stored once its entries are applied: :meth:`keep_heads`). Returns it.

        Raises:
            EnvelopeError, MailboxError: the head does not open (its code); ``MAILBOX_FORK``.
        """
        head = open_head(self.keyring, self.sender_key, data, author, where)
        checks = [(author, head.seq, head.digest)] + [(a, ack.seq, ack.digest) for a, ack in head.acks.items()]
        for subject, seq, digest in checks:
            if is_device_id(subject) and contradicts(self.db.known_digests(subject), seq, digest):
                error = fork_error(subject, seq, f"{where} ({'head' if subject == author else 'an ack'})")
                self.db.raise_alarm("MAILBOX_FORK", error.message, device=subject)
                raise error
        row = self.db.author(author)
        if self.past_limit(author, head.seq):
            self._take_revoked_head(author, head, data)
            return head
        newest = self.pending.get(author)
        if head.newer_than(newest[0] if newest else None) and (
                row.head is None or (head.seq, head.n) > (row.head_seq, row.head_n)):
            self.pending[author] = (head, data)
        return head

    def _take_revoked_head(self, author: str, head: Head, data: bytes) -> None:
        """A head of a revoked device past its revocation point: its entries up to the point still count, so while
        this device lacks some of them the head stands in for the one of that point (never stored)."""
        point = self.limit(author) or 0
        if self.db.author(author).applied < point and author not in self.pending:
            self.pending[author] = (replace(head, seq=point, digest=b"", snap=head.snap if head.snap <= point else 0),
                                    data)
            self.clamped.add(author)

    def check_summary(self, summary: Summary, where: str) -> None:
        """Raise the fork alarm when ``summary`` (what another device holds) names a digest for an author's seq
        that differs from the one this device holds.

        Raises:
            MailboxError: ``MAILBOX_FORK``.
        """
        for author, have in sorted(summary.items()):
            if contradicts(self.db.known_digests(author), have.seq, have.digest):
                error = fork_error(author, have.seq, where)
                self.db.raise_alarm("MAILBOX_FORK", error.message, device=author)
                raise error

    def keep_heads(self) -> None:
        """Store the pending heads whose entries this device has applied (a head that only renewed its acks, or
        one whose entries were just brought)."""
        with self.db.write():
            for author, (head, data) in self.pending.items():
                row = self.db.author(author)
                if author != self.me and author not in self.clamped and row.applied == head.seq and (
                        head.digest in (row.chain, b"")) and (
                        row.head is None or (head.seq, head.n) > (row.head_seq, row.head_n)):
                    self.db.set_head(author, data, head.seq, head.n)

    def holders(self, author: str) -> dict[str, Any]:
        """``{seq, holders}``: the entry of ``author`` this device waits for and the devices whose heads (stored,
        or read in this sync) say they applied it: they can supply it."""
        seq = self.db.author(author).applied + 1
        heads = {device: head for device, (head, _) in self.pending.items()}
        for device, row in self.db.authors().items():
            if row.head is None or device in heads:
                continue
            try:
                heads[device] = open_head(self.keyring, self.sender_key, row.head, device, "a stored head")
            except CrdtsyncError:
                continue
        holders = [device for device, head in heads.items() if device != self.me and (
            (device == author and head.seq >= seq) or head.acks.get(author, Ack(0)).seq >= seq)]
        return {"seq": seq, "holders": sorted(holders)}

    # -- taking entries in ------------------------------------------------------------------------------

    def check_room(self, author: str, seq: int) -> None:
        """Refuse to take more of ``author`` while the inbox is full and its updates already wait there.

        Raises:
            MailboxError: ``UPDATE_INBOX_FULL``.
        """
        if self.db.held_count() >= integration.MAX_HELD and author in self.db.held_origins():
            raise MailboxError(
                f"{integration.MAX_HELD} received updates wait for writes no device has brought (`crdtsync status` "
                f"shows whose); device {author}'s log from seq {seq} is left where it is until they integrate",
                code="UPDATE_INBOX_FULL")

    def accept(self, entry: Entry, applied: int, chain: bytes, where: str) -> Accepted:
        """Open ``entry``, check it follows its author's log applied up to ``applied`` (digest ``chain``), and keep
        it as received (its own transaction: an entry kept but not yet integrated is fetched and kept again by the
        next sync, and served meanwhile as the author signed it). The :class:`Accepted` returned no longer holds
        the parts, so a large entry is not in memory twice while it integrates.

        Raises:
            EnvelopeError, MailboxError: the entry does not open, is not what was expected, or does not follow
                the chain (``MAILBOX_FORK``, with a persistent alarm).
        """
        self.refuse_revoked(entry.author, entry.seq, where)
        opened = open_entry(self.keyring, self.sender_key, entry, where)
        try:
            check_entry(entry.author, applied, chain, entry.kind, opened.batch, where)
        except MailboxError as exc:
            if exc.code == "MAILBOX_FORK":
                self.db.raise_alarm("MAILBOX_FORK", exc.message, device=entry.author)
            raise
        link = opened.batch.prev if entry.kind == KIND_SNAPSHOT else opened.digest
        with self.db.write():
            self.db.put_entry(entry.author, entry.kind, entry.seq, link, list(entry.parts))
        return Accepted(replace(entry, parts=()), opened, link)

    def integrate(self, group: list[Accepted]) -> list[tuple[Entry, ApplyResult]]:
        """Integrate the updates of ``group`` (one author's accepted entries, in order, each accepted after the
        one before); the author's applied point moves to the last of them, and its pending head is stored when it
        names that point, in the transaction that stores the updates. Updates with structs of client ids the
        author does not own are quarantined (``UPDATE_FOREIGN_CLIENT``), their entries kept (they are the
        author's, and every device refuses them alike). Returns each entry's result."""
        author = group[0].entry.author
        last = group[-1]

        def stored() -> None:
            self.db.set_applied(author, last.entry.seq, last.chain)
            pending = self.pending.get(author)
            if (pending is not None and author not in self.clamped and pending[0].seq == last.entry.seq
                    and pending[0].digest in (last.chain, b"")):
                self.db.set_head(author, pending[1], pending[0].seq, pending[0].n)

        results = self.replica.apply_updates(
            [(item.opened.batch.update, author) for item in group], on_stored=stored,
            allowed_clients=[self.allowed_clients(author, item.opened.batch) for item in group], limit_held=False)
        self.forget_registry()  # it may have registered a device or brought an epoch statement
        return [(item.entry, result) for item, result in zip(group, results, strict=True)]

    # -- this device's own log --------------------------------------------------------------------------

    def logged_updates(self) -> list[tuple[int, bytes]]:
        """This device's logged updates that its own log does not hold yet."""
        return self.replica.local_updates_after(int(self.db.get_cursor(LOGGED_SCOPE, LOGGED_KEY) or b"0"))

    def commit(self) -> Entry | None:
        """Make this device's writes since its last entry its next log entry (and a snapshot entry every
        :attr:`snapshot_every`), stored in one transaction with the cursor of what the log holds. Returns the
        new log entry, or None when there was nothing to write."""
        if self.replica.reapply_rebased():
            self.forget_registry()
        with self.db.write():  # one process at a time decides this device's next seq
            row = self.db.author(self.me)
            last_id = self.db.last_update_id()
            if row.applied == 0:
                update = self.replica.own_contribution()
            else:
                rows = self.logged_updates()
                if not rows:
                    return None
                update = merge_updates(*[data for _, data in rows])
            self.forget_registry()  # another process of this device may have registered a client id since
            clients = tuple(self.registry().get(self.me, {}).get("clients", ()))
            seq = row.applied + 1
            body = Batch(seq, update, clients, prev=row.chain).to_body()
            digest = chain_digest(body)
            count = self._sealed_count()
            parts, count = seal_entry(self.keyring, KIND_UPDATE, body, sealed_count=count,
                                      max_part_bytes=MAX_OBJECT_BYTES, randbytes=self.randbytes)
            snapshot: list[bytes] | None = None
            if seq - self.db.have(self.me).snap >= self.snapshot_every:
                snap_body = Batch(seq, self.replica.own_contribution(), clients, prev=digest).to_body()
                snapshot, count = seal_entry(self.keyring, KIND_SNAPSHOT, snap_body, sealed_count=count,
                                             max_part_bytes=MAX_OBJECT_BYTES, randbytes=self.randbytes)
            self.db.set_meta(SEALED_META.format(epoch=self.keyring.epoch), str(count))
            self.db.put_entry(self.me, KIND_UPDATE, seq, digest, parts)
            if snapshot is not None:
                self.db.put_entry(self.me, KIND_SNAPSHOT, seq, digest, snapshot)
            self.db.set_applied(self.me, seq, digest)
            if row.applied == 0:  # the per-relay push cursors of protocol v1 hold nothing back any more
                for relay in self.db.cursors(LOGGED_SCOPE):
                    self.db.set_cursor(LOGGED_SCOPE, relay, str(last_id).encode())
            self.db.set_cursor(LOGGED_SCOPE, LOGGED_KEY, str(last_id).encode())
        return Entry(self.me, KIND_UPDATE, seq, tuple(parts))

    def renew_head(self) -> bytes | None:
        """Seal a new head of this device when its seq, snapshot, lowest log or acks changed (or a newer head of
        its own was seen elsewhere); returns it, or None when the stored one stands."""
        with self.db.write():  # one process at a time numbers this device's heads
            return self._renew_head()

    def _renew_head(self) -> bytes | None:
        own = self.db.have(self.me)
        if own.seq == 0:
            return None
        acks = {author: Ack(row.applied, row.chain) for author, row in self.db.authors().items()
                if author != self.me and row.applied}
        current = self.stored_head(self.me)
        seen = self.pending.get(self.me)
        n = max(current.n if current is not None else 0, seen[0].n if seen is not None else 0) + 1
        head = Head(seq=own.seq, snap=own.snap, first=own.first, digest=own.digest, n=n, acks=acks)
        if seen is None and current is not None and replace(current, n=n) == head:
            return None
        count = self._sealed_count()
        data = seal_head(self.keyring, head, sealed_count=count, randbytes=self.randbytes)
        with self.db.write():
            self.db.set_meta(SEALED_META.format(epoch=self.keyring.epoch), str(count + 1))
            self.db.set_head(self.me, data, head.seq, head.n)
        self.pending.pop(self.me, None)
        return data

    def compact(self, seen: Iterable[str] = ()) -> None:
        """Drop the entries that the heads no longer keep: this device's own log below the floor that every
        other device it knows of (registered, held here, or ``seen`` elsewhere) acknowledged and its snapshot
        covers, other authors' below their heads' lowest kept seq; renews the head when its own log moved."""
        rows = self.db.authors()
        readers = (set(self.registry()) | set(rows) | set(seen)) - {self.me} - set(self.view().revoked)
        acks: dict[str, int] = {}
        heads: dict[str, Head] = {}
        for device, row in rows.items():
            if row.head is None:
                continue
            try:
                heads[device] = open_head(self.keyring, self.sender_key, row.head, device, "a stored head")
            except CrdtsyncError:
                continue
            if device != self.me:
                acks[device] = heads[device].acks.get(self.me, Ack(0)).seq
        own = self.db.have(self.me)
        floor = compaction_floor(own.snap, acks, readers) if readers else 0
        with self.db.write():
            if floor >= own.first:
                self.db.drop_entries(self.me, floor + 1, own.snap)
            for device, head in heads.items():
                if device != self.me and head.first > 1:
                    self.db.drop_entries(device, head.first, head.snap)
        if floor >= own.first:
            self.renew_head()
