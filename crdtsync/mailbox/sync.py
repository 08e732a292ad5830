"""Mailbox protocol v2, the driver: every author's log carried through every relay, relays healed, over
:class:`~crdtsync.mailbox.ports.ObjectStore` (a :class:`~crdtsync.mailbox.backend.BlobStore` of any fsspec backend).

Layout under a vault's folder (README.md "Mailbox layout" is the spec)::

    a/<author>/log/<seq:016x>[.<part>]   the author's log entry seq (its parts: .1, .2... continue it)
    a/<author>/snap/<seq:016x>[.<part>]  the author's snapshot as of seq
    a/<author>/head                      the author's newest head (crdtsync.protocol.messages.Head)

Every object under ``a/<author>/`` is the author's own, sealed and signed by it; any device writes it there byte
for byte as it holds it (bridging, healing), so whoever writes an object writes the same bytes. One sync of a
vault with its relays (:func:`sync_relays`):

1. **look**: list each relay's vault folder recursively (one listing, whatever the number of authors) and read
   the heads that changed since this device last read them (the listing's size and modification mark say so);
   each head is verified, compared with what this device knows of its author (a different digest for one seq
   raises ``MAILBOX_FORK``), and a head older than the newest this device verified is a rollback, healed below.
2. **restore**: a relay holding a head of this device newer than this device's own log means it was restored
   from a backup (or its store was copied): its own entries past its log are taken back first (and writes made
   since the restore that reused their Yjs clocks are rebased), so that its log goes on after them.
3. **commit**: this device's writes since its last entry become its next log entry (seq + 1, chained), once,
   whatever the number of relays; every :data:`crdtsync.replication.SNAPSHOT_EVERY` seqs a snapshot entry
   follows.
4. **pull**: for every other author, the entries past what this device applied, from whichever relay holds
   them, in order, each opened and checked (:mod:`crdtsync.protocol.sealing`, :mod:`crdtsync.protocol.
   authorlog`), kept as received and integrated in one transaction with the author's applied point.
5. **head and compaction**: this device's head (its seq, snapshot, lowest log kept, and acks with digests of
   every author it applied) is renewed when it changed; an author's entries that its head no longer keeps are
   dropped here, and this device's own log is cut below the floor every registered device acknowledged.
6. **put**: each relay receives what it lacks of every author this device holds (entries its listing does not
   show or shows at another size, then the head when the relay's is older or missing), and loses what the
   authors' heads no longer keep; ``vault.json`` is put back when it is missing, damaged or another vault's.

Version 1 relays (per-relay logs under ``d/``, written up to 9204cbf) are still read for devices that have not
written a v2 log (:mod:`crdtsync.mailbox.v1`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from filelock import FileLock, Timeout

from crdtsync.crypto.envelope import KIND_SNAPSHOT
from crdtsync.crypto.header import VaultHeader
from crdtsync.crypto.keys import is_device_id, vault_tag
from crdtsync.errors import CrdtsyncError, MailboxError, VaultError
from crdtsync.mailbox import v1
from crdtsync.mailbox.backend import check_apart
from crdtsync.mailbox.ports import ObjectStore, VaultReplica
from crdtsync.mailbox.relay import RelayView, SyncReport
from crdtsync.model.yupdate import item_positions
from crdtsync.protocol.mailbox import (
    Remembered,
    author_key,
    entries_to_fetch,
    entry_key,
    header_action,
    header_confirmation,
    header_key,
    heads_to_read,
    listed_authors,
    listed_parts,
    newest_listed,
    plan_author,
    token,
    vault_prefix,
)
from crdtsync.protocol.messages import Entry, Head
from crdtsync.protocol.sealing import open_head
from crdtsync.replication import KEY_NOT_HELD_CODES, Accepted, AuthorLogReplica

#: A callback ``(objects done, objects in all)`` for long pulls.
Progress = Callable[[int, int], None]
#: Seconds a sync waits for another process's sync of the same vault and relay before it reports SYNC_BUSY.
SYNC_LOCK_SECONDS = 120.0
#: A pull integrates at most this many entries, or bytes of updates, per transaction.
PULL_GROUP = 64
PULL_GROUP_BYTES = 64 * 1024 * 1024

def sync_lock_path(vault_path: Path, relay: str) -> Path:
    """The lock file that keeps two processes from syncing one vault with one relay at once (in the vault
    folder, named after a hash of the relay name)."""
    return vault_path / f".sync-{hashlib.sha256(relay.encode()).hexdigest()[:16]}.lock"


class AuthorLogSync:
    """One sync of a vault's author logs (``logs``) with ``relays`` ((name, store) pairs): see the module
    docstring."""

    def __init__(self, logs: AuthorLogReplica, relays: Sequence[tuple[str, ObjectStore]]) -> None:
        self.logs = logs
        self.db = logs.db
        self.me = logs.me
        self.tag = logs.tag
        self.relays = [RelayView(name, store, SyncReport(relay=name)) for name, store in relays]
        #: Authors whose head a relay holds under an epoch this device does not hold yet: the relays.
        self.unread: dict[str, list[RelayView]] = {}

    # -- the sync ---------------------------------------------------------------------------------------

    def run(self, *, push: bool, pull: bool, progress: Progress | None = None) -> list[SyncReport]:
        """Look, restore, commit, pull, renew the head, put (``push`` and ``pull`` choose the halves); returns
        one report per relay. Errors of one relay or one author are reported and the rest goes on."""
        for relay in self.relays:
            self._look(relay)
        live = [r for r in self.relays if r.usable]
        try:
            try:
                self.logs.settle()  # a new epoch this device made and did not finish
            except VaultError as exc:
                if exc.code != "DEVICE_REVOKED":
                    raise
                push = False  # nothing leaves a revoked device; the pull may bring what voids its revocation
            self._restore(live)
            if push:
                self.logs.commit()
            if pull:
                self._pull_unread_heads()
                self._pull(live, progress)
                v1.pull_legacy(self.logs, live)
                self._note_waits(live)
                self.logs.settle()
            self.logs.keep_heads()
            self.logs.renew_head()
            self.logs.compact(a for r in self.relays for a in r.heads)
            if push:
                for relay in live:
                    self._put(relay)
        except CrdtsyncError as exc:
            for relay in live:
                if exc.code == "DEVICE_REVOKED":  # what else went wrong no longer matters
                    relay.report.errors.clear()
                relay.fail(exc)
        return [relay.report for relay in self.relays]

    # -- look -------------------------------------------------------------------------------------------

    def _look(self, relay: RelayView) -> None:
        """List the relay's vault folder and read the heads that changed since the last sync."""
        try:
            if relay.store.root_missing():
                raise MailboxError(f"the folder of relay {relay.name} ({relay.store.url}) is not there (a stick or "
                                   "drive not mounted, a folder moved?): nothing was synced through it",
                                   code="MAILBOX_UNAVAILABLE")
            relay.objects = relay.store.walk(vault_prefix(self.tag))
        except CrdtsyncError as exc:
            relay.usable = False
            relay.fail(exc)
            return
        authors = {author for author in listed_authors(relay.objects, self.tag) if is_device_id(author)}
        remembered = {author: Remembered(*row) for author in authors
                      if (row := self.db.relay_head(relay.name, author)) is not None}
        applied = {author: self.db.author(author).applied for author in authors}
        to_read = set(heads_to_read(relay.objects, self.tag, authors, remembered, applied, self.me))
        for author in sorted(authors):
            if author not in to_read:
                relay.heads[author] = (remembered[author].seq, remembered[author].n)
                continue
            key = author_key(self.tag, author, "head")
            try:
                self._read_head(relay, author, key, token(relay.objects[key]))
            except CrdtsyncError as exc:
                # A folder of no registered device whose head does not open (junk, a stranger's) holds nothing
                # any device waits for: it is reported and every other author syncs.
                known = author in self.logs.registry() or author in self.db.authors()
                if known and exc.code in KEY_NOT_HELD_CODES:
                    self.unread.setdefault(author, []).append(relay)
                    continue
                (relay.fail if known or exc.code == "MAILBOX_FORK" else relay.warn)(exc, author, object=key)

    def _read_head(self, relay: RelayView, author: str, key: str, token: str) -> None:
        data = relay.store.get(key)
        relay.report.objects_down += 1
        if data is None:
            return
        relay.report.bytes_down += len(data)
        head = self.logs.take_head(author, data, key)
        relay.heads[author] = (head.seq, head.n)
        remembered = self.db.relay_head(relay.name, author)
        if remembered is not None and (remembered[1], remembered[2]) > (head.seq, head.n):
            relay.rolled_back.add(author)  # put back below, and reported as healed
        with self.db.write():
            self.db.set_relay_head(relay.name, author, token, head.seq, head.n)

    # -- restore ----------------------------------------------------------------------------------------

    def _restore(self, live: list[RelayView]) -> None:
        """Take back this device's own entries that a relay holds past its log (a restored device): fetched once,
        checked for reused Yjs clocks, then integrated."""
        pending = self.logs.pending.get(self.me)
        row = self.db.author(self.me)
        if pending is None or pending[0].seq <= row.applied:
            return
        head = pending[0]
        for relay in (r for r in live if r.heads.get(self.me, (0, 0))[0] >= head.seq):
            try:
                accepted = []
                applied, chain = row.applied, row.chain
                for kind, seq in entries_to_fetch(row.applied, head):
                    key = entry_key(self.tag, self.me, kind, seq)
                    accepted.append(self.logs.accept(self._fetch(relay, self.me, kind, seq), applied, chain, key))
                    applied, chain = seq, accepted[-1].chain
                self._rebase_reused_clocks(accepted, relay.name)
                for item in accepted:  # one by one: a snapshot's chain link is not the digest of its body
                    self._integrate([item], relay)
                break
            except CrdtsyncError as exc:
                if exc.code == "DEVICE_CLOCKS_REUSED":
                    raise  # every relay reports it: nothing is synced from this vault
                relay.fail(exc, self.me)
        if self.logs.replica.reapply_rebased():
            self.logs.forget_registry()

    def _rebase_reused_clocks(self, lost_entries: list[Accepted], relay: str) -> None:
        """Before taking back this device's own ``lost_entries`` (written by this device but unknown to its store:
        restored from a backup, or copied), make sure the writes it logged since did not reuse their Yjs clocks;
        when they did, they are taken out and written again under a new client id
        (:meth:`crdtsync.vault.Vault.rebase_unpushed`).

        Raises:
            MailboxError: ``DEVICE_CLOCKS_REUSED`` (with a persistent alarm) when they cannot be taken out.
        """
        mine = set(self.logs.registry().get(self.me, {}).get("clients", ()))
        unlogged = self.logs.logged_updates()
        ours: dict[tuple[int, int], bytes] = {}
        for _, data in unlogged:
            ours.update((item, where) for item, where in item_positions(data).items() if item[0] in mine)
        if not ours:
            return
        reused = 0
        for item in lost_entries:
            lost = item_positions(item.opened.batch.update)
            reused += sum(1 for key, where in ours.items() if lost.get(key, where) != where)
        if not reused:
            return
        try:
            self.logs.replica.rebase_unpushed(unlogged, relay)
        except VaultError as exc:
            message = (f"this device was restored from a backup together with its state folder (or copied), and "
                       f"wrote before syncing: {reused} of its new Items reuse the Yjs clocks of writes that the "
                       f"backup lost and relay {relay} still holds, and {exc.message}. Pushing them would "
                       "make other devices ignore them or misplace later edits, so nothing is synced from this "
                       "vault. Make a fresh copy with `crdtsync join` in a new folder and re-enter what was written "
                       "here since the restore (`crdtsync log` lists it)")
            self.db.raise_alarm("DEVICE_CLOCKS_REUSED", message, relay=relay)
            raise MailboxError(message, code="DEVICE_CLOCKS_REUSED") from None
        self.logs.replica.reapply_rebased()
        self.logs.forget_registry()

    # -- pull -------------------------------------------------------------------------------------------

    def _pull(self, live: list[RelayView], progress: Progress | None) -> None:
        """Bring every other author's log up to the newest head any relay showed."""
        targets = [(author, head) for author, (head, _) in sorted(self.logs.pending.items()) if author != self.me]
        total = sum(max(0, head.seq - self.db.author(author).applied) for author, head in targets)
        done = [0]

        def advance() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        if progress is not None:
            progress(0, total)
        waiting: list[str] = []
        for author, head in targets:
            sources = sorted((r for r in live if r.heads.get(author, (0, 0))[0] > self.db.author(author).applied),
                             key=lambda r: -r.heads[author][0])
            for relay in sources:
                try:
                    self._pull_author_settling(relay, author, head, advance)
                except CrdtsyncError as exc:
                    if exc.code == "DEVICE_REVOKED":
                        raise
                    if exc.code == "UPDATE_INBOX_FULL":
                        waiting.append(author)
                        break
                    if exc.code == "MAILBOX_OBJECT_MISSING":
                        waits = self.logs.holders(author)
                        who = ", ".join(waits["holders"]) or "none yet"
                        relay.report.errors.append({
                            "device": author, "code": exc.code, **waits,
                            "message": f"{exc.message} (devices that acknowledged it: {who})"})
                    else:
                        relay.fail(exc, author)
                    if exc.code == "MAILBOX_FORK":
                        break
                if self.db.author(author).applied >= head.seq:
                    break
        # An author pulled later may have brought what the held updates waited for: go back once to those that
        # stopped on a full inbox.
        for author in waiting:
            head = self.logs.pending[author][0]
            for relay in (r for r in live if r.heads.get(author, (0, 0))[0] >= head.seq):
                try:
                    self._pull_author(relay, author, head, advance)
                    break
                except CrdtsyncError as exc:
                    relay.fail(exc, author)

    def _pull_unread_heads(self) -> None:
        """The heads this device could not open, sealed under an epoch whose key it does not hold yet: the log
        entries the relay lists past what this device applied are pulled without them (each checked on its own and
        against the author's chain) until one carries the epoch statement that gives the key; then the head is read
        again. Authors are gone through again while one of them got through (its statement may be what the others
        needed); an entry of an epoch no statement here gives stays unread (``ENVELOPE_UNKNOWN_EPOCH``)."""
        waiting = sorted(self.unread.items())
        while waiting:
            stuck: list[tuple[str, list[RelayView]]] = []
            failures: list[tuple[RelayView, str, CrdtsyncError]] = []
            for author, relays in waiting:
                errors = [(relay, author, error) for relay in relays if (error := self._pull_unread(relay, author))]
                if len(errors) == len(relays):
                    stuck.append((author, relays))
                    failures += errors
            if len(stuck) == len(waiting):
                for relay, author, error in failures:
                    relay.fail(error, author, object=author_key(self.tag, author, "head"))
                return
            waiting = stuck

    def _pull_unread(self, relay: RelayView, author: str) -> CrdtsyncError | None:
        """One author of :meth:`_pull_unread_heads` from one relay; the error that stopped it, or None. A revoked
        author's entries are pulled up to its revocation point only, and its head (sealed under a key it was given
        before it was revoked, perhaps one no other device holds) is left unread without an error."""
        applied = self.db.author(author).applied
        newest = newest_listed(relay.objects, self.tag, author)
        limit = self.logs.limit(author)
        if limit is not None:
            newest = min(newest, limit)
        key = author_key(self.tag, author, "head")
        try:
            if newest > applied:
                self._pull_author_settling(relay, author, Head(seq=newest, first=applied + 1), lambda: None)
                self.logs.settle()
            if self.logs.view().revoked.get(author) is None:
                self._read_head(relay, author, key, token(relay.objects[key]))
        except CrdtsyncError as exc:
            if exc.code == "DEVICE_REVOKED":
                raise
            return exc
        return None

    def _pull_author_settling(self, relay: RelayView, author: str, head: Head, advance: Callable[[], None]) -> None:
        """:meth:`_pull_author`, once more when it stopped at an envelope of an epoch this device did not hold and
        the entries it applied gave it that epoch's key (a statement in them)."""
        try:
            self._pull_author(relay, author, head, advance)
        except CrdtsyncError as exc:
            if exc.code not in KEY_NOT_HELD_CODES or not self.logs.settle():
                raise
            self._pull_author(relay, author, head, advance)

    def _note_waits(self, live: list[RelayView]) -> None:
        """Keep, per relay, the entries this pull waited for (``cursors`` scope ``waiting``, read by
        :meth:`crdtsync.vault.Vault.status`); a pull that waited for nothing clears them."""
        with self.db.write():
            for relay in live:
                waits = [{key: e[key] for key in ("device", "seq", "holders", "message")}
                         for e in relay.report.errors if "holders" in e]
                self.db.set_cursor("waiting", relay.name, json.dumps(waits).encode())

    def _pull_author(self, relay: RelayView, author: str, head: Head,
                     advance: Callable[[], None] | None = None) -> None:
        """Apply ``author``'s entries that ``relay`` holds past what this device applied, up to ``head``, in
        groups of up to :data:`PULL_GROUP`; from its snapshot when the logs needed are gone. Stops at the first
        entry that cannot be read or does not follow the chain."""
        row = self.db.author(author)
        applied, chain = row.applied, row.chain
        group: list[Accepted] = []
        size = 0
        try:
            for kind, seq in entries_to_fetch(applied, head):
                self.logs.check_room(author, seq)
                # The fetched parts are kept by accept and referenced no longer: not held while it integrates.
                key = entry_key(self.tag, author, kind, seq)
                accepted = self.logs.accept(self._fetch(relay, author, kind, seq), applied, chain, key)
                applied, chain = seq, accepted.chain
                group.append(accepted)
                size += len(accepted.opened.batch.update)
                if advance is not None:
                    advance()
                if kind == KIND_SNAPSHOT or len(group) >= PULL_GROUP or size >= PULL_GROUP_BYTES:
                    self._integrate(group, relay)
                    group, size = [], 0
        finally:
            if group:
                self._integrate(group, relay)

    def _fetch(self, relay: RelayView, author: str, kind: int, seq: int) -> Entry:
        """The parts of an entry as ``relay`` lists them (at least the first, which a lagging listing may not
        show yet), fetched."""
        key = entry_key(self.tag, author, kind, seq)
        parts = []
        for part in range(max(1, listed_parts(relay.objects, key))):
            data = relay.store.get(entry_key(self.tag, author, kind, seq, part))
            if data is None:
                what = "snapshot" if kind == KIND_SNAPSHOT else "log entry"
                raise MailboxError(f"{what} {seq} of device {author} ({key}) is not in relay {relay.name} (yet); "
                                   "it is read at the next sync, once a device that holds it syncs with this relay",
                                   code="MAILBOX_OBJECT_MISSING")
            relay.report.objects_down += 1
            relay.report.bytes_down += len(data)
            parts.append(data)
        return Entry(author, kind, seq, tuple(parts))

    def _integrate(self, group: list[Accepted], relay: RelayView) -> None:
        """Integrate ``group`` (:meth:`crdtsync.replication.AuthorLogReplica.integrate`) and report refused updates
        and changed memories in ``relay``'s report."""
        for entry, result in self.logs.integrate(group):
            if result.status == "refused":
                relay.report.errors.append({"device": entry.author, "code": result.code or "UPDATE_MALFORMED",
                                            "message": f"seq {entry.seq}: {result.message}; quarantined"})
            relay.report.memories_changed.update(result.changed)

    # -- put --------------------------------------------------------------------------------------------

    def _put(self, relay: RelayView) -> None:
        """Give ``relay`` what it lacks of every author this device holds, then the heads it holds older, and
        delete what the heads no longer keep; put ``vault.json`` back when it is missing or not this vault's."""
        try:
            for author, row in sorted(self.db.authors().items()):
                if row.head is None:
                    continue
                self._put_author(relay, author, row.head, (row.head_seq, row.head_n))
            self._put_header(relay)
        except CrdtsyncError as exc:
            relay.fail(exc)

    def _put_author(self, relay: RelayView, author: str, head_data: bytes, ours: tuple[int, int]) -> None:
        head = open_head(self.logs.keyring, self.logs.sender_key, head_data, author, "a stored head")
        remembered = self.db.relay_head(relay.name, author)
        shown = None if remembered is None else (remembered[1], remembered[2])
        plan = plan_author(self.tag, author, head, self.db.entry_sizes(author), relay.objects,
                           relay.heads.get(author), shown)
        for key, kind, seq, part in plan.puts:
            parts = self.db.entry_parts(author, kind, seq) or []
            self._put_object(relay, key, parts[part], healed=key in plan.healed)
        if plan.put_head and author not in relay.heads and relay in self.unread.get(author, ()):
            # A head this device could not open (an epoch whose key it does not hold) is not a lost one: it may
            # be newer than ours, and putting ours back would roll the relay back.
            plan.put_head = False
        if plan.put_head:
            # Healed: the relay showed this head (or a newer one) before and lost it or went back.
            lost = author not in relay.heads and shown is not None
            self._put_object(relay, author_key(self.tag, author, "head"), head_data,
                             healed=author in relay.rolled_back or lost)
            relay.heads[author] = ours
            if author == self.me:  # the mark of what we put is unknown until listed: its size stands in, for
                with self.db.write():  # our own head only (no one else writes a newer one)
                    self.db.set_relay_head(relay.name, author, f"put:{len(head_data)}", *ours)
        for key in plan.deletes:
            relay.store.delete(key)
            del relay.objects[key]

    def _put_object(self, relay: RelayView, key: str, data: bytes, *, healed: bool) -> None:
        relay.store.put(key, data)
        relay.report.objects_up += 1
        relay.report.bytes_up += len(data)
        relay.objects[key] = (len(data), "")
        if healed:
            relay.report.healed.append(key)

    def _put_header(self, relay: RelayView) -> None:
        """Put this vault's header back when the relay lacks it, or when it changed since this device last
        checked and is not this vault's (damaged, another vault's, an older format)."""
        key = header_key(self.tag)
        ours = self.logs.replica.header
        digest = hashlib.sha256(ours.to_json()).hexdigest()
        confirmed = self.db.get_cursor("header", relay.name)
        action = header_action(relay.objects, self.tag, None if confirmed is None else confirmed.decode(), digest)
        if action == "skip":
            return
        if action == "read":
            data = relay.store.get(key)
            theirs = _parsed_header(data)
            if theirs is not None and self.logs.replica.adopt_header(theirs):  # a new epoch's, made elsewhere
                ours, digest = theirs, hashlib.sha256(theirs.to_json()).hexdigest()
            problem = _header_problem(data, ours)
            if problem is None:
                with self.db.write():
                    self.db.set_cursor("header", relay.name,
                                       header_confirmation(digest, relay.objects[key]).encode())
                return
            if theirs is not None and _superseded(theirs, ours):  # the header before a key change: the new one
                self._put_object(relay, key, ours.to_json(), healed=False)  # goes up, as any change does
                return
            relay.report.warnings.append({"device": "", "code": "MAILBOX_HEADER_REPLACED", "message": (
                f"{key} in relay {relay.name} {problem}; this vault's header was put back")})
        self._put_object(relay, key, ours.to_json(), healed=True)


def _parsed_header(data: bytes | None) -> VaultHeader | None:
    """The header ``data`` holds, or None when there is none or it does not parse."""
    if data is None:
        return None
    try:
        return VaultHeader.from_json(data)
    except CrdtsyncError:
        return None


def _superseded(theirs: VaultHeader, ours: VaultHeader) -> bool:
    """Whether ``theirs`` is this vault's header as it was before a key change that ``ours`` follows: it commits to
    fewer epochs, each as ``ours`` does."""
    return (theirs.vault_id == ours.vault_id and bool(theirs.commits) and len(theirs.commits) < len(ours.commits)
            and all(ours.commits.get(epoch) == commit for epoch, commit in theirs.commits.items()))


def _header_problem(data: bytes | None, ours: VaultHeader) -> str | None:
    """What is wrong with a relay's header ``data`` for this vault, or None when it is this vault's, committing
    to the keys this device holds."""
    if data is None:
        return "is gone"
    try:
        theirs = VaultHeader.from_json(data)
    except CrdtsyncError:
        return "is damaged"
    if theirs.vault_id != ours.vault_id:
        return "is another vault's"
    if not theirs.commits or any(theirs.commits.get(epoch) != commit for epoch, commit in ours.commits.items()):
        return "is outdated or commits to other keys"
    return None


def publish_header(store: ObjectStore, header: VaultHeader) -> bool:
    """Write ``header`` as ``vault.json`` of its vault in ``store`` unless the store already holds it (the
    vault's, committing to the same keys). Returns whether it wrote."""
    key = header_key(vault_tag(header.vault_id))
    if _header_problem(store.get(key), header) is None:
        return False
    store.put(key, header.to_json())
    return True


def sync_relays(replica: VaultReplica, relays: Sequence[tuple[str, ObjectStore]], *, push: bool = True,
                pull: bool = True, progress: Progress | None = None,
                clock: Callable[[], float] = time.monotonic) -> list[SyncReport]:
    """Sync ``replica`` with every relay of ``relays`` at once (see the module docstring); one
    :class:`SyncReport` per relay, in order. Store errors of a whole relay (unreachable, denied, a folder not
    mounted) are reported in its report rather than raised, and the other relays sync; each relay gets an
    audit row.

    Two processes never sync one vault with one relay at once: each holds an OS file lock per relay
    (:func:`sync_lock_path`, released when its process dies) and waits up to :data:`SYNC_LOCK_SECONDS` for
    another's, then reports ``SYNC_BUSY`` for that relay and leaves it out."""
    started = clock()
    before = {name: store.stats.operations for name, store in relays}
    ready: list[tuple[str, ObjectStore]] = []
    busy: dict[str, SyncReport] = {}
    with ExitStack() as locks:
        for name, store in relays:
            report = SyncReport(relay=name)
            try:
                check_apart(replica.path, store.url)  # a relay saved before crdtsync refused such a pair
                locks.enter_context(FileLock(sync_lock_path(replica.path, name), timeout=SYNC_LOCK_SECONDS))
                ready.append((name, store))
                continue
            except Timeout:
                report.errors.append({"device": "", "code": "SYNC_BUSY", "message": (
                    f"another process has been syncing this vault with relay {name} for over "
                    f"{SYNC_LOCK_SECONDS:g} s; nothing was pushed or pulled: sync again once it is done")})
            except CrdtsyncError as exc:
                report.errors.append({"device": "", "code": exc.code, "message": exc.message})
            busy[name] = report
        logs = AuthorLogReplica(replica)
        done = {r.relay: r for r in AuthorLogSync(logs, ready).run(push=push, pull=pull, progress=progress)}
    conflicts = replica.conflict_count()
    reports = []
    for name, store in relays:
        report = done.get(name) or busy[name]
        report.operations = store.stats.operations - before[name]
        report.conflicts = conflicts
        report.seconds = clock() - started
        replica.store.record_sync(name, report.to_json())
        reports.append(report)
    return reports
