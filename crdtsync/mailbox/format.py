"""Mailbox protocol v1: object names and the sealed bodies they hold. Pure: no IO, no clock.

Layout under a mailbox URL (README.md "Mailbox layout" is the spec)::

    <prefix>/crdtsync-v1/<vault_tag>/
      vault.json                      public header (crdtsync.crypto.header): KDF params + salt, vault keys
                                      wrapped under the passphrase per epoch
      d/<device_id>/log/<seq:016x>    one update batch of that device; seq strictly increasing from 1
      d/<device_id>/log/<seq:016x>.1  continuations of a batch too large for one object (.1, .2, ...)
      d/<device_id>/snap/<seq:016x>   that device's whole contribution as of seq (compaction), and its
                                      continuations likewise
      d/<device_id>/head              the device's latest seq, its snapshot seq, lowest log seq kept, acks

An object is a msgpack array of envelopes (``crdtsync.crypto.envelope``), the chunks of one body; a head is
one envelope. A body with more chunks than one object holds (:data:`MAX_CHUNKS`, or the store's 256 MiB)
continues in ``<key>.1``, ``<key>.2``... up to :data:`MAX_PARTS` objects; the chunks' own framing (index and
count, under the signature) says how many there are, and the writer puts the continuations before the object
at the key itself. Bodies (msgpack maps, inside the AEAD and under the sender's signature):

- log and snap (kinds UPDATE and SNAPSHOT): ``{"seq": int, "update": Yjs v1 update bytes, "clients": [int],
  "prev": bytes}`` where ``clients`` are the Yjs client ids the sender writes with (a joining device announces
  them here before its registry entry has reached anyone) and ``prev`` chains the device's log: SHA-256 of the
  previous log body (empty for seq 1; a snapshot as of seq carries the hash of log seq's body). A reader that
  finds a body whose ``prev`` is not the hash of what it applied before has been served a fork: two different,
  validly signed histories of one device. It raises a persistent alarm (``MAILBOX_FORK``).
- head (kind HEAD): ``{"seq": int, "snap": int, "first": int, "acks": {device_id: seq}}``: the newest log
  seq, the newest snapshot seq (0: none), the lowest log seq still stored, and how far the sender has
  applied every other device's log.

The sequence number inside the signed body is what a reader trusts, never the object name: a log object
whose body carries another seq, another sender or another vault is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from crdtsync.crypto.envelope import MAX_BODY_BYTES, split_body
from crdtsync.errors import MailboxError

ROOT = "crdtsync-v1"
HEADER_NAME = "vault.json"
#: Largest number of envelopes (chunks) one object may hold: 64 x 4 MiB.
MAX_CHUNKS = 64
#: Largest chunk of a body, in bytes: what one envelope carries.
CHUNK_BYTES = MAX_BODY_BYTES
#: Largest number of objects one log or snapshot body may span (the object at its key, then the continuations
#: ``<key>.1``, ``<key>.2``...): 4 x 256 MiB of envelopes, about 1 GiB of update.
MAX_PARTS = 4


def vault_prefix(vault_tag: str) -> str:
    """The folder of one vault inside a mailbox."""
    return f"{ROOT}/{vault_tag}"


def header_key(vault_tag: str) -> str:
    """Where the public vault header lives."""
    return f"{vault_prefix(vault_tag)}/{HEADER_NAME}"


def devices_prefix(vault_tag: str) -> str:
    """The folder listing every device that ever pushed."""
    return f"{vault_prefix(vault_tag)}/d"


def head_key(vault_tag: str, device_id: str) -> str:
    """The head object of ``device_id``."""
    return f"{devices_prefix(vault_tag)}/{device_id}/head"


def log_key(vault_tag: str, device_id: str, seq: int) -> str:
    """The log object ``seq`` of ``device_id``."""
    return f"{devices_prefix(vault_tag)}/{device_id}/log/{seq:016x}"


def snap_key(vault_tag: str, device_id: str, seq: int) -> str:
    """The snapshot object of ``device_id`` as of ``seq``."""
    return f"{devices_prefix(vault_tag)}/{device_id}/snap/{seq:016x}"


def part_key(key: str, part: int) -> str:
    """The object holding part ``part`` of the body at ``key``: ``key`` itself for part 0, then ``key.1``..."""
    return key if part == 0 else f"{key}.{part}"


def parse_seq(name: str) -> int | None:
    """The sequence number of a log or snapshot object's name (16 lowercase hex digits, the part of a
    continuation ``<seq>.<part>`` included), or None for anything else."""
    base, dot, part = name.partition(".")
    if len(base) == 16 and all(c in "0123456789abcdef" for c in base) and (not dot or part.isdigit()):
        return int(base, 16)
    return None


def _corrupt(what: str, reason: str) -> MailboxError:
    return MailboxError(f"{what} is corrupt ({reason}); it will be read again on the next sync",
                        code="MAILBOX_OBJECT_CORRUPT")


@dataclass(frozen=True)
class Batch:
    """A log or snapshot body: ``seq``, ``update`` (Yjs v1 bytes), ``clients`` (Yjs client ids) and ``prev``
    (the hash chain: in log ``seq``, the SHA-256 of log ``seq - 1``'s body, empty for seq 1; in a snapshot
    as of ``seq``, the SHA-256 of log ``seq``'s body)."""

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
        ) or not isinstance(prev, bytes) or len(prev) not in (0, 32):
            raise _corrupt(what, "bad batch fields")
        return cls(seq=_seq(raw.get("seq"), what), update=update, clients=tuple(clients), prev=prev)


@dataclass(frozen=True)
class Head:
    """A head body: newest log ``seq``, newest snapshot seq ``snap`` (0: none), lowest log seq kept
    ``first``, and ``acks`` (device_id -> the seq of that device's log applied by the writer)."""

    seq: int
    snap: int = 0
    first: int = 1
    acks: dict[str, int] = field(default_factory=dict)

    def to_body(self) -> bytes:
        """The msgpack body described in the module docstring."""
        body: bytes = msgpack.packb({"seq": self.seq, "snap": self.snap, "first": self.first, "acks": self.acks},
                                    use_bin_type=True)
        return body

    @classmethod
    def from_body(cls, data: bytes, what: str) -> Head:
        """Parse a head body. Raises ``MailboxError`` (``MAILBOX_OBJECT_CORRUPT``) on anything malformed."""
        raw = _unpack(data, what)
        seq, snap = _seq(raw.get("seq"), what, zero=True), _seq(raw.get("snap"), what, zero=True)
        first, acks = _seq(raw.get("first"), what), raw.get("acks")
        if not isinstance(acks, dict) or not all(isinstance(k, str) for k in acks):
            raise _corrupt(what, "bad acks")
        acks = {k: _seq(v, what, zero=True) for k, v in acks.items()}
        if snap > seq or first > seq + 1:
            raise _corrupt(what, "inconsistent sequence numbers")
        return cls(seq=seq, snap=snap, first=first, acks=dict(acks))


def _seq(value: object, what: str, *, zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not (0 if zero else 1) <= value < 2**63:
        raise _corrupt(what, f"bad sequence number {value!r}")
    return value


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=1 << 20, max_map_len=1 << 16)
    except Exception as exc:
        raise _corrupt(what, f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise _corrupt(what, "not a map")
    return raw


def chain_digest(body: bytes) -> bytes:
    """The hash-chain link of a log body: its SHA-256 (32 bytes)."""
    return hashlib.sha256(body).digest()


def pack_object(envelopes: list[bytes]) -> bytes:
    """An object: the msgpack array of its envelopes."""
    packed: bytes = msgpack.packb(envelopes, use_bin_type=True)
    return packed


def pack_objects(envelopes: list[bytes], max_bytes: int) -> list[bytes]:
    """The objects that carry the envelopes of one body, in order: each at most :data:`MAX_CHUNKS` envelopes
    and ``max_bytes`` bytes (the store's object limit); the first goes at the body's key, the others at its
    continuation keys (:func:`part_key`).

    Raises:
        MailboxError: ``MAILBOX_TOO_LARGE`` when they would be more than :data:`MAX_PARTS` objects.
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
    return [pack_object(group) for group in groups]


def unpack_object(data: bytes, what: str) -> list[bytes]:
    """The envelopes of an object. Raises ``MailboxError`` (``MAILBOX_OBJECT_CORRUPT``): not an array of
    1..:data:`MAX_CHUNKS` byte strings (for example a torn or truncated object)."""
    try:
        raw = msgpack.unpackb(data, raw=False, max_array_len=MAX_CHUNKS, max_bin_len=len(data))
    except Exception as exc:
        raise _corrupt(what, f"not an object: {type(exc).__name__}") from None
    if not isinstance(raw, list) or not raw or not all(isinstance(e, bytes) for e in raw):
        raise _corrupt(what, "not an array of envelopes")
    return raw


def chunks_of(body: bytes) -> list[bytes]:
    """The chunk bodies to seal for ``body`` (always framed, even when one chunk suffices), each at most
    :data:`CHUNK_BYTES`."""
    return split_body(body, CHUNK_BYTES)
