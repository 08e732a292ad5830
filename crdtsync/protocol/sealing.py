"""Sealing and opening the entries and heads of protocol v2, given keys and a registry lookup. Pure: the nonce
source is passed in (:func:`crdtsync.crypto.envelope.seal`), nothing here reads a file, a clock or a socket.

An entry's body is cut into chunks (:func:`crdtsync.protocol.messages.chunks_of`), each sealed into an envelope
by its author (AEAD under the vault key of the epoch, Ed25519 signature: :mod:`crdtsync.crypto.envelope`), and
the envelopes are grouped into parts. Opening checks every envelope (vault, epoch, signature against the
registered key or, for a device not registered yet, against the key it carries, which must hash to its id),
that each was written by the entry's author as the entry's kind, joins the chunks and parses the body; the seq
inside the signed body must be the entry's. A head is one envelope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from crdtsync.crypto.envelope import KIND_HEAD, OpenedEnvelope, join_chunks, open_envelope, parse_chunk, seal
from crdtsync.crypto.keys import DeviceKeys
from crdtsync.errors import CrdtsyncError, EnvelopeError, MailboxError
from crdtsync.protocol.messages import (
    MAX_PARTS,
    Batch,
    Entry,
    Head,
    chain_digest,
    chunks_of,
    pack_parts,
    unpack_part,
)

#: ``sender_key(device_id, epoch)``: the registered 32-byte Ed25519 key of a device, or None when it is not
#: registered (see :func:`crdtsync.crypto.envelope.open_envelope`).
SenderKey = Callable[[str, int], bytes | None]
#: A nonce source: ``randbytes(n)`` returns n random bytes.
RandBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class Keyring:
    """What sealing and opening need: the vault's 16-byte ``vault_id``, the 32-byte vault key of every epoch
    held (``epochs``), the epoch this device seals under, this device's keys, and the other keys held of an
    epoch number (``alternates``: two statements made one epoch at once, :mod:`crdtsync.crypto.epochs`). An
    envelope that does not decrypt under its epoch's key is tried under that epoch's alternates."""

    vault_id: bytes
    epochs: Mapping[int, bytes]
    epoch: int
    device: DeviceKeys
    alternates: Mapping[int, Sequence[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenedEntry:
    """An entry that opened: its parsed body, the chain ``digest`` of that body (SHA-256), and whether every
    envelope's sender was registered when it was checked (False: a joining device's first entries)."""

    batch: Batch
    digest: bytes
    registered: bool


def seal_entry(keyring: Keyring, kind: int, body: bytes, *, sealed_count: int, max_part_bytes: int,
               randbytes: RandBytes) -> tuple[list[bytes], int]:
    """Seal ``body`` (a :class:`Batch` body) of kind UPDATE or SNAPSHOT into parts of at most ``max_part_bytes``
    bytes each. ``sealed_count`` is how many envelopes this device sealed under its epoch before; returns the
    parts and the new count (to persist before the parts leave the device).

    Raises:
        MailboxError: ``MAILBOX_TOO_LARGE`` (more than :data:`~crdtsync.protocol.messages.MAX_PARTS` parts).
        EnvelopeError: ``ENVELOPE_NONCE_LIMIT``.
    """
    envelopes = []
    for chunk in chunks_of(body):
        envelopes.append(_seal(keyring, kind, chunk, sealed_count, randbytes))
        sealed_count += 1
    return pack_parts(envelopes, max_part_bytes), sealed_count


def seal_head(keyring: Keyring, head: Head, *, sealed_count: int, randbytes: RandBytes) -> bytes:
    """The envelope of ``head`` (the caller adds one to its sealed count)."""
    return _seal(keyring, KIND_HEAD, head.to_body(), sealed_count, randbytes)


def _seal(keyring: Keyring, kind: int, body: bytes, count: int, randbytes: RandBytes) -> bytes:
    return seal(vault_id=keyring.vault_id, epoch=keyring.epoch, vault_key=keyring.epochs[keyring.epoch],
                sender=keyring.device, kind=kind, body=body, sealed_count=count, randbytes=randbytes)


def _open(keyring: Keyring, sender_key: SenderKey, data: bytes, author: str, kind: int,
          what: str) -> tuple[bytes, bool]:
    try:
        opened = open_envelope(data, vault_id=keyring.vault_id, epoch_keys=keyring.epochs, sender_key=sender_key)
    except EnvelopeError as exc:
        if exc.code != "ENVELOPE_DECRYPT_FAILED" or not keyring.alternates:
            raise
        opened = _open_alternate(keyring, sender_key, data, exc)
    if opened.sender != author or opened.kind != kind:
        raise MailboxError(f"{what} was written by {opened.sender} as kind {opened.kind}, not by {author}: "
                           "another device's object was put in its place", code="MAILBOX_OBJECT_CORRUPT")
    return opened.body, opened.registered


def _open_alternate(keyring: Keyring, sender_key: SenderKey, data: bytes, failed: EnvelopeError) -> OpenedEnvelope:
    """``data`` opened under one of the alternate keys, or ``failed`` raised again when none opens it."""
    for epoch, keys in keyring.alternates.items():
        for key in keys:
            try:
                return open_envelope(data, vault_id=keyring.vault_id, epoch_keys={**keyring.epochs, epoch: key},
                                     sender_key=sender_key)
            except EnvelopeError as exc:
                if exc.code != "ENVELOPE_DECRYPT_FAILED":
                    raise
    raise failed


def open_head(keyring: Keyring, sender_key: SenderKey, data: bytes, author: str, what: str) -> Head:
    """Verify and parse the head envelope ``data`` of ``author``.

    Raises:
        EnvelopeError: the envelope does not open (its code).
        MailboxError: ``MAILBOX_OBJECT_CORRUPT`` (another author's, another kind, a malformed body),
            ``PROTOCOL_VERSION``.
    """
    body, _ = _open(keyring, sender_key, data, author, KIND_HEAD, what)
    return Head.from_body(body, what)


def open_entry(keyring: Keyring, sender_key: SenderKey, entry: Entry, what: str) -> OpenedEntry:
    """Verify and parse ``entry``: every envelope of every part opens and is ``entry.author``'s of
    ``entry.kind``, the chunks are complete, and the body's seq is ``entry.seq``.

    Raises:
        EnvelopeError: an envelope does not open (its code).
        MailboxError: ``MAILBOX_OBJECT_CORRUPT`` (malformed, another author's, another seq),
            ``MAILBOX_OBJECT_MISSING`` (fewer chunks than the body announces: a part is missing).
    """
    if not entry.parts or len(entry.parts) > MAX_PARTS:
        raise MailboxError(f"{what} has {len(entry.parts)} parts", code="MAILBOX_OBJECT_CORRUPT")
    chunks: list[bytes] = []
    registered = True
    for part in entry.parts:
        for envelope in unpack_part(part, what):
            body, known = _open(keyring, sender_key, envelope, entry.author, entry.kind, what)
            registered = registered and known
            chunks.append(body)
    try:
        count = parse_chunk(chunks[0]).count
        if count != len(chunks):
            raise MailboxError(f"{what} holds {len(chunks)} of its {count} chunks: a part is missing (or not "
                               "listed yet)", code="MAILBOX_OBJECT_MISSING")
        body = join_chunks(chunks)
        batch = Batch.from_body(body, what)
    except MailboxError:
        raise
    except CrdtsyncError as exc:
        raise MailboxError(f"{what}: {exc.message}", code="MAILBOX_OBJECT_CORRUPT") from None
    if batch.seq != entry.seq:
        raise MailboxError(f"{what} holds seq {batch.seq}, not {entry.seq}: the object was replaced",
                           code="MAILBOX_OBJECT_CORRUPT")
    return OpenedEntry(batch, chain_digest(body), registered)

