"""The public vault header (vault.json v3 and v2, reading v1) and passphrase wrapping."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from hypothesis import given, settings
from hypothesis import strategies as st

import crdtsync.crypto.header as header_module
from crdtsync.crypto.header import (
    MAX_HEADER_BYTES,
    MIN_ITERATIONS,
    MIN_MEMORY_COST_KIB,
    HeaderKeys,
    KdfParams,
    VaultHeader,
    _derive_kek,
    _history_ad,
    _seal_history,
    _wrap,
    _wrap_ad,
    add_epoch,
    change_passphrase,
    check_join_kdf,
    create_header,
    fingerprint,
    key_commitment,
    open_header,
    rotate_header,
    unwrap_vault_key,
    unwrap_vault_keys,
    with_commitments,
)
from crdtsync.crypto.keys import new_vault_id, new_vault_key
from crdtsync.errors import CryptoError
from tests.crypto.salamander import two_key_ciphertext

CHEAP = {"memory_cost": MIN_MEMORY_COST_KIB, "iterations": MIN_ITERATIONS, "lanes": 1}
PASSPHRASE = "correct horse battery staple"
#: An X25519 point of small order (the all-zero u-coordinate): exchanging with it yields no shared secret.
LOW_ORDER_POINT = bytes(32)


@pytest.fixture
def vault_id() -> bytes:
    return new_vault_id()


@pytest.fixture
def vault_key() -> bytes:
    return new_vault_key()


@pytest.fixture
def header(vault_id: bytes, vault_key: bytes) -> VaultHeader:
    return create_header(vault_id, vault_key, PASSPHRASE, KdfParams.new(**CHEAP))


def _code(error: pytest.ExceptionInfo[CryptoError]) -> str:
    return error.value.code


def test_passphrase_unwraps_the_vault_key(header: VaultHeader, vault_key: bytes) -> None:
    assert unwrap_vault_key(header, PASSPHRASE, 0) == vault_key


def test_wrong_passphrase_raises_wrong_passphrase_without_a_chained_traceback(header: VaultHeader) -> None:
    with pytest.raises(CryptoError) as caught:
        unwrap_vault_key(header, PASSPHRASE + "!", 0)
    assert _code(caught) == "WRONG_PASSPHRASE"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "passphrase" in caught.value.message


def test_passphrase_is_unicode_normalised(vault_id: bytes, vault_key: bytes) -> None:
    composed, decomposed = "caf\u00e9 cr\u00e8me", "cafe\u0301 cre\u0300me"
    header = create_header(vault_id, vault_key, composed, KdfParams.new(**CHEAP))
    assert unwrap_vault_key(header, decomposed, 0) == vault_key


def test_default_kdf_parameters_are_rfc_9106_interactive_and_work(vault_id: bytes, vault_key: bytes) -> None:
    kdf = KdfParams.new()
    assert (kdf.name, kdf.memory_cost, kdf.iterations, kdf.lanes, len(kdf.salt)) == (
        "argon2id",
        65536,
        3,
        4,
        16,
    )
    header = create_header(vault_id, vault_key, PASSPHRASE, kdf)
    assert unwrap_vault_key(header, PASSPHRASE, 0) == vault_key


def test_each_new_kdf_gets_a_fresh_salt() -> None:
    assert KdfParams.new(**CHEAP).salt != KdfParams.new(**CHEAP).salt


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "scrypt"},
        {"salt": b"\x00" * 15},
        {"iterations": 0},
        {"iterations": 17},
        {"iterations": True},
        {"lanes": 0},
        {"lanes": 2, "memory_cost": 15},
        {"memory_cost": 1024 * 1024 + 1},
    ],
)
def test_kdf_parameters_out_of_range_are_refused(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"salt": b"\x00" * 16, **CHEAP, **changes}
    with pytest.raises(ValueError):
        KdfParams(**fields)


def test_wrapped_key_moved_to_another_vault_does_not_unwrap(header: VaultHeader) -> None:
    moved = VaultHeader(vault_id=new_vault_id(), kdf=header.kdf, epochs=header.epochs)
    with pytest.raises(CryptoError) as caught:
        unwrap_vault_key(moved, PASSPHRASE, 0)
    assert _code(caught) == "WRONG_PASSPHRASE"


def test_wrapped_key_moved_to_another_epoch_does_not_unwrap(header: VaultHeader) -> None:
    moved = VaultHeader(vault_id=header.vault_id, kdf=header.kdf, epochs={1: header.epochs[0]})
    with pytest.raises(CryptoError) as caught:
        unwrap_vault_key(moved, PASSPHRASE, 1)
    assert _code(caught) == "WRONG_PASSPHRASE"


def test_missing_epoch_raises_key_missing(header: VaultHeader) -> None:
    with pytest.raises(CryptoError) as caught:
        unwrap_vault_key(header, PASSPHRASE, 1)
    assert _code(caught) == "KEY_MISSING"


def test_add_epoch_keeps_old_epochs_and_adds_the_new_key(header: VaultHeader, vault_key: bytes) -> None:
    next_key = new_vault_key()
    updated = add_epoch(header, 1, next_key, PASSPHRASE)
    assert unwrap_vault_keys(updated, PASSPHRASE) == {0: vault_key, 1: next_key}
    assert updated.epochs[0] == header.epochs[0]
    assert list(header.epochs) == [0]


def test_add_epoch_refuses_another_passphrase(header: VaultHeader) -> None:
    with pytest.raises(CryptoError) as caught:
        add_epoch(header, 1, new_vault_key(), "another passphrase")
    assert _code(caught) == "WRONG_PASSPHRASE"


def test_add_epoch_refuses_to_replace_an_epoch(header: VaultHeader) -> None:
    with pytest.raises(ValueError):
        add_epoch(header, 0, new_vault_key(), PASSPHRASE)


def test_change_passphrase_rewraps_every_epoch_under_a_new_salt(header: VaultHeader, vault_key: bytes) -> None:
    two_epochs = add_epoch(header, 1, new_vault_key(), PASSPHRASE)
    keys = unwrap_vault_keys(two_epochs, PASSPHRASE)
    changed = change_passphrase(two_epochs, PASSPHRASE, "new passphrase", KdfParams.new(**CHEAP))
    assert changed.kdf.salt != header.kdf.salt
    assert unwrap_vault_keys(changed, "new passphrase") == keys
    with pytest.raises(CryptoError) as caught:
        unwrap_vault_keys(changed, PASSPHRASE)
    assert _code(caught) == "WRONG_PASSPHRASE"


def test_change_passphrase_requires_the_old_one(header: VaultHeader) -> None:
    with pytest.raises(CryptoError) as caught:
        change_passphrase(header, "guess", "new passphrase", KdfParams.new(**CHEAP))
    assert _code(caught) == "WRONG_PASSPHRASE"


def test_header_epochs_are_read_only(header: VaultHeader) -> None:
    with pytest.raises(TypeError):
        header.epochs[1] = b"\x00" * 60  # type: ignore[index]


def test_json_round_trip(header: VaultHeader) -> None:
    two_epochs = add_epoch(header, 7, new_vault_key(), PASSPHRASE)
    assert VaultHeader.from_json(two_epochs.to_json()) == two_epochs


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_json_layout_is_the_documented_one_and_holds_no_secret(header: VaultHeader, vault_key: bytes) -> None:
    text = header.to_json()
    document = json.loads(text)
    assert document == {
        "format": "crdtsync-vault/2",
        "vault_id": _b64(header.vault_id),
        "kdf": {
            "name": "argon2id",
            "salt": _b64(header.kdf.salt),
            "iterations": MIN_ITERATIONS,
            "lanes": 1,
            "memory_cost": MIN_MEMORY_COST_KIB,
        },
        "epochs": {"0": _b64(header.epochs[0])},
        "commits": {"0": _b64(key_commitment(header.vault_id, 0, vault_key))},
    }
    assert len(header.epochs[0]) == 60 and len(header.commits[0]) == 32
    assert _b64(vault_key).encode() not in text and vault_key not in text and PASSPHRASE.encode() not in text


def _document(header: VaultHeader) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(header.to_json())
    return document


def _raises_code(data: bytes, code: str) -> None:
    with pytest.raises(CryptoError) as caught:
        VaultHeader.from_json(data)
    assert caught.value.code == code


def test_newer_format_raises_unsupported_version(header: VaultHeader) -> None:
    document = {**_document(header), "format": "crdtsync-vault/4", "something": "new"}
    _raises_code(json.dumps(document).encode(), "HEADER_UNSUPPORTED_VERSION")


MUTATIONS: list[tuple[str, Any]] = [
    ("format", "not-crdtsync"),
    ("format", 1),
    ("extra", "field"),
    ("vault_id", None),
    ("vault_id", "AAAA"),
    ("vault_id", "AAAAAAAAAAAAAAAAAAAAAA=="),
    ("vault_id", "AAAAAAAAAAAAAAAAAAAAA+"),
    ("vault_id", "AAAAAAAAAAAAAAAAAAAAAB"),
    ("kdf.name", "scrypt"),
    ("kdf.iterations", 1.0),
    ("kdf.iterations", True),
    ("kdf.iterations", "1"),
    ("kdf.lanes", 0),
    ("kdf.memory_cost", 2**40),
    ("kdf.salt", "AAAA"),
    ("kdf.extra", 1),
    ("epochs", {}),
    ("epochs", []),
    ("epochs", {"00": None}),
    ("epochs", {"-1": None}),
    ("epochs", {"+1": None}),
    ("epochs", {" 1": None}),
    ("epochs", {str(2**64): None}),
    ("epochs", {"0": "AAAA"}),
    ("epochs", {"0": 0}),
    ("commits", {}),
    ("commits", {"1": "AAAA"}),
    ("commits", {"0": "AAAA"}),
]


@pytest.mark.parametrize(("path", "value"), MUTATIONS, ids=[f"{p}={v!r}" for p, v in MUTATIONS])
def test_any_malformed_field_raises_header_malformed(header: VaultHeader, path: str, value: Any) -> None:
    document = _document(header)
    wrapped = document["epochs"]["0"]
    if isinstance(value, dict):
        value = {key: wrapped if item is None else item for key, item in value.items()}
    target = document
    *parents, leaf = path.split(".")
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    _raises_code(json.dumps(document).encode(), "HEADER_MALFORMED")


def test_missing_field_raises_header_malformed(header: VaultHeader) -> None:
    for key in ("vault_id", "kdf", "epochs"):
        document = _document(header)
        del document[key]
        _raises_code(json.dumps(document).encode(), "HEADER_MALFORMED")


@pytest.mark.parametrize(
    "transform",
    [
        lambda text: text.replace(b'"format"', b'"format": "x", "format"', 1),
        lambda text: text.replace(b'"lanes": 1', b'"lanes": NaN', 1),
        lambda text: text.replace(b'"lanes": 1', b'"lanes": 1e400', 1),
        lambda text: text.replace(b'"lanes": 1', b'"lanes": ' + b"9" * 5000, 1),
        lambda text: b"\xef\xbb\xbf" + text,
        lambda text: text.decode().encode("utf-16"),
        lambda text: text + b"\xff",
        lambda text: text[:-5],
        lambda text: b"[" * 100_000 + b"]" * 100_000,
        lambda text: b"[" + text + b"]",
        lambda text: text + b" " * MAX_HEADER_BYTES,
        lambda text: b"",
    ],
)
def test_malformed_json_raises_header_malformed(header: VaultHeader, transform: Any) -> None:
    _raises_code(transform(header.to_json()), "HEADER_MALFORMED")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(value=JSONISH)
def test_arbitrary_json_raises_only_crypto_errors(value: Any) -> None:
    with pytest.raises(CryptoError):
        VaultHeader.from_json(json.dumps(value).encode())


@settings(max_examples=300)
@given(data=st.data())
def test_a_valid_header_with_one_field_replaced_parses_or_raises_a_crypto_error(data: st.DataObject) -> None:
    document: dict[str, Any] = {
        "format": "crdtsync-vault/1",
        "vault_id": _b64(bytes(16)),
        "kdf": {"name": "argon2id", "salt": _b64(bytes(16)), "iterations": 1, "lanes": 1, "memory_cost": 8},
        "epochs": {"0": _b64(bytes(60))},
    }
    section: dict[str, Any] = data.draw(st.sampled_from([document, document["kdf"], document["epochs"]]))
    section[data.draw(st.sampled_from([*section, "0", "1", "new"]))] = data.draw(JSONISH)
    try:
        VaultHeader.from_json(json.dumps(document).encode())
    except CryptoError as error:
        assert error.code in {"HEADER_MALFORMED", "HEADER_UNSUPPORTED_VERSION"}


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_header_malformed(data: bytes) -> None:
    _raises_code(data, "HEADER_MALFORMED")


def _v1(header: VaultHeader) -> VaultHeader:
    """The header as crdtsync wrote it up to format v1 (no key commitments)."""
    return VaultHeader(vault_id=header.vault_id, kdf=header.kdf, epochs=header.epochs)


def test_a_v1_header_is_read_and_upgraded_to_v2_with_the_vault_keys_alone(header: VaultHeader,
                                                                          vault_key: bytes) -> None:
    old = VaultHeader.from_json(_v1(header).to_json())
    assert json.loads(old.to_json())["format"] == "crdtsync-vault/1" and old.version == 1
    assert unwrap_vault_key(old, PASSPHRASE, 0) == vault_key
    upgraded = with_commitments(old, {0: vault_key})
    assert upgraded == header and upgraded.version == 2
    with pytest.raises(ValueError):
        fingerprint(old)


def test_a_wrap_that_opens_under_two_passphrases_opens_under_one_only_in_v2(vault_id: bytes,
                                                                            vault_key: bytes) -> None:
    """AES-GCM-SIV is not key-committing: a hostile store can build one 60-byte wrap that opens under two
    passphrases (to two different keys), and so test two guesses per header. The key commitment of v2 makes the
    header open under the passphrase its commitment was made for only."""
    kdf = KdfParams.new(**CHEAP)
    keks = [_derive_kek(p, kdf) for p in (PASSPHRASE, "hunter2")]
    wrap = two_key_ciphertext(keks[0], keks[1], _wrap_ad(vault_id, 0))
    v1 = VaultHeader(vault_id=vault_id, kdf=kdf, epochs={0: wrap})
    opened = [unwrap_vault_key(v1, p, 0) for p in (PASSPHRASE, "hunter2")]
    assert opened[0] != opened[1]  # v1: both guesses tested with one header
    v2 = with_commitments(v1, {0: opened[0]})
    assert unwrap_vault_key(v2, PASSPHRASE, 0) == opened[0]
    with pytest.raises(CryptoError) as caught:
        unwrap_vault_key(v2, "hunter2", 0)
    assert _code(caught) == "WRONG_PASSPHRASE"


def test_the_fingerprint_names_the_vault_and_its_first_key(header: VaultHeader, vault_id: bytes) -> None:
    assert len(fingerprint(header)) == 26
    assert fingerprint(header) == fingerprint(VaultHeader.from_json(header.to_json()))
    other_key = create_header(vault_id, new_vault_key(), PASSPHRASE, KdfParams.new(**CHEAP))
    assert fingerprint(other_key) != fingerprint(header)
    assert fingerprint(add_epoch(header, 1, new_vault_key(), PASSPHRASE)) == fingerprint(header)


@pytest.mark.parametrize("kdf", [{"memory_cost": 8, "iterations": 1, "lanes": 1},
                                 {"memory_cost": MIN_MEMORY_COST_KIB - 1, "iterations": 3, "lanes": 1},
                                 {"memory_cost": 64 * 1024, "iterations": 1, "lanes": 4}])
def test_a_vault_is_never_created_below_the_kdf_floor(vault_id: bytes, vault_key: bytes, kdf: dict[str, int]) -> None:
    with pytest.raises(CryptoError) as caught:
        create_header(vault_id, vault_key, PASSPHRASE, KdfParams.new(**kdf))
    assert _code(caught) == "KDF_TOO_WEAK"
    with pytest.raises(CryptoError) as caught:
        check_join_kdf(KdfParams.new(**kdf))
    assert _code(caught) == "KDF_TOO_WEAK"


def test_a_join_refuses_a_kdf_that_would_exhaust_the_device() -> None:
    check_join_kdf(KdfParams.new())
    with pytest.raises(CryptoError) as caught:
        check_join_kdf(KdfParams.new(memory_cost=1024 * 1024, iterations=16, lanes=4))
    assert _code(caught) == "KDF_TOO_COSTLY"


# -- v3: after a key change only the current epoch is wrapped under the passphrase -----------------------------

NEW_PASSPHRASE = "a new passphrase after a revocation"


def _rotate(header: VaultHeader, keys: dict[int, list[bytes]], epoch: int, vault_key: bytes,
            passphrase: str = NEW_PASSPHRASE) -> VaultHeader:
    return rotate_header(header, keys=keys, epoch=epoch, vault_key=vault_key, passphrase=passphrase,
                         kdf=KdfParams.new(**CHEAP))


@pytest.fixture
def next_key() -> bytes:
    return new_vault_key()


@pytest.fixture
def rotated(header: VaultHeader, vault_key: bytes, next_key: bytes) -> VaultHeader:
    """Epoch 0's header after a revocation: epoch 1 under the new passphrase, epoch 0's key in the history."""
    return _rotate(header, {0: [vault_key]}, 1, next_key)


def test_a_rotated_header_wraps_the_new_epoch_alone_and_round_trips_byte_identical(
        rotated: VaultHeader, vault_key: bytes, next_key: bytes) -> None:
    text = rotated.to_json()
    document = json.loads(text)
    assert document["format"] == "crdtsync-vault/3" and rotated.version == 3
    assert set(document) == {"format", "vault_id", "kdf", "epochs", "commits", "history"}
    assert list(document["epochs"]) == ["1"] and list(document["commits"]) == ["0", "1"]
    assert VaultHeader.from_json(text) == rotated
    assert VaultHeader.from_json(text).to_json() == text
    for key in (vault_key, next_key):
        assert key not in text and _b64(key).encode() not in text


def test_open_header_gives_the_current_epoch_every_primary_key_and_the_alternates(
        header: VaultHeader, vault_key: bytes) -> None:
    """Two members revoked concurrently: both made an epoch 1 key. The one listed first is committed to (the
    primary), the other travels as an alternate, as does an alternate of epoch 0."""
    alternate_0, primary_1, alternate_1, key_2 = (new_vault_key() for _ in range(4))
    rotated = _rotate(header, {0: [vault_key, alternate_0], 1: [primary_1, alternate_1]}, 2, key_2)
    assert rotated.commits[1] == key_commitment(rotated.vault_id, 1, primary_1)
    assert open_header(rotated, NEW_PASSPHRASE) == HeaderKeys(
        current=2, epochs={0: vault_key, 1: primary_1, 2: key_2}, alternates={0: [alternate_0], 1: [alternate_1]})
    assert unwrap_vault_keys(rotated, NEW_PASSPHRASE) == {0: vault_key, 1: primary_1, 2: key_2}


def test_open_header_of_a_v2_header_gives_every_epoch_and_the_founding_one_current(
        header: VaultHeader, vault_key: bytes, next_key: bytes) -> None:
    two_epochs = add_epoch(header, 1, next_key, PASSPHRASE)
    assert open_header(two_epochs, PASSPHRASE) == HeaderKeys(current=0, epochs={0: vault_key, 1: next_key},
                                                             alternates={})


def test_the_old_passphrase_does_not_open_a_rotated_header(rotated: VaultHeader) -> None:
    for attempt in (lambda: open_header(rotated, PASSPHRASE), lambda: unwrap_vault_key(rotated, PASSPHRASE, 1)):
        with pytest.raises(CryptoError) as caught:
            attempt()
        assert _code(caught) == "WRONG_PASSPHRASE"


def test_rotating_keeps_the_fingerprint(header: VaultHeader, rotated: VaultHeader, vault_key: bytes,
                                        next_key: bytes) -> None:
    assert fingerprint(rotated) == fingerprint(header)
    assert fingerprint(_rotate(rotated, {0: [vault_key], 1: [next_key]}, 2, new_vault_key())) == fingerprint(header)


def test_a_second_rotation_keeps_every_key(header: VaultHeader, vault_key: bytes) -> None:
    alternate_0, key_1, key_5 = new_vault_key(), new_vault_key(), new_vault_key()
    first = _rotate(header, {0: [vault_key, alternate_0]}, 1, key_1)
    opened = open_header(first, NEW_PASSPHRASE)
    held = {epoch: [key, *opened.alternates.get(epoch, [])] for epoch, key in opened.epochs.items()}
    second = _rotate(first, held, 5, key_5, passphrase="a third passphrase")
    assert open_header(second, "a third passphrase") == HeaderKeys(
        current=5, epochs={0: vault_key, 1: key_1, 5: key_5}, alternates={0: [alternate_0]})
    assert list(second.epochs) == [5] and list(second.commits) == [0, 1, 5]


def test_a_v1_header_rotates_with_commitments_made_from_the_keys(header: VaultHeader, vault_key: bytes,
                                                                 next_key: bytes) -> None:
    rotated = _rotate(_v1(header), {0: [vault_key]}, 1, next_key)
    assert fingerprint(rotated) == fingerprint(header)
    assert open_header(rotated, NEW_PASSPHRASE).epochs == {0: vault_key, 1: next_key}
    with pytest.raises(ValueError):
        _rotate(_v1(header), {}, 1, next_key)


@pytest.mark.parametrize("case", ["epoch not above", "epoch not above the keys", "no primary", "wrong primary",
                                  "empty list", "short key"])
def test_rotate_header_refuses_keys_that_would_lose_or_misname_a_key(header: VaultHeader, vault_key: bytes,
                                                                     case: str) -> None:
    keys, epoch = {
        "epoch not above": ({0: [vault_key]}, 0),
        "epoch not above the keys": ({0: [vault_key], 3: [new_vault_key()]}, 2),
        "no primary": ({1: [new_vault_key()]}, 2),
        "wrong primary": ({0: [new_vault_key(), vault_key]}, 1),
        "empty list": ({0: [vault_key], 1: []}, 2),
        "short key": ({0: [vault_key, bytes(31)]}, 1),
    }[case]
    with pytest.raises(ValueError):
        _rotate(header, keys, epoch, new_vault_key())


def test_rotate_header_refuses_a_weak_kdf_before_argon2id_runs(header: VaultHeader, vault_key: bytes,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_module, "_derive_kek", _no_argon2id)
    with pytest.raises(CryptoError) as caught:
        rotate_header(header, keys={0: [vault_key]}, epoch=1, vault_key=new_vault_key(), passphrase=NEW_PASSPHRASE,
                      kdf=KdfParams.new(memory_cost=8, iterations=1, lanes=1))
    assert _code(caught) == "KDF_TOO_WEAK"


def _no_argon2id(passphrase: str, kdf: KdfParams) -> bytes:
    raise AssertionError("Argon2id ran")


def test_rotate_and_open_run_argon2id_once_each(header: VaultHeader, vault_key: bytes,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []

    def counted(passphrase: str, kdf: KdfParams) -> bytes:
        runs.append(passphrase)
        return _derive_kek(passphrase, kdf)

    monkeypatch.setattr(header_module, "_derive_kek", counted)
    rotated = _rotate(header, {0: [vault_key]}, 1, new_vault_key())
    open_header(rotated, NEW_PASSPHRASE)
    assert runs == [NEW_PASSPHRASE, NEW_PASSPHRASE]


def test_a_tampered_history_is_malformed(rotated: VaultHeader) -> None:
    for index in (0, 20, len(rotated.history) - 1):  # nonce, ciphertext, tag
        flipped = bytearray(rotated.history)
        flipped[index] ^= 1
        with pytest.raises(CryptoError) as caught:
            open_header(dataclasses.replace(rotated, history=bytes(flipped)), NEW_PASSPHRASE)
        assert _code(caught) == "HEADER_MALFORMED" and "does not open with the current" in caught.value.message


def test_a_history_moved_to_another_vault_header_does_not_open(rotated: VaultHeader, next_key: bytes) -> None:
    """Sealed to its vault id and epoch: the history of one rotated header does not open in another."""
    other = _hand_made_v3(new_vault_id(), (1, next_key), {0: new_vault_key()}, [])
    with pytest.raises(CryptoError) as caught:
        open_header(dataclasses.replace(other, history=rotated.history), PASSPHRASE)
    assert _code(caught) == "HEADER_MALFORMED"


def _hand_made_v3(vault_id: bytes, current: tuple[int, bytes], committed: dict[int, bytes],
                  history: list[tuple[int, bytes]], *, packed: bytes | None = None) -> VaultHeader:
    """A v3 header built through the private helpers (under ``PASSPHRASE``): ``current`` wrapped, commitments of
    ``committed`` and ``current``, a history of ``history`` (or the plaintext ``packed`` as it is)."""
    kdf = KdfParams.new(**CHEAP)
    epoch, key = current
    commits = {e: key_commitment(vault_id, e, k) for e, k in {**committed, epoch: key}.items()}
    if packed is None:
        sealed = _seal_history(key, vault_id, epoch, history)
    else:
        nonce = os.urandom(12)
        sealed = nonce + AESGCMSIV(key).encrypt(nonce, packed, _history_ad(vault_id, epoch))
    return VaultHeader(vault_id=vault_id, kdf=kdf, epochs={epoch: _wrap(_derive_kek(PASSPHRASE, kdf), vault_id,
                                                                         epoch, key)},
                       commits=commits, history=sealed)


def test_an_alternate_of_the_current_epoch_goes_to_the_alternates(vault_id: bytes, vault_key: bytes) -> None:
    key_1, alternate_1 = new_vault_key(), new_vault_key()
    header = _hand_made_v3(vault_id, (1, key_1), {0: vault_key}, [(0, vault_key), (1, alternate_1)])
    assert open_header(header, PASSPHRASE) == HeaderKeys(current=1, epochs={0: vault_key, 1: key_1},
                                                         alternates={1: [alternate_1]})


K = [bytes([n]) * 32 for n in range(4)]  # K[3] is the current (epoch 3) key; K[0] and K[1] are committed
HISTORIES: dict[str, list[tuple[int, bytes]]] = {
    "missing a committed epoch's key": [(0, K[0])],
    "with alternates only for a committed epoch": [(0, K[0]), (1, K[2])],
    "with a key of an epoch not committed to": [(0, K[0]), (1, K[1]), (2, K[2])],
    "with a key of a later epoch": [(0, K[0]), (1, K[1]), (4, K[2])],
    "repeating the current key": [(0, K[0]), (1, K[1]), (3, K[3])],
    "unsorted": [(1, K[1]), (0, K[0])],
    "with a pair twice": [(0, K[0]), (0, K[0]), (1, K[1])],
}


@pytest.mark.parametrize("case", HISTORIES)
def test_a_history_that_does_not_give_exactly_the_committed_keys_is_malformed(vault_id: bytes, case: str) -> None:
    header = _hand_made_v3(vault_id, (3, K[3]), {0: K[0], 1: K[1]}, HISTORIES[case])
    with pytest.raises(CryptoError) as caught:
        open_header(header, PASSPHRASE)
    assert _code(caught) == "HEADER_MALFORMED"


PLAINTEXTS: dict[str, bytes] = {
    "not msgpack": b"\xc1",
    "a map": msgpack.packb({0: K[0]}, use_bin_type=True),
    "trailing bytes": msgpack.packb([[0, K[0]]], use_bin_type=True) + b"\x00",
    "a triple": msgpack.packb([[0, K[0], 1]], use_bin_type=True),
    "a short key": msgpack.packb([[0, bytes(31)]], use_bin_type=True),
    "a str key": msgpack.packb([[0, "k" * 32]], use_bin_type=True),
    "a bool epoch": msgpack.packb([[False, K[0]]], use_bin_type=True),
    "a negative epoch": msgpack.packb([[-1, K[0]]], use_bin_type=True),
    "a non-canonical epoch": b"\x91\x92\xcf" + bytes(8) + b"\xc4\x20" + K[0],
}


@pytest.mark.parametrize("case", PLAINTEXTS)
def test_a_history_that_is_not_a_canonical_list_of_epoch_key_pairs_is_malformed(vault_id: bytes, case: str) -> None:
    header = _hand_made_v3(vault_id, (3, K[3]), {0: K[0]}, [], packed=PLAINTEXTS[case])
    with pytest.raises(CryptoError) as caught:
        open_header(header, PASSPHRASE)
    assert _code(caught) == "HEADER_MALFORMED"


def test_the_hand_made_canonical_history_opens(vault_id: bytes) -> None:
    """The control for the two tests above: the same construction with a good history opens."""
    header = _hand_made_v3(vault_id, (3, K[3]), {0: K[0]}, [],
                           packed=b"\x91\x92\x00\xc4\x20" + K[0])
    assert open_header(header, PASSPHRASE).epochs == {0: K[0], 3: K[3]}


V3_MUTATIONS: list[tuple[str, Any]] = [
    ("epochs", {"0": "WRAPPED", "1": "WRAPPED"}),
    ("epochs", {"2": "WRAPPED"}),
    ("commits", {"0": "COMMIT"}),
    ("commits", {"0": "COMMIT", "1": "COMMIT", "2": "COMMIT"}),
    ("history", ""),
    ("history", "AAAA"),
    ("history", None),
    ("extra", "field"),
]


@pytest.mark.parametrize(("field", "value"), V3_MUTATIONS, ids=[f"{f}={v!r}" for f, v in V3_MUTATIONS])
def test_a_v3_header_of_another_shape_is_malformed(rotated: VaultHeader, field: str, value: Any) -> None:
    document = _document(rotated)
    wrapped, commit = document["epochs"]["1"], document["commits"]["1"]
    if isinstance(value, dict):
        value = {key: {"WRAPPED": wrapped, "COMMIT": commit}[item] for key, item in value.items()}
    document[field] = value
    _raises_code(json.dumps(document).encode(), "HEADER_MALFORMED")


@pytest.mark.parametrize("field", ["commits", "history"])
def test_a_v3_header_without_commits_or_history_is_malformed(rotated: VaultHeader, field: str) -> None:
    document = _document(rotated)
    del document[field]
    _raises_code(json.dumps(document).encode(), "HEADER_MALFORMED")


def test_a_v2_header_with_a_history_is_malformed(header: VaultHeader, rotated: VaultHeader) -> None:
    document = {**_document(header), "history": _b64(rotated.history)}
    _raises_code(json.dumps(document).encode(), "HEADER_MALFORMED")


def test_the_v1_and_v2_functions_refuse_a_v3_header(rotated: VaultHeader, next_key: bytes) -> None:
    with pytest.raises(ValueError):
        add_epoch(rotated, 2, new_vault_key(), NEW_PASSPHRASE)
    with pytest.raises(ValueError):
        change_passphrase(rotated, NEW_PASSPHRASE, "another", KdfParams.new(**CHEAP))
    with pytest.raises(ValueError):
        with_commitments(rotated, {1: next_key})
