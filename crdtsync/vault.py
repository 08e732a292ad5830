"""The Python API: :class:`Vault`, one replica of a memory vault on this device.

A vault is a folder: ``vault.db`` (SQLite, the state of record, see :mod:`crdtsync.store.db`) and ``keys``
(0600, see :mod:`crdtsync.store.secrets_file`). Opening is cheap: reads (``get``, ``list``, ``search``,
``conflicts``, ``status``) answer from SQLite and never load the Doc; the pycrdt Doc is loaded (newest snapshot
plus later updates) the first time a write or a sync needs it. Every write returns only after its SQLite
transaction has committed (``synchronous=FULL``): an acknowledged write survives kill -9.

Updates from outside this process go through :meth:`Vault.apply_updates`: the strict Yjs reader, then the
integration worker under a deadline, then the live Doc (see ``README.md`` "Trust boundaries").
"""

from __future__ import annotations

import builtins
import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from crdtsync.crypto.header import KdfParams, VaultHeader, create_header, unwrap_vault_keys
from crdtsync.crypto.keys import DeviceKeys, new_vault_id, new_vault_key
from crdtsync.errors import (
    CryptoError,
    InvalidInputError,
    MailboxError,
    NotFoundError,
    UpdateRejectedError,
    VaultError,
)
from crdtsync.model.records import (
    REGISTER_FIELDS,
    Conflict,
    Memory,
    check_category,
    check_content,
    check_level,
    check_metadata,
    check_source,
    check_tags,
    utc_now_iso,
)
from crdtsync.model.schema import MemoryDoc, check_field
from crdtsync.store.db import AuditRow, Store
from crdtsync.store.replica import ApplyResult, Replica
from crdtsync.store.secrets_file import VaultSecrets, read_secrets, write_secrets
from crdtsync.store.worker import DEFAULT_DEADLINE

DB_NAME = "vault.db"
KEYS_NAME = "keys"
#: Records per SQLite transaction during an import.
IMPORT_BATCH = 2000


def new_memory_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 (RFC 9562) string: 48-bit Unix time in milliseconds, then random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))










@dataclass
class ImportReport:
    """What an import did: ``added`` memories, ``skipped`` (already present: imports are idempotent) and
    ``problems`` (location, code, message) for records that could not be read."""

    added: int = 0
    skipped: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)


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
        """
        folder = Path(path).expanduser()
        if (folder / DB_NAME).exists() or (folder / KEYS_NAME).exists():
            raise VaultError(f"{folder} already holds a vault", code="VAULT_EXISTS")
        passphrase = passphrase if passphrase is not None else os.environ.get("CRDTSYNC_PASSPHRASE")
        if not passphrase:
            raise CryptoError(
                "a vault needs a passphrase (it admits your other devices): pass one or set CRDTSYNC_PASSPHRASE",
                code="PASSPHRASE_REQUIRED",
            )
        _make_folder(folder)
        keys = DeviceKeys.generate()
        vault_id, vault_key = new_vault_id(), new_vault_key()
        header = create_header(vault_id, vault_key, passphrase, kdf or KdfParams.new())
        write_secrets(folder / KEYS_NAME, VaultSecrets(device=keys, vault_id=vault_id, epochs={0: vault_key}))
        cls._create_store(folder, keys, header, vault_name=name or "memories", device_name=device_name,
                          founder=True)
        return folder

    @classmethod
    def _create_store(
        cls, folder: Path, keys: DeviceKeys, header: VaultHeader, *, vault_name: str, device_name: str | None,
        founder: bool,
    ) -> None:
        store = Store(folder / DB_NAME)
        try:
            with store.write():
                store.set_meta("vault_header", header.to_json())
                store.set_meta("device_id", keys.device_id)
                store.set_meta("device_name", device_name or socket.gethostname())
                store.set_meta("vault_name", vault_name)
            vault = cls(folder, store, agent=None, deadline=DEFAULT_DEADLINE)
            try:
                if founder:
                    vault._replica.local_write(lambda d: d.set_vault_info(vault_name), ())
                vault._replica.ensure_lease_registered()
            finally:
                vault._replica.release_lease()
        finally:
            store.close()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, agent: str | None = None, deadline: float = DEFAULT_DEADLINE
    ) -> Vault:
        """Open the vault in folder ``path``. Cheap: loads no Doc, starts no worker, reads no key.

        Args:
            agent: label of the writing agent recorded with each write (default: env ``CRDTSYNC_AGENT``).
            deadline: seconds one received update may take to integrate before it is refused.

        Raises:
            VaultError: ``VAULT_NOT_FOUND`` (no vault there: run ``crdtsync init``), ``VAULT_UNREADABLE``,
                ``VAULT_FORMAT``.
        """
        folder = Path(path).expanduser()
        if not (folder / DB_NAME).exists():
            raise VaultError(f"no vault in {folder}; create one with `crdtsync init`", code="VAULT_NOT_FOUND")
        store = Store(folder / DB_NAME)
        return cls(folder, store, agent=agent or os.environ.get("CRDTSYNC_AGENT") or None, deadline=deadline)

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

    @property
    def device_id(self) -> str:
        """This device's id (16 hex chars derived from its signing key)."""
        return str(self._store.get_meta("device_id"))

    @property
    def secrets(self) -> VaultSecrets:
        """This device's keys and the vault keys (read from the 0600 key file on first use)."""
        if self._secrets is None:
            self._secrets = read_secrets(self.path / KEYS_NAME)
        return self._secrets

    @property
    def header(self) -> VaultHeader:
        """The public vault header (``vault.json`` in a mailbox): the vault key wrapped under the passphrase."""
        return VaultHeader.from_json(bytes(self._store.get_meta("vault_header")))

    @property
    def store(self) -> Store:
        """The underlying :class:`~crdtsync.store.db.Store` (for the sync layers and tests)."""
        return self._store

    # -- the Doc, leases and local writes ---------------------------------------------------------------

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
        return self._add_record(
            new_memory_id(),
            content=check_content(content),
            category=check_category(category),
            tags=check_tags(tags),
            level=check_level(level),
            source=check_source(source),
            metadata=check_metadata(dict(metadata) if metadata is not None else None),
            created=None,
        )

    def _add_record(self, memory_id: str, *, level: int, created: str | None, **values: Any) -> Memory:
        if level == 0:
            now = utc_now_iso()
            memory = Memory(id=memory_id, level=0, created=created or now, updated=now,
                            created_by=self.device_id, updated_by=self.device_id, **values)
            with self._store.write():
                self._store.put_memory(memory, [])
            return memory
        self._replica.ensure_lease_registered()
        ctx = self._replica.context()
        self._replica.local_write(lambda d: d.add(memory_id, ctx, created=created, **values), [memory_id])
        return self._require(memory_id)

    def _require(self, memory_id: str) -> Memory:
        memory = self._store.memory(memory_id)
        if memory is None:
            raise NotFoundError(f"no memory with id {memory_id}; `crdtsync list` shows the ids")
        return memory

    def get(self, memory_id: str) -> Memory:
        """The memory ``memory_id`` (deleted ones too; see ``Memory.deleted``). Answers from SQLite.

        Raises:
            NotFoundError: no such memory (code ``NOT_FOUND``).
        """
        return self._require(memory_id)

    def list(self, *, limit: int | None = None, include_deleted: bool = False) -> list[Memory]:
        """Every live memory (or the newest ``limit``), newest created first. Answers from SQLite."""
        return self._store.memories(limit=limit, include_deleted=include_deleted)

    def search(self, query: str, *, limit: int | None = 50) -> builtins.list[Memory]:
        """Live memories whose content, category or tags contain every word of ``query`` (full-text, best match
        first; the last word also matches as a prefix). Answers from SQLite."""
        return self._store.search(query, limit=limit)

    def update(self, memory_id: str, **fields: Any) -> Memory:
        """Edit a memory. Accepted keywords: ``content``, ``category``, ``source``, ``metadata`` (register
        writes), ``tags`` (replace the whole set), ``add_tags``/``remove_tags`` (iterables) and ``level``
        (moving to 0 removes it from the shared Doc; copies already synced stay on the other devices).

        Raises:
            NotFoundError: no such memory.
            InvalidInputError: a bad value, an unknown field (``INVALID_FIELD``) or a deleted memory
                (``MEMORY_DELETED``: restore it first).
        """
        memory = self._require(memory_id)
        if memory.deleted:
            raise InvalidInputError(f"memory {memory_id} is deleted; `crdtsync restore {memory_id}` first",
                                    code="MEMORY_DELETED")
        level = check_level(fields.pop("level", memory.level))
        add_tags = set(check_tags(fields.pop("add_tags", ())))
        remove_tags = set(check_tags(fields.pop("remove_tags", ())))
        if "tags" in fields:
            wanted = check_tags(fields.pop("tags"))
            add_tags |= wanted - memory.tags
            remove_tags |= memory.tags - wanted
        changes = {name: check_field(name, value) for name, value in fields.items()}
        if "deleted" in changes:
            raise InvalidInputError("use delete() or restore()", code="INVALID_FIELD")
        if level != memory.level:
            return self._move_level(memory, level, changes, add_tags, remove_tags)
        if memory.level == 0:
            updated = _apply_local(memory, changes, add_tags, remove_tags, self.device_id)
            with self._store.write():
                self._store.put_memory(updated, [])
            return updated
        self._replica.ensure_lease_registered()
        ctx = self._replica.context()

        def edit(doc: MemoryDoc) -> None:
            with doc.doc.transaction():
                doc.write(memory_id, ctx, changes)
                if add_tags or remove_tags:
                    doc.set_tags(memory_id, ctx, add_tags, remove_tags)

        self._replica.local_write(edit, [memory_id])
        return self._require(memory_id)

    def _move_level(
        self, memory: Memory, level: int, changes: dict[str, Any], add_tags: set[str], remove_tags: set[str]
    ) -> Memory:
        moved = _apply_local(memory, changes, add_tags, remove_tags, self.device_id)
        self._replica.ensure_lease_registered()
        if level == 0:
            def to_local(doc: MemoryDoc) -> None:
                doc.remove(memory.id)
                self._store.put_memory(Memory(**{**moved.__dict__, "level": 0, "conflicts": ()}), [])

            self._replica.local_write(to_local, ())
        else:
            ctx = self._replica.context()

            def to_shared(doc: MemoryDoc) -> None:
                self._store.drop_memory(memory.id)
                doc.add(memory.id, ctx, created=moved.created, content=moved.content, category=moved.category,
                        tags=moved.tags, source=moved.source, metadata=moved.metadata)
                doc.write(memory.id, ctx, {})  # stamps the move (by, at) so `updated` moves forward

            self._replica.local_write(to_shared, [memory.id])
        return self._require(memory.id)

    def _set_deleted(self, memory_id: str, deleted: bool) -> Memory:
        memory = self._require(memory_id)
        if memory.level == 0:
            with self._store.write():
                self._store.put_memory(Memory(**{**memory.__dict__, "deleted": deleted, "updated": utc_now_iso()}), [])
            return self._require(memory_id)
        self._replica.ensure_lease_registered()
        ctx = self._replica.context()
        self._replica.local_write(lambda d: d.write(memory_id, ctx, {"deleted": deleted}), [memory_id])
        return self._require(memory_id)

    def delete(self, memory_id: str) -> Memory:
        """Delete a memory (a write of ``deleted=true``: a concurrent edit elsewhere surfaces as a conflict on
        ``deleted``; :meth:`restore` undoes it). Raises ``NotFoundError``."""
        return self._set_deleted(memory_id, True)

    def restore(self, memory_id: str) -> Memory:
        """Undo a delete (a write of ``deleted=false``). Raises ``NotFoundError``."""
        return self._set_deleted(memory_id, False)

    def conflicts(self) -> builtins.list[Conflict]:
        """Every field of every memory that holds several different concurrent values. Answers from SQLite."""
        return self._store.conflicts()

    def resolve(self, memory_id: str, field: str, value: Any) -> Memory:
        """Settle a conflict by writing ``value`` to ``field`` (an ordinary write that syncs like any edit).
        For ``deleted``, ``True`` keeps the delete and ``False`` keeps the memory.

        Raises:
            NotFoundError: no such memory.
            InvalidInputError: unknown field or bad value.
        """
        self._require(memory_id)
        value = check_field(field, value)
        self._replica.ensure_lease_registered()
        ctx = self._replica.context()
        self._replica.local_write(lambda d: d.write(memory_id, ctx, {field: value}), [memory_id])
        return self._require(memory_id)

    # -- import / export --------------------------------------------------------------------------------

    def import_path(
        self, path: str | os.PathLike[str], *, format: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Import memories from a file or folder (formats in :mod:`crdtsync.imports`). Idempotent: a record
        whose stable id is already here is skipped. Bad records are reported, the rest imports. ``progress``
        is called with the number of records handled after each batch.

        Raises:
            ImportFormatError: the path is missing or of no known format (``IMPORT_UNKNOWN_FORMAT``).
        """
        from crdtsync.imports import ImportProblem, read_import

        report = ImportReport()
        batch: builtins.list[Any] = []
        handled = 0
        for item in read_import(Path(path), format=format):
            if isinstance(item, ImportProblem):
                report.problems.append((item.location, item.code, item.message))
                continue
            batch.append(item)
            if len(batch) >= IMPORT_BATCH:
                handled += self._import_batch(batch, report)
                batch = []
                if progress:
                    progress(handled)
        handled += self._import_batch(batch, report)
        if progress:
            progress(handled)
        self._store.audit("import", added=report.added, skipped=report.skipped, problems=len(report.problems),
                          path=str(path))
        return report

    def _import_batch(self, records: Sequence[Any], report: ImportReport) -> int:
        present = self._store.existing_ids([rec.id for rec in records])
        fresh = {}
        for rec in records:
            if rec.id in fresh or rec.id in present:
                report.skipped += 1
            else:
                fresh[rec.id] = rec
        shared = [r for r in fresh.values() if r.level == 1]
        local = [r for r in fresh.values() if r.level == 0]
        now = utc_now_iso()
        me = self.device_id
        if local:
            with self._store.write():
                self._store.put_memories([(Memory(
                    id=rec.id, content=rec.content, category=rec.category, tags=rec.tags, level=0,
                    source=rec.source, metadata=rec.metadata, created=rec.created or now, updated=now,
                    created_by=me, updated_by=me), []) for rec in local])
        if shared:
            self._replica.ensure_lease_registered()
            ctx = self._replica.context()
            rows: builtins.list[tuple[Memory, builtins.list[Conflict]]] = []
            for rec in shared:
                created = rec.created or ctx.at
                # What read_record will see: add() writes entries without by/at unless an agent is set.
                updated = ctx.at if ctx.agent is not None and ctx.at > created else created
                rows.append((Memory(id=rec.id, content=rec.content, category=rec.category, tags=rec.tags,
                                    source=rec.source, metadata=rec.metadata, created=created, updated=updated,
                                    created_by=me, updated_by=me), []))

            def add_all(doc: MemoryDoc) -> None:
                with doc.doc.transaction():
                    for rec in shared:
                        doc.add(rec.id, ctx, content=rec.content, category=rec.category, tags=rec.tags,
                                source=rec.source, metadata=rec.metadata, created=rec.created)

            self._replica.local_write(add_all, (), rows=rows)
        report.added += len(fresh)
        return len(records)

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
    ) -> builtins.list[ApplyResult]:
        """Integrate received updates through the defended apply path (README "Trust boundaries"): the strict
        reader, the inbox (durable before ``on_stored`` runs, inside the same transaction), the integration
        worker under a deadline, the live Doc. Returns one :class:`ApplyResult` per input, in order; never
        raises for a bad update (it is quarantined with its code). ``allowed_clients`` (one entry per update)
        limits the Yjs client ids an update may write under (``UPDATE_FOREIGN_CLIENT``)."""
        return self._replica.apply_updates(updates, on_stored=on_stored, allowed_clients=allowed_clients)

    def devices(self) -> dict[str, dict[str, Any]]:
        """The device registry replicated in the Doc: ``{device_id: {name, sign_pk, kx_pk, added_by, added_at,
        clients}}``. Loads the Doc."""
        return self._replica.devices()

    def local_updates_after(self, after: int) -> builtins.list[tuple[int, bytes]]:
        """This device's own logged updates with log id > ``after`` (what a push sends), oldest first."""
        return self._store.local_updates_after(after)

    def apply_update(self, update: bytes, origin: str) -> ApplyResult:
        """Integrate one Yjs v1 update received from outside this process (already authenticated by the
        caller; ``origin`` is a free label for the audit log). See :meth:`apply_updates`.

        Raises:
            UpdateRejectedError: the update was refused and quarantined (code says why).
        """
        result = self.apply_updates([(update, origin)])[0]
        if result.status == "refused":
            raise UpdateRejectedError(result.message or "update refused", code=result.code)
        return result

    # -- relays and mailbox sync -----------------------------------------------------------------------

    def add_relay(self, name: str, url: str) -> None:
        """Save mailbox ``url`` as relay ``name`` and publish the vault's public header there (so other
        devices can ``join`` with the same URL).

        Raises:
            InvalidInputError: ``RELAY_EXISTS``. MailboxError: the URL is unsupported or the store refuses.
        """
        from crdtsync.mailbox.backend import open_store
        from crdtsync.mailbox.sync import Mailbox

        store = open_store(url)
        self._store.add_relay(name, url)
        try:
            Mailbox(self, store, name).publish_header()
        except BaseException:
            self._store.remove_relay(name)
            raise

    def relays(self) -> builtins.list[dict[str, Any]]:
        """Every relay with its sync state: ``{name, url, added, last_sync, last_error, pending_push}``
        (``pending_push`` counts this device's updates not yet pushed there)."""
        out = []
        for relay in self._store.relays():
            pushed = int(self._store.get_cursor("push", relay["name"]) or 0)
            seen = self._store.cursors(f"seen:{relay['name']}")
            applied = self._store.cursors(f"pull:{relay['name']}")
            behind = sum(max(0, int(v) - int(applied.get(k, b"0"))) for k, v in seen.items())
            out.append({**relay, "pending_push": len(self._store.local_updates_after(pushed)),
                        "pending_pull": behind})
        return out

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
        :class:`~crdtsync.mailbox.sync.SyncReport` per relay. Conflicts surfaced by a sync are not errors.
        ``progress(done, total)`` follows the objects each pull fetches.

        Raises:
            NotFoundError: no relay of that name, or no relay at all (``NO_RELAY``).
        """
        from crdtsync.mailbox.backend import open_store
        from crdtsync.mailbox.sync import sync_relay

        relays = [r for r in self._store.relays() if relay is None or r["name"] == relay]
        if not relays:
            raise NotFoundError("no relay to sync with: add one with `crdtsync relay add NAME URL`"
                                if relay is None else f"no relay named {relay!r}", code="NO_RELAY")
        self._replica.ensure_lease_registered()
        return [sync_relay(self, open_store(r["url"]), r["name"], push=push, pull=pull, progress=progress)
                for r in relays]

    @classmethod
    def join(
        cls,
        path: str | os.PathLike[str],
        url: str,
        *,
        passphrase: str | None = None,
        device_name: str | None = None,
        relay_name: str = "default",
    ) -> Path:
        """Join the vault published at mailbox ``url`` as a new device in folder ``path``: find the vault
        header under the URL, unwrap the vault keys with ``passphrase`` (default env ``CRDTSYNC_PASSPHRASE``),
        create this device's keys, register it (knowing the passphrase admits it), save the URL as relay
        ``relay_name``, pull everything and push the registration. Leaves nothing open; returns the folder.

        Raises:
            CryptoError: ``PASSPHRASE_REQUIRED``, ``WRONG_PASSPHRASE``.
            MailboxError: ``MAILBOX_NO_VAULT`` (no vault under that URL) and store errors.
            VaultError: ``VAULT_EXISTS``.
        """
        from crdtsync.mailbox.backend import open_store
        from crdtsync.mailbox.format import ROOT, header_key

        folder = Path(path).expanduser()
        if (folder / DB_NAME).exists() or (folder / KEYS_NAME).exists():
            raise VaultError(f"{folder} already holds a vault", code="VAULT_EXISTS")
        passphrase = passphrase if passphrase is not None else os.environ.get("CRDTSYNC_PASSPHRASE")
        if not passphrase:
            raise CryptoError("joining needs the vault's passphrase: pass it or set CRDTSYNC_PASSPHRASE",
                              code="PASSPHRASE_REQUIRED")
        store = open_store(url)
        found: tuple[VaultHeader, dict[int, bytes]] | None = None
        wrong = False
        for tag in store.list(ROOT):
            data = store.get(header_key(tag))
            if data is None:
                continue
            header = VaultHeader.from_json(data)
            try:
                found = (header, unwrap_vault_keys(header, passphrase))
                break
            except CryptoError as exc:
                if exc.code != "WRONG_PASSPHRASE":
                    raise
                wrong = True
        if found is None:
            if wrong:
                raise CryptoError("the passphrase does not open the vault at that URL", code="WRONG_PASSPHRASE")
            raise MailboxError(f"no crdtsync vault under {url}; on a device of the vault run "
                               "`crdtsync relay add NAME URL` first", code="MAILBOX_NO_VAULT")
        header, epochs = found
        _make_folder(folder)
        keys = DeviceKeys.generate()
        write_secrets(folder / KEYS_NAME, VaultSecrets(device=keys, vault_id=header.vault_id, epochs=epochs,
                                                       current_epoch=max(epochs)))
        cls._create_store(folder, keys, header, vault_name="", device_name=device_name, founder=False)
        with cls.open(folder) as vault:
            vault._store.add_relay(relay_name, url)
            reports = vault.sync(relay_name, push=False)
            reports += vault.sync(relay_name, pull=False)
            errors = [e for r in reports for e in r.errors]
            if errors:
                raise MailboxError(f"joined, but the first sync reported: [{errors[0]['code']}] "
                                   f"{errors[0]['message']}; run `crdtsync sync` again", code=errors[0]["code"])
        return folder

    # -- status and audit -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A summary for ``crdtsync status``: device, memory counts, log size, updates held or quarantined,
        conflicts, relays (pending push and pull, last sync, last error) and the known devices (as of the last
        sync or registry read). Answers from SQLite without loading the Doc."""
        count, size = self._store.updates_since_snapshot()
        return {
            "vault": str(self.path),
            "device_id": self.device_id,
            "device_name": self._store.get_meta("device_name"),
            "memories": self._store.counts(),
            "log": {"updates_since_snapshot": count, "bytes_since_snapshot": size},
            "held_updates": self._store.held_count(),
            "quarantined_updates": len(self._store.quarantined()),
            "conflicts": len(self._store.conflicts()),
            "alarms": self._store.alarms(),
            "relays": self.relays(),
            "devices": json.loads(self._store.get_meta("registry") or "{}"),
        }

    def log(self, *, limit: int = 50) -> builtins.list[AuditRow]:
        """The newest audit rows (syncs, imports), newest first."""
        return self._store.audit_rows(limit=limit)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise VaultError(f"cannot create the vault folder {folder}: {exc.strerror or exc}",
                         code="VAULT_UNWRITABLE") from None


def _apply_local(memory: Memory, changes: Mapping[str, Any], add_tags: set[str], remove_tags: set[str],
                 device: str) -> Memory:
    values = {**memory.__dict__, **{k: v for k, v in changes.items() if k in REGISTER_FIELDS}}
    values["tags"] = frozenset((memory.tags - remove_tags) | add_tags)
    values["updated"] = utc_now_iso()
    values["updated_by"] = device
    return Memory(**values)
