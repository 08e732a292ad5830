"""The public vault header ``vault.json`` (v1) and the two ways a vault key is wrapped.

``vault.json`` sits in the mailbox next to the envelopes; anyone who can list the store can read it, so it
holds no secret in clear and not even the vault's name. It is UTF-8 JSON, byte strings in unpadded
base64url::

    {
      "format": "crdtsync-vault/1",
      "vault_id": "<16 bytes>",
      "kdf": {"name": "argon2id", "salt": "<16 bytes>", "iterations": 3, "lanes": 4, "memory_cost": 65536},
      "epochs": {"0": "<60 bytes: nonce (12) + AES-GCM-SIV(KEK, vault key) (32 + 16 tag)>"}
    }

**Passphrase wrapping.** KEK = Argon2id(UTF-8 of the NFC-normalised passphrase, salt, params), 32 bytes; each
epoch's vault key is sealed with AES-GCM-SIV under the KEK, a random 12-byte nonce, and associated data
``b"crdtsync-vault/1" + vault_id + epoch (8 bytes big-endian)``, so a wrapped key copied to another vault or
epoch does not open. Argon2id is slow on purpose (the defaults, RFC 9106's second recommended setting, take
64 MiB and 0.1 to 0.25 s on one core, measured here): every public function that takes a passphrase derives the
KEK exactly once, and says so. Whoever can read the store can still guess passphrases offline at that cost per
guess, so the passphrase must be strong. A hostile store could serve a header with absurd KDF parameters to
exhaust a device, so the reader caps them (:data:`MAX_MEMORY_COST_KIB`, :data:`MAX_ITERATIONS`,
:data:`MAX_LANES`). The header is not signed: altering it can only make unwrapping fail
(``WRONG_PASSPHRASE``), never yield a key the attacker chose, because the attacker cannot wrap under a
passphrase it does not know.

**Device wrapping** (for revocation: the next epoch's key goes to each remaining device).
key = HKDF-SHA256(X25519(sender kx, recipient kx), salt=vault_id, info=``b"crdtsync/v1/device-wrap"`` +
epoch (8 bytes big-endian) + sender kx public key + recipient kx public key), then AES-GCM-SIV with a
random nonce and the same ``info`` as associated data; the blob is nonce (12) + ciphertext (48). Only the
holders of either X25519 private key can produce a blob that opens, so the recipient knows it came from the
registered sender.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import types
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crdtsync.crypto.keys import KEY_BYTES, MAX_EPOCH, VAULT_ID_BYTES, VAULT_KEY_BYTES, DeviceKeys
from crdtsync.errors import CryptoError

#: The ``format`` value of a v1 header.
HEADER_FORMAT = "crdtsync-vault/1"
#: Largest ``vault.json`` accepted, in bytes (a header with hundreds of epochs stays far below).
MAX_HEADER_BYTES = 256 * 1024
#: Length of an Argon2id salt, in bytes.
SALT_BYTES = 16
#: Length of a wrapped vault key (passphrase or device wrapping), in bytes: nonce + key + AEAD tag.
WRAPPED_KEY_BYTES = 12 + VAULT_KEY_BYTES + 16
#: Largest Argon2id memory cost accepted, in KiB (1 GiB).
MAX_MEMORY_COST_KIB = 1024 * 1024
#: Largest Argon2id iteration count (time cost) accepted.
MAX_ITERATIONS = 16
#: Largest Argon2id parallelism (lanes) accepted.
MAX_LANES = 64

_NONCE_BYTES = 12
_FORMAT_PREFIX = "crdtsync-vault/"
_DEVICE_WRAP_DOMAIN = b"crdtsync/v1/device-wrap"
_EPOCH_KEY_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KdfParams:
    """Argon2id parameters of a header: ``salt`` (16 bytes), ``iterations`` (time cost), ``lanes``
    (parallelism), ``memory_cost`` (KiB, at least 8 per lane). They are stored in the header so they can be
    raised later (:func:`change_passphrase`).

    Raises:
        ValueError: a parameter is out of range (see the module's ``MAX_*`` caps) or ``name`` is not
            ``"argon2id"``.
    """

    name: str = "argon2id"
    salt: bytes
    iterations: int
    lanes: int
    memory_cost: int

    def __post_init__(self) -> None:
        if self.name != "argon2id":
            raise ValueError(f"unknown KDF {self.name!r}: only argon2id is supported")
        _check_bytes("Argon2id salt", self.salt, SALT_BYTES)
        _check_int("iterations", self.iterations, 1, MAX_ITERATIONS)
        _check_int("lanes", self.lanes, 1, MAX_LANES)
        _check_int("memory_cost", self.memory_cost, 8 * self.lanes, MAX_MEMORY_COST_KIB)

    @classmethod
    def new(cls, *, iterations: int = 3, lanes: int = 4, memory_cost: int = 64 * 1024) -> KdfParams:
        """Parameters with a fresh random salt. The defaults (64 MiB, 3 iterations, 4 lanes: RFC 9106's
        second recommended setting) cost 0.1 to 0.25 s per derivation on one current core; tests pass
        cheaper ones (``memory_cost=8, iterations=1, lanes=1``)."""
        return cls(salt=os.urandom(SALT_BYTES), iterations=iterations, lanes=lanes, memory_cost=memory_cost)


@dataclasses.dataclass(frozen=True)
class VaultHeader:
    """The public header of a vault: its 16-byte ``vault_id``, the ``kdf`` parameters, and ``epochs``, a
    read-only map from epoch (0 <= epoch < 2^64) to that epoch's vault key wrapped under the passphrase
    (60 bytes each). ``format`` is always :data:`HEADER_FORMAT`.

    Raises:
        ValueError: a field has the wrong shape (a programming error; :meth:`from_json` reports it as
            ``HEADER_MALFORMED``).
    """

    format: ClassVar[str] = HEADER_FORMAT

    vault_id: bytes
    kdf: KdfParams
    epochs: Mapping[int, bytes]

    def __post_init__(self) -> None:
        _check_bytes("vault id", self.vault_id, VAULT_ID_BYTES)
        if not self.epochs:
            raise ValueError("a vault header holds at least one epoch")
        for epoch, wrapped in self.epochs.items():
            _check_int("epoch", epoch, 0, MAX_EPOCH)
            _check_bytes("wrapped vault key", wrapped, WRAPPED_KEY_BYTES)
        object.__setattr__(self, "epochs", types.MappingProxyType(dict(sorted(self.epochs.items()))))

    def to_json(self) -> bytes:
        """The header as ``vault.json`` (UTF-8 JSON, see the module docstring), epochs in ascending order."""
        document = {
            "format": HEADER_FORMAT,
            "vault_id": _b64encode(self.vault_id),
            "kdf": {**dataclasses.asdict(self.kdf), "salt": _b64encode(self.kdf.salt)},
            "epochs": {str(epoch): _b64encode(wrapped) for epoch, wrapped in self.epochs.items()},
        }
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> VaultHeader:
        """Parse ``vault.json`` strictly: exactly the fields of the module docstring, nothing else.

        Raises:
            CryptoError: code ``HEADER_UNSUPPORTED_VERSION`` when ``format`` is ``crdtsync-vault/<other>``
                (written by a newer crdtsync); ``HEADER_MALFORMED`` for anything else that is off (not UTF-8
                JSON, larger than :data:`MAX_HEADER_BYTES`, duplicate, missing or extra keys, wrong types,
                non-canonical base64url or epoch numbers, wrong lengths, KDF parameters out of range).
        """
        if len(data) > MAX_HEADER_BYTES:
            raise _malformed(f"it is larger than {MAX_HEADER_BYTES} bytes")
        try:
            document = json.loads(
                data.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_reject_constant
            )
        except (ValueError, RecursionError):
            raise _malformed("it is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("format"), str):
            raise _malformed("it has no format field")
        if document["format"] != HEADER_FORMAT:
            if document["format"].startswith(_FORMAT_PREFIX):
                raise CryptoError(
                    f"vault.json has format {document['format']!r}, which this crdtsync cannot read: "
                    "upgrade crdtsync on this device",
                    code="HEADER_UNSUPPORTED_VERSION",
                )
            raise _malformed("its format field is not a crdtsync vault format")
        _expect_keys(document, {"format", "vault_id", "kdf", "epochs"}, "the header")
        kdf, epochs = document["kdf"], document["epochs"]
        _expect_keys(kdf, {"name", "salt", "iterations", "lanes", "memory_cost"}, "kdf")
        if not isinstance(epochs, dict):
            raise _malformed("epochs is not an object")
        parsed_epochs: dict[int, bytes] = {}
        for key, wrapped in epochs.items():
            if not _EPOCH_KEY_RE.fullmatch(key):
                raise _malformed(f"epoch {key!r} is not a canonical decimal number")
            parsed_epochs[int(key)] = _b64decode(wrapped, f"epoch {key}")
        try:
            return cls(
                vault_id=_b64decode(document["vault_id"], "vault_id"),
                kdf=KdfParams(**{**kdf, "salt": _b64decode(kdf["salt"], "kdf.salt")}),
                epochs=parsed_epochs,
            )
        except ValueError as exc:
            raise _malformed(str(exc)) from None


def create_header(vault_id: bytes, vault_key: bytes, passphrase: str, kdf: KdfParams, epoch: int = 0) -> VaultHeader:
    """A new header for ``vault_id`` (16 bytes) holding ``vault_key`` (32 bytes) of ``epoch``, wrapped under
    ``passphrase`` with ``kdf`` (give it a fresh salt: :meth:`KdfParams.new`). Runs Argon2id once.

    Raises:
        ValueError: an argument has the wrong length or range (a programming error).
    """
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    _check_bytes("vault id", vault_id, VAULT_ID_BYTES)
    _check_int("epoch", epoch, 0, MAX_EPOCH)
    kek = _derive_kek(passphrase, kdf)
    return VaultHeader(vault_id=vault_id, kdf=kdf, epochs={epoch: _wrap(kek, vault_id, epoch, vault_key)})


def unwrap_vault_key(header: VaultHeader, passphrase: str, epoch: int) -> bytes:
    """The 32-byte vault key of ``epoch``, unwrapped with ``passphrase``. Runs Argon2id once.

    Raises:
        CryptoError: ``KEY_MISSING`` when the header holds no key for ``epoch``; ``WRONG_PASSPHRASE`` when
            the passphrase does not open it (or the header was altered).
    """
    if epoch not in header.epochs:
        raise CryptoError(
            f"vault.json holds no key for epoch {epoch}: pull again, or ask a device of the vault to publish it",
            code="KEY_MISSING",
        )
    return _unwrap(_derive_kek(passphrase, header.kdf), header, epoch)


def unwrap_vault_keys(header: VaultHeader, passphrase: str) -> dict[int, bytes]:
    """Every epoch's 32-byte vault key, unwrapped with ``passphrase`` (what a joining device needs to read
    the history). Runs Argon2id once.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when the passphrase does not open every epoch.
    """
    kek = _derive_kek(passphrase, header.kdf)
    return {epoch: _unwrap(kek, header, epoch) for epoch in header.epochs}


def add_epoch(header: VaultHeader, epoch: int, vault_key: bytes, passphrase: str) -> VaultHeader:
    """``header`` plus ``vault_key`` (32 bytes) of the new ``epoch``, wrapped under ``passphrase``, which
    must open the epochs already there (so one header never mixes passphrases). Runs Argon2id once.

    A revoked device may know the passphrase: when revoking, use :func:`change_passphrase` as well, or the
    revoked device can unwrap the new epoch from this header.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when the passphrase does not open the existing epochs.
        ValueError: ``epoch`` is already in the header or out of range, or the key is not 32 bytes.
    """
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    _check_int("epoch", epoch, 0, MAX_EPOCH)
    if epoch in header.epochs:
        raise ValueError(f"epoch {epoch} is already in the vault header")
    kek = _derive_kek(passphrase, header.kdf)
    for existing in header.epochs:
        _unwrap(kek, header, existing)
    epochs = {**header.epochs, epoch: _wrap(kek, header.vault_id, epoch, vault_key)}
    return VaultHeader(vault_id=header.vault_id, kdf=header.kdf, epochs=epochs)


def change_passphrase(header: VaultHeader, old_passphrase: str, new_passphrase: str, kdf: KdfParams) -> VaultHeader:
    """``header`` with every epoch re-wrapped under ``new_passphrase`` and ``kdf`` (give it a fresh salt;
    also the way to raise the KDF cost). Runs Argon2id twice.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when ``old_passphrase`` does not open every epoch.
    """
    keys = unwrap_vault_keys(header, old_passphrase)
    kek = _derive_kek(new_passphrase, kdf)
    epochs = {epoch: _wrap(kek, header.vault_id, epoch, key) for epoch, key in keys.items()}
    return VaultHeader(vault_id=header.vault_id, kdf=kdf, epochs=epochs)


def wrap_for_device(vault_key: bytes, epoch: int, vault_id: bytes, recipient_kx_pk: bytes, sender: DeviceKeys) -> bytes:
    """``vault_key`` (32 bytes) of ``epoch`` wrapped for the device whose raw X25519 public key is
    ``recipient_kx_pk``, from ``sender``: a 60-byte blob (see "Device wrapping" in the module docstring).

    Raises:
        CryptoError: ``KEY_INVALID`` when ``recipient_kx_pk`` is a low-order point (a corrupt registry entry).
        ValueError: an argument has the wrong length or range (a programming error).
    """
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    key, ad = _device_wrap_key(sender, recipient_kx_pk, vault_id, epoch, sending=True)
    if key is None:
        raise CryptoError(
            "the recipient's key-exchange key in the device registry is invalid: remove that device and add it again",
            code="KEY_INVALID",
        )
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCMSIV(key).encrypt(nonce, vault_key, ad)


def unwrap_for_device(blob: bytes, epoch: int, vault_id: bytes, recipient: DeviceKeys, sender_kx_pk: bytes) -> bytes:
    """The 32-byte vault key of ``epoch`` from a :func:`wrap_for_device` ``blob`` sent to ``recipient`` by
    the device whose raw X25519 public key (from the registry) is ``sender_kx_pk``.

    Raises:
        CryptoError: ``KEY_UNWRAP_FAILED`` when the blob was not made by that sender for this recipient,
            vault and epoch, or was altered.
        ValueError: an argument has the wrong length or range (a programming error).
    """
    failed = CryptoError(
        f"the key for epoch {epoch} sent by another device does not open on this device: ask that device "
        "to send it again, or join the vault again with the passphrase",
        code="KEY_UNWRAP_FAILED",
    )
    key, ad = _device_wrap_key(recipient, sender_kx_pk, vault_id, epoch, sending=False)
    if key is None or len(blob) != WRAPPED_KEY_BYTES:
        raise failed
    try:
        return AESGCMSIV(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], ad)
    except InvalidTag:
        raise failed from None


def _device_wrap_key(
    own: DeviceKeys, peer_kx_pk: bytes, vault_id: bytes, epoch: int, *, sending: bool
) -> tuple[bytes | None, bytes]:
    """The AEAD key (None when ``peer_kx_pk`` is a low-order point) and associated data of a device wrap
    between ``own`` and the peer, ``own`` being the sender when ``sending``."""
    _check_bytes("vault id", vault_id, VAULT_ID_BYTES)
    _check_bytes("X25519 public key", peer_kx_pk, KEY_BYTES)
    _check_int("epoch", epoch, 0, MAX_EPOCH)
    pair = own.kx_pk + peer_kx_pk if sending else peer_kx_pk + own.kx_pk
    info = _DEVICE_WRAP_DOMAIN + epoch.to_bytes(8, "big") + pair
    try:
        shared = own.kx.exchange(X25519PublicKey.from_public_bytes(peer_kx_pk))
    except ValueError:
        return None, info
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=vault_id, info=info).derive(shared)
    return key, info


def _derive_kek(passphrase: str, kdf: KdfParams) -> bytes:
    """Argon2id of the NFC-normalised passphrase, 32 bytes; costs what ``kdf`` says (0.1-0.25 s by default)."""
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Argon2id(
        salt=kdf.salt, length=32, iterations=kdf.iterations, lanes=kdf.lanes, memory_cost=kdf.memory_cost
    ).derive(secret)


def _wrap_ad(vault_id: bytes, epoch: int) -> bytes:
    return HEADER_FORMAT.encode("ascii") + vault_id + epoch.to_bytes(8, "big")


def _wrap(kek: bytes, vault_id: bytes, epoch: int, vault_key: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCMSIV(kek).encrypt(nonce, vault_key, _wrap_ad(vault_id, epoch))


def _unwrap(kek: bytes, header: VaultHeader, epoch: int) -> bytes:
    wrapped = header.epochs[epoch]
    try:
        return AESGCMSIV(kek).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _wrap_ad(header.vault_id, epoch))
    except InvalidTag:
        raise CryptoError(
            "the passphrase does not open this vault (or its vault.json was altered): check the passphrase "
            "and the mailbox URL, then try again",
            code="WRONG_PASSPHRASE",
        ) from None


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


def _check_bytes(name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{name} must be {length} bytes")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: object, what: str) -> bytes:
    """Decode canonical unpadded base64url, or raise ``HEADER_MALFORMED`` naming ``what``."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise _malformed(f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise _malformed(f"{what} is not canonical base64url")
    return data


def _expect_keys(value: object, keys: set[str], what: str) -> None:
    if not isinstance(value, dict) or set(value) != keys:
        raise _malformed(f"{what} must be an object with exactly the keys {sorted(keys)}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _malformed(reason: str) -> CryptoError:
    return CryptoError(
        f"vault.json in the mailbox is damaged ({reason}): restore it from a device of the vault, or check "
        "the mailbox URL",
        code="HEADER_MALFORMED",
    )
