"""Plain records of the memory model: what the API returns and the import layer produces.

These are frozen value objects with no behaviour beyond validation and JSON shapes; the CRDT layout that
stores them lives in :mod:`crdtsync.model.schema`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from crdtsync.errors import InvalidInputError

#: Largest memory content accepted, in bytes of UTF-8 (64 KiB).
MAX_CONTENT_BYTES = 64 * 1024
#: Largest category, source, tag or agent label, in bytes of UTF-8.
MAX_LABEL_BYTES = 1024
#: Largest metadata object, in bytes of its compact JSON.
MAX_METADATA_BYTES = 16 * 1024
#: Editable fields held in multi-value registers (see the design's document schema).
REGISTER_FIELDS = ("content", "category", "source", "metadata", "deleted")

_TAG_RE = re.compile(r"^[^\x00-\x1f]+$")

JSON = dict[str, Any]


def utc_now_iso(now: datetime | None = None) -> str:
    """``now`` (default: the current time) as ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


#: A stored time: exactly what :func:`utc_now_iso` writes (24 characters).
_STORED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
#: Seconds a time claimed by a writer may lie ahead of the reading device's clock and still be believed: more
#: than any clock kept by NTP drifts, less than what would let a writer win a conflict's display for long.
MAX_CLOCK_SKEW = 600.0


def is_stored_time(value: object) -> bool:
    """Whether ``value`` is a time exactly as :func:`utc_now_iso` writes it (ISO-8601 UTC, milliseconds, ``Z``)."""
    return isinstance(value, str) and _STORED_TIME.fullmatch(value) is not None


def believable_until(now: datetime | None = None) -> str:
    """The latest claimed time a device believes: ``now`` (default: the current time) plus
    :data:`MAX_CLOCK_SKEW`, as :func:`utc_now_iso` writes it (stored times of that form compare as strings)."""
    return utc_now_iso((now or datetime.now(UTC)) + timedelta(seconds=MAX_CLOCK_SKEW))


def normalize_timestamp(value: str) -> str:
    """Parse an ISO-8601 timestamp (with or without zone; naive means UTC) and return it as :func:`utc_now_iso`
    writes it.

    Raises:
        InvalidInputError: ``value`` is not an ISO-8601 timestamp.
    """
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInputError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_now_iso(moment)


def utf8_size(name: str, text: str) -> int:
    """The size of ``text`` in bytes of UTF-8.

    Raises:
        InvalidInputError: ``text`` holds a lone surrogate (U+D800 to U+DFFF: JSON's ``"\\ud800"`` escape
            makes one), which UTF-8, Yjs and pycrdt cannot carry (pycrdt panics on it).
    """
    if text.isascii():  # one C pass; ASCII text has no surrogate and one byte per character
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{name} is not valid Unicode text: it holds a lone surrogate "
                                f"({text[exc.start]!a} at position {exc.start})") from None


def check_label(name: str, value: str | None) -> str | None:
    """Validate a free label called ``name`` in messages (a category, a tag, an agent or device name): ``None``
    or a string of at most :data:`MAX_LABEL_BYTES` bytes of UTF-8. Raises InvalidInputError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, not {type(value).__name__}")
    if utf8_size(name, value) > MAX_LABEL_BYTES:
        raise InvalidInputError(f"{name} is longer than {MAX_LABEL_BYTES} bytes")
    return value


def check_content(content: object) -> str:
    """Validate memory content: a non-empty ``str`` of at most :data:`MAX_CONTENT_BYTES` UTF-8 bytes.

    Raises:
        InvalidInputError: with code ``INVALID_INPUT`` (wrong type, empty) or ``CONTENT_TOO_LARGE``.
    """
    if not isinstance(content, str):
        raise InvalidInputError(f"content must be a string, not {type(content).__name__}")
    if not content.strip():
        raise InvalidInputError("content must not be empty")
    size = utf8_size("content", content)
    if size > MAX_CONTENT_BYTES:
        raise InvalidInputError(
            f"content is {size} bytes; the limit is {MAX_CONTENT_BYTES} bytes. Split it into several memories.",
            code="CONTENT_TOO_LARGE",
        )
    return content


def check_category(category: object) -> str | None:
    """Validate a category: ``None`` or a string of at most :data:`MAX_LABEL_BYTES` bytes."""
    return check_label("category", category)  # type: ignore[arg-type]


def check_source(source: object) -> str | None:
    """Validate a source label: ``None`` or a string of at most :data:`MAX_LABEL_BYTES` bytes."""
    return check_label("source", source)  # type: ignore[arg-type]


def check_tags(tags: object) -> frozenset[str]:
    """Validate tags: an iterable of non-empty strings without control characters, each at most
    :data:`MAX_LABEL_BYTES` bytes. A bare string is refused (it would become one tag per letter)."""
    if isinstance(tags, str | bytes) or not hasattr(tags, "__iter__"):
        raise InvalidInputError("tags must be a list of strings")
    out = set()
    for tag in tags:
        if not (isinstance(tag, str) and _valid_tag(tag)):
            _check_tag(tag)  # raises, saying what is wrong
        out.add(tag)
    return frozenset(out)


def _check_tag(tag: object) -> None:
    """Raise ``InvalidInputError`` unless ``tag`` is a non-empty string without control characters of at most
    :data:`MAX_LABEL_BYTES` bytes of UTF-8."""
    if not isinstance(tag, str) or not tag or not _TAG_RE.match(tag):
        raise InvalidInputError(f"invalid tag {tag!r}: tags are non-empty strings without control characters")
    check_label("tag", tag)


@lru_cache(maxsize=4096)
def _valid_tag(tag: str) -> bool:
    """:func:`_check_tag` as a cached test: a vault has few distinct tags, and a first sync checks every record
    it receives."""
    try:
        _check_tag(tag)
    except InvalidInputError:
        return False
    return True


def check_level(level: object) -> int:
    """Validate a level: 0 (this device only) or 1 (every device of the vault)."""
    if level not in (0, 1) or isinstance(level, bool):
        raise InvalidInputError(f"level must be 0 (this device only) or 1 (all devices), not {level!r}")
    assert isinstance(level, int)
    return level


#: Compact JSON of metadata (``json.dumps`` with these options); built once, not on every call.
_METADATA_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: Parses that JSON back (``json.loads`` without its per-call wrapping).
_METADATA_DECODER = json.JSONDecoder()


def check_metadata(metadata: object) -> JSON | None:
    """Validate metadata: ``None`` or a JSON object (``dict`` with ``str`` keys) of at most
    :data:`MAX_METADATA_BYTES` bytes as compact JSON.

    Returns a new object, the compact JSON parsed back: keys that are not strings come back as JSON makes them
    (``1`` as ``"1"``), tuples as lists, ``str``/``int``/``float``/``dict`` subclasses as the plain types.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"metadata must be a JSON object, not {type(metadata).__name__}")
    try:
        text = _METADATA_ENCODER.encode(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata is not JSON: {exc}") from exc
    if utf8_size("metadata", text) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    # The encoder's output is one value without surrounding whitespace: raw_decode gives what json.loads would.
    parsed: JSON = _METADATA_DECODER.raw_decode(text)[0]
    return parsed


@dataclass(frozen=True)
class Candidate:
    """One concurrent value of a field in conflict.

    Attributes:
        value: the value this write set (``str``, a JSON object, ``bool`` for ``deleted``, or ``None``).
        device: ``device_id`` of the writer.
        at: the writer's wall-clock time, ISO-8601 UTC, as it claimed it; a time further ahead of the reading
            device's clock than :data:`MAX_CLOCK_SKEW` (or not a time at all) is not believed: it is shown as
            the memory's creation time and ranks below every believable candidate.
        agent: the writing agent (``--agent`` / ``CRDTSYNC_AGENT``) when one was given.
    """

    value: Any
    device: str
    at: str
    agent: str | None = None

    def to_json(self) -> JSON:
        """The JSON shape ``{value, device, at}`` (plus ``agent`` when set) used by ``conflicts --json``."""
        out: JSON = {"value": self.value, "device": self.device, "at": self.at}
        if self.agent is not None:
            out["agent"] = self.agent
        return out


@dataclass(frozen=True)
class Conflict:
    """A field of one memory that holds several different concurrent values.

    Attributes:
        memory_id: the memory's id.
        field: one of :data:`REGISTER_FIELDS`.
        candidates: every concurrent value, in a deterministic order (time, then device), identical on every
            replica that holds the same updates.
    """

    memory_id: str
    field: str
    candidates: tuple[Candidate, ...]

    def to_json(self) -> JSON:
        """The JSON shape ``{memory_id, field, candidates: [{value, device, at}]}``."""
        return {
            "memory_id": self.memory_id,
            "field": self.field,
            "candidates": [c.to_json() for c in self.candidates],
        }


@dataclass(frozen=True)
class Memory:
    """One memory as the API returns it.

    Attributes:
        id: UUID string (UUIDv7 for new memories; a name-based UUID for imports).
        content: the text, at most :data:`MAX_CONTENT_BYTES` bytes of UTF-8.
        category, source: free labels or ``None``.
        tags: the set of tags.
        level: 0 = this device only, 1 = every device of the vault.
        metadata: a JSON object or ``None``.
        created, updated: ISO-8601 UTC.
        created_by, updated_by: ``device_id`` of the writer.
        deleted: true when the memory is deleted (``restore`` undoes it).
        conflicts: the fields of this memory currently in conflict.
    """

    id: str
    content: str
    category: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)
    level: int = 1
    source: str | None = None
    metadata: JSON | None = None
    created: str = ""
    updated: str = ""
    created_by: str = ""
    updated_by: str = ""
    deleted: bool = False
    conflicts: tuple[str, ...] = ()

    def to_json(self) -> JSON:
        """The JSON object of ``list --json``/``show --json``: keys id, content, category, tags (sorted),
        level, source, metadata, created, updated (plus created_by, updated_by, deleted, conflicts)."""
        return {
            "id": self.id,
            "content": self.content,
            "category": self.category,
            "tags": sorted(self.tags),
            "level": self.level,
            "source": self.source,
            "metadata": self.metadata,
            "created": self.created,
            "updated": self.updated,
            "created_by": self.created_by,
            "updated_by": self.updated_by,
            "deleted": self.deleted,
            "conflicts": list(self.conflicts),
        }
