"""Single-memory writes behind :class:`crdtsync.vault.Vault`: add, update, delete or restore, resolve.

A level-1 memory is written into the shared Doc through the :class:`~crdtsync.store.replica.Replica` (which
stores its rows in the same SQLite transaction); a level-0 memory never enters the Doc and is written straight
into SQLite; a change of level moves a memory from one to the other. Every function returns the memory as
stored once its write has committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdtsync.errors import InvalidInputError, NotFoundError
from crdtsync.model.records import REGISTER_FIELDS, Memory, check_level, check_tags, utc_now_iso
from crdtsync.model.schema import MemoryDoc, check_field
from crdtsync.store.db import Store
from crdtsync.store.replica import Replica


def require(store: Store, memory_id: str) -> Memory:
    """The memory ``memory_id`` in ``store``. Raises ``NotFoundError``."""
    memory = store.memory(memory_id)
    if memory is None:
        raise NotFoundError(f"no memory with id {memory_id}; `crdtsync list` shows the ids")
    return memory


def add_record(
    store: Store, replica: Replica, memory_id: str, *, level: int, created: str | None, **values: Any
) -> Memory:
    """Add memory ``memory_id`` with the already checked ``values`` (``created`` None: now)."""
    if level == 0:
        now = utc_now_iso()
        memory = Memory(id=memory_id, level=0, created=created or now, updated=now,
                        created_by=replica.device_id, updated_by=replica.device_id, **values)
        with store.write():
            store.put_memory(memory, [])
        return memory
    replica.ensure_lease_registered()
    ctx = replica.context()
    replica.local_write(lambda d: d.add(memory_id, ctx, created=created, **values), [memory_id])
    return require(store, memory_id)


def update(store: Store, replica: Replica, memory_id: str, fields: dict[str, Any]) -> Memory:
    """Check and apply the edit ``fields`` (the keywords of :meth:`crdtsync.vault.Vault.update`) to memory
    ``memory_id``."""
    memory = require(store, memory_id)
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
        if level == 0 and memory.conflicts:
            raise InvalidInputError(
                f"memory {memory_id} has conflicts on {', '.join(memory.conflicts)}: moving it to level 0 would "
                f"drop the other candidates from every device; `crdtsync conflicts` shows them, resolve first",
                code="MEMORY_CONFLICTED")
        return _move_level(store, replica, memory, level, changes, add_tags, remove_tags)
    if memory.level == 0:
        updated = _apply_local(memory, changes, add_tags, remove_tags, replica.device_id)
        with store.write():
            store.put_memory(updated, [])
        return updated
    replica.ensure_lease_registered()
    ctx = replica.context()

    def edit(doc: MemoryDoc) -> None:
        with doc.doc.transaction():
            doc.write(memory_id, ctx, changes)
            if add_tags or remove_tags:
                doc.set_tags(memory_id, ctx, add_tags, remove_tags)

    replica.local_write(edit, [memory_id])
    return require(store, memory_id)


def _move_level(
    store: Store, replica: Replica, memory: Memory, level: int, changes: dict[str, Any], add_tags: set[str],
    remove_tags: set[str],
) -> Memory:
    """Apply the edit to ``memory`` and move it to ``level``: out of the Doc into a local row (0), or from its
    local row into the Doc (1)."""
    moved = _apply_local(memory, changes, add_tags, remove_tags, replica.device_id)
    replica.ensure_lease_registered()
    ctx = replica.context()
    if level == 0:
        def to_local(doc: MemoryDoc) -> None:
            doc.withdraw(memory.id, ctx)
            store.put_memory(Memory(**{**moved.__dict__, "level": 0, "conflicts": ()}), [])

        replica.local_write(to_local, ())
    else:
        def to_shared(doc: MemoryDoc) -> None:
            store.drop_memory(memory.id)
            doc.share(memory.id, ctx, created=moved.created, content=moved.content, category=moved.category,
                      tags=moved.tags, source=moved.source, metadata=moved.metadata)

        replica.local_write(to_shared, [memory.id])
    return require(store, memory.id)


def set_deleted(store: Store, replica: Replica, memory_id: str, deleted: bool) -> Memory:
    """Write ``deleted`` to memory ``memory_id`` (delete or restore it)."""
    memory = require(store, memory_id)
    if memory.level == 0:
        with store.write():
            store.put_memory(Memory(**{**memory.__dict__, "deleted": deleted, "updated": utc_now_iso()}), [])
        return require(store, memory_id)
    replica.ensure_lease_registered()
    ctx = replica.context()
    replica.local_write(lambda d: d.write(memory_id, ctx, {"deleted": deleted}), [memory_id])
    return require(store, memory_id)


def resolve(store: Store, replica: Replica, memory_id: str, field: str, value: Any) -> Memory:
    """Write the checked ``value`` to ``field`` of memory ``memory_id`` (settles a conflict on it)."""
    require(store, memory_id)
    value = check_field(field, value)
    replica.ensure_lease_registered()
    ctx = replica.context()
    replica.local_write(lambda d: d.write(memory_id, ctx, {field: value}), [memory_id])
    return require(store, memory_id)


def _apply_local(memory: Memory, changes: Mapping[str, Any], add_tags: set[str], remove_tags: set[str],
                 device: str) -> Memory:
    """``memory`` with the register ``changes`` and tag changes applied, stamped as updated now by
    ``device``."""
    values = {**memory.__dict__, **{k: v for k, v in changes.items() if k in REGISTER_FIELDS}}
    values["tags"] = frozenset((memory.tags - remove_tags) | add_tags)
    values["updated"] = utc_now_iso()
    values["updated_by"] = device
    return Memory(**values)
