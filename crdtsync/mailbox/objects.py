"""Mailbox protocol v1, the objects: one vault's sealed log, snapshot and head objects in a blob store.

:class:`SealedObjects` seals a body into envelopes (``crdtsync.crypto.envelope``: chunked, encrypted, signed by
this device), writes them as one object or, past one object's limit, as continuations (``<key>.1``...), and reads
them back the other way: fetch, open and check every envelope against the device registry, join the chunks,
parse the batch (:mod:`crdtsync.mailbox.format` is the layout). :class:`crdtsync.mailbox.sync.Mailbox` runs the
protocol (push, pull, recovery, compaction) on top of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crdtsync.crypto.envelope import KIND_HEAD, join_chunks, open_envelope, parse_chunk, seal
from crdtsync.crypto.keys import vault_tag
from crdtsync.errors import CrdtsyncError, MailboxError
from crdtsync.mailbox.backend import MAX_OBJECT_BYTES, BlobStore
from crdtsync.mailbox.format import (
    MAX_PARTS,
    Batch,
    Head,
    chain_digest,
    chunks_of,
    devices_prefix,
    head_key,
    pack_objects,
    parse_seq,
    part_key,
    unpack_object,
)
from crdtsync.model.authorship import registered_key

if TYPE_CHECKING:
    from crdtsync.vault import Vault


class SealedObjects:
    """One vault's objects in one mailbox (a relay), sealed and opened with this device's keys.

    Args:
        vault: the open vault.
        store: the blob store of the relay's URL.
        relay: the relay's name (cursors and audit rows are kept per relay).
    """

    def __init__(self, vault: Vault, store: BlobStore, relay: str) -> None:
        self.vault = vault
        self.store = store
        self.relay = relay
        secrets = vault.secrets
        self.keys = secrets.device
        self.vault_id = secrets.vault_id
        self.epochs = secrets.epochs
        self.epoch = secrets.current_epoch
        self.tag = vault_tag(self.vault_id)
        self.me = self.keys.device_id
        self._registry: dict[str, dict[str, Any]] | None = None

    def registry(self, *, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The device registry of the vault's Doc (cached for one sync)."""
        if self._registry is None or refresh:
            self._registry = self.vault.devices()
        return self._registry

    def _seal(self, kind: int, body: bytes) -> list[bytes]:
        db = self.vault.store
        count = int(db.get_meta(f"sealed:{self.epoch}") or 0)
        envelopes = []
        for chunk in chunks_of(body) if kind != KIND_HEAD else [body]:
            envelopes.append(seal(vault_id=self.vault_id, epoch=self.epoch, vault_key=self.epochs[self.epoch],
                                  sender=self.keys, kind=kind, body=chunk, sealed_count=count))
            count += 1
        db.set_meta(f"sealed:{self.epoch}", str(count))
        return envelopes

    def _sender_key(self, device_id: str, epoch: int) -> bytes | None:
        return registered_key(self.registry(), device_id)

    def _open(self, data: bytes, device_id: str, kind: int, what: str) -> tuple[bytes, bool]:
        opened = open_envelope(data, vault_id=self.vault_id, epoch_keys=self.epochs, sender_key=self._sender_key)
        if opened.sender != device_id or opened.kind != kind:
            raise MailboxError(f"{what} was written by {opened.sender} as kind {opened.kind}, not by {device_id}: "
                               "another device's object was put in its place", code="MAILBOX_OBJECT_CORRUPT")
        return opened.body, opened.registered

    def _read_batch(self, key: str, device_id: str, kind: int, seq: int) -> tuple[Batch, bool, bytes, int]:
        """Fetch, open and parse one log or snapshot body (the object at ``key``, then its continuations while
        its chunks announce more); returns the batch, whether its sender was already registered, the chain
        digest of its body and how many objects it took."""
        chunks: list[bytes] = []
        registered = True
        parts = 0
        while True:
            what = part_key(key, parts)
            data = self.store.get(what)
            if data is None:
                raise MailboxError(f"{what} is not in the mailbox (yet); it will be read on the next sync",
                                   code="MAILBOX_OBJECT_MISSING")
            for envelope in unpack_object(data, what):
                body, known = self._open(envelope, device_id, kind, what)
                registered = registered and known
                chunks.append(body)
            parts += 1
            try:
                count = parse_chunk(chunks[0]).count
            except CrdtsyncError as exc:
                raise MailboxError(f"{key}: {exc.message}", code="MAILBOX_OBJECT_CORRUPT") from None
            if len(chunks) >= count:
                break
            if parts >= MAX_PARTS:
                raise MailboxError(f"{key} announces {count} chunks, more than {MAX_PARTS} objects hold",
                                   code="MAILBOX_OBJECT_CORRUPT")
        try:
            body = join_chunks(chunks)
            batch = Batch.from_body(body, key)
        except CrdtsyncError as exc:
            raise MailboxError(f"{key}: {exc.message}", code="MAILBOX_OBJECT_CORRUPT") from None
        if batch.seq != seq:
            raise MailboxError(f"{key} holds seq {batch.seq}, not {seq}: the object was replaced",
                               code="MAILBOX_OBJECT_CORRUPT")
        return batch, registered, chain_digest(body), parts

    def read_head(self, device_id: str) -> Head | None:
        """The head of ``device_id`` in this mailbox, verified, or None when it has none."""
        key = head_key(self.tag, device_id)
        data = self.store.get(key)
        if data is None:
            return None
        body, _ = self._open(data, device_id, KIND_HEAD, key)
        return Head.from_body(body, key)

    def _put_body(self, key: str, kind: int, body: bytes) -> list[int]:
        """Seal ``body`` and write it at ``key``, its continuations first when it needs more than one object
        (so that a reader who finds the object at ``key`` finds the rest); returns the objects' sizes."""
        objects = pack_objects(self._seal(kind, body), MAX_OBJECT_BYTES)
        for part in reversed(range(len(objects))):
            self.store.put(part_key(key, part), objects[part])
        return [len(obj) for obj in objects]

    def _delete_bodies(self, folder: str, seqs: list[int]) -> None:
        """Delete our ``log`` or ``snap`` objects of ``seqs``, with their continuations when a listing shows
        any (a lagging listing leaves one behind: garbage, never read)."""
        if not seqs:
            return
        prefix = f"{devices_prefix(self.tag)}/{self.me}/{folder}"
        wanted = set(seqs)
        continuations = [name for name in self.store.list(prefix) if "." in name and parse_seq(name) in wanted]
        for name in [f"{seq:016x}" for seq in seqs] + continuations:
            self.store.delete(f"{prefix}/{name}")
