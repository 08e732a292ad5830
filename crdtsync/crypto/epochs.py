"""Epochs of the vault key: the signed statements that move a vault to a new key, and the rules every device
applies to them to agree on who is revoked and which epoch to seal under. Pure: no IO, no clock (randomness
only inside :func:`make_statement`, from the OS through ``cryptography``).

**Why a statement.** A new vault key (a device was revoked, or the passphrase changed) must reach every
remaining device by any path, and no one may hand two devices two different keys for one statement. So the
device that makes the key publishes one **epoch statement**, an object signed with its device key, in which
the new key is wrapped for each recipient and committed to once; every recipient checks that the key it
unwraps matches the commitment, so all recipients of one statement hold the same key.

**Statement v1** (``to_bytes``): the canonical msgpack encoding (what ``msgpack.packb`` writes) of
``[body, signature]``, where ``body`` is the canonical msgpack of the map, keys in this order::

    {"t": "epoch", "v": 1, "vault": vault_id (16 bytes), "epoch": E, "prev": P (P < E < 2^64),
     "author": device id, "reason": "revoke" | "passphrase" | "rekey",
     "commit": key_commitment(vault_id, E, key) (32 bytes, :func:`crdtsync.crypto.header.key_commitment`),
     "revoke": {device id: seq, ...}   (sorted; the revocation point: the last entry of that device the
                                        author applied; entries it signs past it are refused),
     "wraps": {device id: wrap, ...}}  (sorted; one per recipient, the author included)

and ``signature`` is Ed25519 by the author over ``b"crdtsync/v1/epoch-statement\\0" + body``. A reader refuses
any other encoding (``EPOCH_STATEMENT_MALFORMED``), so one statement has one byte string and one digest
(SHA-256 of ``to_bytes``).

**Wraps** are RFC 9180 HPKE in base mode with ``cryptography``'s implementation: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, ChaCha20-Poly1305, a fresh ephemeral key per wrap, to the recipient's registered X25519 key
(which the recipient wrote into the registry in its own signed update), ``info`` =
``b"crdtsync/v1/epoch-wrap\\0" + vault_id + E (8 bytes big-endian) + recipient device id (ASCII)``: a wrap
copied to another vault, epoch or recipient does not open. A wrap is ``enc`` (32 bytes) + ciphertext of the
32-byte key (48 bytes). Base mode does not authenticate the sender; the statement's signature does, over
every wrap. A thief of one recipient's X25519 key reads what was wrapped for it and nothing else, and
cannot make a statement (that takes a signing key).

**The rules** (:func:`resolve`), the same on every device for the same set of statements, whatever the order
they arrived in:

1. Statements are taken in the order of ``(prev, epoch, digest)``.
2. A statement counts only when its author is registered, its signature verifies against the registered key,
   it names this vault, its author is not revoked by a statement counted before it, it revokes neither its
   author nor an unregistered device, and it wraps for registered devices only, none of them revoked by a
   counted statement of an epoch below its ``prev`` (its author sealed past that one). A statement of the epoch
   ``prev`` itself may have been made at once elsewhere and never seen by the author: a key given to a device
   it revoked is taken back by a rekey (rule 5). Otherwise it is void, with a code (:data:`VOID_CODES`).
3. Each counted statement revokes the devices it names; a device revoked by several keeps the first
   revocation's author and epoch and the highest point (so an entry one remaining device already applied is
   not refused by another).
4. The **current epoch** is the epoch of the last counted statement in that order (the founding epoch when
   none counts). When two statements share an epoch number (two members revoked at once), envelopes of that
   epoch may be under either key: a device keeps every key it can unwrap (:attr:`EpochView.keys_for`).
5. The current epoch is **clean** when none of its recipients is revoked. After concurrent revocations it may
   not be (A's new key went to D, whom B revoked meanwhile): then any active recipient issues a ``rekey``
   statement for every active device, which counts after both and is clean.

A device revoked concurrently with its own revocation of another thus loses when its statement comes later in
the order, and two statements that revoke each other's authors resolve to the first one alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from crdtsync.crypto.header import key_commitment
from crdtsync.crypto.keys import (
    KEY_BYTES,
    MAX_EPOCH,
    SIGNATURE_BYTES,
    VAULT_ID_BYTES,
    VAULT_KEY_BYTES,
    DeviceKeys,
    is_device_id,
    verify,
)
from crdtsync.errors import CryptoError

#: The version of the statement format this module writes and reads.
STATEMENT_VERSION: Final = 1
#: Why a statement was made.
REASONS: Final = frozenset({"revoke", "passphrase", "rekey"})
#: Largest statement accepted, in bytes (about 2,000 recipients).
MAX_STATEMENT_BYTES: Final = 256 * 1024
#: Most recipients or revoked devices one statement may name.
MAX_DEVICES: Final = 2048
#: Length of one wrap, in bytes: HPKE ``enc`` (32) + the 32-byte key + the AEAD tag (16).
WRAP_BYTES: Final = 32 + VAULT_KEY_BYTES + 16
#: Codes of a void statement (:attr:`EpochView.void`).
VOID_CODES: Final = frozenset({"EPOCH_OTHER_VAULT", "EPOCH_UNKNOWN_AUTHOR", "EPOCH_BAD_SIGNATURE",
                               "EPOCH_AUTHOR_REVOKED", "EPOCH_SELF_REVOKE", "EPOCH_UNKNOWN_DEVICE",
                               "EPOCH_WRAPS_REVOKED"})

_SUITE: Final = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)
_WRAP_DOMAIN: Final = b"crdtsync/v1/epoch-wrap\0"
_SIGN_DOMAIN: Final = b"crdtsync/v1/epoch-statement\0"
_FIELDS: Final = ("t", "v", "vault", "epoch", "prev", "author", "reason", "commit", "revoke", "wraps")


def _malformed(reason: str) -> CryptoError:
    return CryptoError(f"an epoch statement is malformed ({reason}); it is ignored",
                       code="EPOCH_STATEMENT_MALFORMED")


def _wrap_info(vault_id: bytes, epoch: int, recipient: str) -> bytes:
    return _WRAP_DOMAIN + vault_id + epoch.to_bytes(8, "big") + recipient.encode("ascii")


def wrap_key(vault_key: bytes, *, vault_id: bytes, epoch: int, recipient: str, recipient_kx_pk: bytes) -> bytes:
    """``vault_key`` (32 bytes) of ``epoch`` wrapped for device ``recipient`` (its id) whose registered raw
    X25519 public key is ``recipient_kx_pk``: an 80-byte HPKE blob (see "Wraps" in the module docstring).

    Raises:
        CryptoError: ``KEY_INVALID`` when ``recipient_kx_pk`` is not a usable X25519 key (a low-order point).
        ValueError: an argument has the wrong length or range (a programming error).
    """
    if len(vault_key) != VAULT_KEY_BYTES or len(vault_id) != VAULT_ID_BYTES or not 0 <= epoch <= MAX_EPOCH:
        raise ValueError("wrap_key: a 32-byte key, a 16-byte vault id and an epoch below 2^64")
    if len(recipient_kx_pk) != KEY_BYTES or not is_device_id(recipient):
        raise ValueError("wrap_key: a device id and a 32-byte X25519 key")
    try:
        blob = _SUITE.encrypt(vault_key, X25519PublicKey.from_public_bytes(recipient_kx_pk),
                              info=_wrap_info(vault_id, epoch, recipient))
    except ValueError:
        raise CryptoError(f"device {recipient}'s key-exchange key in the registry is unusable",
                          code="KEY_INVALID") from None
    return bytes(blob)


def unwrap_key(blob: bytes, *, vault_id: bytes, epoch: int, recipient: DeviceKeys) -> bytes:
    """The 32-byte vault key of ``epoch`` from a :func:`wrap_key` ``blob`` made for ``recipient``.

    Raises:
        CryptoError: ``KEY_UNWRAP_FAILED`` when the blob was not made for this device, vault and epoch, or was
            altered.
    """
    try:
        key = _SUITE.decrypt(blob, recipient.kx, info=_wrap_info(vault_id, epoch, recipient.device_id))
    except (InvalidTag, ValueError):
        key = b""
    if len(key) != VAULT_KEY_BYTES:
        raise CryptoError(f"the key of epoch {epoch} wrapped for this device does not open: the statement was "
                          "altered, or made for another device", code="KEY_UNWRAP_FAILED")
    return bytes(key)


@dataclass(frozen=True)
class EpochStatement:
    """One signed epoch statement (see the module docstring for the format).

    Attributes:
        vault_id: the 16-byte vault id.
        epoch: the new epoch (0 < epoch < 2^64), above ``prev``.
        prev: the epoch its author sealed under when it made the statement.
        author: the device id of its author.
        reason: ``"revoke"``, ``"passphrase"`` or ``"rekey"``.
        commit: the 32-byte key commitment of the new key.
        revoke: device id -> revocation point (a seq of that device's log, 0 or more).
        wraps: device id -> 80-byte wrap of the new key, one per recipient.
        signature: the author's 64-byte Ed25519 signature over the body.
    """

    vault_id: bytes
    epoch: int
    prev: int
    author: str
    reason: str
    commit: bytes
    revoke: Mapping[str, int]
    wraps: Mapping[str, bytes]
    signature: bytes = field(repr=False)

    def body(self) -> bytes:
        """The canonical msgpack body that the signature covers."""
        packed: bytes = msgpack.packb({
            "t": "epoch", "v": STATEMENT_VERSION, "vault": self.vault_id, "epoch": self.epoch, "prev": self.prev,
            "author": self.author, "reason": self.reason, "commit": self.commit,
            "revoke": dict(sorted(self.revoke.items())), "wraps": dict(sorted(self.wraps.items())),
        }, use_bin_type=True)
        return packed

    def to_bytes(self) -> bytes:
        """The statement as it travels: canonical msgpack ``[body, signature]``."""
        packed: bytes = msgpack.packb([self.body(), self.signature], use_bin_type=True)
        return packed

    @property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (32 bytes): names the statement and orders statements of one epoch."""
        return hashlib.sha256(self.to_bytes()).digest()

    def signed_by(self, sign_pk: bytes) -> bool:
        """Whether the signature verifies against the raw Ed25519 key ``sign_pk`` (32 bytes)."""
        return verify(sign_pk, self.signature, _SIGN_DOMAIN + self.body())

    @classmethod
    def from_bytes(cls, data: bytes) -> EpochStatement:
        """Parse a statement, refusing any but the canonical encoding of the v1 format. Checks shapes only: the
        signature and the rules are for :func:`resolve`.

        Raises:
            CryptoError: ``EPOCH_STATEMENT_MALFORMED``.
        """
        if not isinstance(data, bytes) or len(data) > MAX_STATEMENT_BYTES:
            raise _malformed("not bytes, or larger than 256 KiB")
        outer = _unpack(data, max_array_len=2)
        if not isinstance(outer, list) or len(outer) != 2 or not isinstance(outer[0], bytes):
            raise _malformed("not [body, signature]")
        raw = _unpack(outer[0], max_map_len=MAX_DEVICES)
        if not isinstance(raw, dict) or tuple(raw) != _FIELDS:
            raise _malformed("not the v1 fields in order")
        if raw["t"] != "epoch" or raw["v"] != STATEMENT_VERSION:
            raise _malformed(f"type {raw['t']!r}, version {raw['v']!r}")
        statement = cls(vault_id=raw["vault"], epoch=raw["epoch"], prev=raw["prev"], author=raw["author"],
                        reason=raw["reason"], commit=raw["commit"], revoke=raw["revoke"], wraps=raw["wraps"],
                        signature=outer[1])
        _check_shape(statement)
        if statement.to_bytes() != data:
            raise _malformed("not the canonical encoding")
        return statement


def _unpack(data: bytes, **limits: int) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0, **limits)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _malformed(f"not msgpack: {exc}") from None


def _check_shape(s: EpochStatement) -> None:
    def is_int(value: object, low: int, high: int) -> bool:
        return type(value) is int and low <= value <= high

    if not (isinstance(s.vault_id, bytes) and len(s.vault_id) == VAULT_ID_BYTES):
        raise _malformed("vault id")
    if not (is_int(s.prev, 0, MAX_EPOCH - 1) and is_int(s.epoch, s.prev + 1, MAX_EPOCH)):
        raise _malformed("epochs: 0 <= prev < epoch < 2^64")
    if not (isinstance(s.author, str) and is_device_id(s.author)) or s.reason not in REASONS:
        raise _malformed("author or reason")
    if not (isinstance(s.commit, bytes) and len(s.commit) == 32):
        raise _malformed("commitment")
    if not (isinstance(s.signature, bytes) and len(s.signature) == SIGNATURE_BYTES):
        raise _malformed("signature")
    if not isinstance(s.revoke, dict) or not isinstance(s.wraps, dict) or not s.wraps:
        raise _malformed("revoke and wraps must be maps, wraps not empty")
    if len(s.revoke) > MAX_DEVICES or len(s.wraps) > MAX_DEVICES:
        raise _malformed("too many devices")
    for device, seq in s.revoke.items():
        if not (isinstance(device, str) and is_device_id(device) and is_int(seq, 0, 2**63 - 1)):
            raise _malformed("a revocation is not device id -> seq")
    for device, wrap in s.wraps.items():
        if not (isinstance(device, str) and is_device_id(device) and isinstance(wrap, bytes)
                and len(wrap) == WRAP_BYTES):
            raise _malformed("a wrap is not device id -> 80 bytes")
    if set(s.revoke) & set(s.wraps):
        raise _malformed("a revoked device is also a recipient")
    if s.author not in s.wraps:
        raise _malformed("the author is not a recipient")


def make_statement(author: DeviceKeys, *, vault_id: bytes, prev: int, epoch: int, vault_key: bytes, reason: str,
                   recipients: Mapping[str, bytes], revoke: Mapping[str, int] | None = None) -> EpochStatement:
    """A new signed statement by ``author`` moving vault ``vault_id`` (16 bytes) from epoch ``prev`` to ``epoch``
    with the 32-byte ``vault_key``, wrapped for each of ``recipients`` (device id -> registered raw X25519 key;
    the author is added when missing) and revoking ``revoke`` (device id -> revocation point).

    Raises:
        CryptoError: ``KEY_INVALID`` (a recipient's registered key is unusable), ``EPOCH_STATEMENT_MALFORMED``
            (a revoked device among the recipients, the author revoking itself, a bad epoch or reason).
        ValueError: a key of the wrong length (a programming error).
    """
    revoke = dict(revoke or {})
    if author.device_id in revoke:
        raise CryptoError("a device cannot revoke itself: revoke it from another device", code="EPOCH_SELF_REVOKE")
    everyone = {**recipients, author.device_id: author.kx_pk}
    if not 0 <= prev < epoch <= MAX_EPOCH:
        raise _malformed("epochs: 0 <= prev < epoch < 2^64")
    wraps = {device: wrap_key(vault_key, vault_id=vault_id, epoch=epoch, recipient=device, recipient_kx_pk=kx_pk)
             for device, kx_pk in sorted(everyone.items())}
    unsigned = EpochStatement(vault_id=vault_id, epoch=epoch, prev=prev, author=author.device_id, reason=reason,
                              commit=key_commitment(vault_id, epoch, vault_key), revoke=revoke, wraps=wraps,
                              signature=bytes(SIGNATURE_BYTES))
    _check_shape(unsigned)
    return dataclasses.replace(unsigned, signature=author.sign(_SIGN_DOMAIN + unsigned.body()))


def open_statement(statement: EpochStatement, me: DeviceKeys) -> bytes:
    """The new 32-byte vault key ``statement`` wrapped for ``me``, checked against its commitment.

    Raises:
        CryptoError: ``KEY_NOT_WRAPPED`` (``me`` is not a recipient: revoked, or joined after it),
            ``KEY_UNWRAP_FAILED``, ``KEY_COMMIT_MISMATCH`` (the key opens but is not the one committed to: its
            author gave recipients different keys).
    """
    wrap = statement.wraps.get(me.device_id)
    if wrap is None:
        raise CryptoError(f"the key of epoch {statement.epoch} was not given to this device",
                          code="KEY_NOT_WRAPPED")
    key = unwrap_key(wrap, vault_id=statement.vault_id, epoch=statement.epoch, recipient=me)
    if key_commitment(statement.vault_id, statement.epoch, key) != statement.commit:
        raise CryptoError(f"the key of epoch {statement.epoch} from device {statement.author} is not the one its "
                          "statement commits to", code="KEY_COMMIT_MISMATCH")
    return key


@dataclass(frozen=True)
class Revocation:
    """A device's revocation: ``seq`` (its entries past it are refused), ``by`` (the device whose statement
    revoked it) and ``epoch`` (that statement's epoch)."""

    seq: int
    by: str
    epoch: int


@dataclass(frozen=True)
class EpochView:
    """What a set of statements means (:func:`resolve`).

    Attributes:
        current: the epoch to seal under.
        winner: the statement that made ``current`` (None: the founding epoch).
        counted: the statements that count, in the order of the rules.
        revoked: device id -> :class:`Revocation`.
        void: statement digest -> the code of why it does not count (:data:`VOID_CODES`).
    """

    current: int
    winner: EpochStatement | None
    counted: tuple[EpochStatement, ...]
    revoked: Mapping[str, Revocation]
    void: Mapping[bytes, str]

    @property
    def clean(self) -> bool:
        """Whether no revoked device holds the current key (else a ``rekey`` statement is due)."""
        return self.winner is None or not set(self.winner.wraps) & set(self.revoked)

    def keys_for(self, epoch: int) -> list[EpochStatement]:
        """The counted statements of ``epoch`` (more than one after concurrent revocations), in order."""
        return [s for s in self.counted if s.epoch == epoch]

    def refuses(self, device: str, seq: int) -> bool:
        """Whether entry ``seq`` of ``device``'s log is past its revocation point."""
        revocation = self.revoked.get(device)
        return revocation is not None and seq > revocation.seq


def resolve(statements: Iterable[EpochStatement], *, vault_id: bytes, registry: Mapping[str, bytes],
            founding_epoch: int = 0) -> EpochView:
    """Apply the rules (module docstring) to ``statements`` (any order, repeats ignored) of vault ``vault_id``,
    given ``registry`` (registered device id -> raw 32-byte Ed25519 key) and the vault's ``founding_epoch``."""
    unique = {s.digest: s for s in statements}
    ordered = sorted(unique.values(), key=lambda s: (s.prev, s.epoch, s.digest))
    revoked: dict[str, Revocation] = {}
    counted: list[EpochStatement] = []
    void: dict[bytes, str] = {}
    for s in ordered:
        code = _void_code(s, vault_id, registry, revoked)
        if code is not None:
            void[s.digest] = code
            continue
        counted.append(s)
        for device, seq in s.revoke.items():
            earlier = revoked.get(device)
            if earlier is None:
                revoked[device] = Revocation(seq, s.author, s.epoch)
            elif seq > earlier.seq:
                revoked[device] = dataclasses.replace(earlier, seq=seq)
    winner = counted[-1] if counted else None
    return EpochView(current=winner.epoch if winner else founding_epoch, winner=winner, counted=tuple(counted),
                     revoked=revoked, void=void)


def _void_code(s: EpochStatement, vault_id: bytes, registry: Mapping[str, bytes],
               revoked: Mapping[str, Revocation]) -> str | None:
    if s.vault_id != vault_id:
        return "EPOCH_OTHER_VAULT"
    sign_pk = registry.get(s.author)
    if sign_pk is None:
        return "EPOCH_UNKNOWN_AUTHOR"
    if not s.signed_by(sign_pk):
        return "EPOCH_BAD_SIGNATURE"
    if s.author in revoked:
        return "EPOCH_AUTHOR_REVOKED"
    if s.author in s.revoke:
        return "EPOCH_SELF_REVOKE"
    if any(device not in registry for device in (*s.revoke, *s.wraps)):
        return "EPOCH_UNKNOWN_DEVICE"
    if any(device in revoked and revoked[device].epoch < s.prev for device in s.wraps):
        return "EPOCH_WRAPS_REVOKED"
    return None
