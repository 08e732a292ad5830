"""Document schema v1: memories as multi-value registers on a pycrdt (Yjs) Doc.

Layout (fixed for v1; README.md "Document schema" is the spec):

- root ``memories``: Map ``memory_id -> Map record``; a record Map holds
  - ``created`` -> ``[ISO-8601 UTC time, device_id]``: when and by which device the record was created
    (written once; one key rather than two saves a Yjs item per memory);
  - keys ``t:<tag>@<op_id>`` -> ``true``: an observed-remove (add-wins) set. A tag is present while any entry
    for it exists; adding a tag that is absent inserts an entry with a fresh op id, removing it deletes the
    entries this replica sees, so an add concurrent with a remove survives (Y.Map alone would keep one winner
    per key and could drop the add);
  - register entries ``<field>@<op_id>`` -> ``[value]`` or ``[value, by, at]`` or ``[value, by, at, agent]``
    for ``field`` in content, category, source, metadata, deleted. The entries written when the record is
    created take the empty op id (``content@``, ``t:<tag>@``) and, when they carry no by/at, are stored as the
    bare value rather than ``[value]`` (no field value is a list); every later write takes a fresh random op id.
    A missing ``by``/``at`` means the record's creating device and time (the entries written by ``add``),
    which keeps the layout compact. ``metadata`` is stored as compact JSON text because Yjs ``Any`` turns
    integers into floats.
- root ``devices``: Map ``device_id -> Map {name, sign_pk, kx_pk (hex), added_by, added_at, revoked_at?,
  "c:<client_id>": true, "e:<epoch>:<digest>": statement}`` (the Yjs client ids that device writes with, and
  the epoch statements it made: :mod:`crdtsync.crypto.epochs`, as unpadded base64url of their bytes, keyed by
  their epoch and the first 8 bytes of their digest in hex). A statement travels as part of its author's
  own entry, which only its author may write, so it reaches every device by every path and survives
  compaction.
- root ``vault``: Map ``{schema: 1, name}``.

A write deletes every entry of the register that this replica sees and inserts one new entry, in one
transaction. After a merge: one entry, or several with equal values, is a settled value; several different
values are a :class:`~crdtsync.model.records.Conflict`, identical on every replica with the same updates.
Every edit also rewrites ``deleted`` to false, so a delete concurrent with an edit is a conflict on
``deleted`` rather than a silent loss.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map

from crdtsync.errors import InvalidInputError, NotFoundError
from crdtsync.model.records import (
    MAX_METADATA_BYTES,
    REGISTER_FIELDS,
    Candidate,
    Conflict,
    Memory,
    check_category,
    check_content,
    check_metadata,
    check_source,
    check_tags,
    is_stored_time,
)

SCHEMA_VERSION = 1
ROOT_MEMORIES = "memories"
ROOT_DEVICES = "devices"
ROOT_VAULT = "vault"
ROOTS = frozenset({ROOT_MEMORIES, ROOT_DEVICES, ROOT_VAULT})
TAG_PREFIX = "t:"
#: The content kinds (:attr:`crdtsync.model.yupdate.DecodedUpdate.kinds`) a schema-v1 update may carry: Any
#: values, deleted content and Maps. A received update with any other kind is refused before a Doc sees it.
CONTENT_KINDS = frozenset({"any", "deleted", "type:map"})
CLIENT_PREFIX = "c:"
#: Registry keys of a device's epoch statements: ``e:<epoch>:<16 hex characters of the digest>``.
STATEMENT_PREFIX = "e:"
#: The longest memory id a record may have, in characters (crdtsync writes 36-character UUIDs).
MAX_MEMORY_ID = 128

OpIdFactory = Callable[[], str]
#: How a record's creation time that is not believed (far ahead of the reader's clock, or not a time) is shown.
UNBELIEVED_TIME = "1970-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class WriteContext:
    """Who writes and when: ``device`` is the writer's device_id, ``at`` its wall time (ISO-8601 UTC, shown to
    people only), ``agent`` the writing agent label or ``None``, ``new_op_id`` returns a fresh short random id
    (unique within one register; the caller supplies randomness so tests can control it)."""

    device: str
    at: str
    new_op_id: OpIdFactory
    agent: str | None = None


#: How metadata is stored in a register entry: compact JSON text with sorted keys (built once: ``json.dumps``
#: with options builds an encoder on every call).
_STORED_METADATA = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _encode_value(field: str, value: Any) -> Any:
    if field == "metadata" and value is not None:
        return _STORED_METADATA.encode(value)
    return value


def _decode_value(field: str, raw: Any) -> Any:
    if field == "metadata" and raw is not None:
        return json.loads(raw)
    return raw


def check_field(field: str, value: Any) -> Any:
    """Validate ``value`` for register ``field`` (one of ``REGISTER_FIELDS``) and return it normalised.

    Raises:
        InvalidInputError: unknown field (code ``INVALID_FIELD``) or a value the field does not accept.
    """
    if field == "content":
        return check_content(value)
    if field == "category":
        return check_category(value)
    if field == "source":
        return check_source(value)
    if field == "metadata":
        return check_metadata(value)
    if field == "deleted":
        if not isinstance(value, bool):
            raise InvalidInputError("deleted must be true or false")
        return value
    raise InvalidInputError(f"unknown field {field!r}; fields are {', '.join(REGISTER_FIELDS)}", code="INVALID_FIELD")


class MemoryDoc:
    """Schema-v1 operations on one pycrdt ``Doc``. Pure: no IO, time or randomness of its own.

    Every method that writes runs in one Doc transaction; callers that batch (imports) may wrap several calls
    in an outer ``doc.transaction()``.
    """

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.memories: Map[Any] = doc.get(ROOT_MEMORIES, type=Map)
        self.devices: Map[Any] = doc.get(ROOT_DEVICES, type=Map)
        self.vault: Map[Any] = doc.get(ROOT_VAULT, type=Map)

    # -- memories ---------------------------------------------------------------------------------------

    def add(
        self,
        memory_id: str,
        ctx: WriteContext,
        *,
        content: str,
        category: str | None = None,
        tags: Iterable[str] = (),
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created: str | None = None,
    ) -> None:
        """Insert a new memory. ``created`` defaults to ``ctx.at``. Values must already be validated
        (:func:`check_field`). Raises ``InvalidInputError`` (code ``ALREADY_EXISTS``) if the id exists."""
        entry_tail: list[Any] = [] if ctx.agent is None else [ctx.device, ctx.at, ctx.agent]
        record: dict[str, Any] = {"created": [created or ctx.at, ctx.device]}
        values = {"content": content, "category": category, "source": source, "metadata": metadata}
        # The creating write's entries take the empty op id: written once per record Map, never again (later
        # writes and tag adds take fresh op ids), which saves ~40 bytes per memory.
        for field, value in values.items():
            if value is not None:
                encoded = _encode_value(field, value)
                record[f"{field}@"] = [encoded, *entry_tail] if entry_tail else encoded
        for tag in tags:
            record[f"{TAG_PREFIX}{tag}@"] = True
        with self.doc.transaction() as txn:
            # What ``self.memories[memory_id] = Map(record)`` does, calling the same yrs methods pycrdt calls
            # (insert_map_prelim, then insert per key) without its Python wrapper around each key: the same
            # update bytes (tested), 2.6x faster, which is most of a bulk import's Doc time.
            raw_txn, memories = txn._txn, self.memories.integrated
            if memories.has(raw_txn, memory_id):
                raise InvalidInputError(f"memory {memory_id} already exists", code="ALREADY_EXISTS")
            record_map = memories.insert_map_prelim(raw_txn, memory_id)
            for key, value in record.items():
                record_map.insert(raw_txn, key, value)

    def _record(self, memory_id: str) -> Map[Any]:
        record = self.memories.get(memory_id)
        if not isinstance(record, Map):
            raise NotFoundError(f"no memory with id {memory_id}")
        return record

    def write(self, memory_id: str, ctx: WriteContext, changes: Mapping[str, Any]) -> None:
        """Write register fields of one memory: ``changes`` maps field names to validated values. Each field
        write deletes the entries this replica sees and inserts one. Unless ``deleted`` itself is written,
        ``deleted`` is rewritten to false so that a concurrent delete surfaces as a conflict.

        Raises:
            NotFoundError: no such memory.
            InvalidInputError: unknown field (``INVALID_FIELD``).
        """
        record = self._record(memory_id)
        fields = dict(changes)
        if "deleted" not in fields:
            fields["deleted"] = False
        with self.doc.transaction():
            existing = list(record.keys())
            for field, value in fields.items():
                if field not in REGISTER_FIELDS:
                    raise InvalidInputError(f"unknown field {field!r}", code="INVALID_FIELD")
                prefix = field + "@"
                for key in existing:
                    if key.startswith(prefix):
                        del record[key]
                entry: list[Any] = [_encode_value(field, value), ctx.device, ctx.at]
                if ctx.agent is not None:
                    entry.append(ctx.agent)
                record[f"{prefix}{ctx.new_op_id()}"] = entry

    def set_tags(self, memory_id: str, ctx: WriteContext, add: Iterable[str], remove: Iterable[str]) -> None:
        """Add and remove tags of one memory (an observed-remove set: a removal deletes the entries this replica
        sees; an add of an absent tag inserts a fresh entry) and mark the memory edited (``deleted`` false).

        Raises:
            NotFoundError: no such memory.
        """
        record = self._record(memory_id)
        with self.doc.transaction():
            entries = _tag_entries(list(record.keys()))
            for tag in check_tags(list(remove)):
                for key in entries.get(tag, ()):
                    del record[key]
                entries.pop(tag, None)
            for tag in check_tags(list(add)):
                if tag not in entries:
                    record[f"{TAG_PREFIX}{tag}@{ctx.new_op_id()}"] = True
            self.write(memory_id, ctx, {})

    def resurface(self, memory_id: str, ctx: WriteContext, lost: Mapping[str, Any]) -> bool:
        """Re-insert what a replaced record held: when two replicas create the same memory id concurrently
        (the same file imported on both before they sync), Y.Map keeps one record Map and drops the other with
        every edit made inside it. ``lost`` is the dropped record as this replica held it just before
        (``Map.to_py()``). Every register entry it held is re-added to the surviving record with its original
        value, time and agent (equal values included, so that a later edit that never saw them cannot
        silently remove them), never deleting the survivor's entries: a divergence surfaces as a conflict
        instead of vanishing. Its creating entries are skipped when they are the same creation as the
        survivor's (the same value in the survivor's creating entry, or the same ``created`` time: the same
        imported record). Its tags are re-added. The re-added entries are this device's writes (``ctx.device``):
        a device writes only under its own name (README "What a hostile device can do"). Returns whether anything
        was written."""
        record = self.memories.get(memory_id)
        stamp = lost.get("created")
        if not isinstance(record, Map) or not (isinstance(stamp, list) and len(stamp) == 2):
            return False
        survivor = record.to_py() or {}
        survivor_stamp = survivor.get("created")
        same_creation = isinstance(survivor_stamp, list) and survivor_stamp[:1] == stamp[:1]
        wrote = False
        try:
            registers = _read_entries(lost, str(stamp[0]), str(stamp[1]))[0]
        except ValueError:
            registers = {}
        with self.doc.transaction():
            for field in REGISTER_FIELDS:
                for _, at, _, op_id, value, agent in registers.get(field, ()):
                    if op_id == "":
                        created_as = survivor.get(f"{field}@")
                        created_value = created_as[0] if isinstance(created_as, list) else created_as
                        if same_creation or (f"{field}@" in survivor and
                                             _decode_value(field, created_value) == value):
                            continue
                    entry: list[Any] = [_encode_value(field, value), ctx.device, at]
                    if agent is not None:
                        entry.append(agent)
                    record[f"{field}@{ctx.new_op_id()}"] = entry
                    wrote = True
            present = set(_tag_entries(survivor))
            for tag in sorted(set(_tag_entries(lost)) - present):
                record[f"{TAG_PREFIX}{tag}@{ctx.new_op_id()}"] = True
                wrote = True
        return wrote

    def withdraw(self, memory_id: str, ctx: WriteContext) -> None:
        """Take a memory out of the shared vault (it moves to level 0): delete every register and tag entry of
        its record this replica sees and write ``deleted`` true, keeping the record Map and its ``created``
        stamp. The record then holds no content, so every replica shows it as absent, and Yjs garbage
        collection drops the deleted values from the encoded state. An edit another device made concurrently
        (which this replica did not see) keeps its entries: the record comes back there and here with that
        edit and a conflict on ``deleted``, rather than the edit vanishing inside a removed Map. A no-op when
        the Doc holds no such record."""
        record = self.memories.get(memory_id)
        if not isinstance(record, Map):
            return
        with self.doc.transaction():
            for key in list(record.keys()):
                if key != "created":
                    del record[key]
            entry: list[Any] = [True, ctx.device, ctx.at]
            if ctx.agent is not None:
                entry.append(ctx.agent)
            record[f"deleted@{ctx.new_op_id()}"] = entry

    def share(self, memory_id: str, ctx: WriteContext, *, created: str, content: str, category: str | None,
              tags: Iterable[str], source: str | None, metadata: Mapping[str, Any] | None) -> None:
        """Put a memory kept on this device only (level 0) into the shared Doc with these validated values: add
        its record, or write every field into the record :meth:`withdraw` left, stamped by ``ctx`` either way
        (its ``updated`` moves forward)."""
        with self.doc.transaction():
            if memory_id not in self.memories:
                self.add(memory_id, ctx, created=created, content=content, category=category, tags=tags,
                         source=source, metadata=metadata)
                self.write(memory_id, ctx, {})
                return
            record = self._record(memory_id)
            present = set(_tag_entries(list(record.keys())))
            for tag in sorted(set(tags) - present):
                record[f"{TAG_PREFIX}{tag}@{ctx.new_op_id()}"] = True
            self.write(memory_id, ctx, {"content": content, "category": category, "source": source,
                                        "metadata": metadata})

    def memory_ids(self) -> list[str]:
        """Every memory id in the Doc, deleted ones included."""
        return list(self.memories.keys())

    def read(self, memory_id: str, bound: str | None = None) -> tuple[Memory, list[Conflict]] | None:
        """The current state of one memory and its conflicts, or ``None`` when the Doc has no such record or
        the record is not a valid v1 record (see :func:`read_record`, which takes ``bound``)."""
        record = self.memories.get(memory_id)
        if not isinstance(record, Map):
            return None
        return read_record(memory_id, record.to_py() or {}, bound)

    # -- registry and vault ------------------------------------------------------------------------------

    def register_device(self, device_id: str, info: Mapping[str, str], client_ids: Iterable[int]) -> None:
        """Create or extend the registry entry of ``device_id``: ``info`` fields (name, sign_pk, kx_pk,
        added_by, added_at; strings) are written when absent, and each Yjs client id is announced."""
        with self.doc.transaction():
            entry = self.devices.get(device_id)
            if not isinstance(entry, Map):
                entry = Map({})
                self.devices[device_id] = entry
            for key, value in info.items():
                if key not in entry:
                    entry[key] = value
            for client_id in client_ids:
                key = f"{CLIENT_PREFIX}{client_id}"
                if key not in entry:
                    entry[key] = True

    def rename_device(self, device_id: str, name: str) -> None:
        """Write ``name`` into ``device_id``'s registry entry (the only field a device rewrites). The entry must
        exist."""
        entry = self.devices.get(device_id)
        if not isinstance(entry, Map):
            raise ValueError(f"device {device_id} has no registry entry to rename")
        entry["name"] = name

    def publish_statement(self, device_id: str, key: str, value: str) -> None:
        """Write an epoch statement into ``device_id``'s own registry entry under ``key``
        (:func:`statement_key`) as ``value`` (:func:`statement_value`). The entry must exist."""
        entry = self.devices.get(device_id)
        if not isinstance(entry, Map):
            raise ValueError(f"device {device_id} has no registry entry to publish a statement in")
        entry[key] = value

    def registry(self) -> dict[str, dict[str, Any]]:
        """The device registry as ``{device_id: {name, sign_pk, kx_pk, added_by, added_at, revoked_at?,
        clients: sorted list of client ids, statements: {key: value}}}``."""
        return {device_id: registry_entry(entry.to_py() or {}) for device_id, entry in self.devices.items()
                if isinstance(entry, Map)}

    def set_vault_info(self, name: str) -> None:
        """Write the ``vault`` root: ``{schema: 1, name}``."""
        with self.doc.transaction():
            self.vault["schema"] = SCHEMA_VERSION
            self.vault["name"] = name


def registry_entry(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One device's registry Map (as plain values) in the shape :meth:`MemoryDoc.registry` returns: its
    fields, and ``clients``, the sorted Yjs client ids announced as ``c:<client_id>`` keys."""
    info = {k: v for k, v in raw.items() if not k.startswith((CLIENT_PREFIX, STATEMENT_PREFIX))}
    info["clients"] = sorted(int(k[len(CLIENT_PREFIX) :]) for k in raw if k.startswith(CLIENT_PREFIX))
    info["statements"] = {k: v for k, v in sorted(raw.items()) if k.startswith(STATEMENT_PREFIX)}
    return info


def statement_key(epoch: int, digest: bytes) -> str:
    """The registry key of a statement of ``epoch`` whose digest (32 bytes) is ``digest``."""
    return f"{STATEMENT_PREFIX}{epoch}:{digest[:8].hex()}"


def statement_value(data: bytes) -> str:
    """A statement's bytes as stored in the registry: unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def statement_bytes(value: object) -> bytes | None:
    """The bytes a registry statement value holds, or None when it is not canonical unpadded base64url."""
    if not isinstance(value, str) or not value.isascii():
        return None
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        return None
    return data if statement_value(data) == value else None


def _tag_entries(keys: Iterable[str]) -> dict[str, list[str]]:
    """Tag entry keys grouped by tag name: ``{tag: ["t:<tag>@<op>", ...]}``."""
    out: dict[str, list[str]] = {}
    for key in keys:
        if key.startswith(TAG_PREFIX) and "@" in key:
            out.setdefault(key[len(TAG_PREFIX) :].rsplit("@", 1)[0], []).append(key)
    return out


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is not a finite number")
    return value


def _read_metadata(raw: Any) -> Any:
    """Stored metadata (compact JSON text, or None) read back and validated as :func:`check_metadata` would."""
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ValueError("metadata must be JSON text of at most MAX_METADATA_BYTES bytes")
    value = _METADATA_JSON.decode(raw)
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    return value


def _read_deleted(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError("deleted must be true or false")
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Reads stored metadata text: like ``json.loads``, but NaN, Infinity and overflowing numbers are refused.
_METADATA_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
#: The value of a stored register entry by field, validated as :func:`check_field` validates the decoded value
#: (``metadata`` is stored as compact JSON text). Each raises InvalidInputError, ValueError or TypeError.
_READ_VALUE: dict[str, Callable[[Any], Any]] = {
    "content": check_content, "category": check_category, "source": check_source, "metadata": _read_metadata,
    "deleted": _read_deleted,
}


#: One register entry as :func:`_read_entries` reads it: ``(believed, at, device, op_id, value, agent)``. Tuples in
#: this order sort by (believed, time, device, op id), the order that settles a register: a candidate whose claimed
#: time is not believed ranks below every other; op ids are unique within one register.
_RegisterEntry = tuple[bool, str, str, str, Any, "str | None"]
_MALFORMED_ENTRY = "a register entry of the wrong shape or type"


@dataclass
class EntryAudit:
    """What :func:`check_record` saw of who wrote a record's register entries, when given one to fill (the
    attribution check of a received record, :func:`crdtsync.model.authorship.check_attribution`, in the same pass
    as the schema check): ``writers``, the devices the entries with an explicit ``by`` name; ``bad_time``, whether
    one of them claims a time that is not a stored time; ``latest``, the latest claimed time of those that are."""

    writers: set[str] = dataclasses.field(default_factory=set)
    bad_time: bool = False
    latest: str = ""


def _read_entries(record: Mapping[str, Any], created: str, creator: str, bound: str | None = None,
                  audit: EntryAudit | None = None) -> tuple[dict[str, list[_RegisterEntry]], set[str]]:
    """Every register's current entries by field name, each list sorted by (believed, time, device, op id), and
    the tag names present. One pass over the record's keys with no object per entry: this runs once per received
    record, 100k times on a first sync. Keys of neither kind are left alone. With ``bound`` (a stored time, see
    :func:`crdtsync.model.records.believable_until`), a claimed time later than it, or that is not a stored time,
    is not believed: the entry reads with the record's ``created`` time as its own (a time that does not move with
    the reader's clock, so every reading shows the same) and ranks below the believed ones.

    Entries without by/at take ``created`` and ``creator`` (the caller has already judged ``created``). ``audit``
    is filled as :class:`EntryAudit` says.

    Raises:
        ValueError: a register entry of the wrong shape or type, or a tag entry that is not ``true`` or has no op
            id. Tag names are not checked here.
    """
    registers: dict[str, list[_RegisterEntry]] = {}
    tags: set[str] = set()
    for key, raw in record.items():
        if key.startswith(TAG_PREFIX):
            tag, at_sign, _ = key[len(TAG_PREFIX) :].rpartition("@")
            if raw is not True or not at_sign:
                raise ValueError(f"tag entry {key[:40]!r} is not true")
            tags.add(tag)
            continue
        field, at_sign, op_id = key.partition("@")
        read = _READ_VALUE.get(field) if at_sign else None
        if read is None:
            continue
        believed = True
        if not isinstance(raw, list):
            if op_id:  # only the creating entry is stored bare (no field value is a list)
                raise ValueError(_MALFORMED_ENTRY)
            by, at, agent = creator, created, None
        elif len(raw) == 1:
            by, at, agent, raw = creator, created, None, raw[0]
        elif len(raw) in (3, 4):
            by, at, agent, raw = raw[1], raw[2], raw[3] if len(raw) == 4 else None, raw[0]
            if not isinstance(by, str) or not isinstance(at, str) or not (agent is None or isinstance(agent, str)):
                raise ValueError(_MALFORMED_ENTRY)
            timed = is_stored_time(at)
            if audit is not None:
                audit.writers.add(by)
                if not timed:
                    audit.bad_time = True
                elif at > audit.latest:
                    audit.latest = at
            if bound is not None and not (timed and at <= bound):
                believed, at = False, created
        else:
            raise ValueError(_MALFORMED_ENTRY)
        try:
            value = read(raw)
        except (InvalidInputError, ValueError, TypeError, RecursionError):
            raise ValueError(_MALFORMED_ENTRY) from None
        entry = (believed, at, by, op_id, value, agent)
        entries = registers.get(field)
        if entries is None:
            registers[field] = [entry]
        else:
            entries.append(entry)
            entries.sort()
    return registers, tags


def check_record(memory_id: str, record: Mapping[str, Any], bound: str | None = None,
                 audit: EntryAudit | None = None) -> tuple[Memory, list[Conflict]] | None:
    """Interpret one record Map (as plain Python, from ``Map.to_py()``) under schema v1. ``bound`` is the latest
    claimed time the reading device believes (:func:`crdtsync.model.records.believable_until`; None believes
    every time): a later one, or one that is not a time, is shown as the record's creation time (a creation
    time not believed as :data:`UNBELIEVED_TIME`) and never settles a conflict. ``audit``, when given, is filled
    in the same pass (:class:`EntryAudit`).

    Returns the memory and its conflicts, or ``None`` when the record is well formed but incomplete: it holds
    no live content entry. One device's part of the Doc can be such a partial view: its snapshot or first push
    carries the whole delete set its Doc knows, so a content entry it wrote and another device replaced is
    deleted there, while the replacing entry comes with that other device's update. Such a record shows as
    absent until the rest arrives. The settled value of a field in conflict is its latest believed candidate (by
    time, then device, then op id), so every replica shows the same value (while the writers' clocks are within
    :data:`crdtsync.model.records.MAX_CLOCK_SKEW` of the readers').

    Raises:
        ValueError: the record is malformed: a missing or wrongly typed ``created`` stamp, a register entry of
            the wrong shape or type, a tag entry that is not ``true``, or a tag name :func:`check_tags` refuses
            (empty, a control character, longer than 1 KiB), or a memory id that is empty, longer than
            :data:`MAX_MEMORY_ID` characters or holds a control character (crdtsync writes UUIDs).
    """
    if not 0 < len(memory_id) <= MAX_MEMORY_ID or not memory_id.isprintable():
        raise ValueError("a memory id must be 1 to 128 printable characters")
    stamp = record.get("created")
    if not isinstance(stamp, list) or len(stamp) != 2 or not isinstance(stamp[0], str) \
            or not isinstance(stamp[1], str):
        raise ValueError("missing or wrongly typed created stamp")
    created, created_by = stamp
    if bound is not None and not (is_stored_time(created) and created <= bound):
        created = UNBELIEVED_TIME
    registers, tag_names = _read_entries(record, created, created_by, bound, audit)
    try:
        tags = check_tags(tag_names)
    except InvalidInputError as exc:
        raise ValueError(exc.message) from None
    if "content" not in registers:
        return None
    values: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    updated, updated_by = created, created_by
    for field in REGISTER_FIELDS:  # a fixed order: yrs may list a Map's keys in another order on each replica
        entries = registers.get(field)
        if not entries:
            continue
        _, at, device, _, value, _ = entries[-1]  # the latest by (believed, time, device, op id)
        values[field] = value
        if len(entries) > 1 and any(entry[4] != value for entry in entries):
            candidates = tuple(Candidate(value=v, device=d, at=a, agent=agent) for _, a, d, _, v, agent in entries)
            conflicts.append(Conflict(memory_id=memory_id, field=field, candidates=candidates))
        if (at, device) > (updated, updated_by):
            updated, updated_by = at, device
    deleted = bool(values.get("deleted")) and not any(c.field == "deleted" for c in conflicts)
    memory = Memory(memory_id, values["content"], values.get("category"), tags, 1, values.get("source"),
                    values.get("metadata"), created, updated, created_by, updated_by, deleted,
                    tuple(c.field for c in conflicts))
    return memory, conflicts


def read_record(memory_id: str, record: Mapping[str, Any], bound: str | None = None,
                ) -> tuple[Memory, list[Conflict]] | None:
    """:func:`check_record`, with ``None`` for a malformed record too: the memory and its conflicts when the
    record is complete and well formed, else ``None``."""
    try:
        return check_record(memory_id, record, bound)
    except ValueError:
        return None
