"""What the mailbox driver needs of a vault: :class:`VaultReplica`, a ``typing.Protocol`` that
:class:`crdtsync.vault.Vault` satisfies. Nothing in :mod:`crdtsync.mailbox` imports the vault itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from crdtsync.crypto.header import VaultHeader
from crdtsync.store.db import Store
from crdtsync.store.integration import ApplyResult
from crdtsync.store.secrets_file import VaultSecrets


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
