"""Device keys, ids and vault key material."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.crypto import keys
from crdtsync.crypto.keys import (
    DeviceKeys,
    device_id_for,
    id_matches,
    is_device_id,
    new_vault_id,
    new_vault_key,
    vault_tag,
    verify,
)
from crdtsync.errors import CryptoError

CRYPTO_DIR = Path(keys.__file__).parent


def test_device_id_is_32_hex_chars_of_sha256_of_the_signing_key() -> None:
    device = DeviceKeys.generate()
    assert len(device.sign_pk) == 32
    assert device.device_id == hashlib.sha256(device.sign_pk).hexdigest()[:32]
    assert device.device_id == device_id_for(device.sign_pk)
    assert id_matches(device.device_id, device.sign_pk) and id_matches(device.device_id[:16], device.sign_pk)
    assert not id_matches(device.device_id[:24], device.sign_pk)
    assert not id_matches(DeviceKeys.generate().device_id, device.sign_pk)


def test_a_device_of_9204cbf_keeps_its_16_character_id_through_its_key_file() -> None:
    device = DeviceKeys.generate()
    old_file = _packed({"v": 1, "ed25519": device.signing.private_bytes_raw(), "x25519": device.kx.private_bytes_raw()})
    legacy = DeviceKeys.from_bytes(old_file)
    assert legacy.device_id == device.device_id[:16] and legacy.id_chars == 16
    assert DeviceKeys.from_bytes(legacy.to_bytes()).device_id == legacy.device_id
    assert is_device_id(legacy.device_id) and is_device_id(device.device_id)
    assert not is_device_id(device.device_id[:20])


def test_generated_devices_differ() -> None:
    first, second = DeviceKeys.generate(), DeviceKeys.generate()
    assert first.device_id != second.device_id
    assert first.kx_pk != second.kx_pk
    assert first != second


def test_signature_verifies_only_for_its_key_and_data() -> None:
    device, other = DeviceKeys.generate(), DeviceKeys.generate()
    signature = device.sign(b"data")
    assert len(signature) == 64
    assert verify(device.sign_pk, signature, b"data")
    assert not verify(device.sign_pk, signature, b"datA")
    assert not verify(other.sign_pk, signature, b"data")


@pytest.mark.parametrize(
    ("sign_pk", "signature"),
    [
        (b"", b"\x00" * 64),
        (b"\x00" * 31, b"\x00" * 64),
        (None, b""),
        (None, b"\x00" * 65),
        (None, b"\xff" * 64),
    ],
)
def test_verify_returns_false_on_malformed_keys_and_signatures(sign_pk: bytes | None, signature: bytes) -> None:
    device = DeviceKeys.generate()
    assert not verify(device.sign_pk if sign_pk is None else sign_pk, signature, b"data")


def test_keys_survive_serialization() -> None:
    device = DeviceKeys.generate()
    restored = DeviceKeys.from_bytes(device.to_bytes())
    assert restored == device
    assert restored.device_id == device.device_id
    assert restored.kx_pk == device.kx_pk
    assert restored.sign(b"x") == device.sign(b"x")


def test_serialized_keys_are_a_versioned_map_of_raw_private_keys() -> None:
    device = DeviceKeys.generate()
    decoded = msgpack.unpackb(device.to_bytes())
    assert decoded == {
        "v": 2,
        "ed25519": device.signing.private_bytes_raw(),
        "x25519": device.kx.private_bytes_raw(),
        "id_chars": 32,
    }


def test_repr_shows_no_key_material() -> None:
    device = DeviceKeys.generate()
    text = repr(device)
    assert device.signing.private_bytes_raw().hex() not in text
    assert "signing" not in text


def _packed(value: object) -> bytes:
    return bytes(msgpack.packb(value))


GOOD = {"v": 1, "ed25519": b"\x01" * 32, "x25519": b"\x02" * 32}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        _packed(GOOD)[:-1],
        _packed(GOOD) + b"\x00",
        _packed([1, b"\x01" * 32, b"\x02" * 32]),
        _packed({**GOOD, "v": 2}),
        _packed({**GOOD, "v": 3, "id_chars": 32}),
        _packed({**GOOD, "v": 2, "id_chars": 20}),
        _packed({**GOOD, "v": 2, "id_chars": True}),
        _packed({**GOOD, "id_chars": 32}),
        _packed({**GOOD, "v": True}),
        _packed({**GOOD, "extra": 1}),
        _packed({"v": 1, "ed25519": b"\x01" * 32}),
        _packed({**GOOD, "ed25519": b"\x01" * 31}),
        _packed({**GOOD, "x25519": b"\x02" * 33}),
        _packed({**GOOD, "x25519": "not bytes"}),
        _packed({1: 1, "ed25519": b"\x01" * 32, "x25519": b"\x02" * 32}),
    ],
)
def test_corrupt_key_bytes_raise_key_corrupt(data: bytes) -> None:
    with pytest.raises(CryptoError) as caught:
        DeviceKeys.from_bytes(data)
    assert caught.value.code == "KEY_CORRUPT"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_key_corrupt(data: bytes) -> None:
    with pytest.raises(CryptoError) as caught:
        DeviceKeys.from_bytes(data)
    assert caught.value.code == "KEY_CORRUPT"


def test_vault_material_has_the_documented_sizes_and_is_random() -> None:
    assert len(new_vault_key()) == 32
    assert len(new_vault_id()) == 16
    assert new_vault_key() != new_vault_key()
    assert new_vault_id() != new_vault_id()


def test_vault_tag_is_stable_filesystem_safe_and_domain_separated() -> None:
    vault_id = bytes(range(16))
    expected = hashlib.sha256(b"crdtsync/v1/vault-tag" + vault_id).hexdigest()[:16]
    assert vault_tag(vault_id) == expected
    assert vault_tag(vault_id).isalnum() and vault_tag(vault_id) == vault_tag(vault_id).lower()
    assert vault_tag(bytes(16)) != vault_tag(vault_id)
    assert vault_tag(vault_id) != hashlib.sha256(vault_id).hexdigest()[:16]


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_vault_tag_rejects_a_vault_id_of_the_wrong_length(length: int) -> None:
    with pytest.raises(ValueError):
        vault_tag(bytes(length))


def test_device_id_for_rejects_a_key_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        device_id_for(b"\x00" * 31)


FORBIDDEN_IMPORTS = {
    "anyio",
    "asyncio",
    "trio",
    "socket",
    "sqlite3",
    "time",
    "random",
    "pathlib",
    "io",
    "shutil",
}


@pytest.mark.parametrize("module", sorted(CRYPTO_DIR.glob("*.py")), ids=lambda path: path.name)
def test_crypto_modules_import_no_io_clock_or_unseeded_randomness(module: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint(FORBIDDEN_IMPORTS)
    assert imported <= {
        "__future__",
        "base64",
        "collections",
        "dataclasses",
        "hashlib",
        "hmac",
        "json",
        "os",
        "re",
        "types",
        "typing",
        "unicodedata",
        "cryptography",
        "msgpack",
        "crdtsync",
        "enum",
        "spake2",  # crypto/pairing.py: SPAKE2, its randomness passed in (entropy_f)
    }
