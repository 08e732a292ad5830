"""A live session of this device with a peer device of the vault, over any two-way byte stream: the protocol's
:class:`~crdtsync.protocol.session.Session` driven by this device's author logs
(:class:`~crdtsync.replication.AuthorLogReplica`).

The transport (TCP, a WebRTC data channel, two sessions wired together in a test) only moves bytes::

    live = LiveSync(logs)
    stream.write(live.start())
    while not live.closed:
        stream.write(live.receive(await stream.read(MAX_READ)))   # b"" at end of stream
    ...
    stream.write(live.local_changes())                             # after this device wrote

Everything a peer sends is checked as a relay's objects are: a head and an entry must open under their author's
key, an entry must follow its author's chain (else ``MAILBOX_FORK``, with the alarm), and its update goes
through the defended apply path. An entry is acknowledged only after the transaction that keeps it committed. An
entry that does not open or does not follow ends the session with an error frame carrying its code (the peer's
copy is bad: the next session, or a relay, brings a good one). What the peer lacks is derived from the two
summaries and what passed in this session, never queued: every author's entries, not only this device's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crdtsync.errors import CrdtsyncError, ProtocolError
from crdtsync.protocol.authorlog import Send, plan_sends
from crdtsync.protocol.messages import Entry, Summary
from crdtsync.protocol.session import (
    NEED_DATA,
    Ack,
    Acked,
    Close,
    Closed,
    EntryReceived,
    Error,
    HeadEnvelope,
    HeadReceived,
    Hello,
    PeerError,
    PeerHello,
    Ping,
    PingReceived,
    Pong,
    Session,
    SummaryReceived,
    SummaryUpdate,
    plan,
)
from crdtsync.replication import KEY_NOT_HELD_CODES, AuthorLogReplica


@dataclass
class LiveReport:
    """What one live session moved: the ``peer``'s device id, entries each way, memories changed here, and the
    error that ended it (``{code, message}``, None while it runs or after a clean close)."""

    peer: str | None = None
    entries_sent: int = 0
    entries_received: int = 0
    memories_changed: set[str] = field(default_factory=set)
    error: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON object of the report."""
        return {"peer": self.peer, "entries": {"sent": self.entries_sent, "received": self.entries_received},
                "memories_changed": len(self.memories_changed), "error": self.error}


class LiveSync:
    """One live session of ``logs``' device with a peer (see the module docstring)."""

    def __init__(self, logs: AuthorLogReplica, session: Session | None = None) -> None:
        self.logs = logs
        self.session = session or Session(logs.tag, logs.me)
        self.report = LiveReport()
        self.closed = False
        self._started = False
        self._closing = False
        self._summary_sent: Summary | None = None
        self._heads_sent: dict[str, bytes] = {}

    def start(self) -> bytes:
        """Our HELLO, with what we hold: the first bytes to send, whichever side connected (:meth:`receive`
        starts the session itself when the peer's bytes come first)."""
        if self._started:
            return b""
        self._started = True
        self.logs.commit()
        self.logs.renew_head()
        self._summary_sent = self.logs.summary()
        return self.session.send(Hello(self._summary_sent))

    def receive(self, data: bytes) -> bytes:
        """Take ``data`` from the peer (``b""``: the stream ended) and return the bytes to send back: acks of
        what it stored, the entries and heads the peer lacks, answers to pings.

        Raises:
            ProtocolError: the peer broke the protocol (the bytes returned before it was raised are lost: the
                session is over; :meth:`abort` gives the error frame to send).
        """
        out: list[bytes] = [self.start()]
        self.session.receive_data(data)
        while True:
            try:
                event = self.session.next_event()
            except ProtocolError as exc:
                self._end(exc.code, exc.message)
                raise
            if event is NEED_DATA:
                break
            out.append(self._on(event))
            if self.closed:  # nothing follows a close or an error
                break
        if self.session.peer_closed and not self.closed:  # answer the peer's close with ours: the session is over
            out.append(self.close())
            self.closed = True
        return b"".join(out)

    def local_changes(self) -> bytes:
        """After this device wrote (or took entries from elsewhere): its next entry, whatever else the peer lacks,
        then its new head, as bytes to send. The head is renewed only when this device logged an entry (its acks
        of others' entries go out with its next entry, a session start or a relay sync); the summary only when
        it changed."""
        committed = self.logs.commit() is not None
        if self.closed or self._closing or self.session.peer_summary is None:
            if committed:
                self.logs.renew_head()
            return b""
        out = self._send_summary() + self._send_lacking(heads=False)
        if committed:
            self.logs.renew_head()
        return out + self._send_heads()

    def _send_summary(self) -> bytes:
        summary = self.logs.summary()
        if summary == self._summary_sent:
            return b""
        self._summary_sent = summary
        return self.session.send(SummaryUpdate(summary))

    @property
    def closing(self) -> bool:
        """Whether this side sent CLOSE (it takes no more entries; the peer's close or the end of the stream
        ends the session)."""
        return self._closing

    def ping(self) -> bytes:
        """The bytes of a ping (the peer answers with a pong; any frame shows it alive), or ``b""`` before our
        hello and after the session ended: a driver calls it when it has sent nothing for a while."""
        if self.closed or self._closing or not self._started:
            return b""
        return self.session.send(Ping())

    def in_sync(self) -> bool:
        """Whether neither side lacks anything the other can send: the peer's summary shows nothing we lack,
        and every entry it lacks that we can send was sent and acknowledged (a one-shot sync closes then)."""
        theirs = self.session.peer_summary
        if theirs is None or self.closed:
            return False
        ours = self.logs.summary()
        return (self.session.unacked_entries == 0 and not plan_sends(theirs, ours)
                and not self._sendable(plan(ours, theirs, self.session.peer_holds)))

    def _sendable(self, sends: list[Send]) -> bool:
        return any(self.logs.entry(s.author, s.kind, s.seq) is not None for s in sends)

    def close(self) -> bytes:
        """The bytes of a clean close (we send nothing more; entries the peer sends after it are not taken:
        the next session brings them)."""
        if self.closed or self._closing:
            return b""
        self._closing = True
        return self.session.send(Close())

    def abort(self, code: str, message: str) -> bytes:
        """The bytes of an error frame that ends the session with ``code``."""
        self._end(code, message)
        return b"" if self._closing else self.session.send(Error(code, message))

    # -- events -----------------------------------------------------------------------------------------

    def _on(self, event: Any) -> bytes:
        if isinstance(event, PeerHello | SummaryReceived):
            if isinstance(event, PeerHello):
                self.report.peer = event.device
            try:
                self.logs.check_summary(event.summary, f"the summary of peer {self.report.peer}")
            except CrdtsyncError as exc:
                return self.abort(exc.code, exc.message)
            return self._send_heads() + self._send_lacking()
        if isinstance(event, EntryReceived):
            return b"" if self._closing else self._take(event.entry)
        if isinstance(event, HeadReceived):
            return self._take_head(event.author, event.data)
        if isinstance(event, Acked):
            return self._send_lacking()
        if isinstance(event, PingReceived):
            return b"" if self._closing else self.session.send(Pong())
        if isinstance(event, PeerError):
            self._end(event.code, event.message)
        elif isinstance(event, Closed):
            if not event.clean and self.report.error is None:
                self._end("LAN_CONNECTION_LOST", "the peer's stream ended without a close")
            self.closed = True
            self.logs.keep_heads()
        return b""

    def _end(self, code: str, message: str) -> None:
        self.report.error = {"code": code, "message": message}
        self.closed = True

    def _take_head(self, author: str, data: bytes) -> bytes:
        try:
            self.logs.take_head(author, data, f"the head of {author} from peer {self.report.peer}")
        except CrdtsyncError as exc:
            if exc.code in KEY_NOT_HELD_CODES:
                return b""  # sealed under an epoch whose statement has not reached this device yet: it comes
            return self.abort(exc.code, exc.message)
        self._heads_sent[author] = data  # the peer holds it: never sent back
        self.logs.keep_heads()
        return b""

    def _take(self, entry: Entry) -> bytes:
        """Check, keep and integrate an entry of the peer, then acknowledge it (an entry this device already
        holds is acknowledged at once)."""
        row = self.logs.db.author(entry.author)
        ack = self.session.send(Ack(entry.author, entry.kind, entry.seq))
        if entry.seq <= row.applied:
            return ack
        where = f"entry {entry.seq} of {entry.author} from peer {self.report.peer}"
        try:
            self.logs.check_room(entry.author, entry.seq)
            accepted = self.logs.accept(entry, row.applied, row.chain, where)
        except CrdtsyncError as exc:
            if exc.code in KEY_NOT_HELD_CODES:
                # Sealed under an epoch whose statement (another author's entry) has not reached this device yet:
                # acknowledged so the peer's window moves on, and asked for again by the next session's summary.
                return ack
            return self.abort(exc.code, exc.message)
        for _, result in self.logs.integrate([accepted]):
            self.report.memories_changed.update(result.changed)
        self.logs.keep_heads()
        self.report.entries_received += 1
        try:
            self.logs.settle()  # an epoch statement in it: the next entries may be under its key
        except CrdtsyncError as exc:
            return ack + self.abort(exc.code, exc.message)
        return ack

    # -- sending ----------------------------------------------------------------------------------------

    def _send_heads(self) -> bytes:
        """The heads this device holds that it has not sent in this session in that version: the peer keeps
        them once it holds their entries, and compares their digests with its own."""
        if self._closing:
            return b""
        out = []
        for author, row in sorted(self.logs.db.authors().items()):
            if row.head is not None and self._heads_sent.get(author) != row.head:
                out.append(self.session.send(HeadEnvelope(author, row.head)))
                self._heads_sent[author] = row.head
        return b"".join(out)

    def _send_lacking(self, *, heads: bool = True) -> bytes:
        """The entries the peer lacks, in order, while the window allows; then the heads. An entry too large for
        a session (:data:`~crdtsync.protocol.session.MAX_ENTRY_BYTES`) leaves the rest of its author's log to
        the relays."""
        theirs: Summary | None = self.session.peer_summary
        if theirs is None or self.closed or self._closing:
            return b""
        out = []
        skipped: set[str] = set()
        for send in plan(self.logs.summary(), theirs, self.session.peer_holds):
            entry = None if send.author in skipped else self.logs.entry(send.author, send.kind, send.seq)
            if entry is None:
                skipped.add(send.author)
                continue
            if not self.session.can_send_entry(entry.size):
                break
            try:
                out.append(self.session.send(entry))
            except ProtocolError as exc:
                if exc.code != "PROTOCOL_ENTRY_TOO_LARGE":
                    raise
                skipped.add(send.author)
                continue
            self.report.entries_sent += 1
        return b"".join(out) + (self._send_heads() if heads else b"")
