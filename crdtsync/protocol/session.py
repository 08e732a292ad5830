"""The live session between two devices of a vault (protocol v2). Sans-IO, in the manner of h11: bytes and plain
data in, events and bytes out; no socket, file, clock, randomness or event loop.

A driver (the TCP or WebRTC adapter) owns one :class:`Session` per connection and runs it so::

    stream.write(session.send(Hello(replica.summary())))       # at once, whichever side connected
    while True:
        session.receive_data(await stream.read(MAX_READ))      # b"" at end of stream
        while (event := session.next_event()) is not NEED_DATA:
            ...                                                # store, send(Ack(...)), plan and send(entry), ...

**Roles.** None: both sides send HELLO first and at once, either may be first, and after it they are alike.
Each side tells the other what it holds (its summary: author -> :class:`~crdtsync.protocol.messages.Have`),
sends each entry the other lacks (:func:`plan`, over :func:`~crdtsync.protocol.authorlog.plan_sends`), then
keeps sending entries as they arrive (its own writes, entries relayed from elsewhere). The receiver of an entry
acknowledges it with ACK once it stored it durably (refused entries it keeps in quarantine count as stored;
an entry it will not keep ends the session with ERROR): the session never acks on its own.

**Framing.** A byte stream of frames. A frame is a 4-byte big-endian length ``n`` (1 .. :data:`MAX_FRAME`)
followed by ``n`` bytes: the msgpack of a map ``{"t": type, ...}`` with exactly the fields below, unpacked with
tight limits (byte strings up to :data:`~crdtsync.crypto.envelope.MAX_ENVELOPE_BYTES`, strings up to 4 KiB,
maps up to :data:`MAX_AUTHORS` items, arrays up to 16, no ext types, no trailing bytes). A length prefix over
:data:`MAX_FRAME` is refused as soon as its 4 bytes are parsed, without waiting for the frame.

================ ==================================================================================
``t``            fields
================ ==================================================================================
``"hello"``      ``v`` (:data:`~crdtsync.protocol.messages.PROTOCOL_VERSION`; checked before any other
                 field, so a later version may change the rest), ``vault`` (the vault tag, a string),
                 ``device`` (the sender's device id), ``summary`` (:func:`~crdtsync.protocol.messages.
                 pack_summary`; its authors are device ids, at most :data:`MAX_AUTHORS`). The first frame
                 each way (only an ``"error"`` may come before it), exactly once.
``"summary"``    ``summary``: what the sender holds now, any time after its hello.
``"entry"``      ``author`` (device id), ``kind`` (envelope kind UPDATE 1 or SNAPSHOT 3), ``seq``
                 (1 .. 2**63-1), ``size`` (bytes of all parts, 1 .. :data:`MAX_ENTRY_BYTES`), ``parts``
                 (envelopes per part: 1 .. :data:`~crdtsync.protocol.messages.MAX_PARTS` counts, each 1 ..
                 :data:`~crdtsync.protocol.messages.MAX_CHUNKS`). Followed at once by one ``"envelope"``
                 frame per envelope, part after part, and by no other frame in between.
``"envelope"``   ``data``: one envelope (1 .. 4 MiB). The receiver rebuilds each part with
                 :func:`~crdtsync.protocol.messages.pack_part`, so an entry arrives byte for byte as sent:
                 a sender refuses a part that is not in that canonical encoding.
``"head"``       ``author``, ``data``: that author's head envelope as received (1 .. 4 MiB).
``"ack"``        ``author``, ``kind``, ``seq``: that entry of this session is stored durably.
``"ping"``       no field; the receiver's driver answers with ``"pong"``. Liveness: the sender's driver
                 times the answer, and any frame received shows the peer alive (a pong waits behind
                 the envelopes of an entry being written).
``"pong"``       no field.
``"error"``      ``code`` (upper-case, 1 .. 64 characters), ``message`` (up to :data:`MAX_MESSAGE`
                 characters): why the sender ends the session. Its last frame.
``"close"``      no field: the sender sends nothing more (it still reads: acks may follow). Its last frame.
================ ==================================================================================

**Events** (:meth:`Session.next_event`): :class:`PeerHello`, :class:`SummaryReceived`, :class:`EntryReceived`
(a whole entry: its envelope frames produce no event), :class:`HeadReceived`, :class:`Acked`,
:class:`PingReceived`, :class:`PongReceived`, :class:`PeerError`, :class:`Closed`, or :data:`NEED_DATA`.
``receive_data(b"")`` is the end of the stream: :class:`Closed` ``clean=True`` only after the peer's CLOSE
and nothing after it; else ``clean=False``, and an entry being received is dropped.

**Bounded memory.** Unparsed bytes: at most :data:`MAX_BUFFER` (a frame plus one read of :data:`MAX_READ`;
a driver that drains :meth:`~Session.next_event` to NEED_DATA between reads stays under it). Entries: one
at a time is reassembled, of at most :data:`MAX_ENTRY_BYTES` announced and counted as its envelopes arrive.

**Flow control.** The sender tracks the entries it sent that are not yet acked (:attr:`~Session.unacked_entries`,
:attr:`~Session.unacked_bytes`) and sends another only within its window (:meth:`~Session.can_send_entry`:
``window_bytes``, default :data:`WINDOW_BYTES`, and ``window_entries``, default :data:`WINDOW_ENTRIES`; an
entry larger than the window goes when nothing is in flight). One entry (author, kind, seq) is in flight once.
A driver reads and writes concurrently (two tasks): both sides may be sending entries at once, and a side whose
reading waits on a blocked write would deadlock with a peer doing the same.

**Errors** (:class:`~crdtsync.errors.ProtocolError`, a mailbox error: CLI exit status 8). Raised by
:meth:`~Session.next_event` for what the peer sent, after which the session only gives the bytes of
``send(Error(code, message))`` to tell the peer; raised by :meth:`~Session.send` (nothing sent, the session
unchanged) for a message the peer would refuse, with the code the peer would raise, and for a message out of
turn (``PROTOCOL_STATE``).

- ``PROTOCOL_MALFORMED``: not a frame of this protocol: not msgpack or not a map, an unknown ``t``, fields
  missing, extra or of a wrong type or range, a frame before the peer's HELLO or a second HELLO, an entry's
  envelope frames cut by another frame or not adding up to its announced size, an envelope frame outside an
  entry, an entry sent again before it was acked, an ACK for no entry in flight, a frame after CLOSE or ERROR.
- ``PROTOCOL_FRAME_TOO_LARGE``: a length prefix over :data:`MAX_FRAME` (a frame this module writes is always
  under it: an envelope is at most 4 MiB, a summary names at most :data:`MAX_AUTHORS` device ids).
- ``PROTOCOL_ENTRY_TOO_LARGE``: an entry of more than :data:`MAX_ENTRY_BYTES` of parts (it travels by relays).
- ``PROTOCOL_VERSION``: the peer's HELLO has another protocol version; the message names both versions and
  which device to upgrade.
- ``PROTOCOL_OTHER_VAULT``: the peer's HELLO names another vault tag.
- ``PROTOCOL_STATE``: this side's driver used the session out of turn: anything but ERROR before our HELLO, a
  second HELLO, an entry, head or ack before the peer's HELLO, an ack of no entry received and unacked, an entry
  already in flight or beyond the window, anything after our CLOSE or ERROR, anything but ERROR after a
  protocol error, data after the end of the stream, more than :data:`MAX_BUFFER` bytes unparsed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import msgpack

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE, MAX_ENVELOPE_BYTES
from crdtsync.crypto.keys import is_device_id
from crdtsync.errors import MailboxError, ProtocolError
from crdtsync.protocol.authorlog import Send, plan_sends
from crdtsync.protocol.messages import (
    MAX_CHUNKS,
    MAX_PARTS,
    PROTOCOL_VERSION,
    Entry,
    Summary,
    check_version,
    pack_part,
    pack_summary,
    unpack_part,
    unpack_summary,
)

#: Largest frame (after its 4-byte length prefix), in bytes: an envelope (4 MiB) or a summary of
#: :data:`MAX_AUTHORS` authors (under 7 MiB) with room to spare.
MAX_FRAME = 8 * 1024 * 1024
#: Most bytes a driver should give :meth:`Session.receive_data` at once.
MAX_READ = 1024 * 1024
#: Most unparsed bytes a session holds: one whole frame and its prefix, plus one read.
MAX_BUFFER = 4 + MAX_FRAME + MAX_READ
#: Largest entry a session carries, in bytes of parts (a larger one travels through relays only).
MAX_ENTRY_BYTES = 256 * 1024 * 1024
#: Default flow-control window: bytes of parts sent and not yet acked.
WINDOW_BYTES = 64 * 1024 * 1024
#: Default flow-control window: entries sent and not yet acked.
WINDOW_ENTRIES = 1024
#: Most authors a summary may name.
MAX_AUTHORS = 1 << 16
#: Longest error message, in characters (a longer one is cut when sent).
MAX_MESSAGE = 1024
#: Longest vault tag, in characters.
MAX_VAULT_TAG = 64

_PREFIX = 4
_CODE_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_KINDS = (KIND_UPDATE, KIND_SNAPSHOT)
_Key = tuple[str, int, int]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"


#: What :meth:`Session.next_event` returns when it needs more bytes (or the end of the stream) first.
NEED_DATA: Final = NeedData.NEED_DATA


# Events: what the peer did.

@dataclass(frozen=True)
class PeerHello:
    """The peer's HELLO: its ``device`` id, ``vault`` tag (equal to ours, else the session failed) and
    ``summary`` (author -> what it holds)."""

    device: str
    vault: str
    summary: Summary


@dataclass(frozen=True)
class SummaryReceived:
    """A newer ``summary`` of what the peer holds."""

    summary: Summary


@dataclass(frozen=True)
class EntryReceived:
    """A whole ``entry``, its parts byte for byte as the peer sent them. Unchecked: open and check it, store it,
    then ``send(Ack(...))``."""

    entry: Entry


@dataclass(frozen=True)
class HeadReceived:
    """The head envelope ``data`` (bytes, unchecked) of ``author``."""

    author: str
    data: bytes


@dataclass(frozen=True)
class Acked:
    """The peer stored our entry (``author``, ``kind``, ``seq``) durably; the window is freed of it."""

    author: str
    kind: int
    seq: int


@dataclass(frozen=True)
class PingReceived:
    """The peer asks whether we are alive: answer ``send(Pong())``."""


@dataclass(frozen=True)
class PongReceived:
    """The peer answered a ping."""


@dataclass(frozen=True)
class PeerError:
    """The peer ends the session with an error ``code`` and a ``message`` (control characters replaced by
    U+FFFD, so it can be shown)."""

    code: str
    message: str


@dataclass(frozen=True)
class Closed:
    """The stream ended: ``clean`` when the peer sent CLOSE first and nothing after it."""

    clean: bool


Event = (PeerHello | SummaryReceived | EntryReceived | HeadReceived | Acked | PingReceived | PongReceived
         | PeerError | Closed)


# Messages: what we send (and :class:`~crdtsync.protocol.messages.Entry` itself).

@dataclass(frozen=True)
class Hello:
    """Our HELLO, the first message: ``summary`` is what we hold."""

    summary: Summary


@dataclass(frozen=True)
class SummaryUpdate:
    """A newer ``summary`` of what we hold."""

    summary: Summary


@dataclass(frozen=True)
class HeadEnvelope:
    """The head envelope ``data`` (bytes, as received) of ``author``."""

    author: str
    data: bytes


@dataclass(frozen=True)
class Ack:
    """We stored the peer's entry (``author``, ``kind``, ``seq``) durably (a session ack, not the
    :class:`~crdtsync.protocol.messages.Ack` a head carries)."""

    author: str
    kind: int
    seq: int


@dataclass(frozen=True)
class Ping:
    """Ask the peer whether it is alive."""


@dataclass(frozen=True)
class Pong:
    """Answer the peer's ping."""


@dataclass(frozen=True)
class Error:
    """End the session with an error ``code`` (upper-case) and ``message`` (cut to :data:`MAX_MESSAGE`
    characters)."""

    code: str
    message: str


@dataclass(frozen=True)
class Close:
    """We send nothing more (we still receive)."""


Message = Hello | SummaryUpdate | Entry | HeadEnvelope | Ack | Ping | Pong | Error | Close


def plan(ours: Summary, theirs: Summary, holds: Mapping[str, int] | None = None) -> list[Send]:
    """The entries to send the peer, in order: what ``ours`` holds that ``theirs`` (the peer's latest summary,
    :attr:`Session.peer_summary`) lacks (:func:`~crdtsync.protocol.authorlog.plan_sends`), less what ``holds``
    (author -> seq, :attr:`Session.peer_holds`) says the peer holds already by this session: entries it sent
    us or we sent it since its summary."""
    known = holds or {}
    return [send for send in plan_sends(ours, theirs) if send.seq > known.get(send.author, 0)]


@dataclass
class _Assembly:
    """The entry being received: announced ``size`` and envelope ``counts`` per part, the parts ``done``, the
    envelopes of the current part, and the envelope bytes so far."""

    author: str
    kind: int
    seq: int
    size: int
    counts: list[int]
    done: list[bytes] = field(default_factory=list)
    current: list[bytes] = field(default_factory=list)
    received: int = 0


class Session:
    """One live session with a peer device of the vault: :meth:`receive_data`, :meth:`next_event`, :meth:`send`
    (the module docstring is the protocol).

    Args:
        vault: our vault tag (:func:`~crdtsync.crypto.keys.vault_tag`: 1 to :data:`MAX_VAULT_TAG` printable
            characters); the peer's must be equal.
        device: our device id (32 lowercase hex characters, or 16 for a device created up to 9204cbf).
        window_bytes: most bytes of parts in entries sent and not yet acked (:meth:`can_send_entry`), >= 1.
        window_entries: most entries sent and not yet acked, >= 1.

    Raises:
        ValueError: an argument out of shape (a programming error).
    """

    def __init__(self, vault: str, device: str, *, window_bytes: int = WINDOW_BYTES,
                 window_entries: int = WINDOW_ENTRIES) -> None:
        if not 0 < len(vault) <= MAX_VAULT_TAG or not vault.isprintable():
            raise ValueError(f"not a vault tag: {vault!r}")
        if not is_device_id(device):
            raise ValueError(f"not a device id: {device!r}")
        if window_bytes < 1 or window_entries < 1:
            raise ValueError("a window is at least 1")
        self._vault, self._device = vault, device
        self._window_bytes, self._window_entries = window_bytes, window_entries
        # receiving
        self._buffer = bytearray()
        self._eof = False
        self._failure: ProtocolError | None = None
        self._closed: Closed | None = None
        self._peer_summary: Summary | None = None
        self._peer_end: str | None = None  # the peer's last frame: "close" or "error"
        self._assembly: _Assembly | None = None
        self._received: set[_Key] = set()  # entries received and not yet acked by us
        # sending
        self._hello_sent = False
        self._ended = False  # we sent CLOSE or ERROR
        self._unacked: dict[_Key, int] = {}
        self._unacked_bytes = 0
        self._holds: dict[str, int] = {}

    # -- what the driver reads

    @property
    def peer_closed(self) -> bool:
        """Whether the peer sent CLOSE (it sends nothing more; it still reads until the stream ends)."""
        return self._peer_end == "close"

    @property
    def peer_summary(self) -> Summary | None:
        """The peer's latest summary (from its HELLO or a SUMMARY); None before its HELLO."""
        return self._peer_summary

    @property
    def peer_holds(self) -> Mapping[str, int]:
        """Author -> the highest seq of its entries this session sent the peer or received from it (a live,
        read-only view); what :func:`plan` leaves out."""
        return MappingProxyType(self._holds)

    @property
    def unacked_entries(self) -> int:
        """Entries we sent that the peer has not acked yet."""
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        """Bytes of parts of the entries we sent that the peer has not acked yet."""
        return self._unacked_bytes

    def can_send_entry(self, size: int) -> bool:
        """Whether an entry of ``size`` bytes of parts fits in the window now: nothing is in flight, or it fits
        beside what is (``window_bytes`` and ``window_entries``)."""
        return not self._unacked or (self._unacked_bytes + size <= self._window_bytes
                                     and len(self._unacked) < self._window_entries)

    # -- receiving

    def receive_data(self, data: bytes) -> None:
        """Take bytes received from the peer (b"": the stream ended); :meth:`next_event` parses them.

        Raises:
            ProtocolError: ``PROTOCOL_STATE`` after the end of the stream or a protocol error, or when the
                unparsed bytes would pass :data:`MAX_BUFFER` (nothing taken: drain :meth:`next_event` and
                give them again).
        """
        if self._failure is not None or self._eof:
            raise _state("bytes received after the end of the stream or a protocol error")
        if not data:
            self._eof = True
            return
        if len(self._buffer) + len(data) > MAX_BUFFER:
            raise _state(f"{len(self._buffer) + len(data)} bytes would wait unparsed (at most {MAX_BUFFER}): "
                         "read next_event() until NEED_DATA before more receive_data()")
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next event of what the peer sent, :data:`NEED_DATA` when more bytes are needed, or
        :class:`Closed` (again at every call) once the stream ended.

        Raises:
            ProtocolError: any code but ``PROTOCOL_STATE`` for what the peer sent (the session is then failed:
                only ``send(Error(...))`` remains); ``PROTOCOL_STATE`` once it failed.
        """
        if self._failure is not None:
            raise _state(f"the session failed ({self._failure.code}); only an error may be sent")
        if self._closed is not None:
            return self._closed
        try:
            while (frame := self._take_frame()) is not None:
                event = self._on_frame(frame)
                if event is not None:
                    return event
        except _Refused as exc:
            raise self._fail(ProtocolError(f"the peer sent {exc.reason}", code=exc.code)) from None
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if not self._eof:
            return NEED_DATA
        self._assembly = None
        self._closed = Closed(clean=self._peer_end == "close" and not self._buffer)
        return self._closed

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._failure = error
        self._assembly = None
        return error

    def _take_frame(self) -> dict[str, Any] | None:
        if len(self._buffer) < _PREFIX:
            return None
        length = int.from_bytes(self._buffer[:_PREFIX], "big")
        if length > MAX_FRAME:
            raise _Refused(f"a length prefix of {length} bytes (at most {MAX_FRAME})", "PROTOCOL_FRAME_TOO_LARGE")
        if len(self._buffer) < _PREFIX + length:
            return None
        data = self._buffer[_PREFIX:_PREFIX + length]  # one copy, however large the frame
        del self._buffer[:_PREFIX + length]
        try:
            frame = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_ENVELOPE_BYTES,
                                    max_str_len=4 * MAX_MESSAGE, max_array_len=16, max_map_len=MAX_AUTHORS,
                                    max_ext_len=0)
        except Exception as exc:
            raise _Refused(f"a frame that is not msgpack within limits ({type(exc).__name__})") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
            raise _Refused("a frame that is not a map with a type")
        return frame

    def _on_frame(self, frame: dict[str, Any]) -> Event | None:
        kind = frame["t"]
        if self._assembly is not None:
            if kind != "envelope":
                raise _Refused(f"a {_show(kind)} frame among the envelopes of an entry")
            return self._on_envelope(self._assembly, _fields(frame, "data"))
        if self._peer_end is not None:
            raise _Refused(f"a {_show(kind)} frame after its {self._peer_end}")
        if kind == "error":
            return self._on_error(_fields(frame, "code", "message"))
        if kind == "hello":
            if self._peer_summary is not None:
                raise _Refused("a second hello")
            return self._on_hello(frame)
        if self._peer_summary is None:
            raise _Refused(f"a {_show(kind)} frame before its hello")
        if kind == "summary":
            self._peer_summary = _summary(_fields(frame, "summary")["summary"])
            return SummaryReceived(self._peer_summary)
        if kind == "entry":
            self._assembly = _announced(_fields(frame, "author", "kind", "seq", "size", "parts"), self._received)
            return None
        if kind == "head":
            fields = _fields(frame, "author", "data")
            return HeadReceived(_author(fields["author"]), _envelope(fields["data"]))
        if kind == "ack":
            return self._on_ack(_fields(frame, "author", "kind", "seq"))
        if kind in ("ping", "pong", "close"):
            _fields(frame)
            if kind == "close":
                self._peer_end = "close"
                return None
            return PingReceived() if kind == "ping" else PongReceived()
        raise _Refused(f"a frame of unknown type {_show(kind)}")

    def _on_hello(self, frame: dict[str, Any]) -> PeerHello:
        if "v" not in frame:
            raise _Refused("a hello without a version")
        try:
            check_version(frame["v"], "the peer")
        except MailboxError as exc:
            raise ProtocolError(exc.message, code="PROTOCOL_VERSION") from None
        fields = _fields(frame, "v", "vault", "device", "summary")
        vault, device = fields["vault"], _author(fields["device"])
        if not isinstance(vault, str) or not 0 < len(vault) <= MAX_VAULT_TAG:
            raise _Refused("a hello with a bad vault tag")
        if vault != self._vault:
            raise ProtocolError(f"device {device} is of vault {vault!r}, this device of vault {self._vault!r}: "
                                "check the address or the pairing of that peer", code="PROTOCOL_OTHER_VAULT")
        self._peer_summary = _summary(fields["summary"])
        return PeerHello(device, vault, self._peer_summary)

    def _on_envelope(self, assembly: _Assembly, fields: dict[str, Any]) -> EntryReceived | None:
        data = _envelope(fields["data"])
        assembly.received += len(data)
        if assembly.received > assembly.size:
            raise _Refused(f"more than the announced {assembly.size} bytes of entry {assembly.seq} of "
                           f"{assembly.author}")
        assembly.current.append(data)
        if len(assembly.current) == assembly.counts[len(assembly.done)]:
            assembly.done.append(pack_part(assembly.current))
            assembly.current = []
        if len(assembly.done) < len(assembly.counts):
            return None
        self._assembly = None
        entry = Entry(assembly.author, assembly.kind, assembly.seq, tuple(assembly.done))
        if entry.size != assembly.size:
            raise _Refused(f"entry {entry.seq} of {entry.author} with {entry.size} bytes of parts, not the "
                           f"announced {assembly.size}")
        self._received.add((entry.author, entry.kind, entry.seq))
        self._hold(entry.author, entry.seq)
        return EntryReceived(entry)

    def _on_ack(self, fields: dict[str, Any]) -> Acked:
        key = (_author(fields["author"]), _kind(fields["kind"]), _seq(fields["seq"]))
        size = self._unacked.pop(key, None)
        if size is None:
            raise _Refused(f"an ack of entry {key[2]} of {key[0]} (kind {key[1]}), which is not in flight")
        self._unacked_bytes -= size
        return Acked(*key)

    def _on_error(self, fields: dict[str, Any]) -> PeerError:
        code, message = fields["code"], fields["message"]
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
            raise _Refused("an error frame with a bad code")
        if not isinstance(message, str) or len(message) > MAX_MESSAGE:
            raise _Refused("an error frame with a bad message")
        self._peer_end = "error"
        return PeerError(code, "".join(c if c.isprintable() else "\ufffd" for c in message))

    # -- sending

    def send(self, message: Message) -> bytes:
        """The bytes that carry ``message`` to the peer; write them in the order they were returned. An
        :class:`~crdtsync.protocol.messages.Entry` comes back as all its frames at once and counts against
        the window until the peer acks it.

        Raises:
            ProtocolError: ``PROTOCOL_STATE`` for a message out of turn (module docstring);
                ``PROTOCOL_MALFORMED`` or ``PROTOCOL_ENTRY_TOO_LARGE`` for one the peer would refuse. Nothing
                is sent and the session is unchanged.
        """
        try:
            return self._send(message)
        except _Refused as exc:
            raise ProtocolError(f"refusing to send {exc.reason}", code=exc.code) from None

    def _send(self, message: Message) -> bytes:
        if self._ended:
            raise _state("nothing may be sent after our close or error")
        if isinstance(message, Error):
            if not _CODE_RE.fullmatch(message.code):
                raise _Refused(f"an error code that is not upper-case: {message.code!r}")
            out = _frame({"t": "error", "code": message.code, "message": message.message[:MAX_MESSAGE]})
            self._ended = True
            return out
        if self._failure is not None:
            raise _state(f"the session failed ({self._failure.code}); only an error may be sent")
        if isinstance(message, Hello):
            if self._hello_sent:
                raise _state("a second hello")
            out = _frame({"t": "hello", "v": PROTOCOL_VERSION, "vault": self._vault, "device": self._device,
                          "summary": _packed_summary(message.summary)})
            self._hello_sent = True
            return out
        if not self._hello_sent:
            raise _state(f"{type(message).__name__} before our hello")
        if isinstance(message, SummaryUpdate):
            return _frame({"t": "summary", "summary": _packed_summary(message.summary)})
        if isinstance(message, Ping | Pong | Close):
            out = _frame({"t": type(message).__name__.lower()})
            self._ended = isinstance(message, Close)
            return out
        if self._peer_summary is None:
            raise _state(f"{type(message).__name__} before the peer's hello")
        if isinstance(message, Entry):
            return self._send_entry(message)
        if isinstance(message, HeadEnvelope):
            return _frame({"t": "head", "author": _author(message.author), "data": _envelope(message.data)})
        key = (message.author, message.kind, message.seq)
        if key not in self._received:
            raise _state(f"an ack of entry {message.seq} of {message.author} (kind {message.kind}), which was "
                         "not received or is acked already")
        out = _frame({"t": "ack", "author": message.author, "kind": message.kind, "seq": message.seq})
        self._received.remove(key)
        return out

    def _send_entry(self, entry: Entry) -> bytes:
        author, kind, seq = _author(entry.author), _kind(entry.kind), _seq(entry.seq)
        if not 0 < len(entry.parts) <= MAX_PARTS:
            raise _Refused(f"an entry of {len(entry.parts)} parts (1 to {MAX_PARTS})")
        if entry.size > MAX_ENTRY_BYTES:
            raise _too_large(entry.size)
        groups = [_envelopes(part) for part in entry.parts]
        key = (author, kind, seq)
        if key in self._unacked:
            raise _state(f"entry {seq} of {author} (kind {kind}) is already in flight")
        if not self.can_send_entry(entry.size):
            raise _state(f"the window is full ({len(self._unacked)} entries, {self._unacked_bytes} bytes in "
                         "flight): wait for acks")
        frames = [_frame({"t": "entry", "author": author, "kind": kind, "seq": seq, "size": entry.size,
                          "parts": [len(group) for group in groups]})]
        frames.extend(_frame({"t": "envelope", "data": envelope}) for group in groups for envelope in group)
        self._unacked[key] = entry.size
        self._unacked_bytes += entry.size
        self._hold(author, seq)
        return b"".join(frames)

    def _hold(self, author: str, seq: int) -> None:
        self._holds[author] = max(seq, self._holds.get(author, 0))


class _Refused(Exception):
    """A value the protocol refuses: ``reason`` completes "the peer sent ..." (receiving) or "refusing to
    send ..." (sending); ``code`` is the :class:`~crdtsync.errors.ProtocolError` code."""

    def __init__(self, reason: str, code: str = "PROTOCOL_MALFORMED") -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


def _state(reason: str) -> ProtocolError:
    return ProtocolError(f"session used out of turn: {reason}", code="PROTOCOL_STATE")


def _too_large(size: int) -> _Refused:
    return _Refused(f"an entry of {size} bytes of parts; a session carries at most {MAX_ENTRY_BYTES} (relays "
                    "carry larger ones)", "PROTOCOL_ENTRY_TOO_LARGE")


def _frame(fields: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    return len(body).to_bytes(_PREFIX, "big") + body


def _show(value: object) -> str:
    """``repr(value)`` cut to 80 characters, for messages about what a peer sent."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fields(frame: dict[str, Any], *names: str) -> dict[str, Any]:
    if frame.keys() != {"t", *names}:
        raise _Refused(f"a {_show(frame['t'])} frame with fields {_show(sorted(map(str, frame)))}")
    return frame


def _author(value: object) -> str:
    if not isinstance(value, str) or not is_device_id(value):
        raise _Refused(f"a bad device id {_show(value)}")
    return value


def _kind(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in _KINDS:
        raise _Refused(f"a bad entry kind {_show(value)}")
    return value


def _seq(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise _Refused(f"a bad sequence number {_show(value)}")
    return value


def _envelope(value: object) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_ENVELOPE_BYTES:
        raise _Refused(f"an envelope that is not 1 to {MAX_ENVELOPE_BYTES} bytes")
    return value


def _summary(raw: object) -> Summary:
    try:
        summary = unpack_summary(raw, "a summary", max_authors=MAX_AUTHORS)
    except MailboxError as exc:
        raise _Refused(f"a bad summary: {exc.message}") from None
    for author in summary:
        _author(author)
    return summary


def _packed_summary(summary: Summary) -> dict[str, list[Any]]:
    packed = pack_summary(summary)
    _summary(packed)
    return packed


def _announced(fields: dict[str, Any], received: set[_Key]) -> _Assembly:
    author, kind, seq = _author(fields["author"]), _kind(fields["kind"]), _seq(fields["seq"])
    size, counts = fields["size"], fields["parts"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise _Refused(f"entry {seq} of {author} with a bad size {_show(size)}")
    if not isinstance(counts, list) or not 0 < len(counts) <= MAX_PARTS or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_CHUNKS for n in counts):
        raise _Refused(f"entry {seq} of {author} with bad envelope counts {_show(counts)}")
    if size > MAX_ENTRY_BYTES:
        raise _too_large(size)
    if (author, kind, seq) in received:
        raise _Refused(f"entry {seq} of {author} (kind {kind}) again before it was acked")
    return _Assembly(author, kind, seq, size, counts)


def _envelopes(part: bytes) -> list[bytes]:
    try:
        envelopes = unpack_part(part, "a part")
    except MailboxError as exc:
        raise _Refused(f"a bad part: {exc.message}") from None
    if pack_part(envelopes) != part:
        raise _Refused("a part not in the canonical encoding of pack_part")
    for envelope in envelopes:
        _envelope(envelope)
    return envelopes
