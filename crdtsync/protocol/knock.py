"""The knock: members of a vault recognise each other before a TLS handshake shows anything (pure, no IO).

A TLS 1.3 server sends its certificate to anyone who completes the key exchange, and our certificates are issued
by a key only members hold: shown to a stranger, they would let it link the device to its vault across networks.
Python's ``ssl`` has no TLS 1.3 external PSK (3.13 adds PSK callbacks for TLS 1.2 only), so before the handshake
both sides prove they hold the vault's knock key (:func:`crdtsync.crypto.lan.lan_key` ``"knock"``) with a
challenge-response of HMAC-SHA256 over both sides' fresh nonces, client first. The server answers a client that
fails with nothing but a closed connection; a stranger that connects learns one random nonce. Replaying captured
bytes fails: the other side's nonce is new each time. The knock only keeps strangers out; who the peer is (its
device key, pinned from the registry) is established by TLS and the certificate check after it
(:mod:`crdtsync.transport.tls`).

Bytes on the wire, in order (lengths in bytes):

======================  =====  ========================================================================
client -> server        48     :data:`MAGIC` (16) + client nonce ``nc`` (32)
server -> client        32     server nonce ``ns``
client -> server        32     HMAC-SHA256(key, ``b"crdtsync/knock/client" + nc + ns``)
server -> client        32     HMAC-SHA256(key, ``b"crdtsync/knock/server" + nc + ns``)
======================  =====  ========================================================================

Then the client starts the TLS handshake on the same connection.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

#: First 16 bytes a connecting device sends: the protocol and its version.
MAGIC: Final = b"crdtsync/knock/1"
#: Length of each side's nonce, in bytes.
NONCE_BYTES: Final = 32
#: Length of each proof, in bytes.
PROOF_BYTES: Final = 32
#: Length of the client's first message, in bytes.
HELLO_BYTES: Final = len(MAGIC) + NONCE_BYTES


def hello(nc: bytes) -> bytes:
    """The client's first message for its 32-byte nonce ``nc``."""
    _nonce(nc)
    return MAGIC + nc


def read_hello(data: bytes) -> bytes | None:
    """The client nonce of a first message, or None when ``data`` is not one (wrong length or magic)."""
    if len(data) != HELLO_BYTES or not hmac.compare_digest(data[: len(MAGIC)], MAGIC):
        return None
    return data[len(MAGIC):]


def client_proof(key: bytes, nc: bytes, ns: bytes) -> bytes:
    """The client's proof that it holds ``key`` (32 bytes), bound to both nonces."""
    return _mac(key, b"crdtsync/knock/client", nc, ns)


def server_proof(key: bytes, nc: bytes, ns: bytes) -> bytes:
    """The server's proof that it holds ``key`` (32 bytes), bound to both nonces."""
    return _mac(key, b"crdtsync/knock/server", nc, ns)


def proof_matches(expected: bytes, received: bytes) -> bool:
    """Whether a received proof is the expected one (compared in constant time)."""
    return len(received) == PROOF_BYTES and hmac.compare_digest(expected, received)


def _mac(key: bytes, label: bytes, nc: bytes, ns: bytes) -> bytes:
    _nonce(nc)
    _nonce(ns)
    return hmac.new(key, label + nc + ns, hashlib.sha256).digest()


def _nonce(value: bytes) -> None:
    if len(value) != NONCE_BYTES:
        raise ValueError(f"a knock nonce is {NONCE_BYTES} bytes, not {len(value)}")
