"""Keys for direct sync on a LAN, derived from the vault key (pure).

Every member of a vault holds its vault key, so a key derived from it lets members recognise each other before
they show anything that identifies them: discovery tags (a MAC of a fresh nonce in each announcement), the
knock before a TLS handshake, and the certificate authority that only members can issue TLS certificates from.
Each purpose gets its own key: HKDF-SHA256 (RFC 5869) of the vault key of the current epoch, salt = the 16-byte
vault id, info = ``b"crdtsync/v2/lan/" + purpose + b"/" + epoch`` (epoch as 8 bytes big-endian), 32 bytes.
A new epoch (a revoked device) gives new keys: a revoked device no longer recognises anyone.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The purposes a LAN key is derived for.
PURPOSES: Final = frozenset({"discovery", "knock", "tls-ca"})
#: Length of every LAN key, in bytes.
LAN_KEY_BYTES: Final = 32


def lan_key(vault_id: bytes, vault_key: bytes, epoch: int, purpose: str) -> bytes:
    """The 32-byte key for ``purpose`` (one of :data:`PURPOSES`) of the vault (16-byte ``vault_id``, 32-byte
    ``vault_key`` of ``epoch``).

    Raises:
        ValueError: an unknown purpose.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown LAN key purpose {purpose!r}")
    info = b"crdtsync/v2/lan/" + purpose.encode() + b"/" + epoch.to_bytes(8, "big")
    return HKDF(algorithm=hashes.SHA256(), length=LAN_KEY_BYTES, salt=vault_id, info=info).derive(vault_key)
