"""Device identities and vault key material (the design's "Keys and devices").

A device is an Ed25519 signing key (its identity: every envelope it writes is signed with it) plus an X25519
key used only to receive a vault key wrapped for it when the epoch changes. A vault is identified by 16
random bytes and encrypted under a 32-byte vault key per epoch. Everything here is pure: randomness comes
from the operating system (``os.urandom`` through ``cryptography``) and nothing touches files or the clock.

Serialized device keys (:meth:`DeviceKeys.to_bytes`) are a msgpack map
``{"v": 1, "ed25519": <32-byte private key>, "x25519": <32-byte private key>}``: the secret itself, to be
stored by the caller in the OS keyring or a 0600 file.
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
#: Length of a device id, in lowercase hex characters (64 bits of SHA-256 of the signing public key).
DEVICE_ID_CHARS = 16
#: Largest epoch: epochs are unsigned 64-bit integers (8 bytes big-endian inside key derivations).
MAX_EPOCH = 2**64 - 1

_KEYS_FORMAT_VERSION = 1
_VAULT_TAG_DOMAIN = b"crdtsync/v1/vault-tag"


_DEVICE_ID_RE = re.compile(f"[0-9a-f]{{{DEVICE_ID_CHARS}}}")


def is_device_id(text: str) -> bool:
    """Whether ``text`` has the shape of a device id (:func:`device_id_for`: 16 lowercase hex characters)."""
    return _DEVICE_ID_RE.fullmatch(text) is not None


def device_id_for(sign_pk: bytes) -> str:
    """The device id of the device whose raw 32-byte Ed25519 public key is ``sign_pk``.

    The id is the first 16 lowercase hex characters (64 bits) of SHA-256 of the key: short enough to show,
    long enough that nobody can make a key whose id collides with an existing device's (2^64 work).

    Raises:
        ValueError: ``sign_pk`` is not 32 bytes (a programming error).
    """
    if len(sign_pk) != KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(sign_pk)}")
    return hashlib.sha256(sign_pk).hexdigest()[:DEVICE_ID_CHARS]


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

    @classmethod
    def generate(cls) -> DeviceKeys:
        """Fresh keys for a new device, from the operating system's random generator."""
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
        """This device's id: :func:`device_id_for` of :attr:`sign_pk` (16 lowercase hex characters)."""
        return device_id_for(self.sign_pk)

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
                data, raw=False, strict_map_key=True, max_array_len=0, max_map_len=3, max_ext_len=0
            )
        except (ValueError, msgpack.UnpackException):
            raise corrupt from None
        if not isinstance(decoded, dict) or set(decoded) != {"v", "ed25519", "x25519"}:
            raise corrupt
        version, sign_sk, kx_sk = decoded["v"], decoded["ed25519"], decoded["x25519"]
        if type(version) is not int or version != _KEYS_FORMAT_VERSION:
            raise corrupt
        if not (isinstance(sign_sk, bytes) and isinstance(kx_sk, bytes)):
            raise corrupt
        if len(sign_sk) != KEY_BYTES or len(kx_sk) != KEY_BYTES:
            raise corrupt
        return cls(Ed25519PrivateKey.from_private_bytes(sign_sk), X25519PrivateKey.from_private_bytes(kx_sk))

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
