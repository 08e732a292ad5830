"""Envelope v1: sealing, opening, every refusal path, and chunking."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crdtsync.crypto.envelope import (
    KIND_HEAD,
    KIND_SNAPSHOT,
    KIND_UPDATE,
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_KIND,
    NONCE_LIMIT,
    EnvelopeHeader,
    join_chunks,
    open_envelope,
    parse_chunk,
    peek,
    seal,
    split_body,
)
from crdtsync.crypto.keys import MAX_EPOCH, DeviceKeys, new_vault_id, new_vault_key
from crdtsync.errors import EnvelopeError

VAULT_ID = new_vault_id()
VAULT_KEY = new_vault_key()
ALICE = DeviceKeys.generate()
BOB = DeviceKeys.generate()
MALLORY = DeviceKeys.generate()
REGISTRY = {ALICE.device_id: ALICE.sign_pk, BOB.device_id: BOB.sign_pk}


def registered(device_id: str, epoch: int) -> bytes | None:
    return REGISTRY.get(device_id)


def nobody(device_id: str, epoch: int) -> bytes | None:
    return None


def sealed(body: bytes = b"hello", *, sender: DeviceKeys = ALICE, epoch: int = 0, kind: int = KIND_UPDATE) -> bytes:
    return seal(
        vault_id=VAULT_ID,
        epoch=epoch,
        vault_key=VAULT_KEY,
        sender=sender,
        kind=kind,
        body=body,
        sealed_count=0,
    )


def opened(data: bytes, sender_key: Callable[[str, int], bytes | None] = registered, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {"vault_id": VAULT_ID, "epoch_keys": {0: VAULT_KEY}, "sender_key": sender_key}
    return open_envelope(data, **{**arguments, **overrides})


def refused(data: bytes, sender_key: Callable[[str, int], bytes | None] = registered, **overrides: Any) -> str:
    with pytest.raises(EnvelopeError) as caught:
        opened(data, sender_key, **overrides)
    return caught.value.code


def spec_envelope(
    *,
    signer: DeviceKeys,
    plaintext: bytes,
    sender_id: str | None = None,
    vault_key: bytes = VAULT_KEY,
    nonce: bytes = b"\x07" * 12,
    epoch: int = 0,
    kind: int = KIND_UPDATE,
    magic: str = "CSY1",
    version: int | None = None,
) -> bytes:
    """An envelope built from the design's text alone, independently of the module (used to forge): version 2
    for a 32-character sender id, 1 for a 16-character one, unless ``version`` says otherwise."""
    sender_id = sender_id or signer.device_id
    version = version if version is not None else (2 if len(sender_id) == 32 else 1)
    header = [magic, version, VAULT_ID, epoch, sender_id, kind]
    info = b"crdtsync/v1/envelope" + epoch.to_bytes(8, "big") + sender_id.encode()
    subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=VAULT_ID, info=info).derive(vault_key)
    ciphertext = AESGCMSIV(subkey).encrypt(nonce, plaintext, msgpack.packb(header))
    signature = signer.sign(msgpack.packb([*header, nonce, ciphertext]))
    return bytes(msgpack.packb([*header, nonce, ciphertext, signature]))


def plaintext_of(device: DeviceKeys, body: bytes) -> bytes:
    return bytes(msgpack.packb([device.sign_pk, body]))


def test_round_trip_from_a_registered_sender() -> None:
    result = opened(sealed(b"update bytes", kind=KIND_SNAPSHOT))
    assert (result.sender, result.epoch, result.kind, result.body) == (
        ALICE.device_id,
        0,
        KIND_SNAPSHOT,
        b"update bytes",
    )
    assert result.sender_sign_pk == ALICE.sign_pk
    assert result.registered


def test_round_trip_from_an_unregistered_sender_is_marked_unregistered() -> None:
    result = opened(sealed(b"join me", sender=MALLORY), nobody)
    assert result.body == b"join me" and result.sender_sign_pk == MALLORY.sign_pk
    assert not result.registered


def test_sender_key_is_asked_for_the_envelopes_sender_and_epoch() -> None:
    asked: list[tuple[str, int]] = []

    def lookup(device_id: str, epoch: int) -> bytes | None:
        asked.append((device_id, epoch))
        return ALICE.sign_pk

    opened(sealed(epoch=5), lookup, epoch_keys={5: VAULT_KEY})
    assert asked == [(ALICE.device_id, 5)]


def test_an_error_raised_by_sender_key_propagates_unchanged() -> None:
    def revoked(device_id: str, epoch: int) -> bytes | None:
        raise EnvelopeError("revoked", code="ENVELOPE_SENDER_REVOKED")

    assert refused(sealed(), revoked) == "ENVELOPE_SENDER_REVOKED"


def test_seal_matches_the_design_byte_for_byte() -> None:
    nonce = b"\x07" * 12
    envelope = seal(
        vault_id=VAULT_ID,
        epoch=9,
        vault_key=VAULT_KEY,
        sender=ALICE,
        kind=KIND_HEAD,
        body=b"body",
        sealed_count=0,
        randbytes=lambda size: nonce[:size],
    )
    expected = spec_envelope(signer=ALICE, plaintext=plaintext_of(ALICE, b"body"), epoch=9, kind=KIND_HEAD)
    assert envelope == expected


#: Envelope v1 of b"crdtsync" with fixed keys and nonce: any change to the format breaks this test.
KNOWN_ANSWER = bytes.fromhex(
    "99a44353593101c410000102030405060708090a0b0c0d0e0f01b03536343735616137353436333437346301c40c0000"
    "00000000000000000000c43d0623f8d496527938e5b89b2cc4931fff4392c1e6fe9b6f34fdab82a44bb74eccf36300c6"
    "9ed34be708479aefd81a250e71bf8f4376d7d4a9a5511c93a2c440157e7b64028d57e7b725a496937481dfc74adecaee"
    "96777b76e2d52d87206a80b8ba116facedf08e72a7292ef0f2e5418b7eebae85e9120a616aeb474268a803"
)


def test_known_answer_vector_pins_format_v1() -> None:
    """A device created up to 9204cbf (16-character id) seals exactly what it sealed then."""
    device = DeviceKeys(
        Ed25519PrivateKey.from_private_bytes(bytes(range(32))), X25519PrivateKey.from_private_bytes(bytes(32)),
        id_chars=16,
    )
    envelope = seal(
        vault_id=bytes(range(16)),
        epoch=1,
        vault_key=bytes(range(32, 64)),
        sender=device,
        kind=KIND_UPDATE,
        body=b"crdtsync",
        sealed_count=0,
        randbytes=bytes,
    )
    assert envelope == KNOWN_ANSWER
    assert (
        opened(KNOWN_ANSWER, nobody, vault_id=bytes(range(16)), epoch_keys={1: bytes(range(32, 64))}).body
        == b"crdtsync"
    )


#: The same seal by a device with a 32-character id (version 2), pinned when v2 was introduced; the byte-for-byte
#: test above checks the module against an envelope built from the design's text alone.
KNOWN_ANSWER_V2 = bytes.fromhex(
    "99a44353593102c410000102030405060708090a0b0c0d0e0f01d9203536343735616137353436333437346330323835"
    "64663564626632626361623701c40c000000000000000000000000c43d8e703c675bc0c38b4a0038097f32146ad6ba27"
    "3df1ad16e83bb6a436a2a14bdcb9b4e275af2a39775613ff906429041b02351bdd09c601bca9da1e1ff3c440f0b00da4"
    "36ba5ee64f09c31b886b66ea99b2c20b98e347dac51eb6dddc088405a46cb911cec7085f6d1b3692928a10089d315455"
    "3a7d1d3c2af53c446a339902"
)


def test_known_answer_vector_pins_format_v2() -> None:
    device = DeviceKeys(
        Ed25519PrivateKey.from_private_bytes(bytes(range(32))), X25519PrivateKey.from_private_bytes(bytes(32))
    )
    envelope = seal(vault_id=bytes(range(16)), epoch=1, vault_key=bytes(range(32, 64)), sender=device,
                    kind=KIND_UPDATE, body=b"crdtsync", sealed_count=0, randbytes=bytes)
    assert envelope == KNOWN_ANSWER_V2
    assert opened(KNOWN_ANSWER_V2, nobody, vault_id=bytes(range(16)), epoch_keys={1: bytes(range(32, 64))}).sender \
        == device.device_id


def test_peek_reads_the_header_without_keys() -> None:
    assert peek(sealed(kind=KIND_HEAD, epoch=3)) == EnvelopeHeader(2, VAULT_ID, 3, ALICE.device_id, KIND_HEAD)


def test_two_seals_of_the_same_body_differ() -> None:
    first, second = sealed(b"same"), sealed(b"same")
    assert first != second
    assert opened(first).body == opened(second).body == b"same"


def test_an_empty_body_round_trips() -> None:
    assert opened(sealed(b"")).body == b""


def test_the_largest_body_with_the_largest_header_fits_in_one_envelope() -> None:
    body = b"\xab" * MAX_BODY_BYTES
    envelope = sealed(body, epoch=MAX_EPOCH, kind=MAX_KIND)
    assert len(envelope) <= MAX_ENVELOPE_BYTES
    assert opened(envelope, epoch_keys={MAX_EPOCH: VAULT_KEY}).body == body


def test_seal_refuses_a_body_over_the_limit() -> None:
    with pytest.raises(EnvelopeError) as caught:
        sealed(b"\x00" * (MAX_BODY_BYTES + 1))
    assert caught.value.code == "ENVELOPE_OVERSIZE"


def test_seal_enforces_the_nonce_bound() -> None:
    arguments: dict[str, Any] = {
        "vault_id": VAULT_ID,
        "epoch": 0,
        "vault_key": VAULT_KEY,
        "sender": ALICE,
        "kind": 1,
        "body": b"x",
    }
    assert opened(seal(**arguments, sealed_count=NONCE_LIMIT - 1)).body == b"x"
    with pytest.raises(EnvelopeError) as caught:
        seal(**arguments, sealed_count=NONCE_LIMIT)
    assert caught.value.code == "ENVELOPE_NONCE_LIMIT"


@pytest.mark.parametrize(
    "changes",
    [
        {"vault_id": b"\x00" * 15},
        {"vault_key": b"\x00" * 31},
        {"epoch": -1},
        {"epoch": MAX_EPOCH + 1},
        {"kind": MAX_KIND + 1},
        {"sealed_count": -1},
        {"randbytes": lambda size: b"\x00" * 11},
    ],
)
def test_seal_rejects_malformed_arguments(changes: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "vault_id": VAULT_ID,
        "epoch": 0,
        "vault_key": VAULT_KEY,
        "sender": ALICE,
        "kind": 1,
        "body": b"x",
        "sealed_count": 0,
    }
    with pytest.raises(ValueError):
        seal(**{**arguments, **changes})


# Each refusal path, built for real.


def test_oversize_is_refused_before_parsing() -> None:
    envelope = sealed(b"x" * 100)
    assert refused(envelope, max_size=len(envelope) - 1) == "ENVELOPE_OVERSIZE"
    assert refused(b"\xc1" * (MAX_ENVELOPE_BYTES + 1)) == "ENVELOPE_OVERSIZE"
    with pytest.raises(EnvelopeError) as caught:
        peek(envelope, max_size=10)
    assert caught.value.code == "ENVELOPE_OVERSIZE"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        msgpack.packb({"magic": "CSY1"}),
        msgpack.packb(["CSY1"]),
        msgpack.packb(["CSY1", "1"]),
        b"\x91" * 100_000,
        b"\xdd\xff\xff\xff\xff",
        b"\x99\xa4CSY1\x01\xc6\xff\xff\xff\xff",
        b"\x99\xa4CSY1\x01\xd9\xff",
    ],
)
def test_bytes_that_are_not_an_envelope_are_refused(data: bytes) -> None:
    assert refused(data) == "ENVELOPE_NOT_ENVELOPE"


def test_wrong_magic_is_not_an_envelope() -> None:
    forged = spec_envelope(signer=ALICE, plaintext=plaintext_of(ALICE, b"x"), magic="CSY2")
    assert refused(forged) == "ENVELOPE_NOT_ENVELOPE"


def test_truncated_envelope_is_not_an_envelope() -> None:
    assert refused(sealed()[:-1]) == "ENVELOPE_NOT_ENVELOPE"


def test_non_canonical_encodings_are_not_envelopes() -> None:
    envelope = sealed()
    assert envelope[:7] == b"\x99\xa4CSY1\x02"
    wide_version = envelope[:6] + b"\xcc\x02" + envelope[7:]
    wide_magic = envelope[:1] + b"\xd9\x04CSY1" + envelope[6:]
    wide_array = b"\xdc\x00\x09" + envelope[1:]
    for variant in (wide_version, wide_magic, wide_array):
        assert refused(variant) == "ENVELOPE_NOT_ENVELOPE"


def test_version_3_is_unsupported_whatever_its_layout() -> None:
    forged = spec_envelope(signer=ALICE, plaintext=plaintext_of(ALICE, b"x"), version=3)
    assert refused(forged) == "ENVELOPE_UNSUPPORTED_VERSION"
    assert refused(msgpack.packb(["CSY1", 3, "a", "different", "layout"])) == "ENVELOPE_UNSUPPORTED_VERSION"
    with pytest.raises(EnvelopeError) as caught:
        peek(forged)
    assert caught.value.code == "ENVELOPE_UNSUPPORTED_VERSION"


def test_other_vault_is_refused() -> None:
    assert refused(sealed(), vault_id=new_vault_id()) == "ENVELOPE_OTHER_VAULT"


def test_unknown_epoch_is_refused() -> None:
    assert refused(sealed(epoch=1)) == "ENVELOPE_UNKNOWN_EPOCH"


@pytest.mark.parametrize("sender_key", [registered, nobody])
def test_wrong_vault_key_fails_to_decrypt(sender_key: Callable[[str, int], bytes | None]) -> None:
    assert refused(sealed(), sender_key, epoch_keys={0: new_vault_key()}) == "ENVELOPE_DECRYPT_FAILED"


def test_registered_sender_signature_by_another_device_is_refused() -> None:
    forged = spec_envelope(signer=MALLORY, sender_id=ALICE.device_id, plaintext=plaintext_of(ALICE, b"x"))
    assert refused(forged) == "ENVELOPE_BAD_SIGNATURE"


def test_registered_sender_signature_is_checked_before_decryption() -> None:
    forged = spec_envelope(
        signer=MALLORY,
        sender_id=ALICE.device_id,
        plaintext=plaintext_of(ALICE, b"x"),
        vault_key=new_vault_key(),
    )
    assert refused(forged) == "ENVELOPE_BAD_SIGNATURE"


def test_registered_sender_carrying_another_key_is_refused() -> None:
    forged = spec_envelope(signer=ALICE, plaintext=plaintext_of(BOB, b"x"))
    assert refused(forged) == "ENVELOPE_UNKNOWN_SENDER"


def test_registry_key_not_matching_the_carried_key_is_refused() -> None:
    assert refused(sealed(sender=ALICE), lambda device_id, epoch: BOB.sign_pk) == "ENVELOPE_BAD_SIGNATURE"
    forged = spec_envelope(signer=BOB, sender_id=ALICE.device_id, plaintext=plaintext_of(ALICE, b"x"))
    assert refused(forged, lambda device_id, epoch: BOB.sign_pk) == "ENVELOPE_UNKNOWN_SENDER"


def test_unregistered_sender_with_a_forged_plaintext_key_is_refused() -> None:
    forged = spec_envelope(signer=MALLORY, sender_id=ALICE.device_id, plaintext=plaintext_of(MALLORY, b"x"))
    assert refused(forged, nobody) == "ENVELOPE_UNKNOWN_SENDER"


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"\xc1",
        msgpack.packb([MALLORY.sign_pk]),
        msgpack.packb([MALLORY.sign_pk, "text"]),
        msgpack.packb([MALLORY.sign_pk[:31], b"x"]),
        msgpack.packb({"pk": MALLORY.sign_pk}),
        b"\xdc\x00\x02" + msgpack.packb(MALLORY.sign_pk) + msgpack.packb(b"x"),
    ],
)
def test_unregistered_sender_with_a_malformed_plaintext_is_refused(plaintext: bytes) -> None:
    assert refused(spec_envelope(signer=MALLORY, plaintext=plaintext), nobody) == "ENVELOPE_UNKNOWN_SENDER"


def test_unregistered_sender_with_a_bad_signature_is_refused() -> None:
    forged = spec_envelope(signer=BOB, sender_id=MALLORY.device_id, plaintext=plaintext_of(MALLORY, b"x"))
    assert refused(forged, nobody) == "ENVELOPE_BAD_SIGNATURE"


def test_unregistered_sender_decryption_is_checked_before_the_key() -> None:
    forged = spec_envelope(signer=MALLORY, plaintext=plaintext_of(ALICE, b"x"), vault_key=new_vault_key())
    assert refused(forged, nobody) == "ENVELOPE_DECRYPT_FAILED"


# Exhaustive tampering of one small envelope.

SMALL = sealed(b"hi")


@pytest.mark.parametrize("sender_key", [registered, nobody])
@pytest.mark.parametrize("mask", [0x01, 0xFF])
def test_every_single_byte_flip_is_refused(mask: int, sender_key: Callable[[str, int], bytes | None]) -> None:
    for index in range(len(SMALL)):
        tampered = SMALL[:index] + bytes([SMALL[index] ^ mask]) + SMALL[index + 1 :]
        with pytest.raises(EnvelopeError):
            opened(tampered, sender_key)


@pytest.mark.parametrize("sender_key", [registered, nobody])
def test_every_truncation_and_extension_is_refused(sender_key: Callable[[str, int], bytes | None]) -> None:
    for length in range(len(SMALL)):
        with pytest.raises(EnvelopeError):
            opened(SMALL[:length], sender_key)
    with pytest.raises(EnvelopeError):
        opened(SMALL + b"\x00", sender_key)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_envelope_errors(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        opened(data)


MSGPACKISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=10) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.lists(MSGPACKISH, max_size=10), st.sampled_from(["CSY1", None]), st.sampled_from([1, 2, None]))
def test_arbitrary_msgpack_raises_only_envelope_errors(
    fields: list[Any], magic: str | None, version: int | None
) -> None:
    prefix = [value for value in (magic, version) if value is not None]
    with pytest.raises(EnvelopeError):
        opened(msgpack.packb([*prefix, *fields]))


@settings(max_examples=300)
@given(st.data())
def test_an_envelope_with_one_field_replaced_raises_only_envelope_errors(data: st.DataObject) -> None:
    fields = msgpack.unpackb(SMALL)
    index, value = data.draw(st.integers(0, 8)), data.draw(MSGPACKISH)
    assume(msgpack.packb(value) != msgpack.packb(fields[index]))
    fields[index] = value
    with pytest.raises(EnvelopeError):
        opened(msgpack.packb(fields), data.draw(st.sampled_from([registered, nobody])))


# Chunks.


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 1000])
def test_chunks_respect_the_limit_and_join_back(size: int) -> None:
    body = bytes(index % 251 for index in range(size))
    chunks = split_body(body, limit=128)
    assert all(len(chunk) <= 128 for chunk in chunks)
    assert join_chunks(chunks) == body
    assert join_chunks(reversed(chunks)) == body


@given(st.binary(max_size=2000), st.integers(128, 600))
def test_any_body_splits_and_joins(body: bytes, limit: int) -> None:
    chunks = split_body(body, limit=limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    assert join_chunks(chunks) == body


def test_a_body_too_large_for_one_envelope_travels_in_chunks() -> None:
    body = bytes(range(256)) * (2 * MAX_BODY_BYTES // 256 + 1)
    chunks = split_body(body)
    assert len(chunks) == 3
    envelopes = [sealed(chunk, kind=KIND_SNAPSHOT) for chunk in chunks]
    assert join_chunks(opened(envelope).body for envelope in envelopes) == body


def test_parse_chunk_exposes_the_framing() -> None:
    chunk = parse_chunk(split_body(b"abcdef", limit=130)[0])
    assert (chunk.digest, chunk.index, chunk.count, chunk.total_len, chunk.part) == (
        hashlib.sha256(b"abcdef").digest(),
        0,
        1,
        6,
        b"abcdef",
    )


def _chunk_code(chunks: list[bytes]) -> str:
    with pytest.raises(EnvelopeError) as caught:
        join_chunks(chunks)
    return caught.value.code


def test_missing_duplicate_and_mixed_chunks_are_refused() -> None:
    first, second = split_body(b"a" * 300, limit=128), split_body(b"b" * 300, limit=128)
    assert len(first) == 5
    for broken in (first[:-1], first[1:], [*first, first[0]], [first[0], *second[1:]], []):
        assert _chunk_code(broken) == "ENVELOPE_CHUNK_INVALID"


def test_tampered_chunks_are_refused() -> None:
    chunks = split_body(b"a" * 300, limit=128)
    digest, index, count, total, part = msgpack.unpackb(chunks[1])
    variants = [
        [digest, index, count, total, b"b" + part[1:]],
        [digest, index, count, total + 1, part],
        [digest, index, count + 1, total, part],
        [digest, count, count, total, part],
        [digest[:31], index, count, total, part],
        [digest, index, count, total, part, b""],
        [digest, index, count, 1, part],
    ]
    for variant in variants:
        assert _chunk_code([chunks[0], msgpack.packb(variant), *chunks[2:]]) == "ENVELOPE_CHUNK_INVALID"
    assert _chunk_code([chunks[0], chunks[1][:-1], *chunks[2:]]) == "ENVELOPE_CHUNK_INVALID"
    assert _chunk_code([b"\xc1"]) == "ENVELOPE_CHUNK_INVALID"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_never_a_chunk(data: bytes) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_chunk(data)
    assert caught.value.code == "ENVELOPE_CHUNK_INVALID"


def test_split_body_refuses_a_tiny_limit() -> None:
    with pytest.raises(ValueError):
        split_body(b"x", limit=127)


LEGACY = DeviceKeys(ALICE.signing, ALICE.kx, id_chars=16)


def test_a_device_created_up_to_9204cbf_keeps_its_16_character_id_and_writes_version_1() -> None:
    assert len(ALICE.device_id) == 32 and LEGACY.device_id == ALICE.device_id[:16]
    envelope = sealed(b"old device", sender=LEGACY)
    assert peek(envelope).version == 1 and peek(sealed(b"new device")).version == 2
    result = opened(envelope, lambda device_id, epoch: LEGACY.sign_pk if device_id == LEGACY.device_id else None)
    assert (result.sender, result.body) == (LEGACY.device_id, b"old device")
    assert opened(envelope, nobody).sender_sign_pk == LEGACY.sign_pk  # a 16-character id matches its key too
    assert DeviceKeys.from_bytes(LEGACY.to_bytes()).device_id == LEGACY.device_id


@pytest.mark.parametrize(("version", "width"), [(1, 32), (2, 16)])
def test_a_sender_id_of_the_other_versions_width_is_not_an_envelope(version: int, width: int) -> None:
    forged = spec_envelope(signer=ALICE, plaintext=plaintext_of(ALICE, b"x"), sender_id=ALICE.device_id[:width]
                           if width == 16 else ALICE.device_id, version=version)
    assert refused(forged, nobody) == "ENVELOPE_NOT_ENVELOPE"
