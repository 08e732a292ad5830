"""What a modified client can write into a relay: entries and heads of protocol v2 sealed with any device keys
(only the vault key is needed to seal; the keys need not be registered)."""

from __future__ import annotations

import os
import secrets

from crdtsync.crypto.envelope import KIND_UPDATE
from crdtsync.crypto.keys import DeviceKeys, vault_tag
from crdtsync.mailbox.backend import MAX_OBJECT_BYTES, open_store
from crdtsync.mailbox.sync import author_key, entry_key
from crdtsync.protocol.messages import Batch, Head, chain_digest
from crdtsync.protocol.sealing import Keyring, open_head, seal_entry, seal_head
from crdtsync.vault import Vault


def push_raw(vault: Vault, keys: DeviceKeys, update: bytes, clients: tuple[int, ...], *, url: str | None = None,
             seq: int | None = None, prev: bytes | None = None) -> None:
    """Seal ``update`` as the next log entry (or entry ``seq``, chained to ``prev``) of the device whose keys are
    ``keys``, by default chained to the entry its head in the relay names, and write it with a new head into the
    relay at ``url`` (the vault's first relay by default), as a modified client can."""
    store = open_store(url or vault.relays()[0]["url"])
    secret = vault.secrets
    keyring = Keyring(secret.vault_id, secret.epochs, secret.current_epoch, keys)
    tag = vault_tag(secret.vault_id)
    device = keys.device_id
    data = store.get(author_key(tag, device, "head"))
    head = open_head(keyring, lambda _device, _epoch: None, data, device, "head") if data else None
    seq = seq if seq is not None else (head.seq if head else 0) + 1
    prev = prev if prev is not None else head.digest if head else b""
    body = Batch(seq, update, clients, prev=prev).to_body()
    count = secrets.randbelow(2**20) + 1000
    parts, count = seal_entry(keyring, KIND_UPDATE, body, sealed_count=count, max_part_bytes=MAX_OBJECT_BYTES,
                              randbytes=os.urandom)
    for index, part in enumerate(parts):
        store.put(entry_key(tag, device, KIND_UPDATE, seq, index), part)
    new = Head(seq=seq, snap=head.snap if head else 0, first=head.first if head else 1, digest=chain_digest(body),
               n=(head.n if head else 0) + 1, acks=head.acks if head else {})
    store.put(author_key(tag, device, "head"), seal_head(keyring, new, sealed_count=count, randbytes=os.urandom))
