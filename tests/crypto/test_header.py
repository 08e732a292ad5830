"""The public vault header (vault.json v2, reading v1) and passphrase wrapping."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.crypto.header import (
    MAX_HEADER_BYTES,
    MIN_ITERATIONS,
    MIN_MEMORY_COST_KIB,
    KdfParams,
    VaultHeader,
    _derive_kek,
    _wrap_ad,
    add_epoch,
    change_passphrase,
    check_join_kdf,
    create_header,
    fingerprint,
    key_commitment,
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
    document = {**_document(header), "format": "crdtsync-vault/3", "something": "new"}
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
