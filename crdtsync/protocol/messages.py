"""The messages of the replication protocol (v2) and their msgpack codec. Pure: no IO, no clock, no randomness.

What replicates is an **author's log**: each device's writes, in one sequence across every relay and peer,
as sealed **entries** (README.md "Protocol v2" is the spec):

- an entry is one log body or snapshot body of one author, sealed by that author
  (:mod:`crdtsync.crypto.envelope`) into chunk envelopes, which travel as one or more **parts** (msgpack
  arrays of envelopes, :func:`pack_parts`). Every device keeps the parts of the entries it receives as
  received, bytes unchanged, and serves them to anyone: the author's signature travels with them.
- log and snapshot bodies (:class:`Batch`, envelope kinds UPDATE and SNAPSHOT): ``{"seq", "update",
  "clients", "prev"}``; ``prev`` chains the author's log: SHA-256 of log ``seq - 1``'s body (empty for seq 1);
  a snapshot as of ``seq`` carries the hash of log ``seq``'s body, so it is checked against the chain too.
- the author's **head** (:class:`Head`, kind HEAD), one envelope: its newest log seq and that body's digest,
  its newest snapshot seq, the lowest log seq it still keeps, a counter ``n`` that grows with every head it
  writes (the newest head of an author is the one with the highest ``(seq, n)``), and its **acks**: for every
  author it applied, the seq and digest it applied up to. Acks carry digests, so two devices that were shown
  two histories of one author find out from each other's heads.
- a **have** (:class:`Have`) says what a device or relay holds of one author; a summary maps author -> have.

Version 1 (crdtsync up to 9204cbf) had per-relay logs and heads without digests or counter; its heads are
still read (:meth:`Head.from_body` returns ``v1=True``), never written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from crdtsync.crypto.envelope import MAX_BODY_BYTES, split_body
from crdtsync.errors import MailboxError

#: The protocol version this code speaks (heads, session frames).
PROTOCOL_VERSION = 2
#: Largest number of envelopes (chunks) one part may hold: 64 x 4 MiB.
MAX_CHUNKS = 64
#: Largest chunk of a body, in bytes: what one envelope carries.
CHUNK_BYTES = MAX_BODY_BYTES
#: Largest number of parts one entry may span: 4 x 256 MiB of envelopes, about 1 GiB of update.
MAX_PARTS = 4
#: Length of a chain digest (SHA-256), in bytes.
DIGEST_BYTES = 32


def corrupt(what: str, reason: str) -> MailboxError:
    """The error for a malformed message or object ``what`` (``MAILBOX_OBJECT_CORRUPT``)."""
    return MailboxError(f"{what} is corrupt ({reason}); it will be read again on the next sync",
                        code="MAILBOX_OBJECT_CORRUPT")


def chain_digest(body: bytes) -> bytes:
    """The hash-chain link of a log body: its SHA-256 (32 bytes)."""
    return hashlib.sha256(body).digest()


@dataclass(frozen=True)
class Batch:
    """A log or snapshot body: ``seq``, ``update`` (Yjs v1 bytes), ``clients`` (the Yjs client ids the author
    writes with: a joining device announces them here before its registry entry has reached anyone) and
    ``prev`` (the hash chain: in log ``seq``, the SHA-256 of log ``seq - 1``'s body, empty for seq 1; in a
    snapshot as of ``seq``, the SHA-256 of log ``seq``'s body). Unchanged since v1."""

    seq: int
    update: bytes
    clients: tuple[int, ...] = ()
    prev: bytes = b""

    def to_body(self) -> bytes:
        """The msgpack body described in the module docstring."""
        body: bytes = msgpack.packb(
            {"seq": self.seq, "update": self.update, "clients": list(self.clients), "prev": self.prev},
            use_bin_type=True,
        )
        return body

    @classmethod
    def from_body(cls, data: bytes, what: str) -> Batch:
        """Parse a body. Raises ``MailboxError`` (``MAILBOX_OBJECT_CORRUPT``) on anything malformed."""
        raw = _unpack(data, what)
        update, clients, prev = raw.get("update"), raw.get("clients"), raw.get("prev")
        if not isinstance(update, bytes) or not isinstance(clients, list) or not all(
            isinstance(c, int) and 0 < c < 2**53 for c in clients
        ) or not isinstance(prev, bytes) or len(prev) not in (0, DIGEST_BYTES):
            raise corrupt(what, "bad batch fields")
        return cls(seq=check_seq(raw.get("seq"), what), update=update, clients=tuple(clients), prev=prev)


@dataclass(frozen=True)
class Ack:
    """How far a device applied one author's log: ``seq`` and the chain digest of that log body (``digest``
    empty in a v1 head, which carried none)."""

    seq: int
    digest: bytes = b""


@dataclass(frozen=True)
class Head:
    """A head body: newest log ``seq`` and its body's chain ``digest`` (empty for seq 0), newest snapshot seq
    ``snap`` (0: none), lowest log seq kept ``first``, head counter ``n``, and ``acks`` (author device id ->
    :class:`Ack`). ``v1`` marks a head read from a version-1 relay (per-relay seqs, no digests)."""

    seq: int
    snap: int = 0
    first: int = 1
    digest: bytes = b""
    n: int = 0
    acks: dict[str, Ack] = field(default_factory=dict)
    v1: bool = False

    def newer_than(self, other: Head | None) -> bool:
        """Whether this head supersedes ``other`` (None: no head) of the same author: a higher ``(seq, n)``."""
        return other is None or (self.seq, self.n) > (other.seq, other.n)

    def to_body(self) -> bytes:
        """The msgpack body (v2) described in the module docstring."""
        body: bytes = msgpack.packb({
            "v": PROTOCOL_VERSION, "seq": self.seq, "snap": self.snap, "first": self.first, "digest": self.digest,
            "n": self.n, "acks": {k: [a.seq, a.digest] for k, a in sorted(self.acks.items())},
        }, use_bin_type=True)
        return body

    @classmethod
    def from_body(cls, data: bytes, what: str) -> Head:
        """Parse a head body, v2 or v1. Raises ``MailboxError``: ``MAILBOX_OBJECT_CORRUPT`` on anything
        malformed, ``PROTOCOL_VERSION`` for a head of a later version."""
        raw = _unpack(data, what)
        version = raw.get("v", 1)
        if version != 1:
            check_version(version, what)
        seq, snap = check_seq(raw.get("seq"), what, zero=True), check_seq(raw.get("snap"), what, zero=True)
        first, acks = check_seq(raw.get("first"), what), raw.get("acks")
        if not isinstance(acks, dict) or not all(isinstance(k, str) for k in acks):
            raise corrupt(what, "bad acks")
        if snap > seq or first > seq + 1:
            raise corrupt(what, "inconsistent sequence numbers")
        if version == 1:
            return cls(seq=seq, snap=snap, first=first, acks={k: Ack(check_seq(v, what, zero=True))
                                                              for k, v in acks.items()}, v1=True)
        digest, n = raw.get("digest"), check_seq(raw.get("n"), what, zero=True)
        if not isinstance(digest, bytes) or len(digest) != (DIGEST_BYTES if seq else 0):
            raise corrupt(what, "bad digest")
        return cls(seq=seq, snap=snap, first=first, digest=digest, n=n,
                   acks={k: _ack(v, what) for k, v in acks.items()})


@dataclass(frozen=True)
class Have:
    """What a device or relay holds of one author's log: ``seq`` (newest log seq applied or held) with its chain
    ``digest``, ``first`` (lowest log seq it can serve; ``seq + 1`` when it keeps none) and ``snap`` (the
    snapshot seq it can serve, 0: none)."""

    seq: int
    digest: bytes = b""
    first: int = 1
    snap: int = 0

    def to_wire(self) -> list[Any]:
        """``[seq, digest, first, snap]``, as summaries carry it."""
        return [self.seq, self.digest, self.first, self.snap]

    @classmethod
    def from_wire(cls, raw: object, what: str) -> Have:
        """Parse :meth:`to_wire`'s form. Raises ``MailboxError`` (``MAILBOX_OBJECT_CORRUPT``)."""
        if not isinstance(raw, list) or len(raw) != 4:
            raise corrupt(what, "a have is not [seq, digest, first, snap]")
        seq, digest = check_seq(raw[0], what, zero=True), raw[1]
        first, snap = check_seq(raw[2], what), check_seq(raw[3], what, zero=True)
        if not isinstance(digest, bytes) or len(digest) not in (0, DIGEST_BYTES) or first > seq + 1 or snap > seq:
            raise corrupt(what, "inconsistent have")
        return cls(seq, digest, first, snap)


#: A summary: author device id -> what is held of its log.
Summary = dict[str, Have]


def pack_summary(summary: Summary) -> dict[str, list[Any]]:
    """A summary as plain msgpack-able data: ``{author: [seq, digest, first, snap]}``."""
    return {author: have.to_wire() for author, have in sorted(summary.items())}


def unpack_summary(raw: object, what: str, *, max_authors: int = 1 << 16) -> Summary:
    """Parse :func:`pack_summary`'s form (at most ``max_authors`` authors). Raises ``MailboxError``
    (``MAILBOX_OBJECT_CORRUPT``)."""
    if not isinstance(raw, dict) or len(raw) > max_authors or not all(isinstance(k, str) for k in raw):
        raise corrupt(what, "a summary is not a map of authors")
    return {author: Have.from_wire(value, f"{what} ({author})") for author, value in raw.items()}


@dataclass(frozen=True)
class Entry:
    """One author's sealed log or snapshot entry as it travels: ``author`` (device id), ``kind`` (envelope
    kind UPDATE or SNAPSHOT), ``seq``, and ``parts`` (one to :data:`MAX_PARTS` msgpack arrays of envelopes,
    byte for byte as the author sealed them). Nothing here is trusted until the entry is opened and checked
    (:mod:`crdtsync.protocol.authorlog`)."""

    author: str
    kind: int
    seq: int
    parts: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Bytes of all its parts."""
        return sum(len(part) for part in self.parts)


def check_version(version: object, what: str) -> None:
    """Refuse a message or object of another protocol version with a message a person can act on.

    Raises:
        MailboxError: ``PROTOCOL_VERSION``.
    """
    if version != PROTOCOL_VERSION:
        newer = isinstance(version, int) and version > PROTOCOL_VERSION
        raise MailboxError(
            f"{what} speaks protocol version {version!r}; this crdtsync speaks {PROTOCOL_VERSION}: "
            + ("upgrade crdtsync on this device" if newer else "upgrade crdtsync on the other device"),
            code="PROTOCOL_VERSION")


def check_seq(value: object, what: str, *, zero: bool = False) -> int:
    """``value`` as a sequence number (1 .. 2**63-1, or from 0 with ``zero``). Raises ``MailboxError``
    (``MAILBOX_OBJECT_CORRUPT``)."""
    if not isinstance(value, int) or isinstance(value, bool) or not (0 if zero else 1) <= value < 2**63:
        raise corrupt(what, f"bad sequence number {value!r}")
    return value


def _ack(value: object, what: str) -> Ack:
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], bytes) or len(value[1]) not in (
            0, DIGEST_BYTES):
        raise corrupt(what, "bad ack")
    return Ack(check_seq(value[0], what, zero=True), value[1])


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=1 << 20, max_map_len=1 << 16)
    except Exception as exc:
        raise corrupt(what, f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise corrupt(what, "not a map")
    return raw


def pack_part(envelopes: list[bytes]) -> bytes:
    """A part: the msgpack array of its envelopes."""
    packed: bytes = msgpack.packb(envelopes, use_bin_type=True)
    return packed


def pack_parts(envelopes: list[bytes], max_bytes: int) -> list[bytes]:
    """The parts that carry the envelopes of one body, in order: each at most :data:`MAX_CHUNKS` envelopes
    and ``max_bytes`` bytes (a store's object limit).

    Raises:
        MailboxError: ``MAILBOX_TOO_LARGE`` when they would be more than :data:`MAX_PARTS` parts.
    """
    groups: list[list[bytes]] = [[]]
    size = 5  # a msgpack array header
    for envelope in envelopes:
        need = len(envelope) + 5  # a bin header
        if groups[-1] and (len(groups[-1]) >= MAX_CHUNKS or size + need > max_bytes):
            groups.append([])
            size = 5
        groups[-1].append(envelope)
        size += need
    if len(groups) > MAX_PARTS:
        raise MailboxError(f"an update of {len(envelopes)} envelopes would take {len(groups)} objects; at most "
                           f"{MAX_PARTS} are allowed", code="MAILBOX_TOO_LARGE")
    return [pack_part(group) for group in groups]


def unpack_part(data: bytes, what: str) -> list[bytes]:
    """The envelopes of a part. Raises ``MailboxError`` (``MAILBOX_OBJECT_CORRUPT``): not an array of
    1..:data:`MAX_CHUNKS` byte strings (for example a torn or truncated object)."""
    try:
        raw = msgpack.unpackb(data, raw=False, max_array_len=MAX_CHUNKS, max_bin_len=len(data))
    except Exception as exc:
        raise corrupt(what, f"not an object: {type(exc).__name__}") from None
    if not isinstance(raw, list) or not raw or not all(isinstance(e, bytes) for e in raw):
        raise corrupt(what, "not an array of envelopes")
    return raw


def chunks_of(body: bytes) -> list[bytes]:
    """The chunk bodies to seal for ``body`` (always framed, even when one chunk suffices), each at most
    :data:`CHUNK_BYTES`."""
    return split_body(body, CHUNK_BYTES)
