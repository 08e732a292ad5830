"""Creating a vault folder for :class:`crdtsync.vault.Vault`: the checks shared by ``init`` and ``join`` (an
empty place, a passphrase), the folder itself (mode 0700) and the store a new device starts with (its metadata,
the vault root for the founding device, and the device's first client-id lease announced in the registry).

A folder holds a vault once the store's creating transaction has committed: the device's key file is written
inside that transaction (under SQLite's write lock), so a vault never lacks its keys, and a creation stopped
before the commit (killed, or out of disk) leaves a key file and maybe a store with no device in it, which the
next ``init`` or ``join`` simply replaces: no device was ever created from them. The keys go where
:func:`crdtsync.store.keystore.default_store` says (the OS keyring when a real backend exists, else the file);
an item that a creation stopped before its commit left in the keyring is deleted by the next one there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from crdtsync._hardening import disable_core_dumps
from crdtsync.crypto.header import VaultHeader
from crdtsync.errors import CryptoError, VaultError
from crdtsync.store.db import Store
from crdtsync.store.keystore import create_secrets
from crdtsync.store.replica import Replica
from crdtsync.store.secrets_file import VaultSecrets
from crdtsync.store.worker import DEFAULT_DEADLINE

DB_NAME = "vault.db"


def vacant_folder(path: str | os.PathLike[str], *, advice: str = "") -> Path:
    """The folder ``path`` (``~`` expanded), which must hold no vault yet (``VaultError`` ``VAULT_EXISTS``, its
    message ending with ``advice``; ``VAULT_UNREADABLE`` for a store that cannot be read). What an interrupted
    ``init`` or ``join`` left there does not count (see the module docstring)."""
    folder = Path(path).expanduser()
    if (folder / DB_NAME).exists():
        store = Store(folder / DB_NAME)
        try:
            _refuse_created(store, folder, advice)
        finally:
            store.close()
    return folder


def created(store: Store) -> bool:
    """Whether ``store``'s creating transaction committed (it holds a device)."""
    return store.get_meta("device_id") is not None


def _refuse_created(store: Store, folder: Path, advice: str) -> None:
    if created(store):
        raise VaultError(f"{folder} already holds a vault{advice}", code="VAULT_EXISTS")


def required_passphrase(passphrase: str | None, missing: str) -> str:
    """``passphrase``, else env ``CRDTSYNC_PASSPHRASE``; ``CryptoError`` ``PASSPHRASE_REQUIRED`` with the message
    ``missing`` when neither is given. Turns core dumps off in this process (it holds the passphrase)."""
    disable_core_dumps()
    chosen = passphrase if passphrase is not None else os.environ.get("CRDTSYNC_PASSPHRASE")
    if not chosen:
        raise CryptoError(missing, code="PASSPHRASE_REQUIRED")
    return chosen


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) with mode 0700 (``VaultError`` ``VAULT_UNWRITABLE``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise VaultError(f"cannot create the vault folder {folder}: {exc.strerror or exc}",
                         code="VAULT_UNWRITABLE") from None


def create_store(folder: Path, secrets: VaultSecrets, header: VaultHeader, *,
                 vault_name: str, device_name: str | None, founder: bool, relay: tuple[str, str] | None = None) -> None:
    """Create ``folder``'s store and key file for a new device (``secrets``) of the vault ``header`` describes,
    in one transaction: the key file (the secrets in it or in the keyring: :func:`create_secrets`), the store's
    metadata, ``relay`` (name, URL: the mailbox a joining device came from), the ``vault`` root (``founder`` only:
    a joining device receives it) and this device's registry entry with its first client id. Stopped at any
    point, it leaves a vault whole or none (see the module docstring). Leaves nothing open.

    Raises:
        VaultError: ``VAULT_EXISTS`` (another process created a vault there first), ``VAULT_UNWRITABLE`` (the key
            file cannot be written) and the store's errors.
        CryptoError: ``KEYRING_UNAVAILABLE``, ``KEYRING_LOCKED`` (the keyring chosen failed: the message says
            how to keep the keys in the file instead).
    """
    store = Store(folder / DB_NAME)
    try:
        with store.write():
            _refuse_created(store, folder, "")
            try:
                create_secrets(folder, secrets)
            except OSError as exc:
                raise VaultError(f"cannot write the key file in {folder}: {exc.strerror or exc}",
                                 code="VAULT_UNWRITABLE") from None
            store.set_meta("vault_header", header.to_json())
            store.set_meta("device_id", secrets.device.device_id)
            store.set_meta("device_name", device_name or socket.gethostname())
            store.set_meta("vault_name", vault_name)
            if relay is not None:
                store.add_relay(*relay)
            replica = Replica(store, keys=lambda: secrets.device, agent=None, deadline=DEFAULT_DEADLINE)
            try:
                if founder:
                    replica.local_write(lambda d: d.set_vault_info(vault_name), ())
                replica.ensure_lease_registered()
            finally:
                replica.release_lease()
    finally:
        store.close()
