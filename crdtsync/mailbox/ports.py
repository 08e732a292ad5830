"""What the mailbox driver needs, as ``typing.Protocol``s: of a vault, :class:`VaultReplica` (which
:class:`crdtsync.vault.Vault` satisfies; nothing in :mod:`crdtsync.mailbox` imports the vault itself), and of a
blob store, :class:`ObjectStore` (which :class:`crdtsync.mailbox.backend.BlobStore` satisfies for every fsspec
backend)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from crdtsync.crypto.header import VaultHeader
from crdtsync.store.db import Store
from crdtsync.store.integration import ApplyResult
from crdtsync.store.secrets_file import VaultSecrets


class Counters(Protocol):
    """A store's operation counters."""

    @property
    def operations(self) -> int:
        """Every object operation so far."""


class ObjectStore(Protocol):
    """Whole-object access to one prefix of a dumb blob store: no rename, append, lock or conditional write;
    listings may lag. Keys are ``/``-separated paths under the prefix."""

    @property
    def url(self) -> str:
        """The store's URL, as saved for the relay."""

    @property
    def stats(self) -> Counters:
        """What the store did so far."""

    def root_missing(self) -> bool:
        """Whether the store's own folder is absent (a folder relay on a drive not mounted); False for stores
        without folders."""

    def get(self, key: str) -> bytes | None:
        """The whole object, or None when it does not exist (yet)."""

    def put(self, key: str, data: bytes) -> None:
        """Write the whole object."""

    def delete(self, key: str) -> None:
        """Delete the object (a missing one is not an error)."""

    def walk(self, prefix: str) -> dict[str, tuple[int, str]]:
        """Every object under ``prefix``: key -> (size in bytes, modification mark)."""


class VaultReplica(Protocol):
    """One device's replica of a vault, as the sync layers see it: its keys, its store (author logs, cursors,
    alarms, audit), its registry, and the defended apply path."""

    @property
    def path(self) -> Path:
        """The vault folder (sync lock files live there)."""

    @property
    def secrets(self) -> VaultSecrets:
        """This device's keys and the vault keys."""

    @property
    def store(self) -> Store:
        """The SQLite store."""

    @property
    def header(self) -> VaultHeader:
        """The public vault header (``vault.json``)."""

    def devices(self) -> dict[str, dict[str, Any]]:
        """The device registry: ``{device_id: {name, sign_pk, kx_pk, clients, ...}}``."""

    def settle_epochs(self) -> bool:
        """Take up the keys and current epoch the epoch statements give this device; whether they changed.
        Raises ``VaultError`` ``DEVICE_REVOKED`` when this device was revoked."""

    def adopt_header(self, header: VaultHeader) -> bool:
        """Take a relay's ``header`` as this vault's when it is newer and commits to this device's current key."""

    def own_contribution(self) -> bytes:
        """A Yjs v1 update of every struct this device wrote and the Doc's delete set."""

    def local_updates_after(self, after: int) -> list[tuple[int, bytes]]:
        """This device's own logged updates with id > ``after``, oldest first."""

    def apply_updates(self, updates: Sequence[tuple[bytes, str]], *, on_stored: Callable[[], None] | None = None,
                      allowed_clients: Sequence[frozenset[int] | None] | None = None,
                      limit_held: bool = True) -> list[ApplyResult]:
        """Integrate received updates through the defended apply path (``on_stored`` runs in the transaction
        that stores them)."""

    def rebase_unpushed(self, updates: Sequence[tuple[int, bytes]], relay: str) -> None:
        """Take this device's logged ``updates`` out and keep what they did, to write again."""

    def reapply_rebased(self) -> int:
        """Write again what :meth:`rebase_unpushed` kept; how many memories."""

    def conflict_count(self) -> int:
        """How many memories show a conflict."""
