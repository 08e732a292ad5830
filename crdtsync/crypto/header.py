"""The public vault header ``vault.json`` (v3 and v2, reads v1) and the ways a vault key is wrapped.

``vault.json`` sits in the mailbox next to the envelopes; anyone who can list the store can read it, so it
holds no secret in clear and not even the vault's name. It is UTF-8 JSON, byte strings in unpadded
base64url::

    {
      "format": "crdtsync-vault/2",
      "vault_id": "<16 bytes>",
      "kdf": {"name": "argon2id", "salt": "<16 bytes>", "iterations": 3, "lanes": 4, "memory_cost": 65536},
      "epochs": {"0": "<60 bytes: nonce (12) + AES-GCM-SIV(KEK, vault key) (32 + 16 tag)>"},
      "commits": {"0": "<32 bytes: key commitment of epoch 0's vault key>"}
    }

Version 1 (``crdtsync-vault/1``, written up to 9204cbf) is the same without ``commits``. It is still read (a
vault's own stored header, a relay not yet upgraded), never joined: any device of the vault that syncs rewrites
its relays' v1 header as v2 (it holds the vault keys, which is all the commitments need).

Version 3 (``crdtsync-vault/3``) is what a key change leaves (device revocation, passphrase change:
:func:`rotate_header`): only the current epoch E is wrapped under the (new) passphrase, and every older key
travels sealed under E's key, so that only holders of the new passphrase join, and a joining device still reads
the whole history::

    {
      "format": "crdtsync-vault/3", "vault_id": ..., "kdf": {... a fresh salt ...},
      "epochs": {"<E>": "<60 bytes: E's vault key wrapped under the passphrase, as in v2>"},
      "commits": {"0": ..., "<E>": ...},
      "history": "<nonce (12) + AES-GCM-SIV(E's vault key, msgpack [[epoch, key], ...]) (+ 16 tag)>"
    }

``epochs`` holds exactly one epoch, E; ``commits`` the key commitment of every epoch the vault had, E included
and none above it (so the fingerprint, made from the first one, does not change); ``history`` every other key
the vault had, as canonical msgpack (bin type) of ``[epoch, 32-byte key]`` pairs sorted by (epoch, key), sealed
with associated data ``b"crdtsync-vault/3/history" + vault_id + E (8 bytes big-endian)``. Several keys may exist
for one epoch (two members changed keys concurrently): the one ``commits`` names is the epoch's **primary**, the
others are **alternates**; the history holds every earlier primary and every alternate (of E too). A reader
(:func:`open_header`) needs, for each committed epoch below E, a history key that matches its commitment, and
refuses history keys of an epoch without one.

**Passphrase wrapping.** KEK = Argon2id(UTF-8 of the NFC-normalised passphrase, salt, params), 32 bytes; each
epoch's vault key is sealed with AES-GCM-SIV under the KEK, a random 12-byte nonce, and associated data
``b"crdtsync-vault/1" + vault_id + epoch (8 bytes big-endian)`` (the same in v2 and v3), so a wrapped key copied to
another vault or epoch does not open. Argon2id is slow on purpose (the defaults, RFC 9106's second recommended
setting, take 64 MiB and 0.1 to 0.25 s on one core, measured here): every public function that takes a
passphrase derives the KEK exactly once, and says so. Whoever can read the store can still guess passphrases
offline at that cost per guess, so the passphrase must be strong.

**Key commitment.** AES-GCM-SIV is not key-committing: a 60-byte wrap can be built that opens under two
passphrases (to two different keys), so a hostile store serving such wraps tests many passphrase guesses per
header and, when one opens, has a device join a vault of its making. A v2 header therefore carries, per epoch,
``HMAC-SHA256(vault key, b"crdtsync/v2/key-commit" + vault_id + epoch (8 bytes))``; a key unwrapped from the
header counts only when it matches (as age commits to its file key with the header MAC). The vault's
**fingerprint** (:func:`fingerprint`) hashes the vault id with the commitment of its first epoch: ``relay add``
prints it in the join string (``URL#vault=<fingerprint>``), and a join given it accepts no other vault.

**Limits a joining device applies** (:func:`check_join_kdf`): the KDF parameters may not be weaker than
:data:`MIN_MEMORY_COST_KIB` and :data:`MIN_ITERATIONS` (OWASP's minimum for Argon2id: 19 MiB, 2 passes; cheaper
decoys would make guessing cheap for whoever serves them, ``KDF_TOO_WEAK``), nor cost more than
:data:`MAX_JOIN_KDF_WORK` (memory times passes, ``KDF_TOO_COSTLY``); a join runs Argon2id on one header only.
The reader's own caps (:data:`MAX_MEMORY_COST_KIB`, :data:`MAX_ITERATIONS`, :data:`MAX_LANES`) bound any header.
The header is not signed: altering it can only make unwrapping fail (``WRONG_PASSPHRASE``), make it unreadable
(``HEADER_MALFORMED``) or, with the passphrase, add an epoch. Only a device joining with a v3 header takes the
epoch it seals under from it (the one wrapped epoch), until its first pull: from then on it seals under the epoch
the signed epoch statements make current.

Keys of later epochs reach devices in signed epoch statements, wrapped with HPKE for each device
(:mod:`crdtsync.crypto.epochs`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import types
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from crdtsync.crypto.keys import MAX_EPOCH, VAULT_ID_BYTES, VAULT_KEY_BYTES
from crdtsync.errors import CryptoError

#: The ``format`` value of a v2 header (key commitments, every epoch wrapped under the passphrase).
HEADER_FORMAT = "crdtsync-vault/2"
#: The ``format`` value of a v1 header (no key commitments), still read.
HEADER_FORMAT_V1 = "crdtsync-vault/1"
#: The ``format`` value of a v3 header (the current epoch wrapped under the passphrase, older keys in a history).
HEADER_FORMAT_V3 = "crdtsync-vault/3"
#: Largest ``vault.json`` accepted, in bytes (a header with hundreds of epochs stays far below).
MAX_HEADER_BYTES = 256 * 1024
#: Length of an Argon2id salt, in bytes.
SALT_BYTES = 16
#: Length of a passphrase-wrapped vault key, in bytes: nonce + key + AEAD tag.
WRAPPED_KEY_BYTES = 12 + VAULT_KEY_BYTES + 16
#: Largest Argon2id memory cost accepted, in KiB (1 GiB).
MAX_MEMORY_COST_KIB = 1024 * 1024
#: Largest Argon2id iteration count (time cost) accepted.
MAX_ITERATIONS = 16
#: Largest Argon2id parallelism (lanes) accepted.
MAX_LANES = 64
#: Weakest Argon2id memory cost a vault may be created or joined with, in KiB (OWASP's minimum: 19 MiB).
MIN_MEMORY_COST_KIB = 19 * 1024
#: Fewest Argon2id passes a vault may be created or joined with (OWASP's minimum at 19 MiB).
MIN_ITERATIONS = 2
#: Most Argon2id work a join accepts, as memory cost (KiB) times passes: 1 GiB four times, 21x the default.
MAX_JOIN_KDF_WORK = 4 * 1024 * 1024
#: Length of a key commitment, in bytes.
COMMIT_BYTES = 32
#: Length of a vault fingerprint, in characters (26 base32 characters: 130 bits).
FINGERPRINT_CHARS = 26

_NONCE_BYTES = 12
_TAG_BYTES = 16
_FORMATS = {HEADER_FORMAT_V1: 1, HEADER_FORMAT: 2, HEADER_FORMAT_V3: 3}
_FORMAT_PREFIX = "crdtsync-vault/"
_WRAP_DOMAIN = HEADER_FORMAT_V1.encode("ascii")
_COMMIT_DOMAIN = b"crdtsync/v2/key-commit"
_HISTORY_DOMAIN = b"crdtsync-vault/3/history"
_FINGERPRINT_DOMAIN = b"crdtsync/v2/fingerprint"
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
    """The public header of a vault: its 16-byte ``vault_id``, the ``kdf`` parameters, ``epochs``, a read-only
    map from epoch (0 <= epoch < 2^64) to that epoch's vault key wrapped under the passphrase (60 bytes each),
    ``commits``, the 32-byte key commitment of each epoch's key (:func:`key_commitment`): for every epoch in
    a v2 header, empty in a v1 header, for every epoch the vault had in a v3 header; and ``history``, the sealed
    older keys of a v3 header (at least 28 bytes: nonce and tag), empty in v1 and v2 (see the module docstring).

    Raises:
        ValueError: a field has the wrong shape; in v2, ``commits`` names other epochs than ``epochs``; in v3,
            ``epochs`` holds more than one epoch, or ``commits`` lacks it or names a later one (a programming
            error; :meth:`from_json` reports it as ``HEADER_MALFORMED``).
    """

    vault_id: bytes
    kdf: KdfParams
    epochs: Mapping[int, bytes]
    commits: Mapping[int, bytes] = dataclasses.field(default_factory=dict)
    history: bytes = b""

    def __post_init__(self) -> None:
        _check_bytes("vault id", self.vault_id, VAULT_ID_BYTES)
        if not self.epochs:
            raise ValueError("a vault header holds at least one epoch")
        for epoch, wrapped in self.epochs.items():
            _check_int("epoch", epoch, 0, MAX_EPOCH)
            _check_bytes("wrapped vault key", wrapped, WRAPPED_KEY_BYTES)
        for epoch, commit in self.commits.items():
            _check_int("epoch", epoch, 0, MAX_EPOCH)
            _check_bytes("key commitment", commit, COMMIT_BYTES)
        if not isinstance(self.history, bytes):
            raise ValueError("the history must be bytes")
        if self.history:
            if len(self.history) < _NONCE_BYTES + _TAG_BYTES:
                raise ValueError(f"a v3 history holds at least {_NONCE_BYTES + _TAG_BYTES} bytes")
            if len(self.epochs) != 1 or max(self.commits, default=None) != min(self.epochs):
                raise ValueError("a v3 header wraps exactly one epoch and commits to it and to no later one")
        elif self.commits and set(self.commits) != set(self.epochs):
            raise ValueError("a v2 header commits to every epoch it holds, and to no other")
        object.__setattr__(self, "epochs", types.MappingProxyType(dict(sorted(self.epochs.items()))))
        object.__setattr__(self, "commits", types.MappingProxyType(dict(sorted(self.commits.items()))))

    @property
    def version(self) -> int:
        """3 when the header has a history, else 2 when it commits to its keys, else 1."""
        return 3 if self.history else 2 if self.commits else 1

    def to_json(self) -> bytes:
        """The header as ``vault.json`` (UTF-8 JSON, see the module docstring) in its version's format, epochs in
        ascending order."""
        document: dict[str, Any] = {
            "format": {version: name for name, version in _FORMATS.items()}[self.version],
            "vault_id": _b64encode(self.vault_id),
            "kdf": {**dataclasses.asdict(self.kdf), "salt": _b64encode(self.kdf.salt)},
            "epochs": {str(epoch): _b64encode(wrapped) for epoch, wrapped in self.epochs.items()},
        }
        if self.commits:
            document["commits"] = {str(epoch): _b64encode(commit) for epoch, commit in self.commits.items()}
        if self.history:
            document["history"] = _b64encode(self.history)
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> VaultHeader:
        """Parse ``vault.json`` (v3, v2 or v1) strictly: exactly the fields of the module docstring, nothing else.

        Raises:
            CryptoError: code ``HEADER_UNSUPPORTED_VERSION`` when ``format`` is ``crdtsync-vault/<other>``
                (written by a newer crdtsync); ``HEADER_MALFORMED`` for anything else that is off (not UTF-8
                JSON, larger than :data:`MAX_HEADER_BYTES`, duplicate, missing or extra keys, wrong types,
                non-canonical base64url or epoch numbers, wrong lengths, KDF parameters out of range; in v3, not
                exactly one epoch in ``epochs``, ``commits`` without it or with a later one, a history shorter
                than a nonce and a tag). Whether a v3 history opens is :func:`open_header`'s to check.
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
        version = _FORMATS.get(document["format"])
        if version is None:
            if document["format"].startswith(_FORMAT_PREFIX):
                raise CryptoError(
                    f"vault.json has format {document['format']!r}, which this crdtsync cannot read: "
                    "upgrade crdtsync on this device",
                    code="HEADER_UNSUPPORTED_VERSION",
                )
            raise _malformed("its format field is not a crdtsync vault format")
        fields = {"format", "vault_id", "kdf", "epochs"} | ({"commits"} if version >= 2 else set())
        _expect_keys(document, fields | ({"history"} if version == 3 else set()), "the header")
        kdf = document["kdf"]
        _expect_keys(kdf, {"name", "salt", "iterations", "lanes", "memory_cost"}, "kdf")
        epochs = _epoch_map(document["epochs"], "epochs")
        commits = _epoch_map(document["commits"], "commits") if version >= 2 else {}
        if version == 2 and set(commits) != set(epochs):
            raise _malformed("commits must name exactly the epochs")
        history = _b64decode(document["history"], "history") if version == 3 else b""
        if version == 3 and not history:
            raise _malformed("its history is empty")
        try:
            return cls(
                vault_id=_b64decode(document["vault_id"], "vault_id"),
                kdf=KdfParams(**{**kdf, "salt": _b64decode(kdf["salt"], "kdf.salt")}),
                epochs=epochs,
                commits=commits,
                history=history,
            )
        except ValueError as exc:
            raise _malformed(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class HeaderKeys:
    """The vault keys a passphrase opens from a header (:func:`open_header`). ``current`` is the epoch a joining
    device seals under (a v1/v2 header's founding epoch, a v3 header's one wrapped epoch); ``epochs`` maps every
    epoch of the vault to its 32-byte primary key (the one the header commits to); ``alternates`` maps an epoch
    to the other 32-byte keys made for it (sorted; epochs without any are left out, so usually ``{}``)."""

    current: int
    epochs: dict[int, bytes]
    alternates: dict[int, list[bytes]]


def _epoch_map(value: object, what: str) -> dict[int, bytes]:
    """``{epoch: bytes}`` from a JSON object of canonical decimal epochs to base64url (``HEADER_MALFORMED``)."""
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not an object")
    parsed: dict[int, bytes] = {}
    for key, encoded in value.items():
        if not _EPOCH_KEY_RE.fullmatch(key):
            raise _malformed(f"{what}: epoch {key!r} is not a canonical decimal number")
        parsed[int(key)] = _b64decode(encoded, f"{what}.{key}")
    return parsed


def key_commitment(vault_id: bytes, epoch: int, vault_key: bytes) -> bytes:
    """The 32-byte commitment to ``vault_key`` (32 bytes) of ``epoch`` in vault ``vault_id`` (16 bytes) that a
    v2 header carries: HMAC-SHA256 keyed with the vault key over ``b"crdtsync/v2/key-commit"`` + vault id +
    epoch (8 bytes big-endian). Reveals nothing of the key; no other key has the same commitment.

    Raises:
        ValueError: ``vault_key`` is not 32 bytes (a programming error).
    """
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    return hmac.new(vault_key, _COMMIT_DOMAIN + vault_id + epoch.to_bytes(8, "big"), hashlib.sha256).digest()


def with_commitments(header: VaultHeader, keys: Mapping[int, bytes]) -> VaultHeader:
    """``header`` as v2: with the key commitment of each of its epochs, computed from ``keys`` (epoch to 32-byte
    vault key; the holder of the vault keys upgrades a v1 header without the passphrase).

    Raises:
        ValueError: ``keys`` lacks an epoch of the header, or the header is v3 (it commits to every key already;
            a programming error).
    """
    if header.history:
        raise ValueError("a v3 header commits to its keys already")
    missing = set(header.epochs) - set(keys)
    if missing:
        raise ValueError(f"no vault key for epochs {sorted(missing)}")
    commits = {epoch: key_commitment(header.vault_id, epoch, keys[epoch]) for epoch in header.epochs}
    return dataclasses.replace(header, commits=commits)


def fingerprint(header: VaultHeader) -> str:
    """The vault's fingerprint: 26 lowercase base32 characters (130 bits) of SHA-256 over
    ``b"crdtsync/v2/fingerprint"`` + vault id + the key commitment of the header's first epoch. It names one vault
    and its first key: a vault made by someone else, or a header whose first key was replaced, has another.

    Raises:
        ValueError: ``header`` is v1 (it has no commitment to name; upgrade it with :func:`with_commitments`).
    """
    if not header.commits:
        raise ValueError("a v1 header has no fingerprint")
    first = min(header.commits)
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN + header.vault_id + header.commits[first]).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:FINGERPRINT_CHARS]


def check_kdf_strength(kdf: KdfParams) -> None:
    """Refuse KDF parameters weaker than :data:`MIN_MEMORY_COST_KIB` and :data:`MIN_ITERATIONS`.

    Raises:
        CryptoError: ``KDF_TOO_WEAK``.
    """
    if kdf.memory_cost < MIN_MEMORY_COST_KIB or kdf.iterations < MIN_ITERATIONS:
        raise CryptoError(
            f"Argon2id with {kdf.memory_cost} KiB and {kdf.iterations} passes is below the minimum of "
            f"{MIN_MEMORY_COST_KIB} KiB and {MIN_ITERATIONS} passes: a passphrase behind it would be cheap to guess. "
            "A vault header asking for it is refused (a decoy, or a vault made weak on purpose)", code="KDF_TOO_WEAK")


def check_join_kdf(kdf: KdfParams) -> None:
    """What a joining device checks before it runs Argon2id on a header it read from a store: not weaker than
    :func:`check_kdf_strength` allows, and at most :data:`MAX_JOIN_KDF_WORK` (memory cost times passes).

    Raises:
        CryptoError: ``KDF_TOO_WEAK`` or ``KDF_TOO_COSTLY``.
    """
    check_kdf_strength(kdf)
    if kdf.memory_cost * kdf.iterations > MAX_JOIN_KDF_WORK:
        raise CryptoError(
            f"the vault header asks for Argon2id with {kdf.memory_cost} KiB and {kdf.iterations} passes, more than "
            f"a join spends ({MAX_JOIN_KDF_WORK} KiB-passes): not joined (a header made to exhaust this device?)",
            code="KDF_TOO_COSTLY")


def create_header(vault_id: bytes, vault_key: bytes, passphrase: str, kdf: KdfParams, epoch: int = 0) -> VaultHeader:
    """A new v2 header for ``vault_id`` (16 bytes) holding ``vault_key`` (32 bytes) of ``epoch``, wrapped under
    ``passphrase`` with ``kdf`` (give it a fresh salt: :meth:`KdfParams.new`). Runs Argon2id once.

    Raises:
        CryptoError: ``KDF_TOO_WEAK`` (see :func:`check_kdf_strength`).
        ValueError: an argument has the wrong length or range (a programming error).
    """
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    _check_bytes("vault id", vault_id, VAULT_ID_BYTES)
    _check_int("epoch", epoch, 0, MAX_EPOCH)
    check_kdf_strength(kdf)
    kek = _derive_kek(passphrase, kdf)
    return VaultHeader(vault_id=vault_id, kdf=kdf, epochs={epoch: _wrap(kek, vault_id, epoch, vault_key)},
                       commits={epoch: key_commitment(vault_id, epoch, vault_key)})


def unwrap_vault_key(header: VaultHeader, passphrase: str, epoch: int) -> bytes:
    """The 32-byte vault key of ``epoch``, unwrapped with ``passphrase``. Runs Argon2id once.

    In a v3 header only the current epoch is wrapped under the passphrase: :func:`open_header` gives the others.

    Raises:
        CryptoError: ``KEY_MISSING`` when the header holds no key for ``epoch``; ``WRONG_PASSPHRASE`` when
            the passphrase does not open it, or (v2, v3) opens it to a key other than the one committed to.
    """
    if epoch not in header.epochs:
        raise CryptoError(
            f"vault.json holds no key for epoch {epoch}: pull again, or ask a device of the vault to publish it",
            code="KEY_MISSING",
        )
    return _unwrap(_derive_kek(passphrase, header.kdf), header, epoch)


def unwrap_vault_keys(header: VaultHeader, passphrase: str) -> dict[int, bytes]:
    """Every epoch's 32-byte vault key (epoch to key), unwrapped with ``passphrase``: the primary keys of
    :func:`open_header`, which also gives a v3 header's alternates. Runs Argon2id once.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when the passphrase does not open every epoch (v1, v2) or the current
            one (v3); ``HEADER_MALFORMED`` when a v3 history does not open or lacks a committed key.
    """
    return open_header(header, passphrase).epochs


def add_epoch(header: VaultHeader, epoch: int, vault_key: bytes, passphrase: str) -> VaultHeader:
    """``header`` (as v2) plus ``vault_key`` (32 bytes) of the new ``epoch``, wrapped under ``passphrase``, which
    must open the epochs already there (so one header never mixes passphrases). Runs Argon2id once.

    A revoked device may know the passphrase: when revoking, use :func:`rotate_header` instead, or the
    revoked device can unwrap the new epoch from this header.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when the passphrase does not open the existing epochs.
        ValueError: ``epoch`` is already in the header or out of range, the key is not 32 bytes, or the header is
            v3 (it changes epoch with :func:`rotate_header`).
    """
    _check_v1_or_v2(header)
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    _check_int("epoch", epoch, 0, MAX_EPOCH)
    if epoch in header.epochs:
        raise ValueError(f"epoch {epoch} is already in the vault header")
    kek = _derive_kek(passphrase, header.kdf)
    keys = {existing: _unwrap(kek, header, existing) for existing in header.epochs}
    epochs = {**header.epochs, epoch: _wrap(kek, header.vault_id, epoch, vault_key)}
    return with_commitments(VaultHeader(vault_id=header.vault_id, kdf=header.kdf, epochs=epochs),
                            {**keys, epoch: vault_key})


def change_passphrase(header: VaultHeader, old_passphrase: str, new_passphrase: str, kdf: KdfParams) -> VaultHeader:
    """``header`` (as v2) with every epoch re-wrapped under ``new_passphrase`` and ``kdf`` (give it a fresh salt;
    also the way to raise the KDF cost). Runs Argon2id twice.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when ``old_passphrase`` does not open every epoch; ``KDF_TOO_WEAK``.
        ValueError: the header is v3 (it changes passphrase with :func:`rotate_header`).
    """
    _check_v1_or_v2(header)
    check_kdf_strength(kdf)
    keys = unwrap_vault_keys(header, old_passphrase)
    kek = _derive_kek(new_passphrase, kdf)
    epochs = {epoch: _wrap(kek, header.vault_id, epoch, key) for epoch, key in keys.items()}
    return with_commitments(VaultHeader(vault_id=header.vault_id, kdf=kdf, epochs=epochs), keys)


def rotate_header(header: VaultHeader, *, keys: Mapping[int, Sequence[bytes]], epoch: int, vault_key: bytes,
                  passphrase: str, kdf: KdfParams) -> VaultHeader:
    """A v3 header after a key change (device revocation, passphrase change): ``vault_key`` (32 bytes) of the new
    ``epoch`` wrapped under ``passphrase`` with ``kdf`` (give it a fresh salt: :meth:`KdfParams.new`), and every
    key of ``keys`` (epoch to the 32-byte keys held for it, the primary first) in the history sealed under
    ``vault_key``. The commitments are ``header``'s (a v1 header's computed from ``keys``), those of the epochs of
    ``keys`` it lacks (each made from the first key listed) and the new epoch's: the fingerprint stays. Runs
    Argon2id once.

    Raises:
        CryptoError: ``KDF_TOO_WEAK`` (see :func:`check_kdf_strength`).
        ValueError: ``epoch`` is not above every epoch of ``header`` and ``keys``; ``keys`` lists no key for an
            epoch, or its first key of an epoch ``header`` commits to is not the committed one (or, for a v1
            header, it lacks an epoch of the header); a key is not 32 bytes (a programming error).
    """
    _check_bytes("vault key", vault_key, VAULT_KEY_BYTES)
    _check_int("epoch", epoch, 0, MAX_EPOCH)
    for held_epoch, held in keys.items():
        if not held:
            raise ValueError(f"no key listed for epoch {held_epoch}")
        for key in held:
            _check_bytes("vault key", key, VAULT_KEY_BYTES)
    commits = {held_epoch: key_commitment(header.vault_id, held_epoch, held[0]) for held_epoch, held in keys.items()}
    committed = header.commits or with_commitments(header, {e: held[0] for e, held in keys.items()}).commits
    if max([*committed, *keys]) >= epoch:
        raise ValueError(f"epoch {epoch} is not above every epoch of the vault")
    wrong = sorted(e for e, commit in committed.items() if commits.get(e) != commit)
    if wrong:
        raise ValueError(f"the keys lack the primary key (listed first) of committed epochs {wrong}")
    check_kdf_strength(kdf)
    history = sorted({(held_epoch, key) for held_epoch, held in keys.items() for key in held})
    kek = _derive_kek(passphrase, kdf)
    return VaultHeader(vault_id=header.vault_id, kdf=kdf, epochs={epoch: _wrap(kek, header.vault_id, epoch, vault_key)},
                       commits={**commits, epoch: key_commitment(header.vault_id, epoch, vault_key)},
                       history=_seal_history(vault_key, header.vault_id, epoch, history))


def open_header(header: VaultHeader, passphrase: str) -> HeaderKeys:
    """The vault keys ``passphrase`` opens from ``header`` (what a joining device needs). v1 and v2: every
    epoch unwrapped (each matching its commitment in v2), the founding epoch current, no alternates. v3: the one
    wrapped epoch unwrapped and current, the other keys from the history it opens: for each committed epoch the
    key matching the commitment is the primary, the rest alternates. Runs Argon2id once.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` when the passphrase does not open every wrapped epoch to its committed
            key; ``HEADER_MALFORMED`` when a v3 history does not open with the current key or is not a sorted
            list of ``[epoch, key]``, lacks the committed key of an epoch, or holds a key of an epoch the header
            does not commit to.
    """
    kek = _derive_kek(passphrase, header.kdf)
    if not header.history:
        keys = {epoch: _unwrap(kek, header, epoch) for epoch in header.epochs}
        return HeaderKeys(current=min(keys), epochs=keys, alternates={})
    (current,) = header.epochs
    primaries = {current: _unwrap(kek, header, current)}
    alternates: dict[int, list[bytes]] = {}
    for epoch, key in _open_history(header, primaries[current]):
        if epoch not in header.commits:
            raise _malformed(f"its history holds a key of epoch {epoch}, which it does not commit to")
        if key_commitment(header.vault_id, epoch, key) != header.commits[epoch]:
            alternates.setdefault(epoch, []).append(key)
        elif epoch in primaries:
            raise _malformed("its history repeats the current key")
        else:
            primaries[epoch] = key
    missing = sorted(set(header.commits) - set(primaries))
    if missing:
        raise _malformed(f"its history lacks the committed keys of epochs {missing}")
    return HeaderKeys(current=current, epochs=dict(sorted(primaries.items())), alternates=alternates)


def _check_v1_or_v2(header: VaultHeader) -> None:
    if header.history:
        raise ValueError("a v3 header changes keys and passphrase with rotate_header")


def _history_ad(vault_id: bytes, epoch: int) -> bytes:
    return _HISTORY_DOMAIN + vault_id + epoch.to_bytes(8, "big")


def _seal_history(vault_key: bytes, vault_id: bytes, epoch: int, history: Sequence[tuple[int, bytes]]) -> bytes:
    """A v3 ``history``: nonce + AES-GCM-SIV under ``vault_key`` (of the header's ``epoch``) of the canonical
    msgpack of ``history`` (``(epoch, 32-byte key)`` pairs sorted by epoch, then key)."""
    packed: bytes = msgpack.packb([[e, key] for e, key in history], use_bin_type=True)
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCMSIV(vault_key).encrypt(nonce, packed, _history_ad(vault_id, epoch))


def _open_history(header: VaultHeader, vault_key: bytes) -> list[tuple[int, bytes]]:
    """The ``(epoch, key)`` pairs of v3 ``header``'s history, opened with ``vault_key`` (its current epoch's),
    strictly sorted and canonically encoded, or ``HEADER_MALFORMED``."""
    (current,) = header.epochs
    nonce, sealed = header.history[:_NONCE_BYTES], header.history[_NONCE_BYTES:]
    try:
        packed = AESGCMSIV(vault_key).decrypt(nonce, sealed, _history_ad(header.vault_id, current))
        entries = msgpack.unpackb(packed, raw=False, max_bin_len=VAULT_KEY_BYTES, max_str_len=0, max_map_len=0,
                                  max_ext_len=0, max_array_len=len(packed))
    except (InvalidTag, ValueError, TypeError, msgpack.UnpackException):
        raise _malformed("its history does not open with the current epoch's key") from None
    if not isinstance(entries, list) or not all(
            isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and 0 <= entry[0] <= MAX_EPOCH
            and isinstance(entry[1], bytes) and len(entry[1]) == VAULT_KEY_BYTES for entry in entries):
        raise _malformed("its history does not open with the current epoch's key to a list of [epoch, key]")
    pairs = [(epoch, key) for epoch, key in entries]
    if pairs != sorted(set(pairs)) or msgpack.packb(entries, use_bin_type=True) != packed:
        raise _malformed("its history does not open with the current epoch's key to a sorted, canonical list")
    return pairs


def _derive_kek(passphrase: str, kdf: KdfParams) -> bytes:
    """Argon2id of the NFC-normalised passphrase, 32 bytes; costs what ``kdf`` says (0.1-0.25 s by default)."""
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Argon2id(
        salt=kdf.salt, length=32, iterations=kdf.iterations, lanes=kdf.lanes, memory_cost=kdf.memory_cost
    ).derive(secret)


def _wrap_ad(vault_id: bytes, epoch: int) -> bytes:
    return _WRAP_DOMAIN + vault_id + epoch.to_bytes(8, "big")


def _wrap(kek: bytes, vault_id: bytes, epoch: int, vault_key: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCMSIV(kek).encrypt(nonce, vault_key, _wrap_ad(vault_id, epoch))


def _unwrap(kek: bytes, header: VaultHeader, epoch: int) -> bytes:
    """The vault key of ``epoch``; in a v2 header only when it matches the epoch's key commitment (a wrap built
    to open under several passphrases opens to a key that does not)."""
    wrapped = header.epochs[epoch]
    try:
        key = AESGCMSIV(kek).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _wrap_ad(header.vault_id, epoch))
        if header.commits and not hmac.compare_digest(key_commitment(header.vault_id, epoch, key),
                                                      header.commits[epoch]):
            raise InvalidTag
        return key
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
