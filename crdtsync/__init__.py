"""crdtsync: end-to-end encrypted, local-first sync of AI-assistant memories on a Yjs CRDT.

The public surface is re-exported here; everything else may change between versions.
"""

from crdtsync.errors import (
    CrdtsyncError,
    CryptoError,
    EnvelopeError,
    ImportFormatError,
    InvalidInputError,
    MailboxError,
    NotFoundError,
    UpdateRejectedError,
    VaultError,
)
from crdtsync.model.records import Candidate, Conflict, Memory
from crdtsync.store.integration import ApplyResult
from crdtsync.vault import ImportReport, Vault

__all__ = [
    "ApplyResult",
    "Candidate",
    "Conflict",
    "CrdtsyncError",
    "CryptoError",
    "EnvelopeError",
    "ImportFormatError",
    "ImportReport",
    "InvalidInputError",
    "MailboxError",
    "Memory",
    "NotFoundError",
    "UpdateRejectedError",
    "Vault",
    "VaultError",
]
