"""A hostile store's tool: one AES-GCM-SIV ciphertext that opens under two keys (AES-GCM-SIV is not
key-committing). Built on RFC 8452 with AES from ``cryptography``: POLYVAL is linear in the ciphertext, so for a
chosen nonce and tag, the two tag equations are two linear equations in the two ciphertext blocks over GF(2^128).
The vault header's wrap of a 32-byte vault key is such a two-block ciphertext: this is how a decoy header that
opens under two passphrases is made."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_P = (1 << 128) | (1 << 127) | (1 << 126) | (1 << 121) | 1  # POLYVAL's field polynomial (RFC 8452)


def _mul(a: int, b: int) -> int:
    """a * b in GF(2^128) modulo POLYVAL's polynomial (bit i of the little-endian integer is x^i)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a >> 128:
            a ^= _P
    return product


def _inverse(a: int) -> int:
    result, power, exponent = 1, a, (1 << 128) - 2
    while exponent:
        if exponent & 1:
            result = _mul(result, power)
        power = _mul(power, power)
        exponent >>= 1
    return result


_X_128 = _mul(1 << 64, 1 << 64)  # x^128 reduced: the identity of POLYVAL's product
_X_INV_128 = _inverse(_X_128)


def _dot(a: int, b: int) -> int:
    """POLYVAL's product: a * b * x^-128."""
    return _mul(_mul(a, b), _X_INV_128)


def _int(block: bytes) -> int:
    return int.from_bytes(block, "little")


def _block(value: int) -> bytes:
    return value.to_bytes(16, "little")


def _aes(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    worker = cipher.decryptor() if decrypt else cipher.encryptor()
    return worker.update(block) + worker.finalize()


def _keys(key: bytes, nonce: bytes) -> tuple[int, bytes]:
    """RFC 8452 section 4: the message-authentication key (as a field element) and message-encryption key."""
    parts = [_aes(key, n.to_bytes(4, "little") + nonce)[:8] for n in range(2 + len(key) // 8)]
    return _int(parts[0] + parts[1]), b"".join(parts[2:])


def _blocks(data: bytes) -> list[int]:
    padded = data + bytes(-len(data) % 16)
    return [_int(padded[i : i + 16]) for i in range(0, len(padded), 16)]


def _keystream(enc_key: bytes, tag: bytes, count: int) -> list[int]:
    counter = bytearray(tag)
    counter[15] |= 0x80
    first = int.from_bytes(counter[:4], "little")
    return [_int(_aes(enc_key, ((first + n) % (1 << 32)).to_bytes(4, "little") + bytes(counter[4:])))
            for n in range(count)]


def _powers(h: int, count: int) -> list[int]:
    """h^1 .. h^count in POLYVAL's product."""
    out = [h]
    while len(out) < count:
        out.append(_dot(out[-1], h))
    return out


def two_key_ciphertext(key1: bytes, key2: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce`` (12 bytes) + a 32-byte ciphertext + 16-byte tag that AES-GCM-SIV opens (to different plaintexts)
    under both 32-byte keys with associated data ``aad``."""
    nonce = nonce or os.urandom(12)
    (h1, e1), (h2, e2) = _keys(key1, nonce), _keys(key2, nonce)
    aad_blocks = _blocks(aad)
    length = _int((len(aad) * 8).to_bytes(8, "little") + (32 * 8).to_bytes(8, "little"))
    nonce_block = _int(nonce + bytes(4))
    while True:
        tag = os.urandom(16)
        targets = [_int(_aes(e, tag, decrypt=True)) for e in (e1, e2)]
        if all(t >> 127 == 0 for t in targets):  # the tag's top bit is cleared before encryption
            break
    rows = []
    for h, e, target in ((h1, e1, targets[0]), (h2, e2, targets[1])):
        n = len(aad_blocks) + 3
        powers = _powers(h, n)[::-1]  # block j of n is multiplied by h^(n - j)
        stream = _keystream(e, tag, 2)
        constant = nonce_block ^ target
        for block, power in zip([*aad_blocks, stream[0], stream[1], length], powers, strict=True):
            constant ^= _dot(block, power)
        rows.append((powers[-3], powers[-2], constant))  # c1 * a + c2 * b = constant
    (a1, b1, k1), (a2, b2, k2) = rows
    determinant = _dot(a1, b2) ^ _dot(a2, b1)
    scale = _mul(_inverse(determinant), _mul(_X_128, _X_128))  # dot(n, scale) divides n by the determinant
    c1 = _dot(_dot(k1, b2) ^ _dot(k2, b1), scale)
    c2 = _dot(_dot(a1, k2) ^ _dot(a2, k1), scale)
    return nonce + _block(c1) + _block(c2) + tag
