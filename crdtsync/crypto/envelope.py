"""Envelope v2 (and v1): the sealed, signed unit that leaves a device (the design's "Envelope").

**Wire format.** The canonical msgpack encoding (what ``msgpack.packb`` writes: smallest integer and
length encodings, byte strings as bin) of the array::

    [magic "CSY1", version 2, vault_id (16 bytes), epoch (0 <= epoch < 2^64), sender device id (32 lowercase
     hex characters), kind (0 <= kind < 2^16), nonce (12 bytes), ciphertext (bytes), signature (64 bytes)]

Version 1 is the same with a 16-character sender id: what devices created up to 9204cbf write, and still
write (their id is theirs for good). A device with a 32-character id writes version 2, which crdtsync up to
9204cbf refuses with ``ENVELOPE_UNSUPPORTED_VERSION`` ("upgrade crdtsync"). Everything below holds for both.

- key: per (epoch, sender) subkey = HKDF-SHA256(vault key, salt=vault_id, info=``b"crdtsync/v1/envelope"``
  + epoch (8 bytes big-endian) + sender device id (ASCII)), 32 bytes, for AES-256-GCM-SIV.
- associated data: msgpack of the first six fields ``[magic, version, vault_id, epoch, sender, kind]``.
- plaintext: msgpack ``[sender Ed25519 public key (32 bytes), body (bytes)]``. Carrying the key lets a
  receiver verify a device that is not yet in its registry (a joining device self-registers: knowing the
  vault key is what admits it).
- signature: Ed25519 by the sender over msgpack of the first eight fields (header, nonce, ciphertext).

Readers accept only the canonical encoding, so one envelope has exactly one byte string: stores and peers
can compare objects byte for byte (fork detection) without re-encoding ambiguities.

**Nonces.** Each envelope takes a fresh random 96-bit nonce. AES-GCM-SIV is nonce-misuse resistant: even a
repeated nonce (a device restored from a backup) only reveals that two equal plaintexts are equal, never a
key stream or the authentication key. We still keep the classic random-nonce bound of 2^32 envelopes per
subkey (:data:`NONCE_LIMIT`; collision probability below 2^-33, far inside RFC 8452's margins): the caller
persists how many envelopes it sealed under the current (epoch, sender) subkey and passes it as
``sealed_count``; at the bound :func:`seal` raises ``ENVELOPE_NONCE_LIMIT`` and a new epoch is needed.

**Sizes.** An envelope is at most :data:`MAX_ENVELOPE_BYTES`; a body at most :data:`MAX_BODY_BYTES`, which
leaves room for the worst-case overhead (under 200 bytes). Larger bodies are cut by :func:`split_body` into
chunks, each sealed as its own body; :func:`join_chunks` checks and reassembles them. A chunk is canonical
msgpack ``[digest (32 bytes: SHA-256 of the whole body), index, count, total_len, part]``: the digest names
the group (so chunks of two bodies never mix) and proves the reassembled body is exactly the original.

**Errors.** :func:`open_envelope` checks in this order and raises :class:`~crdtsync.errors.EnvelopeError`
with these stable codes (nothing else, whatever the bytes):

1. ``ENVELOPE_OVERSIZE``: larger than ``max_size`` (checked before parsing).
2. ``ENVELOPE_NOT_ENVELOPE``: not a canonical msgpack array starting with the magic and an integer
   version (nine fields of the types and sizes above, the sender id as wide as its version says).
3. ``ENVELOPE_UNSUPPORTED_VERSION``: a version other than 1 or 2 (written by a newer crdtsync).
4. ``ENVELOPE_OTHER_VAULT``: written for another vault id.
5. ``ENVELOPE_UNKNOWN_EPOCH``: no key for its epoch.
6. registered sender: ``ENVELOPE_BAD_SIGNATURE`` (against the registered key), then
   ``ENVELOPE_DECRYPT_FAILED``, then ``ENVELOPE_UNKNOWN_SENDER`` if the plaintext does not carry the
   registered key.
7. unregistered sender: ``ENVELOPE_DECRYPT_FAILED``, then ``ENVELOPE_UNKNOWN_SENDER`` when the plaintext
   is malformed or its key does not hash to the sender's device id, then ``ENVELOPE_BAD_SIGNATURE``.

:func:`seal` raises ``ENVELOPE_OVERSIZE`` and ``ENVELOPE_NONCE_LIMIT``; :func:`join_chunks` and
:func:`parse_chunk` raise ``ENVELOPE_CHUNK_INVALID``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crdtsync.crypto.keys import (
    DEVICE_ID_CHARS,
    KEY_BYTES,
    LEGACY_DEVICE_ID_CHARS,
    MAX_EPOCH,
    SIGNATURE_BYTES,
    VAULT_ID_BYTES,
    VAULT_KEY_BYTES,
    DeviceKeys,
    id_matches,
    is_device_id,
    verify,
)
from crdtsync.errors import EnvelopeError

#: An update batch (Yjs v1 update bytes inside the body).
KIND_UPDATE = 1
#: A device's head: its sequence number, state vector and acknowledgements.
KIND_HEAD = 2
#: A full-state snapshot (compaction).
KIND_SNAPSHOT = 3
#: Largest kind value.
MAX_KIND = 0xFFFF

#: The magic string, first field of every envelope.
MAGIC = "CSY1"
#: The envelope version a device with a 32-character id writes; both versions are read.
VERSION = 2
#: The envelope version of a device with a 16-character id (created up to 9204cbf).
LEGACY_VERSION = 1
#: The sender id width of each version.
_SENDER_CHARS = {LEGACY_VERSION: LEGACY_DEVICE_ID_CHARS, VERSION: DEVICE_ID_CHARS}
#: Largest envelope, in bytes.
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
#: Largest body :func:`seal` accepts, in bytes: a sealed body of this size always fits in an envelope.
MAX_BODY_BYTES = MAX_ENVELOPE_BYTES - 256
#: Envelopes one device may seal under one (epoch, sender) subkey.
NONCE_LIMIT = 2**32

_NONCE_BYTES = 12
_TAG_BYTES = 16
_SUBKEY_DOMAIN = b"crdtsync/v1/envelope"
_CHUNK_OVERHEAD = 64
_MAX_CHUNKS = 2**32


@dataclass(frozen=True)
class EnvelopeHeader:
    """The clear header of an envelope, as :func:`peek` reads it without any verification: use it to route,
    never to trust. ``vault_id`` is 16 bytes, ``sender`` a device id."""

    version: int
    vault_id: bytes
    epoch: int
    sender: str
    kind: int


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified and decrypted envelope.

    ``sender_sign_pk`` is the sender's raw 32-byte Ed25519 key. ``registered`` is False when the sender was
    verified only by the key inside the plaintext (it was not in the registry): the caller must then find
    the device's self-registration in ``body`` and refuse the envelope otherwise.
    """

    sender: str
    epoch: int
    kind: int
    body: bytes
    sender_sign_pk: bytes
    registered: bool


@dataclass(frozen=True)
class Chunk:
    """One piece of a body cut by :func:`split_body`: ``part`` is piece ``index`` of ``count``; ``digest``
    (32 bytes) is the SHA-256 of the whole body, ``total_len`` its length in bytes. Chunks with the same
    digest belong together."""

    digest: bytes
    index: int
    count: int
    total_len: int
    part: bytes


def seal(
    *,
    vault_id: bytes,
    epoch: int,
    vault_key: bytes,
    sender: DeviceKeys,
    kind: int,
    body: bytes,
    sealed_count: int,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt and sign ``body`` into an envelope (format in the module docstring).

    Args:
        vault_id: the vault's 16-byte id.
        epoch: the key epoch, 0 <= epoch < 2^64; ``vault_key`` (32 bytes) is that epoch's key.
        sender: this device's keys.
        kind: what the body is (:data:`KIND_UPDATE`...), 0 <= kind <= :data:`MAX_KIND`.
        body: at most :data:`MAX_BODY_BYTES` bytes.
        sealed_count: how many envelopes this device already sealed under this epoch, i.e. under its own
            (epoch, sender) subkey (persisted by the caller, incremented after each seal).
        randbytes: the source of the 12-byte nonce; tests pass a fixed one to get known-answer envelopes.

    Raises:
        EnvelopeError: ``ENVELOPE_OVERSIZE`` when ``body`` is too large (cut it with :func:`split_body`);
            ``ENVELOPE_NONCE_LIMIT`` when ``sealed_count`` reached :data:`NONCE_LIMIT`.
        ValueError: an argument has the wrong length or range (a programming error).
    """
    if not (
        len(vault_id) == VAULT_ID_BYTES and 0 <= epoch <= MAX_EPOCH and 0 <= kind <= MAX_KIND and sealed_count >= 0
    ):
        raise ValueError("vault_id, epoch, kind or sealed_count out of range")
    if len(body) > MAX_BODY_BYTES:
        raise EnvelopeError(
            f"a body of {len(body)} bytes does not fit in one envelope (at most {MAX_BODY_BYTES}): "
            "cut it with split_body",
            code="ENVELOPE_OVERSIZE",
        )
    if sealed_count >= NONCE_LIMIT:
        raise EnvelopeError(
            f"this device has sealed {NONCE_LIMIT} envelopes under key epoch {epoch}, the safe limit: "
            "start a new epoch (rotate the vault key) before writing more",
            code="ENVELOPE_NONCE_LIMIT",
        )
    nonce = randbytes(_NONCE_BYTES)
    if len(nonce) != _NONCE_BYTES:
        raise ValueError(f"randbytes returned {len(nonce)} bytes instead of {_NONCE_BYTES}")
    version = VERSION if len(sender.device_id) == DEVICE_ID_CHARS else LEGACY_VERSION
    header: list[Any] = [MAGIC, version, vault_id, epoch, sender.device_id, kind]
    plaintext = msgpack.packb([sender.sign_pk, body])
    aead = AESGCMSIV(_subkey(vault_key, vault_id, epoch, sender.device_id))
    ciphertext = aead.encrypt(nonce, plaintext, msgpack.packb(header))
    signature = sender.sign(msgpack.packb([*header, nonce, ciphertext]))
    envelope: bytes = msgpack.packb([*header, nonce, ciphertext, signature])
    return envelope


def peek(data: bytes, *, max_size: int = MAX_ENVELOPE_BYTES) -> EnvelopeHeader:
    """The clear header of envelope ``data``, checked for shape only (no key, no signature): for routing.

    Raises:
        EnvelopeError: ``ENVELOPE_OVERSIZE``, ``ENVELOPE_NOT_ENVELOPE`` or ``ENVELOPE_UNSUPPORTED_VERSION``
            (checks 1 to 3 of the module docstring).
    """
    fields = _parse(data, max_size)
    return EnvelopeHeader(fields[1], fields[2], fields[3], fields[4], fields[5])


def open_envelope(
    data: bytes,
    *,
    vault_id: bytes,
    epoch_keys: Mapping[int, bytes],
    sender_key: Callable[[str, int], bytes | None],
    max_size: int = MAX_ENVELOPE_BYTES,
) -> OpenedEnvelope:
    """Verify and decrypt envelope ``data`` of the vault ``vault_id`` (16 bytes).

    Args:
        epoch_keys: the 32-byte vault key of every epoch this device holds.
        sender_key: ``sender_key(device_id, epoch)`` returns the raw 32-byte Ed25519 key the registry holds
            for that device at that epoch, or None when the device is not (yet) registered. Revocation is
            the caller's decision: for a device revoked at or before ``epoch`` raise an
            :class:`~crdtsync.errors.EnvelopeError` from the callback (it propagates unchanged), never
            return None, or the envelope would be checked as a self-registering newcomer.
        max_size: largest envelope accepted, in bytes.

    Raises:
        EnvelopeError: one of the codes of the module docstring, in the order given there.
    """
    fields = _parse(data, max_size)
    envelope_vault, epoch, sender, kind, nonce, ciphertext, signature = fields[2:]
    if envelope_vault != vault_id:
        raise EnvelopeError(
            "this envelope was written for another vault: check the mailbox URL", code="ENVELOPE_OTHER_VAULT"
        )
    if epoch not in epoch_keys:
        raise EnvelopeError(
            f"this envelope uses key epoch {epoch}, which this device does not hold: pull the vault header "
            "again, or join the vault again if this device was removed",
            code="ENVELOPE_UNKNOWN_EPOCH",
        )
    signed = msgpack.packb(fields[:8])
    aead = AESGCMSIV(_subkey(epoch_keys[epoch], vault_id, epoch, sender))
    ad = msgpack.packb(fields[:6])
    registered_pk = sender_key(sender, epoch)
    if registered_pk is not None and not verify(registered_pk, signature, signed):
        raise _bad_signature(sender)
    try:
        plaintext = aead.decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise EnvelopeError(
            f"the envelope from device {sender} does not decrypt with the vault key of epoch {epoch}: it was "
            "altered or written with another key; it was ignored",
            code="ENVELOPE_DECRYPT_FAILED",
        ) from None
    sign_pk, body = _payload(plaintext, sender)
    if registered_pk is None and not verify(sign_pk, signature, signed):
        raise _bad_signature(sender)
    if registered_pk is not None and sign_pk != registered_pk:
        raise _unknown_sender(sender, "does not match the key in the device registry")
    return OpenedEnvelope(sender, epoch, kind, body, sign_pk, registered_pk is not None)


def envelope_epoch(data: bytes) -> int:
    """The epoch an envelope says it was sealed under, read without opening it (for display: nothing is
    verified).

    Raises:
        EnvelopeError: ``ENVELOPE_NOT_ENVELOPE``, ``ENVELOPE_OVERSIZE``, ``ENVELOPE_UNSUPPORTED_VERSION``.
    """
    epoch: int = _parse(data, MAX_ENVELOPE_BYTES)[3]
    return epoch


def split_body(body: bytes, limit: int = MAX_BODY_BYTES) -> list[bytes]:
    """Cut ``body`` into chunks of at most ``limit`` bytes each (framing in the module docstring), in
    order. Always at least one chunk, so a kind that may be chunked is always chunked and receivers never
    guess.

    Raises:
        ValueError: ``limit`` is below 128 bytes, or the body would need 2^32 chunks or more.
    """
    if limit < 2 * _CHUNK_OVERHEAD:
        raise ValueError(f"a chunk limit must be at least {2 * _CHUNK_OVERHEAD} bytes")
    part_size = limit - _CHUNK_OVERHEAD
    count = max(1, -(-len(body) // part_size))
    if count >= _MAX_CHUNKS:
        raise ValueError("the body is too large to be chunked")
    digest = hashlib.sha256(body).digest()
    return [
        msgpack.packb([digest, index, count, len(body), body[index * part_size : (index + 1) * part_size]])
        for index in range(count)
    ]


def parse_chunk(data: bytes) -> Chunk:
    """Read one chunk written by :func:`split_body` (to group chunks by digest before joining them).

    Raises:
        EnvelopeError: ``ENVELOPE_CHUNK_INVALID`` when ``data`` is not exactly such a chunk.
    """
    fields = _unpack_list(data, max_len=5)
    if (
        fields is None
        or len(fields) != 5
        or not _is_bytes(fields[0], hashlib.sha256().digest_size)
        or not all(type(value) is int for value in fields[1:4])
        or not isinstance(fields[4], bytes)
        or not 0 <= fields[1] < fields[2] < _MAX_CHUNKS
        or not len(fields[4]) <= fields[3]
    ):
        raise _chunk_invalid("a chunk has the wrong fields")
    return Chunk(*fields)


def join_chunks(chunks: Iterable[bytes]) -> bytes:
    """Reassemble a body from all of its chunks, in any order.

    Raises:
        EnvelopeError: ``ENVELOPE_CHUNK_INVALID`` when a chunk is malformed, chunks of different bodies are
            mixed, one is missing or repeated, or the result is not the body the chunks announce.
    """
    parsed = sorted((parse_chunk(chunk) for chunk in chunks), key=lambda chunk: chunk.index)
    if not parsed:
        raise _chunk_invalid("there are no chunks")
    first = parsed[0]
    if any((c.digest, c.count, c.total_len) != (first.digest, first.count, first.total_len) for c in parsed):
        raise _chunk_invalid("the chunks belong to different bodies")
    if [c.index for c in parsed] != list(range(first.count)):
        raise _chunk_invalid(f"expected chunks 0 to {first.count - 1} exactly once")
    body = b"".join(c.part for c in parsed)
    if len(body) != first.total_len or hashlib.sha256(body).digest() != first.digest:
        raise _chunk_invalid("the reassembled body does not match its digest")
    return body


def _subkey(vault_key: bytes, vault_id: bytes, epoch: int, sender: str) -> bytes:
    """The 32-byte AES-GCM-SIV key of (epoch, sender) under ``vault_key``."""
    if len(vault_key) != VAULT_KEY_BYTES:
        raise ValueError(f"a vault key is {VAULT_KEY_BYTES} bytes")
    info = _SUBKEY_DOMAIN + epoch.to_bytes(8, "big") + sender.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=vault_id, info=info).derive(vault_key)


def _parse(data: bytes, max_size: int) -> list[Any]:
    """The nine fields of a v1 envelope, checked for shape and canonical encoding (checks 1 to 3)."""
    if len(data) > max_size:
        raise EnvelopeError(
            f"an envelope of {len(data)} bytes is larger than the {max_size} allowed: it was not written by "
            "crdtsync or the store returned a damaged object; it was ignored",
            code="ENVELOPE_OVERSIZE",
        )
    not_envelope = EnvelopeError(
        "this object is not a crdtsync envelope (damaged, truncated or foreign): it was ignored; check the "
        "mailbox for stray or damaged files",
        code="ENVELOPE_NOT_ENVELOPE",
    )
    fields = _unpack_list(data, max_len=16)
    if fields is None or len(fields) < 2 or fields[0] != MAGIC or type(fields[1]) is not int:
        raise not_envelope
    if fields[1] not in _SENDER_CHARS:
        raise EnvelopeError(
            f"this envelope has version {fields[1]}, which this crdtsync cannot read: upgrade crdtsync on this device",
            code="ENVELOPE_UNSUPPORTED_VERSION",
        )
    if not (
        len(fields) == 9
        and _is_bytes(fields[2], VAULT_ID_BYTES)
        and type(fields[3]) is int
        and 0 <= fields[3] <= MAX_EPOCH
        and isinstance(fields[4], str)
        and is_device_id(fields[4])
        and len(fields[4]) == _SENDER_CHARS[fields[1]]
        and type(fields[5]) is int
        and 0 <= fields[5] <= MAX_KIND
        and _is_bytes(fields[6], _NONCE_BYTES)
        and isinstance(fields[7], bytes)
        and len(fields[7]) >= _TAG_BYTES
        and _is_bytes(fields[8], SIGNATURE_BYTES)
    ):
        raise not_envelope
    return fields


def _unpack_list(data: bytes, *, max_len: int) -> list[Any] | None:
    """``data`` decoded, when it is the canonical msgpack encoding of an array (no maps or extension types,
    arrays of at most ``max_len`` items); else None. Never raises, whatever the bytes."""
    try:
        value = msgpack.unpackb(data, raw=False, max_array_len=max_len, max_map_len=0, max_ext_len=0)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(value, list) or msgpack.packb(value) != data:
        return None
    return value


def _is_bytes(value: object, length: int) -> bool:
    return isinstance(value, bytes) and len(value) == length


def _payload(plaintext: bytes, sender: str) -> tuple[bytes, bytes]:
    """(sender public key, body) from a plaintext, whose key must hash to ``sender``."""
    fields = _unpack_list(plaintext, max_len=2)
    if not (
        fields is not None and len(fields) == 2 and _is_bytes(fields[0], KEY_BYTES) and isinstance(fields[1], bytes)
    ):
        raise _unknown_sender(sender, "carries a malformed payload")
    if not id_matches(sender, fields[0]):
        raise _unknown_sender(sender, "carries the key of another device")
    return fields[0], fields[1]


def _bad_signature(sender: str) -> EnvelopeError:
    return EnvelopeError(
        f"the envelope from device {sender} is not signed by that device's key: it was altered or forged; "
        "it was ignored",
        code="ENVELOPE_BAD_SIGNATURE",
    )


def _unknown_sender(sender: str, reason: str) -> EnvelopeError:
    return EnvelopeError(
        f"the envelope that claims to come from device {sender} {reason}: it was ignored",
        code="ENVELOPE_UNKNOWN_SENDER",
    )


def _chunk_invalid(reason: str) -> EnvelopeError:
    return EnvelopeError(
        f"a body split into chunks cannot be reassembled ({reason}): fetch its chunks again; if this "
        "persists, the sending device wrote them wrongly",
        code="ENVELOPE_CHUNK_INVALID",
    )
