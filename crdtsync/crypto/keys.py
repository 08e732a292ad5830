"""Device identities and vault key material (the design's "Keys and devices").

A device is an Ed25519 signing key (its identity: every envelope it writes is signed with it) plus an X25519
key used only to receive a vault key wrapped for it when the epoch changes. A vault is identified by 16
random bytes and encrypted under a 32-byte vault key per epoch. Everything here is pure: randomness comes
from the operating system (``os.urandom`` through ``cryptography``) and nothing touches files or the clock.

A device id is the first 32 lowercase hex characters (128 bits) of SHA-256 of the signing public key. Devices
created up to 9204cbf have ids of 16 characters (64 bits), the same hash cut shorter, and keep them: their id is
in every envelope, log path and registry entry they wrote. Both widths are read everywhere; an id matches a key
when it is the key's hash cut to the id's own width (:func:`id_matches`).

Serialized device keys (:meth:`DeviceKeys.to_bytes`) are a msgpack map
``{"v": 2, "ed25519": <32-byte private key>, "x25519": <32-byte private key>, "id_chars": 32 or 16}``: the
secret itself, to be stored by the caller in the OS keyring or a 0600 file. Version 1 (no ``id_chars``) is a
device with a 16-character id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crdtsync.errors import CryptoError

#: Length of a raw Ed25519 or X25519 key (private or public), in bytes.
KEY_BYTES = 32
#: Length of an Ed25519 signature, in bytes.
SIGNATURE_BYTES = 64
#: Length of a vault key, in bytes (AES-256).
VAULT_KEY_BYTES = 32
#: Length of a vault id, in bytes.
VAULT_ID_BYTES = 16
#: Length of a new device's id, in lowercase hex characters (128 bits of SHA-256 of the signing public key).
DEVICE_ID_CHARS = 32
#: Length of the id of a device created up to 9204cbf (64 bits), still read and used by those devices.
LEGACY_DEVICE_ID_CHARS = 16
#: The widths a device id may have.
DEVICE_ID_WIDTHS = (LEGACY_DEVICE_ID_CHARS, DEVICE_ID_CHARS)
#: Largest epoch: epochs are unsigned 64-bit integers (8 bytes big-endian inside key derivations).
MAX_EPOCH = 2**64 - 1

_KEYS_FORMAT_VERSION = 2
_VAULT_TAG_DOMAIN = b"crdtsync/v1/vault-tag"


_DEVICE_ID_RE = re.compile(f"[0-9a-f]{{{LEGACY_DEVICE_ID_CHARS}}}|[0-9a-f]{{{DEVICE_ID_CHARS}}}")


def is_device_id(text: str) -> bool:
    """Whether ``text`` has the shape of a device id (:func:`device_id_for`: 32 lowercase hex characters, or 16
    for a device created up to 9204cbf)."""
    return _DEVICE_ID_RE.fullmatch(text) is not None


def device_id_for(sign_pk: bytes, width: int = DEVICE_ID_CHARS) -> str:
    """The device id of the device whose raw 32-byte Ed25519 public key is ``sign_pk``: the first ``width``
    (32, or 16 for a device created up to 9204cbf) lowercase hex characters of SHA-256 of the key. At 128 bits
    nobody can make two keys with one id (2^64 work for a collision, 2^128 to hit an existing device's).

    Raises:
        ValueError: ``sign_pk`` is not 32 bytes or ``width`` is not a device id width (a programming error).
    """
    if len(sign_pk) != KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(sign_pk)}")
    if width not in DEVICE_ID_WIDTHS:
        raise ValueError(f"a device id has {DEVICE_ID_WIDTHS} characters, not {width}")
    return hashlib.sha256(sign_pk).hexdigest()[:width]


def id_matches(device_id: str, sign_pk: bytes) -> bool:
    """Whether ``device_id`` is the id of the key ``sign_pk`` (32 bytes) at the id's own width. Never raises."""
    return len(sign_pk) == KEY_BYTES and len(device_id) in DEVICE_ID_WIDTHS and \
        device_id_for(sign_pk, len(device_id)) == device_id


def verify(sign_pk: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (64 bytes) is a valid Ed25519 signature of ``data`` by the raw 32-byte public
    key ``sign_pk``. Never raises: a key or signature of the wrong shape is simply not valid."""
    if len(sign_pk) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(sign_pk).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, eq=False)
class DeviceKeys:
    """The private keys of one device: ``signing`` (Ed25519, its identity) and ``kx`` (X25519, to receive
    wrapped vault keys).

    Build one with :meth:`generate` or :meth:`from_bytes`. Two instances compare equal when they hold the
    same keys. The repr never shows key material.
    """

    signing: Ed25519PrivateKey = field(repr=False)
    kx: X25519PrivateKey = field(repr=False)
    #: The width of this device's id: 32, or 16 for a device created up to 9204cbf.
    id_chars: int = DEVICE_ID_CHARS

    @classmethod
    def generate(cls) -> DeviceKeys:
        """Fresh keys for a new device (with a 32-character id), from the operating system's random generator."""
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def sign_pk(self) -> bytes:
        """The raw 32-byte Ed25519 public key, as published in the device registry."""
        return self.signing.public_key().public_bytes_raw()

    @property
    def kx_pk(self) -> bytes:
        """The raw 32-byte X25519 public key, as published in the device registry."""
        return self.kx.public_key().public_bytes_raw()

    @property
    def device_id(self) -> str:
        """This device's id: :func:`device_id_for` of :attr:`sign_pk` at :attr:`id_chars` characters."""
        return device_id_for(self.sign_pk, self.id_chars)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data`` (deterministic: same keys and data, same signature)."""
        return self.signing.sign(data)

    def to_bytes(self) -> bytes:
        """The private keys as a versioned msgpack map (see the module docstring). This is secret material:
        store it where only this user can read it."""
        packed: bytes = msgpack.packb(
            {
                "v": _KEYS_FORMAT_VERSION,
                "ed25519": self.signing.private_bytes_raw(),
                "x25519": self.kx.private_bytes_raw(),
                "id_chars": self.id_chars,
            }
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceKeys:
        """Read keys written by :meth:`to_bytes`.

        Raises:
            CryptoError: code ``KEY_CORRUPT`` when ``data`` is not exactly such a map (other fields, other
                version, keys of the wrong length, trailing bytes).
        """
        corrupt = CryptoError(
            "the device key file is corrupt or of an unknown format: restore it from a backup, or remove "
            "this device and join the vault again",
            code="KEY_CORRUPT",
        )
        try:
            decoded = msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_array_len=0, max_map_len=4, max_ext_len=0
            )
        except (ValueError, msgpack.UnpackException):
            raise corrupt from None
        if not isinstance(decoded, dict) or type(decoded.get("v")) is not int:
            raise corrupt
        version = decoded["v"]
        fields = {1: {"v", "ed25519", "x25519"}, 2: {"v", "ed25519", "x25519", "id_chars"}}.get(version)
        if fields is None or set(decoded) != fields:
            raise corrupt
        sign_sk, kx_sk = decoded["ed25519"], decoded["x25519"]
        id_chars = decoded.get("id_chars", LEGACY_DEVICE_ID_CHARS)
        if not (isinstance(sign_sk, bytes) and isinstance(kx_sk, bytes)) or id_chars not in DEVICE_ID_WIDTHS:
            raise corrupt
        if len(sign_sk) != KEY_BYTES or len(kx_sk) != KEY_BYTES or type(id_chars) is not int:
            raise corrupt
        return cls(Ed25519PrivateKey.from_private_bytes(sign_sk), X25519PrivateKey.from_private_bytes(kx_sk),
                   id_chars)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceKeys):
            return NotImplemented
        return hmac.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self.sign_pk)


def new_vault_key() -> bytes:
    """A fresh 32-byte vault key (one per epoch), from the operating system's random generator."""
    return os.urandom(VAULT_KEY_BYTES)


def new_vault_id() -> bytes:
    """A fresh 16-byte vault id, from the operating system's random generator."""
    return os.urandom(VAULT_ID_BYTES)


def vault_tag(vault_id: bytes) -> str:
    """The mailbox folder name of the vault ``vault_id`` (16 bytes): 16 lowercase hex characters of
    SHA-256(``b"crdtsync/v1/vault-tag"`` + vault_id). Stable, filesystem-safe, and reveals nothing beyond
    the vault id (which the public ``vault.json`` holds anyway).

    Raises:
        ValueError: ``vault_id`` is not 16 bytes (a programming error).
    """
    if len(vault_id) != VAULT_ID_BYTES:
        raise ValueError(f"a vault id is {VAULT_ID_BYTES} bytes, not {len(vault_id)}")
    return hashlib.sha256(_VAULT_TAG_DOMAIN + vault_id).hexdigest()[:16]
