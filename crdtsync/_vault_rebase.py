"""Re-applying what a restored device wrote before its first sync, behind :meth:`crdtsync.vault.Vault.rebase_unpushed`.

A device whose vault folder and state folder were restored from a backup (a whole home folder restored, or
copied to a new phone) writes under the Yjs clocks of the writes the backup lost. Its next push sees the mailbox
ahead of its push state and finds those Items (:meth:`crdtsync.mailbox.sync.Mailbox.push`). Other devices hold the
lost writes under those IDs and would ignore the new ones, so the new writes are taken out of the vault
(:meth:`crdtsync.store.replica.Replica.drop_unpushed`), and what they left each memory looking like is written
again as ordinary edits under a fresh client id, before the push takes the lost writes back: the two are then
concurrent, as they were, and a field both changed shows both values as a conflict. What to re-apply is stored
in ``meta`` in the transaction that takes the writes out, so a crash in between loses nothing: the next push
re-applies it (after the lost writes, if it took them back first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from crdtsync import _vault_memories
from crdtsync.model.records import REGISTER_FIELDS
from crdtsync.store.db import Store
from crdtsync.store.replica import Replica

#: ``meta`` key of the memories to re-apply: a JSON array of :meth:`Memory.to_json` objects.
INTENTS_META = "rebase-intents"
#: The alarm that tells the user it happened.
ALARM = "DEVICE_RESTORED"


def rebase_unpushed(store: Store, replica: Replica, updates: Sequence[tuple[int, bytes]], relay: str) -> None:
    """Take this device's logged updates ``updates`` ((update id, Yjs v1 bytes)) out of the vault and keep, in
    ``meta``, every memory they touched as this device showed it, for :func:`reapply`.

    Raises:
        VaultError: ``DEVICE_CLOCKS_REUSED`` when they cannot be taken out (a snapshot already holds them).
    """

    def keep(touched: set[str]) -> None:
        intents = [memory.to_json() for memory_id in sorted(touched) if (memory := store.memory(memory_id))]
        store.set_meta(INTENTS_META, json.dumps(intents))
        store.raise_alarm(ALARM, (
            "this device was restored from a backup together with its state folder (or copied), and wrote before "
            f"syncing: those writes reused the Yjs clocks of writes the backup lost, which relay {relay} still "
            f"held. They were taken out and written again under a new client id ({len(intents)} memories), on "
            "top of the lost writes, which came back; where both changed one field, it shows a conflict."),
            relay=relay)

    replica.drop_unpushed(updates, keep)


def reapply(store: Store, replica: Replica) -> int:
    """Write the memories a rebase stored in ``meta`` as they were (a no-op when there are none); clears them.
    Returns how many were written."""
    raw = store.get_meta(INTENTS_META)
    intents: list[dict[str, Any]] = json.loads(raw) if raw else []
    for intent in intents:
        _write_as(store, replica, intent)
    if intents:
        with store.write():
            store.set_meta(INTENTS_META, "")
    return len(intents)


def _write_as(store: Store, replica: Replica, intent: dict[str, Any]) -> None:
    """Edit memory ``intent["id"]`` so that it shows ``intent`` (fields, tags, level, deleted), writing only
    what differs; create it with that id when the vault no longer has it."""
    memory_id = intent["id"]
    values = {name: intent[name] for name in REGISTER_FIELDS if name != "deleted"}
    current = store.memory(memory_id)
    if current is None:
        _vault_memories.add_record(store, replica, memory_id, level=intent["level"], created=intent["created"],
                                   tags=intent["tags"], **values)
        current = _vault_memories.require(store, memory_id)
    changes: dict[str, Any] = {name: value for name, value in values.items() if getattr(current, name) != value}
    if current.tags != frozenset(intent["tags"]):
        changes["tags"] = intent["tags"]
    if current.level != intent["level"]:
        changes["level"] = intent["level"]
    elif intent["level"] == 0:  # moved out of the Doc by the dropped writes: the rebuilt Doc has it again
        replica.ensure_lease_registered()
        ctx = replica.context()
        replica.local_write(lambda doc: doc.withdraw(memory_id, ctx), ())
    if changes:
        if current.deleted:  # a deleted memory takes no edit: restore, edit, and delete again below
            _vault_memories.set_deleted(store, replica, memory_id, False)
        current = _vault_memories.update(store, replica, memory_id, changes)
    if current.deleted != intent["deleted"]:
        _vault_memories.set_deleted(store, replica, memory_id, intent["deleted"])
