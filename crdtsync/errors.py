"""The error tree of crdtsync.

Every failure a caller can expect is a :class:`CrdtsyncError` with a stable ``code`` (a short upper-case
string such as ``ENVELOPE_BAD_SIGNATURE``) and a message that says what happened and what to do. Codes are
part of the public interface: they are documented in README.md, mapped to CLI exit statuses by
:func:`exit_status`, and never renamed. Third-party exceptions (OSError, botocore, pycrdt's PanicException)
are converted into this tree at the edge of the layer that calls them.
"""

from __future__ import annotations

from typing import ClassVar


class CrdtsyncError(Exception):
    """Root of every error crdtsync raises on purpose.

    Args:
        message: what happened and what to do next, for a person.
        code: overrides the class's default code; it must be one of the documented codes.
    """

    default_code: ClassVar[str] = "CRDTSYNC_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code: str = code or self.default_code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidInputError(CrdtsyncError):
    """A value given by the caller breaks the memory model (empty or oversized content, bad level...)."""

    default_code = "INVALID_INPUT"


class NotFoundError(CrdtsyncError):
    """The memory, relay or vault named does not exist."""

    default_code = "NOT_FOUND"


class VaultError(CrdtsyncError):
    """The vault folder is missing, already initialised, locked or of an unknown format."""

    default_code = "VAULT_ERROR"


class UpdateRejectedError(CrdtsyncError):
    """A Yjs update from outside this process was refused before or while it was integrated.

    Nothing of it was applied and nothing already stored changed. Codes: ``UPDATE_MALFORMED``,
    ``UPDATE_UNSUPPORTED_CONTENT``, ``UPDATE_TOO_LARGE``, ``UPDATE_CLOCK_JUMP``, ``UPDATE_SCHEMA_VIOLATION``,
    ``UPDATE_WORKER_CRASHED``, ``UPDATE_WORKER_TIMEOUT``, ``UPDATE_FOREIGN_CLIENT``.
    """

    default_code = "UPDATE_MALFORMED"


class CryptoError(CrdtsyncError):
    """Key material or a passphrase is wrong or missing (``WRONG_PASSPHRASE``, ``KEY_MISSING``...), or the OS keyring
    that holds a device's keys cannot be used: ``KEYRING_UNAVAILABLE`` (no real backend, a backend failure, an item
    too large for it), ``KEYRING_LOCKED`` (locked and not unlocked); see :mod:`crdtsync.store.keystore`."""

    default_code = "CRYPTO_ERROR"


class EnvelopeError(CryptoError):
    """An envelope was refused: ``ENVELOPE_NOT_ENVELOPE``, ``ENVELOPE_UNSUPPORTED_VERSION``,
    ``ENVELOPE_OTHER_VAULT``, ``ENVELOPE_UNKNOWN_EPOCH``, ``ENVELOPE_UNKNOWN_SENDER``,
    ``ENVELOPE_BAD_SIGNATURE``, ``ENVELOPE_DECRYPT_FAILED``, ``ENVELOPE_OVERSIZE``,
    ``ENVELOPE_NONCE_LIMIT``."""

    default_code = "ENVELOPE_NOT_ENVELOPE"


class MailboxError(CrdtsyncError):
    """A mailbox (blob store) operation or object failed: ``MAILBOX_OBJECT_MISSING``,
    ``MAILBOX_OBJECT_CORRUPT``, ``MAILBOX_ROLLBACK``, ``MAILBOX_FORK``, ``MAILBOX_AUTH``,
    ``MAILBOX_NO_BUCKET``, ``MAILBOX_PERMISSION``, ``MAILBOX_TOO_LARGE``, ``MAILBOX_UNAVAILABLE``,
    ``MAILBOX_NO_VAULT``, ``MAILBOX_NOT_A_FILE`` (a folder relay holds something other than a regular file, such
    as a FIFO, socket, device node or symlink, where an object should be; it is never opened)."""

    default_code = "MAILBOX_UNAVAILABLE"


class ProtocolError(MailboxError):
    """A live session between two devices (:mod:`crdtsync.protocol.session`) broke its protocol: the peer sent
    something this side refuses, or this side's driver used the session out of turn. Codes:
    ``PROTOCOL_MALFORMED``, ``PROTOCOL_FRAME_TOO_LARGE``, ``PROTOCOL_ENTRY_TOO_LARGE``, ``PROTOCOL_VERSION``,
    ``PROTOCOL_OTHER_VAULT``, ``PROTOCOL_STATE`` (the session module's docstring says when each arises). A
    transport failure like a mailbox one, hence the mailbox family and its exit status."""

    default_code = "PROTOCOL_MALFORMED"


class LanError(CrdtsyncError):
    """Direct sync with a peer on the network failed or was refused: ``LAN_NO_PEER`` (no peer found or reached
    within the time given), ``LAN_REFUSED`` (the peer is not a registered, unrevoked device of this vault, or did
    not prove it knows the vault key), ``LAN_HANDSHAKE_TIMEOUT``, ``LAN_PEER_GONE`` (no frame from the peer for
    the liveness limit), ``LAN_UNREACHABLE`` (a connection could not be opened), ``LAN_CONNECTION_LOST`` (the
    connection broke, or the peer's stream ended without a close), ``LAN_DUPLICATE`` (a second
    session with a device that already has one), ``LAN_BUSY`` (too many sessions or attempts), ``LAN_ADDRESS``
    (a ``HOST:PORT`` that cannot be read), and the pairing codes (:mod:`crdtsync.pairing`): ``PAIRING_CODE_INVALID``
    (a code that does not parse as NUMBER-WORD-WORD from the word lists), ``PAIRING_WRONG_CODE`` (the other side
    holds another code; one of the invitation's three attempts is spent), ``PAIRING_WITHDRAWN`` (the third wrong
    code withdrew the invitation, or it was used by a device that joined: a code works once),
    ``PAIRING_EXPIRED`` (the invitation's ten minutes are over), ``PAIRING_MALFORMED`` (the other side sent
    what the pairing protocol refuses, or a sealed record that does not open)."""

    default_code = "LAN_UNREACHABLE"


class DiscoveryError(LanError):
    """LAN discovery (:mod:`crdtsync.discovery`) could not run: ``DISCOVERY_UNAVAILABLE`` (its multicast sockets
    could not be opened or zeroconf failed). Choosing the interfaces fails earlier with an
    :class:`InvalidInputError` of code ``DISCOVERY_NO_INTERFACE`` (a named address is not this host's, or no
    interface qualifies)."""

    default_code = "DISCOVERY_UNAVAILABLE"


class ImportFormatError(CrdtsyncError):
    """An import file or line could not be read as any supported memory format."""

    default_code = "IMPORT_MALFORMED"


#: CLI exit status per error family; documented in README.md ("Exit codes").
EXIT_STATUSES: dict[type[CrdtsyncError], int] = {
    InvalidInputError: 3,
    NotFoundError: 4,
    VaultError: 5,
    CryptoError: 6,
    UpdateRejectedError: 7,
    MailboxError: 8,
    LanError: 9,
    ImportFormatError: 3,
}


def exit_status(error: CrdtsyncError) -> int:
    """The CLI exit status for ``error``: the status of its nearest family in :data:`EXIT_STATUSES`, else 1."""
    for cls in type(error).__mro__:
        if cls in EXIT_STATUSES:
            return EXIT_STATUSES[cls]
    return 1
