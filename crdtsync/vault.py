"""The Python API: :class:`Vault`, one replica of a memory vault on this device.

A vault is a folder: ``vault.db`` (SQLite, the state of record, see :mod:`crdtsync.store.db`) and ``keys``
(0600: the secrets, or a reference to them in the OS keyring, see :mod:`crdtsync.store.keystore`). Opening is
cheap: reads (``get``, ``list``, ``search``, ``conflicts``, ``status``) answer from SQLite and never load the Doc;
the pycrdt Doc is loaded (newest snapshot plus later updates) the first time a write or a sync needs it. Every
write returns only after its SQLite transaction has committed (``synchronous=FULL``): an acknowledged write
survives kill -9.

Updates from outside this process go through :meth:`Vault.apply_updates`: the strict Yjs reader, then the
integration worker under a deadline, then the live Doc (see ``README.md`` "Trust boundaries").

This module is the API and its documentation; the work behind it lives in private modules: creating a vault
folder in :mod:`crdtsync._vault_create`, single-memory writes in :mod:`crdtsync._vault_memories`, imports in
:mod:`crdtsync._vault_import`, relays, mailbox sync and joining in :mod:`crdtsync.node`, the restore
rebase in :mod:`crdtsync._vault_rebase`.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from crdtsync import _vault_create, _vault_epochs, _vault_import, _vault_memories, _vault_rebase, node
from crdtsync._vault_create import DB_NAME
from crdtsync._vault_import import IMPORT_BATCH as IMPORT_BATCH
from crdtsync._vault_import import ImportReport as ImportReport
from crdtsync.crypto.envelope import envelope_epoch
from crdtsync.crypto.epochs import EpochStatement, EpochView
from crdtsync.crypto.header import KdfParams, VaultHeader, create_header, fingerprint, with_commitments
from crdtsync.crypto.keys import DeviceKeys, new_vault_id, new_vault_key
from crdtsync.errors import (
    CrdtsyncError,
    CryptoError,
    InvalidInputError,
    NotFoundError,
    UpdateRejectedError,
    VaultError,
)
from crdtsync.model.authorship import epoch_view
from crdtsync.model.records import (
    Conflict,
    Memory,
    check_category,
    check_content,
    check_label,
    check_level,
    check_metadata,
    check_source,
    check_tags,
    utf8_size,
)
from crdtsync.store.db import AuditRow, Store, check_relay
from crdtsync.store.integration import ApplyResult
from crdtsync.store.keystore import load_secrets, save_secrets
from crdtsync.store.memories import new_memory_id
from crdtsync.store.replica import Replica
from crdtsync.store.secrets_file import VaultSecrets
from crdtsync.store.worker import DEFAULT_DEADLINE

#: Fewest characters of an id that :meth:`Vault.match_id` takes as a prefix.
MIN_ID_PREFIX = 4
#: ``meta`` key bumped whenever this device's secrets change (a new epoch key): other processes read them again.
_SECRETS_GENERATION = "secrets_generation"


class Vault:
    """One replica of a memory vault, stored in a folder on this device.

    Create one with :meth:`init`, then use :meth:`open` (a context manager). All methods are synchronous and
    thread-compatible (one thread at a time); several processes may open the same folder at once and each sees
    the others' writes.
    """

    def __init__(self, path: Path, store: Store, *, agent: str | None, deadline: float) -> None:
        self.path = path
        self._store = store
        self._secrets: VaultSecrets | None = None
        self._secrets_generation: str | None = None
        self._replica = Replica(store, keys=lambda: self.secrets.device, agent=agent, deadline=deadline)

    # -- lifecycle --------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        device_name: str | None = None,
        passphrase: str | None = None,
        kdf: KdfParams | None = None,
    ) -> Path:
        """Create a new vault in folder ``path`` (created if needed, mode 0700) with fresh device keys, a random
        16-byte vault id and a random 32-byte vault key for epoch 0, and the public vault header that wraps
        that key under ``passphrase`` with Argon2id (``kdf``, default :meth:`KdfParams.new`). Leaves nothing
        open. Returns the folder.

        Args:
            name: the vault's name (private: it lives in the encrypted Doc).
            device_name: this device's name in the registry (default: the host name).
            passphrase: admits devices to the vault (``crdtsync join``); default env ``CRDTSYNC_PASSPHRASE``.

        Raises:
            VaultError: ``VAULT_EXISTS`` when the folder already holds a vault.
            CryptoError: ``PASSPHRASE_REQUIRED`` when no passphrase is given and none is in the environment.
            InvalidInputError: a name that is not a valid label (too long, not valid Unicode).
        """
        check_label("vault name", name)
        check_label("device name", device_name)
        folder = _vault_create.vacant_folder(path)
        passphrase = _vault_create.required_passphrase(
            passphrase,
            "a vault needs a passphrase (it admits your other devices): pass one or set CRDTSYNC_PASSPHRASE",
        )
        _vault_create.make_folder(folder)
        vault_id, vault_key = new_vault_id(), new_vault_key()
        header = create_header(vault_id, vault_key, passphrase, kdf or KdfParams.new())
        secrets = VaultSecrets(device=DeviceKeys.generate(), vault_id=vault_id, epochs={0: vault_key})
        _vault_create.create_store(folder, secrets, header, vault_name=name or "memories",
                                   device_name=device_name, founder=True)
        return folder

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, agent: str | None = None, deadline: float = DEFAULT_DEADLINE
    ) -> Vault:
        """Open the vault in folder ``path``. Cheap: loads no Doc, starts no worker, reads no key.

        Args:
            agent: label of the writing agent recorded with each write (default: env ``CRDTSYNC_AGENT``).
            deadline: seconds one received update may take to integrate before it is refused.

        Raises:
            VaultError: ``VAULT_NOT_FOUND`` (no vault there, or only what an interrupted ``init`` or ``join``
                left: run it again), ``VAULT_UNREADABLE``,
                ``VAULT_FORMAT``.
        """
        folder = Path(path).expanduser()
        agent = check_label("agent", agent or os.environ.get("CRDTSYNC_AGENT") or None)
        if not (folder / DB_NAME).exists():
            raise VaultError(f"no vault in {folder}; create one with `crdtsync init`", code="VAULT_NOT_FOUND")
        store = Store(folder / DB_NAME)
        if not _vault_create.created(store):
            store.close()
            raise VaultError(f"no vault in {folder}: an `init` or `join` there stopped before it created one; "
                             "run it again", code="VAULT_NOT_FOUND")
        return cls(folder, store, agent=agent, deadline=deadline)

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the integration worker, release this process's client-id lease and close the database.
        Idempotent."""
        try:
            self._replica.close()
        finally:
            self._store.close()

    @property
    def doc_loaded(self) -> bool:
        """Whether this process has loaded the vault's Doc (reads answer from SQLite and never load it)."""
        return self._replica.loaded

    def defer_compaction(self, defer: bool = True) -> None:
        """Leave the compaction of the local log (a Doc load and encode: seconds on a large vault) out of writes
        and integrations, to :meth:`compact_if_due`: what a long-running process that must answer promptly (the
        ``serve`` daemon) calls between its work. Past four times the bounds they compact anyway."""
        self._replica.defer_compaction = defer

    def compact_if_due(self) -> None:
        """Compact the local log now if it is past its bounds (newest snapshot + later updates; no effect on what
        is stored or synced)."""
        self._replica.compact_if_due()

    @property
    def device_id(self) -> str:
        """This device's id (32 hex characters derived from its signing key; 16 for a device created up to 9204cbf)."""
        return str(self._store.get_meta("device_id"))

    @property
    def secrets(self) -> VaultSecrets:
        """This device's keys and the vault keys (read on first use from the 0600 key file, or the keyring item it
        names: :mod:`crdtsync.store.keystore`)."""
        generation = self._store.get_meta(_SECRETS_GENERATION)
        if self._secrets is None or generation != self._secrets_generation:
            self._secrets = load_secrets(self.path)
            self._secrets_generation = generation
        return self._secrets

    def save_secrets(self, secrets: VaultSecrets) -> None:
        """Replace this device's secrets with ``secrets`` (new epoch keys) wherever they live
        (:func:`crdtsync.store.keystore.save_secrets`); every process of this vault reads them again at its next
        use.

        Raises:
            CryptoError: ``KEYRING_UNAVAILABLE``, ``KEYRING_LOCKED`` (keys in the OS keyring that cannot be
                written now).
        """
        save_secrets(self.path, secrets)
        with self._store.write():
            generation = int(self._store.get_meta(_SECRETS_GENERATION) or 0) + 1
            self._store.set_meta(_SECRETS_GENERATION, str(generation))
        self._secrets, self._secrets_generation = secrets, str(generation)

    @property
    def header(self) -> VaultHeader:
        """The public vault header (``vault.json`` in a mailbox): the vault key wrapped under the passphrase, as v2
        (with key commitments). A v1 header stored by an older crdtsync is upgraded with this device's vault keys
        and stored again."""
        stored = VaultHeader.from_json(bytes(self._store.get_meta("vault_header")))
        header = self._as_v2(stored)
        if header is not stored:
            with self._store.write():
                self._store.set_meta("vault_header", header.to_json())
        return header

    @property
    def fingerprint(self) -> str:
        """The vault's fingerprint (26 characters; :func:`crdtsync.crypto.header.fingerprint`): what a join string
        carries so that a join accepts this vault and no other. Writes nothing."""
        return fingerprint(self._as_v2(VaultHeader.from_json(bytes(self._store.get_meta("vault_header")))))

    def _as_v2(self, header: VaultHeader) -> VaultHeader:
        """``header`` itself when it is v2, else it with the commitments of this device's vault keys."""
        return header if header.commits else with_commitments(header, self.secrets.epochs)

    @property
    def store(self) -> Store:
        """The underlying :class:`~crdtsync.store.db.Store` (for the sync layers and tests)."""
        return self._store

    # -- memories ---------------------------------------------------------------------------------------

    def add(
        self,
        content: str,
        *,
        category: str | None = None,
        tags: Iterable[str] = (),
        level: int = 1,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Memory:
        """Add a memory and return it once it is durable.

        Args:
            content: non-empty text, at most 64 KiB of UTF-8.
            category, source: optional labels (at most 1 KiB each).
            tags: tag strings.
            level: 1 (default) syncs to every device of the vault; 0 never leaves this device.
            metadata: a JSON object (at most 16 KiB as JSON).

        Raises:
            InvalidInputError: a value breaks those limits (codes ``INVALID_INPUT``, ``CONTENT_TOO_LARGE``).
        """
        return _vault_memories.add_record(
            self._store,
            self._replica,
            new_memory_id(),
            content=check_content(content),
            category=check_category(category),
            tags=check_tags(tags),
            level=check_level(level),
            source=check_source(source),
            metadata=check_metadata(dict(metadata) if metadata is not None else None),
            created=None,
        )

    def get(self, memory_id: str) -> Memory:
        """The memory ``memory_id`` (deleted ones too; see ``Memory.deleted``). Answers from SQLite.

        Raises:
            NotFoundError: no such memory (code ``NOT_FOUND``).
        """
        return _vault_memories.require(self._store, memory_id)

    def match_id(self, given: str) -> str:
        """The id of the memory that ``given`` names: its whole id, or (for people typing ids, as git takes a
        commit) a prefix of at least MIN_ID_PREFIX characters that starts exactly one memory's id, deleted and
        level-0 memories included. Answers from SQLite. The other methods take whole ids only.

        Raises:
            NotFoundError: no memory has that id or an id starting with it (code ``NOT_FOUND``).
            InvalidInputError: ``AMBIGUOUS_ID`` when several ids start with it (the message names some).
        """
        if not given.isprintable():  # a lone surrogate too (an argument that was not UTF-8): SQLite cannot bind it
            raise NotFoundError(f"no memory with id {given!r}: ids are printable text")
        if self._store.ids_starting_with(given, 1) == [given]:
            return given
        found = self._store.ids_starting_with(given, 6) if len(given) >= MIN_ID_PREFIX else []
        if not found:
            raise NotFoundError(f"no memory with id {given}" + (
                f" (an id prefix needs at least {MIN_ID_PREFIX} characters)" if len(given) < MIN_ID_PREFIX else
                "") + "; `crdtsync list` shows the ids")
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise InvalidInputError(f"{given} starts several ids ({shown}): give more of it", code="AMBIGUOUS_ID")
        return found[0]

    def list(self, *, limit: int | None = None, include_deleted: bool = False, category: str | None = None,
             tags: Iterable[str] = ()) -> list[Memory]:
        """Every live memory (or the newest ``limit``), newest created first; with ``category`` only the
        memories of that category, with ``tags`` only those holding every one of them (exact names). Answers
        from SQLite.

        Raises:
            InvalidInputError: a category or tag that is not valid text (see :func:`check_category`).
        """
        return self._store.memories(limit=limit, include_deleted=include_deleted,
                                    category=check_category(category), tags=check_tags(tags))

    def search(self, query: str, *, limit: int | None = 50, category: str | None = None,
               tags: Iterable[str] = ()) -> builtins.list[Memory]:
        """Live memories whose content, category or tags contain every word of ``query`` (full-text, best match
        first; the last word also matches as a prefix; words of only emoji or symbols match as literal
        substrings), at most ``limit`` (None: all); the candidates of a content or category conflict count too.
        ``category`` and ``tags`` narrow the results as they narrow :meth:`list`. Answers from SQLite
        (:meth:`Store.search`).

        Raises:
            InvalidInputError: ``query`` holds a lone surrogate (not Unicode text: a command-line argument that
                was not UTF-8), or a category or tag is not valid.
        """
        utf8_size("search text", query)
        return self._store.search(query, limit=limit, category=check_category(category), tags=check_tags(tags))

    def update(self, memory_id: str, **fields: Any) -> Memory:
        """Edit a memory. Accepted keywords: ``content``, ``category``, ``source``, ``metadata`` (register
        writes), ``tags`` (replace the whole set), ``add_tags``/``remove_tags`` (iterables) and ``level``
        (moving to 0 withdraws it from the shared Doc: the other devices drop it at their next sync, though what
        was synced before stays in their update logs and the mailbox until compaction; an edit another device
        made concurrently brings it back there as a conflict on ``deleted``, and this device's copy then takes a
        new id, with a ``MEMORY_LEVEL_CONFLICT`` alarm). A write to a field in conflict settles it: its value
        replaces every candidate this replica sees (and every edit rewrites ``deleted``, settling a conflict
        there too), as :meth:`resolve` does.

        Raises:
            NotFoundError: no such memory.
            InvalidInputError: a bad value, an unknown field (``INVALID_FIELD``) or a deleted memory
                (``MEMORY_DELETED``: restore it first), or a move to level 0 of a memory with conflicts
                (``MEMORY_CONFLICTED``: it would drop the other candidates; resolve first).
        """
        return _vault_memories.update(self._store, self._replica, memory_id, fields)

    def delete(self, memory_id: str) -> Memory:
        """Delete a memory (a write of ``deleted=true``: a concurrent edit elsewhere surfaces as a conflict on
        ``deleted``; :meth:`restore` undoes it). Raises ``NotFoundError``."""
        return _vault_memories.set_deleted(self._store, self._replica, memory_id, True)

    def restore(self, memory_id: str) -> Memory:
        """Undo a delete (a write of ``deleted=false``). Raises ``NotFoundError``."""
        return _vault_memories.set_deleted(self._store, self._replica, memory_id, False)

    def conflicts(self, memory_id: str | None = None) -> builtins.list[Conflict]:
        """Every field of every memory (or of memory ``memory_id`` only) that holds several different
        concurrent values, ordered by memory id then field. Answers from SQLite."""
        return self._store.conflicts(memory_id)

    def conflict_count(self) -> int:
        """How many conflicts the vault shows (from SQLite, no Doc load)."""
        return len(self._store.conflicts())

    def resolve(self, memory_id: str, field: str, value: Any) -> Memory:
        """Settle a conflict by writing ``value`` to ``field`` (an ordinary write that syncs like any edit).
        For ``deleted``, ``True`` keeps the delete and ``False`` keeps the memory.

        Raises:
            NotFoundError: no such memory.
            InvalidInputError: unknown field or bad value.
        """
        return _vault_memories.resolve(self._store, self._replica, memory_id, field, value)

    # -- import / export --------------------------------------------------------------------------------

    def import_path(
        self, path: str | os.PathLike[str], *, format: str | None = None,
        progress: Callable[[int], None] | None = None, name: str | None = None,
    ) -> ImportReport:
        """Import memories from a file or folder (formats in :mod:`crdtsync.imports`). Idempotent: a record
        whose stable id is already here is skipped. Bad records are reported, the rest imports. ``progress``
        is called with the number of records handled after each batch. ``name`` stands for ``path`` in the
        problems' locations and the audit log (``-`` for a copy of standard input).

        Raises:
            ImportFormatError: the path is missing or of no known format (``IMPORT_UNKNOWN_FORMAT``).
        """
        return _vault_import.import_path(self._store, self._replica, path, format=format, progress=progress,
                                         name=name)

    def export_jsonl(self, out: IO[str]) -> int:
        """Write every live memory as JSONL (the format :mod:`crdtsync.imports` reads back); returns the count."""
        from crdtsync.imports import export_jsonl

        return export_jsonl(self._store.memories(), out)

    # -- sync entry points ------------------------------------------------------------------------------

    def state_vector(self) -> bytes:
        """The Yjs state vector (``encodeStateVector`` format) of the shared Doc. Loads the Doc."""
        return self._replica.state_vector()

    def encode_update(self, since: bytes | None = None) -> bytes:
        """A Yjs v1 update holding everything the shared Doc has past state vector ``since`` (everything when
        None). Level-0 memories are never in it. Loads the Doc."""
        return self._replica.encode_update(since)

    def own_contribution(self) -> bytes:
        """A Yjs v1 update holding every struct this device wrote and the Doc's delete set: what a first push
        to a new relay, or a mailbox snapshot, sends. Loads the Doc."""
        return self._replica.own_contribution()

    def apply_updates(
        self,
        updates: Sequence[tuple[bytes, str]],
        *,
        on_stored: Callable[[], None] | None = None,
        allowed_clients: Sequence[frozenset[int] | None] | None = None,
        limit_held: bool = True,
    ) -> builtins.list[ApplyResult]:
        """Integrate received updates through the defended apply path (README "Trust boundaries"): the strict
        reader, the inbox (durable before ``on_stored`` runs, inside the same transaction), the integration
        worker under a deadline, the live Doc. Returns one :class:`ApplyResult` per input, in order; never
        raises for a bad update (it is quarantined with its code). ``allowed_clients`` (one entry per update)
        limits the Yjs client ids an update may write under (``UPDATE_FOREIGN_CLIENT``). Past
        :data:`crdtsync.store.integration.MAX_HELD` held updates, one that would wait too is refused
        (``UPDATE_INBOX_FULL``) unless ``limit_held`` is False. An update refused because the worker timed out
        or died is tried again by :meth:`retry_refused`."""
        return self._replica.apply_updates(updates, on_stored=on_stored, allowed_clients=allowed_clients,
                                           limit_held=limit_held)

    def rename_device(self, name: str) -> None:
        """Give this device the name ``name`` (a label of at most 1,024 bytes of UTF-8, not blank) in the replicated
        registry: the other devices show it after their next sync. Returns after the commit.

        Raises:
            InvalidInputError: a name that is blank or too long.
        """
        check_label("device name", name)
        if not name.strip():
            raise InvalidInputError("a device name cannot be blank")
        self._replica.rename_self(name)

    def publish_statement(self, statement: EpochStatement, header: VaultHeader | None) -> None:
        """For :mod:`crdtsync._vault_epochs`: write ``statement`` (this device's) into its registry entry and keep
        ``header`` (the header of the new epoch, if any) until that epoch is current here, in one commit.

        Raises:
            ValueError: ``statement`` is another device's (every other device would refuse the update).
        """
        if statement.author != self.device_id:
            raise ValueError(f"a statement of device {statement.author} cannot go in this device's registry entry")
        self._replica.ensure_lease_registered()
        self._replica.publish_statement(statement, extra_meta={} if header is None else {
            _vault_epochs.HEADER_NEXT_META: header.to_json()})

    def settle_epochs(self) -> bool:
        """Take up the keys and the current epoch that the signed epoch statements this device holds give it
        (:func:`crdtsync._vault_epochs.settle`); returns whether they changed.

        Raises:
            VaultError: ``DEVICE_REVOKED``.
        """
        from crdtsync.replication import AuthorLogReplica

        return _vault_epochs.settle(self, lambda: AuthorLogReplica(self).commit())

    def device_states(self) -> dict[str, dict[str, Any]]:
        """Per registered device: ``state`` (``"active"`` or ``"revoked"``), ``revoked`` (``{seq, by, epoch}``: its
        entries past ``seq`` are refused; None while active), ``epoch`` (the epoch of the newest head of it this
        device holds, this device's own included; None before any) and ``entries`` (how many entries of
        its log this device applied). Answers from SQLite (the keys are not read)."""
        view = self.epochs()
        rows = self._store.authors()
        states: dict[str, dict[str, Any]] = {}
        for device in self.devices():
            revocation = view.revoked.get(device)
            row = rows.get(device)
            epoch: int | None = None
            if row is not None and row.head is not None:
                try:
                    epoch = envelope_epoch(row.head)
                except CrdtsyncError:
                    epoch = None
            states[device] = {
                "state": "active" if revocation is None else "revoked",
                "revoked": None if revocation is None else {"seq": revocation.seq, "by": revocation.by,
                                                            "epoch": revocation.epoch},
                "epoch": epoch, "entries": 0 if row is None else row.applied}
        return states

    def adopt_header(self, header: VaultHeader) -> bool:
        """Take ``header`` (read from a relay) as this vault's header when it is newer and commits to the key this
        device seals under (:func:`crdtsync._vault_epochs.adopt_header`): a header a member rewrote for a new
        passphrase. Returns whether it was taken."""
        return _vault_epochs.adopt_header(self, header)

    def epochs(self) -> EpochView:
        """What the epoch statements in the registry mean: the current epoch, the revoked devices and their points
        (:func:`crdtsync.crypto.epochs.resolve`). Answers from SQLite (the keys are not read)."""
        return epoch_view(self.devices(), VaultHeader.from_json(bytes(self._store.get_meta("vault_header"))).vault_id)

    def revoke_device(self, device: str, *, passphrase: str | None = None, new_passphrase: str | None = None,
                      kdf: KdfParams | None = None) -> dict[str, Any]:
        """Revoke ``device`` (its id, a unique prefix of 4 characters or more, or its unique name): a signed
        statement marks it revoked after the last entry of its log this device applied and gives every other
        active device a new vault key (a new epoch), and the vault header is rewritten so that only
        ``new_passphrase`` admits new devices (the revoked device knows the old one). ``passphrase`` (default env
        ``CRDTSYNC_PASSPHRASE``) is the current passphrase, ``new_passphrase`` (default env
        ``CRDTSYNC_NEW_PASSPHRASE``) the new one. Returns after the commit; the next sync publishes it to every
        relay. Returns ``{device, point, epoch, recipients}``.

        Raises:
            InvalidInputError: ``DEVICE_SELF_REVOKE``, ``DEVICE_AMBIGUOUS``.
            NotFoundError: ``DEVICE_NOT_FOUND``.
            VaultError: ``DEVICE_ALREADY_REVOKED``, ``DEVICE_REVOKED``, ``DEVICE_NOT_REGISTERED``.
            CryptoError: ``PASSPHRASE_REQUIRED``, ``WRONG_PASSPHRASE``, ``KEYRING_UNAVAILABLE``, ``KEYRING_LOCKED``.
        """
        statement, _ = self._new_epoch("revoke", passphrase, new_passphrase, kdf, revoke=device)
        ((target, point),) = statement.revoke.items()
        return {"device": target, "point": point, "epoch": statement.epoch, "recipients": sorted(statement.wraps)}

    def change_passphrase(self, *, passphrase: str | None = None, new_passphrase: str | None = None,
                          kdf: KdfParams | None = None) -> dict[str, Any]:
        """Give the vault a new passphrase and, with it, a new vault key (a new epoch) for the same devices: the old
        passphrase may have leaked with a copy of the header. Passphrases as in :meth:`revoke_device`. Returns
        ``{epoch, recipients}``.

        Raises:
            CryptoError: ``PASSPHRASE_REQUIRED``, ``WRONG_PASSPHRASE``, ``KDF_TOO_WEAK``, ``KEYRING_UNAVAILABLE``,
                ``KEYRING_LOCKED``.
            VaultError: ``DEVICE_REVOKED``, ``DEVICE_NOT_REGISTERED``.
        """
        statement, _ = self._new_epoch("passphrase", passphrase, new_passphrase, kdf)
        return {"epoch": statement.epoch, "recipients": sorted(statement.wraps)}

    def _new_epoch(self, reason: str, passphrase: str | None, new_passphrase: str | None, kdf: KdfParams | None,
                   revoke: str | None = None) -> tuple[EpochStatement, EpochView]:
        from crdtsync.replication import AuthorLogReplica

        current = _vault_create.required_passphrase(
            passphrase, "the current passphrase is needed: pass it or set CRDTSYNC_PASSPHRASE")
        new = new_passphrase if new_passphrase is not None else os.environ.get("CRDTSYNC_NEW_PASSPHRASE")
        if not new:
            raise CryptoError("a new passphrase is needed (the old one no longer admits anyone): pass it or set "
                              "CRDTSYNC_NEW_PASSPHRASE", code="PASSPHRASE_REQUIRED")
        return _vault_epochs.new_epoch(self, reason=reason, passphrase=current, new_passphrase=new, kdf=kdf,
                                       revoke=revoke, commit=lambda: AuthorLogReplica(self).commit())

    def devices(self) -> dict[str, dict[str, Any]]:
        """The device registry replicated in the Doc: ``{device_id: {name, sign_pk, kx_pk, added_by, added_at,
        clients, statements}}`` (``statements``: the device's epoch statements, registry key -> base64url value).
        Answers from the copy the store keeps exact; loads the Doc only when this process already has it loaded or a
        vault written by an older version lacks that copy."""
        return self._replica.devices()

    def rebase_unpushed(self, updates: Sequence[tuple[int, bytes]], relay: str) -> None:
        """For the sync layer: take this device's logged updates ``updates`` ((update id, Yjs v1 bytes), as
        :meth:`local_updates_after` returns them) out of the vault, because they
        reuse Yjs clocks of writes a backup lost (relay ``relay`` holds those), keeping what they made of each
        memory for :meth:`reapply_rebased`; raises a ``DEVICE_RESTORED`` alarm. See :mod:`crdtsync._vault_rebase`.

        Raises:
            VaultError: ``DEVICE_CLOCKS_REUSED`` when a snapshot already holds them.
        """
        _vault_rebase.rebase_unpushed(self._store, self._replica, updates, relay)

    def reapply_rebased(self) -> int:
        """For the sync layer: write again, under the current client id, what :meth:`rebase_unpushed` kept (only
        what differs from the vault now); returns how many memories it kept (0: nothing pending)."""
        return _vault_rebase.reapply(self._store, self._replica)

    def local_updates_after(self, after: int) -> builtins.list[tuple[int, bytes]]:
        """This device's own logged updates with log id > ``after`` (what a push sends), oldest first."""
        return self._store.local_updates_after(after)

    def apply_update(self, update: bytes, origin: str) -> ApplyResult:
        """Integrate one Yjs v1 update received from outside this process (already authenticated by the
        caller). ``origin`` is the authenticated author's device id, whose writes are then held to the registry
        and attribution rules (:mod:`crdtsync.model.authorship`), or any other label (not shaped like a device
        id) for an update from a source the caller trusts, which only the audit log shows. See
        :meth:`apply_updates`.

        Raises:
            UpdateRejectedError: the update was refused and quarantined (code says why).
        """
        result = self.apply_updates([(update, origin)])[0]
        if result.status == "refused":
            raise UpdateRejectedError(result.message or "update refused", code=result.code)
        return result

    def retry_refused(self) -> builtins.list[ApplyResult]:
        """Try again the received updates refused because the integration worker timed out or died
        (``UPDATE_WORKER_TIMEOUT``, ``UPDATE_WORKER_CRASHED``: a slow or busy device, the OS reclaiming memory),
        three tries each in all, the deadline doubled at each; :meth:`sync` calls it before it pulls. Returns
        each retried update's outcome (``integrated``, ``pending`` or ``refused`` again)."""
        return self._replica.retry_refused()

    # -- relays and mailbox sync -----------------------------------------------------------------------

    def add_relay(self, name: str, url: str) -> None:
        """Save mailbox ``url`` as relay ``name`` (a folder's path made absolute) and publish the vault's public
        header there (so other devices can ``join`` with the same URL).

        Raises:
            InvalidInputError: ``RELAY_EXISTS``; ``RELAY_OVERLAPS_VAULT`` (a folder relay that holds the vault
                folder or lies inside it). MailboxError: the URL is unsupported or the store refuses.
        """
        node.add_relay(self, name, url)

    def relays(self) -> builtins.list[dict[str, Any]]:
        """Every relay with its sync state: ``{name, url, added, last_sync, last_error, pending_push,
        pending_pull}`` (see :func:`crdtsync.node.relay_states`)."""
        return node.relay_states(self._store)

    def remove_relay(self, name: str) -> None:
        """Forget relay ``name`` (the mailbox itself is left as it is). Raises ``NotFoundError``."""
        self._store.remove_relay(name)

    def sync(
        self,
        relay: str | None = None,
        *,
        push: bool = True,
        pull: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> builtins.list[Any]:
        """Push then pull every relay (or only ``relay``); returns one
        :class:`~crdtsync.mailbox.relay.SyncReport` per relay. Conflicts surfaced by a sync are not errors.
        ``progress(done, total)`` follows the objects each pull fetches. A pull first integrates received
        updates stored but never tried (a process killed in between, as a join the OS stopped), then tries again
        those refused because the integration worker timed out or died (at most three tries each).

        Raises:
            NotFoundError: no relay of that name, or no relay at all (``NO_RELAY``).
        """
        relays = node.pick_relays(self._store, relay)
        self._replica.ensure_lease_registered()
        failed: dict[str, str] | None = None
        resumed: set[str] = set()
        if pull:
            try:
                resumed.update(m for result in self._replica.resume_held().values() for m in result.changed)
                self.retry_refused()
            except CrdtsyncError as exc:  # reported like a relay's error: the relays still sync
                failed = {"device": "", "code": exc.code,
                          "message": f"integrating received updates again: {exc.message}"}
        reports = node.sync_relays(self, relays, push=push, pull=pull, progress=progress)
        if failed is not None:
            reports[0].errors.insert(0, failed)
        reports[0].memories_changed.update(resumed)  # counted once, with the first relay
        return reports

    @classmethod
    def join(
        cls,
        path: str | os.PathLike[str],
        url: str,
        *,
        passphrase: str | None = None,
        device_name: str | None = None,
        relay_name: str = "default",
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Join the vault published at mailbox ``url`` as a new device in folder ``path``: find the vault
        header under the URL, unwrap the vault keys with ``passphrase`` (default env ``CRDTSYNC_PASSPHRASE``),
        create this device's keys, register it (knowing the passphrase admits it), save the URL as relay
        ``relay_name``, pull everything and push the registration. ``progress(done, total)`` follows the objects
        the pull fetches, as in :meth:`sync`. Leaves nothing open; returns the folder.

        ``url`` is a mailbox URL, or a join string ``URL#vault=<fingerprint>`` (what ``relay add`` prints): then
        only the vault with that fingerprint is joined. Without one, the URL must hold exactly one vault, which is
        trusted on first use (:attr:`fingerprint` says which). One header is tried, its KDF parameters within
        limits, its keys checked against its commitments (see :func:`crdtsync.node.find_vault`).

        Raises:
            CryptoError: ``PASSPHRASE_REQUIRED``, ``WRONG_PASSPHRASE``, ``KDF_TOO_WEAK``, ``KDF_TOO_COSTLY``,
                ``HEADER_OUTDATED``, ``HEADER_MALFORMED`` (a v3 header whose history does not open).
            MailboxError: ``MAILBOX_NO_VAULT`` (no vault, or none with the fingerprint, under that URL),
                ``MAILBOX_SEVERAL_VAULTS`` and store errors.
            VaultError: ``VAULT_EXISTS``.
            InvalidInputError: a device name, relay name or URL that is not valid (too long, empty, not
                Unicode text), ``INVALID_FINGERPRINT``; ``RELAY_OVERLAPS_VAULT`` (the vault folder would be inside
                the relay folder, or the relay inside it).
        """
        check_label("device name", device_name)
        from crdtsync.mailbox.backend import canonical_url, check_apart  # the storage backends load on first use

        url, expected = node.split_join_string(url)
        check_relay(relay_name, url)
        url = canonical_url(url)  # a relative folder path names the folder it names here, from anywhere later
        folder = _vault_create.vacant_folder(path, advice=(
            "; if a join into it was interrupted, `crdtsync sync` there finishes it"))
        check_apart(folder, url)
        passphrase = _vault_create.required_passphrase(
            passphrase, "joining needs the vault's passphrase: pass it or set CRDTSYNC_PASSPHRASE")
        header, keys = node.find_vault(url, passphrase, expected)
        _vault_create.make_folder(folder)
        # The header is unsigned: whoever knows the passphrase can add epochs to it. A new device first seals under
        # a v1/v2 header's founding epoch, or a v3 header's one wrapped epoch (the key change that wrote it left
        # only that epoch under the passphrase); after its first pull it seals under the epoch the signed epoch
        # statements of the members make current.
        secrets = VaultSecrets(device=DeviceKeys.generate(), vault_id=header.vault_id, epochs=keys.epochs,
                               current_epoch=keys.current, alternates=keys.alternates)
        _vault_create.create_store(folder, secrets, header, vault_name="", device_name=device_name,
                                   founder=False, relay=(relay_name, url))
        with cls.open(folder) as vault:
            node.first_sync(vault, relay_name, progress)
        return folder

    # -- status and audit -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A summary for ``crdtsync status``: the vault's fingerprint, device, memory counts, log size, updates held
        or quarantined, conflicts, relays (pending push and pull, last sync, last error), the entries the last sync
        of each relay waited for (``waiting``: ``{relay, device, seq, holders, message}``) and the known devices
        (as of the last sync or registry read). ``held`` lists each held update with what it waits for:
        ``{origin, since, waits_for: [{client (Yjs client id), device (its device id, None when no registration
        of it reached this device)}]}``; ``refused`` the newest 20 refused updates, oldest first: ``{at, origin, code,
        message, tries}`` (a refusal with code ``UPDATE_WORKER_TIMEOUT`` or ``UPDATE_WORKER_CRASHED`` is tried
        again by the next syncs, up to three tries). ``lan``: the ``serve`` daemon and the peers met directly
        (:func:`crdtsync.node.peer_rows`). Answers from SQLite without loading the Doc."""
        count, size = self._store.updates_since_snapshot()
        quarantined = self._store.quarantined()
        registry = self._known_registry()
        writer = {client: device for device, entry in registry.items() for client in entry.get("clients", ())}
        held = [{"origin": h["origin"], "since": h["since"],
                 "waits_for": [{"client": c, "device": writer.get(c)} for c in h["clients"]]}
                for h in self._store.held_waits()]
        return {
            "vault": str(self.path),
            "fingerprint": self.fingerprint,
            "device_id": self.device_id,
            "device_name": self._store.get_meta("device_name"),
            "memories": self._store.counts(),
            "log": {"updates_since_snapshot": count, "bytes_since_snapshot": size},
            "held_updates": len(held),
            "held": held,
            "quarantined_updates": len(quarantined),
            "refused": [{"at": at, "origin": origin, "code": code, "message": message, "tries": tries}
                        for at, origin, code, message, tries in quarantined[-20:]],
            "conflicts": len(self._store.conflicts()),
            "alarms": self._store.alarms(),
            "relays": self.relays(),
            "waiting": self._waiting(),
            "devices": registry,
            "lan": node.peer_rows(self._store, {d: str(e.get("name", "")) for d, e in registry.items()}),
        }

    def _waiting(self) -> builtins.list[dict[str, Any]]:
        """The entries the last pull from each relay waited for and no relay supplied: ``{relay, device, seq,
        holders, message}`` (``holders``: the devices whose heads say they applied it)."""
        waits: builtins.list[dict[str, Any]] = []
        for relay, raw in sorted(self._store.cursors("waiting").items()):
            waits += [{"relay": relay, **wait} for wait in json.loads(raw)]
        return waits

    def _known_registry(self) -> dict[str, dict[str, Any]]:
        """The device registry as of the last sync or registry read, from SQLite (no Doc, no write lock)."""
        registry: dict[str, dict[str, Any]] = json.loads(self._store.get_meta("registry") or "{}")
        return registry

    def device_names(self) -> dict[str, str]:
        """``{device_id: name}`` of the devices this one knows (as of its last sync or registry read), for
        display: answers from SQLite without loading the Doc or waiting for another process's write."""
        return {device: str(entry.get("name", "")) for device, entry in self._known_registry().items()}

    def clear_alarms(self, code: str | None = None) -> int:
        """Acknowledge the persistent alarms ``status`` shows (``DEVICE_RESTORED``, ``MAILBOX_FORK``...): those
        with ``code``, or all when None. Returns how many were cleared. Clearing hides a notice, it fixes
        nothing: a fork that persists is refused and raised again at the next sync."""
        return self._store.clear_alarms(code)

    def log(self, *, limit: int = 50) -> builtins.list[AuditRow]:
        """The newest audit rows (syncs, imports), newest first."""
        return self._store.audit_rows(limit=limit)

