"""Creating a vault folder for :class:`crdtsync.vault.Vault`: the checks shared by ``init`` and ``join`` (an
empty place, a passphrase), the folder itself (mode 0700) and the store a new device starts with (its metadata,
the vault root for the founding device, and the device's first client-id lease announced in the registry).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from crdtsync.crypto.header import VaultHeader
from crdtsync.crypto.keys import DeviceKeys
from crdtsync.errors import CryptoError, VaultError
from crdtsync.store.db import Store
from crdtsync.store.worker import DEFAULT_DEADLINE

if TYPE_CHECKING:
    from crdtsync.vault import Vault

DB_NAME = "vault.db"
KEYS_NAME = "keys"


def vacant_folder(path: str | os.PathLike[str], *, advice: str = "") -> Path:
    """The folder ``path`` (``~`` expanded), which must hold no vault yet (``VaultError`` ``VAULT_EXISTS``, its
    message ending with ``advice``)."""
    folder = Path(path).expanduser()
    if (folder / DB_NAME).exists() or (folder / KEYS_NAME).exists():
        raise VaultError(f"{folder} already holds a vault{advice}", code="VAULT_EXISTS")
    return folder


def required_passphrase(passphrase: str | None, missing: str) -> str:
    """``passphrase``, else env ``CRDTSYNC_PASSPHRASE``; ``CryptoError`` ``PASSPHRASE_REQUIRED`` with the message
    ``missing`` when neither is given."""
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


def create_store(vault_type: type[Vault], folder: Path, keys: DeviceKeys, header: VaultHeader, *, vault_name: str,
                 device_name: str | None, founder: bool, relay: tuple[str, str] | None = None) -> None:
    """Create ``folder``'s store for a new device (``keys``) of the vault ``header`` describes: its metadata and
    ``relay`` (name, URL: the mailbox a joining device came from) in one transaction, so that a store never lacks
    them, then the ``vault`` root (``founder`` only: a joining device receives it) and this device's registry
    entry with its first client id. Leaves nothing open."""
    store = Store(folder / DB_NAME)
    try:
        with store.write():
            store.set_meta("vault_header", header.to_json())
            store.set_meta("device_id", keys.device_id)
            store.set_meta("device_name", device_name or socket.gethostname())
            store.set_meta("vault_name", vault_name)
            if relay is not None:
                store.add_relay(*relay)
        vault = vault_type(folder, store, agent=None, deadline=DEFAULT_DEADLINE)
        replica = vault._replica
        try:
            if founder:
                replica.local_write(lambda d: d.set_vault_info(vault_name), ())
            replica.ensure_lease_registered()
        finally:
            replica.release_lease()
    finally:
        store.close()
