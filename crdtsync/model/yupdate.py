"""Strict reader of Yjs v1 updates, run on every update from outside this process.

pycrdt 0.14.13 (yrs 0.28.0) trusts update bytes: it wraps over-long u32 clocks, reads strings with
``from_utf8_unchecked``, allocates whatever a count says and recurses without a depth limit, so crafted
updates panic, jump clocks, corrupt memory or hang it (see the design's "Trust boundaries"). This module
decodes the bytes exactly and on its own, before yrs sees them: :func:`decode_update` says which clock
ranges an update fills and which IDs it needs. :mod:`crdtsync.model.ystate` says whether those are all
present locally and what the state vector must become once the update is applied, and reads and writes
state vectors.

The format is Yjs v1 on lib0 encoding: yjs ``src/utils/UpdateDecoder.js`` (``UpdateDecoderV1``),
``src/structs/Item.js`` (``readItem``, ``contentRefs``) and lib0 ``decoding.js`` (``readVarUint``,
``readVarInt``, ``readVarString``, ``readAny``). Beyond Yjs, it refuses what yrs 0.28 reads differently
from Yjs (JSON content: yrs reads one string more than the count says; XmlHook types: yrs does not read the
hook name; content refs 16-31: yrs masks them to 0-15), a client listed twice (yrs appends the second run),
and references no causal history writes (to the Item itself, to a later clock of its client, or round a
cycle between clients), which yrs would keep pending for ever. Pure: no IO, no time, no randomness.
"""

from __future__ import annotations

import json
import math
import struct
from bisect import bisect_right
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import NoReturn

from crdtsync.errors import UpdateRejectedError

#: Longest struct or per-client run accepted, in clock units.
MAX_RUN: int = 1 << 20
#: yrs clocks are u32: any clock or end beyond this is malformed.
MAX_CLOCK: int = (1 << 32) - 1
#: lib0 var uints are JS-safe integers.
MAX_CLIENT: int = (1 << 53) - 1
#: Deepest nesting of Any arrays and objects accepted.
MAX_ANY_DEPTH = 64

_MALFORMED = "UPDATE_MALFORMED"
_UNSUPPORTED = "UPDATE_UNSUPPORTED_CONTENT"
_TOO_LARGE = "UPDATE_TOO_LARGE"
#: Type refs of ContentType (yjs ``typeRefs``) we accept, to whether a var string (nodeName) follows.
_TYPE_REFS = {0: False, 1: False, 2: False, 3: True, 4: False, 6: False}
#: Why known refs are refused, for the error message.
_REFUSED_CONTENT = {2: "JSON content, which yrs reads with one string more than Yjs writes", 9: "a subdocument"}
_REFUSED_TYPES = {5: "an XmlHook, whose name yrs does not read", 9: "a subdocument type", 15: "an undefined type"}
_GC, _SKIP, _DOC = 0, 10, 9
#: Names of content kinds in :attr:`DecodedUpdate.kinds` (yjs content refs and type refs).
_CONTENT_KINDS = {3: "binary", 5: "embed", 6: "format", 9: "doc"}
_TYPE_KINDS = {0: "type:array", 1: "type:map", 2: "type:text", 3: "type:xml-element", 4: "type:xml-fragment",
               6: "type:xml-text"}
#: Any tags without a payload (undefined, null, false, true), and of fixed-size numbers (float32, float64,
#: bigint) to their size in bytes.
_ANY_CONSTANTS = frozenset((127, 126, 121, 120))
_ANY_FIXED = {124: 4, 123: 8, 122: 8}

Ranges = tuple[tuple[int, int], ...]
#: A reference of an Item to another client: its client and clock, the ID it refers to, its byte offset.
_Dep = tuple[int, int, int, int, int]


def _fail(what: str, pos: int, code: str = _MALFORMED) -> NoReturn:
    raise UpdateRejectedError(f"{what} at byte {pos}", code=code)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _Reader:
    """A cursor over lib0-encoded bytes (every read checks bounds and minimal encoding) that collects what
    the Items of an update refer to."""

    __slots__ = ("client_bytes", "content_at", "data", "deps", "end", "kinds", "pos", "refs", "roots", "subdocs")

    def __init__(self, data: bytes, subdocs: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.subdocs = subdocs
        self.refs: set[tuple[int, int]] = set()
        self.deps: list[_Dep] = []
        self.roots: set[str] = set()
        self.kinds: set[str] = set()
        self.content_at = 0  # where the last Item's content starts (after its origins, parent and key)
        self.client_bytes = b""  # the var uint of the client whose structs are being read (set by client_header)

    def uint(self, bits: int = 7) -> int:
        """lib0 ``readVarUint`` (``bits=6``: the magnitude of ``readVarInt``, sign in bit 6 of the first
        byte): minimal, at most 8 bytes, at most :data:`MAX_CLIENT`."""
        data, pos = self.data, self.pos
        if pos >= self.end:
            _fail("truncated: var int expected", pos)
        b = data[pos]
        if b < 0x80:
            self.pos = pos + 1
            return b & ((1 << bits) - 1)
        value, shift, start = b & ((1 << bits) - 1), bits, pos
        limit = pos + 8 if pos + 8 < self.end else self.end
        while b >= 0x80:
            pos += 1
            if pos >= limit:
                _fail("truncated var int" if pos >= self.end else "over-long var int", start)
            b = data[pos]
            value |= (b & 0x7F) << shift
            shift += 7
        if b == 0:
            _fail("non-minimal var int", start)
        if value > MAX_CLIENT:
            _fail(f"var int {value} exceeds 2^53-1", start)
        self.pos = pos + 1
        return value

    def clock(self) -> int:
        start = self.pos
        value = self.uint()
        if value > MAX_CLOCK:
            _fail(f"clock {value} exceeds 2^32-1", start)
        return value

    def count(self, min_bytes: int) -> int:
        """A var uint element count, each element taking at least ``min_bytes`` of what is left."""
        start = self.pos
        if start < self.end and self.data[start] < 0x80:
            n = self.data[start]
            self.pos = start + 1
        else:
            n = self.uint()
        if n * min_bytes > self.end - self.pos:
            _fail(f"count {n} exceeds the {self.end - self.pos} bytes left", start)
        return n

    def raw(self) -> bytes:
        """lib0 ``readVarUint8Array``."""
        start = self.pos
        n = self.uint()
        pos, end = self.pos, self.pos + n
        if end > self.end:
            _fail(f"length {n} exceeds the {self.end - pos} bytes left", start)
        self.pos = end
        return self.data[pos:end]

    def string(self) -> str:
        """lib0 ``readVarString``: strict UTF-8 (no surrogates, no over-long forms)."""
        data, pos = self.data, self.pos
        if pos < self.end and data[pos] < 0x80:  # a length under 128, inline: most strings of an update
            end = pos + 1 + data[pos]
            if end > self.end:
                _fail(f"length {data[pos]} exceeds the {self.end - pos - 1} bytes left", pos)
            self.pos = end
            raw = data[pos + 1 : end]
        else:
            raw = self.raw()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(f"invalid UTF-8 ({exc.reason})", self.pos - len(raw) + exc.start)

    def json_string(self) -> None:
        """A var string holding one JSON value (yjs ``readJSON``)."""
        start = self.pos
        text = self.string()
        try:
            value = json.loads(text, parse_constant=_reject_constant)
            if "\\u" in text:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):
            _fail("string is not JSON", start)

    def any(self, depth: int) -> None:
        """lib0 ``readAny``, validated and skipped."""
        pos = self.pos
        if pos >= self.end:
            _fail("truncated: Any expected", pos)
        tag = self.data[pos]
        self.pos = pos + 1
        if tag in _ANY_CONSTANTS:
            if tag == 127:
                self.kinds.add("any:undefined")
            return
        if tag == 125:
            self.uint(6)
        elif tag in _ANY_FIXED:
            self.pos += _ANY_FIXED[tag]
            if self.pos > self.end:
                _fail("truncated number", pos)
            if tag == 122:
                self.kinds.add("any:bigint")
            elif not math.isfinite(struct.unpack_from(">f" if tag == 124 else ">d", self.data, pos + 1)[0]):
                self.kinds.add("any:nonfinite")
        elif tag == 119:
            self.string()
        elif tag == 116:
            self.kinds.add("any:binary")
            self.raw()
        elif tag in (117, 118):
            if depth >= MAX_ANY_DEPTH:
                _fail(f"Any nested deeper than {MAX_ANY_DEPTH}", pos)
            for _ in range(self.count(1 if tag == 117 else 2)):
                if tag == 118:
                    self.string()
                self.any(depth + 1)
        else:
            _fail(f"unknown Any tag {tag}", pos)

    def client_header(self) -> tuple[int, int, int, int]:
        """The head of one client's run of structs: ``(number of structs, byte offset of the client, client, first
        clock)``. Remembers the client's var uint (see :meth:`read_id`)."""
        n_structs = self.count(2)
        at = self.pos
        client = self.uint()
        self.client_bytes = self.data[at : self.pos]
        return n_structs, at, client, self.clock()

    def read_id(self, client: int, clock: int, at: int) -> None:
        """An ID the Item ``client:clock`` at byte ``at`` refers to."""
        if self.client_bytes and self.data.startswith(self.client_bytes, self.pos):
            # Most IDs name the Item's own client: the same var uint, which is minimal and ends there (its last
            # byte is below 0x80), so this reads what uint() would read, about 1.2x faster on a full update.
            ref_client = client
            self.pos += len(self.client_bytes)
        else:
            ref_client = self.uint()
        start = self.pos
        ref_clock = self.uint()
        if ref_clock > MAX_CLOCK:
            _fail(f"clock {ref_clock} exceeds 2^32-1", start)
        if ref_client == client:
            if ref_clock >= clock:
                _fail(f"Item {client}:{clock} refers to itself or a later clock of its client", at)
            self.refs.add((client, ref_clock))
        else:
            self.refs.add((ref_client, ref_clock))
            self.deps.append((client, clock, ref_client, ref_clock, at))

    def item(self, info: int, client: int, clock: int) -> int:
        """Read one Item (yjs ``readItem``) after its info byte; return its length in clock units."""
        at = self.pos - 1
        if info & 0x80:
            self.read_id(client, clock, at)
        if info & 0x40:
            self.read_id(client, clock, at)
        if not info & 0xC0:
            flag_at = self.pos
            if flag_at < self.end and self.data[flag_at] < 0x80:
                flag = self.data[flag_at]
                self.pos = flag_at + 1
            else:
                flag = self.uint()
            if flag == 1:
                self.roots.add(self.string())
            elif flag == 0:
                self.read_id(client, clock, at)
            else:
                _fail(f"parent info {flag} is neither 0 nor 1", flag_at)
            if info & 0x20:
                self.string()
        self.content_at = self.pos
        ref = info & 0x1F
        if ref == 8:  # Any
            self.kinds.add("any")
            n = self.count(1)
            for _ in range(n):
                self.any(0)
            return n
        if ref == 1:  # Deleted
            self.kinds.add("deleted")
            return self.uint()
        if ref == 4:  # String: one clock unit per UTF-16 code unit
            self.kinds.add("string")
            text = self.string()
            return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2
        if ref != 7:
            self.kinds.add(_CONTENT_KINDS.get(ref, "unknown"))
        if ref == 3:  # Binary
            self.raw()
        elif ref == 5:  # Embed
            self.json_string()
        elif ref == 6:  # Format
            self.string()
            self.json_string()
        elif ref == 7:  # Type
            type_at = self.pos
            type_ref = self.uint()
            if type_ref not in _TYPE_REFS:
                what = _REFUSED_TYPES.get(type_ref, "unknown")
                _fail(f"type ref {type_ref} ({what}) is not accepted", type_at, _UNSUPPORTED)
            self.kinds.add(_TYPE_KINDS[type_ref])
            if _TYPE_REFS[type_ref]:
                self.string()
        elif ref == _DOC and self.subdocs:
            self.string()
            self.any(0)
        else:
            what = _REFUSED_CONTENT.get(ref, "unknown")
            _fail(f"content ref {ref} ({what}) is not accepted", at, _UNSUPPORTED)
        return 1


@dataclass(frozen=True)
class DecodedUpdate:
    """What one update holds, in clock units (Items count one unit per UTF-16 code unit or array element).

    Attributes:
        structs: client -> sorted, merged ``[start, end)`` clock ranges of its Items and GC structs (Skip
            structs, which merged updates use for holes, are left out).
        references: every ID ``(client, clock)`` an Item refers to: origin, right origin, parent item.
        deletes: the delete set, client -> sorted, merged ``[start, end)`` clock ranges.
        root_names: names of the root types used as parents.
        kinds: the kinds of content the Items carry: ``any``, ``deleted``, ``string``, ``binary``, ``embed``,
            ``format``, ``doc``, ``type:<array|map|text|xml-element|xml-fragment|xml-text>`` for new shared
            types, and for Any values that a JSON reading of the Doc would not show faithfully
            ``any:binary``, ``any:undefined``, ``any:bigint``, ``any:nonfinite`` (NaN or an infinity). A
            caller that knows its document's schema refuses the kinds it never writes.
        delete_set_at: the byte offset where the delete set starts (everything before it is the structs).
    """

    structs: dict[int, Ranges]
    references: frozenset[tuple[int, int]]
    deletes: dict[int, Ranges]
    root_names: frozenset[str]
    kinds: frozenset[str] = frozenset()
    delete_set_at: int = 0

    def is_empty(self) -> bool:
        """True when the update neither adds a struct nor deletes anything."""
        return not self.structs and not self.deletes


def decode_update(data: bytes, *, max_run: int = MAX_RUN, allow_subdocs: bool = False) -> DecodedUpdate:
    """Decode a Yjs v1 update (``Y.encodeStateAsUpdate``, pycrdt ``get_update``) exactly, in linear time.

    Args:
        data: the update bytes.
        max_run: longest single struct (Item, GC or Skip) accepted, in clock units. A client's whole span
            is not capped: a full-state update of a large vault legitimately spans millions of units, and
            each struct costs at least two bytes, so the span stays bounded by the input size.
        allow_subdocs: accept subdocument content (content ref 9).

    Raises:
        UpdateRejectedError: ``UPDATE_MALFORMED`` when the bytes do not decode exactly (truncated, trailing
            bytes, bad or non-minimal var int, invalid UTF-8 or JSON, clocks past 2^32-1, a zero-length struct
            or delete range, a client listed twice, an Item referring to itself or a later clock of its own
            client, delete ranges out of order, Any nested deeper than 64...);
            ``UPDATE_UNSUPPORTED_CONTENT`` for an unknown content or type ref, JSON content, an XmlHook, or a
            subdocument unless ``allow_subdocs``; ``UPDATE_TOO_LARGE`` when one struct is longer than
            ``max_run``. The message names the byte offset.
    """
    r = _Reader(bytes(data), allow_subdocs)
    structs: dict[int, Ranges] = {}
    for _ in range(r.count(3)):
        n_structs, at, client, clock = r.client_header()
        if client in structs:
            _fail(f"client {client} listed twice", at)
        ranges: list[tuple[int, int]] = []
        run_start = clock
        for _ in range(n_structs):
            at = r.pos
            if at >= r.end:
                _fail("truncated: struct expected", at)
            info = r.data[at]
            r.pos = at + 1
            ref = info & 0x1F
            if ref in (_GC, _SKIP):
                if info != ref:
                    _fail(f"GC/Skip info byte {info:#04x} has high bits set", at)
                length = r.uint()
                if ref == _SKIP:
                    if clock > run_start:
                        ranges.append((run_start, clock))
                    run_start = clock + length
            else:
                length = r.item(info, client, clock)
            if length == 0:
                _fail("zero-length struct", at)
            if length > max_run:
                _fail(f"struct of {length} clock units exceeds {max_run}", at, _TOO_LARGE)
            clock += length
            if clock > MAX_CLOCK:
                _fail(f"clock {clock} of client {client} exceeds 2^32-1", at)
        if clock > run_start:
            ranges.append((run_start, clock))
        structs[client] = tuple(ranges)
    delete_set_at = r.pos
    deletes = _delete_set(r)
    if r.pos != r.end:
        _fail(f"{r.end - r.pos} trailing bytes", r.pos)
    structs = {c: rs for c, rs in structs.items() if rs}
    _check_causal(structs, r.deps)
    return DecodedUpdate(structs, frozenset(r.refs), deletes, frozenset(r.roots), frozenset(r.kinds), delete_set_at)


def item_positions(data: bytes) -> dict[tuple[int, int], bytes]:
    """Where each Item of a Yjs v1 update sits: its ID ``(client, clock)`` mapped to the bytes that place it, its
    origin and right origin, or its parent and key (with the flag bits of its info byte), which deleting the
    Item does not change. Two Items with one ID but other positions are two different writes under one clock:
    what a device restored from a backup writes over the writes it lost. GC and Skip structs are left out.

    Raises:
        UpdateRejectedError: ``UPDATE_MALFORMED`` (and the other codes of :func:`decode_update`) when a struct
            does not decode; run :func:`decode_update` first for the full check.
    """
    r = _Reader(bytes(data))
    out: dict[tuple[int, int], bytes] = {}
    for _ in range(r.count(3)):
        n_structs, _, client, clock = r.client_header()
        for _ in range(n_structs):
            at = r.pos
            if at >= r.end:
                _fail("truncated: struct expected", at)
            info = r.data[at]
            r.pos = at + 1
            if info & 0x1F in (_GC, _SKIP):
                clock += r.uint()
                continue
            length = r.item(info, client, clock)
            out[(client, clock)] = bytes((info & 0xE0,)) + r.data[at + 1 : r.content_at]
            clock += length
    return out


@dataclass(frozen=True)
class StructSpan:
    """One struct of a Yjs v1 update as :func:`struct_layout` finds it.

    Attributes:
        clock: its first clock; ``end`` the clock after its last unit.
        start: the byte offset of its info byte; ``stop`` the offset after its last byte. The bytes between
            are position-independent (Items name their origins by ID), so they can be copied into another
            update at the same clock.
        skip: a Skip struct: a hole a merged update leaves where it holds nothing.
        references: the IDs ``(client, clock)`` it refers to (origin, right origin, parent item); none for GC
            and Skip structs.
    """

    clock: int
    end: int
    start: int
    stop: int
    skip: bool
    references: frozenset[tuple[int, int]]


def struct_layout(data: bytes) -> list[tuple[int, tuple[StructSpan, ...]]]:
    """Each client's structs in a Yjs v1 update, in the order the update lists clients: ``(client, spans)``, spans
    in clock order with their byte positions (yjs ``readClientsStructRefs``); the delete set is not read. What
    :func:`crdtsync.model.ystate.split_integrable` cuts an update with.

    Raises:
        UpdateRejectedError: as :func:`decode_update` when a struct does not decode; run that first for the
            full check.
    """
    r = _Reader(bytes(data))
    out: list[tuple[int, tuple[StructSpan, ...]]] = []
    for _ in range(r.count(3)):
        n_structs, _, client, clock = r.client_header()
        spans: list[StructSpan] = []
        for _ in range(n_structs):
            at = r.pos
            if at >= r.end:
                _fail("truncated: struct expected", at)
            info = r.data[at]
            r.pos = at + 1
            references: frozenset[tuple[int, int]] = frozenset()
            if info & 0x1F in (_GC, _SKIP):
                length = r.uint()
            else:
                r.refs = set()
                length = r.item(info, client, clock)
                references = frozenset(r.refs)
            spans.append(StructSpan(clock, clock + length, at, r.pos, info == _SKIP, references))
            clock += length
        out.append((client, tuple(spans)))
    return out


def _check_causal(structs: dict[int, Ranges], deps: list[_Dep]) -> None:
    """Refuse references between the update's own structs that go round in a cycle across clients: no
    causal history writes them, and yrs keeps such an update pending for ever (a later clock of the same
    client was already refused). Integrates clients in the manner of yjs ``integrateStructs``: each client
    advances until a struct needs a clock another client has not reached; that client wakes it."""
    todo: dict[int, list[_Dep]] = {}
    for dep in deps:
        if _covers(structs.get(dep[2], ()), dep[3]):
            todo.setdefault(dep[0], []).append(dep)
    reached = {c: rs[0][0] if c in todo else rs[-1][1] for c, rs in structs.items()}
    waiting: dict[int, list[tuple[int, int]]] = {}
    done = dict.fromkeys(todo, 0)
    queue = list(todo)

    def advance(client: int, clock: int) -> None:
        reached[client] = max(reached[client], clock)
        heap = waiting.get(client, [])
        while heap and heap[0][0] < reached[client]:
            queue.append(heappop(heap)[1])

    while queue:
        client = queue.pop()
        mine, i = todo[client], done[client]
        while i < len(mine) and reached[mine[i][2]] > mine[i][3]:
            advance(client, mine[i][1])
            i += 1
        done[client] = i
        if i < len(mine):
            advance(client, mine[i][1])
            heappush(waiting.setdefault(mine[i][2], []), (mine[i][3], client))
        else:
            advance(client, structs[client][-1][1])
    for client, mine in todo.items():
        if done[client] < len(mine):
            _, clock, ref_client, ref_clock, at = mine[done[client]]
            _fail(f"Item {client}:{clock} waits on {ref_client}:{ref_clock} in a cycle of references", at)


def _delete_set(r: _Reader) -> dict[int, Ranges]:
    """yjs ``readDeleteSet``; ranges of one client must be sorted and must not overlap."""
    deletes: dict[int, Ranges] = {}
    for _ in range(r.count(2)):
        at = r.pos
        client = r.uint()
        if client in deletes:
            _fail(f"client {client} listed twice in the delete set", at)
        ranges: list[tuple[int, int]] = []
        for _ in range(r.count(2)):
            at = r.pos
            start = r.clock()
            stop = start + r.uint()
            if stop == start:
                _fail("zero-length delete range", at)
            if stop > MAX_CLOCK:
                _fail(f"delete range end {stop} exceeds 2^32-1", at)
            if ranges and start < ranges[-1][1]:
                _fail("delete ranges overlap or are out of order", at)
            if ranges and start == ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], stop)
            else:
                ranges.append((start, stop))
        deletes[client] = tuple(ranges)
    return {c: rs for c, rs in deletes.items() if rs}


def _covers(ranges: Ranges, clock: int) -> bool:
    i = bisect_right(ranges, (clock, MAX_CLIENT)) - 1
    return i >= 0 and ranges[i][1] > clock

