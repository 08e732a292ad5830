"""State vectors, and what a decoded Yjs v1 update needs from and does to the local state vector.

:func:`missing_dependencies` says whether everything a :class:`~crdtsync.model.yupdate.DecodedUpdate` needs
(its clients' earlier clocks, the IDs its Items refer to, what its delete set names) is present locally or
in the update itself, and :func:`expected_state` what the state vector must become once it is applied.
:func:`decode_state_vector` reads a state vector as strictly as :mod:`crdtsync.model.yupdate` reads an update
and :func:`encode_state_vector` writes one. :func:`split_unknown_deletes` and :func:`split_integrable` cut an
update that cannot integrate whole into a part that can integrate now and a rest that waits.

The state vector format is Yjs ``encodeStateVector`` / ``decodeStateVector`` (yjs ``src/utils/encoding.js``:
``writeStateVector``, ``readStateVector``) on lib0 varuints (lib0 ``encoding.js`` ``writeVarUint``,
``decoding.js`` ``readVarUint``): a var uint count, then that many pairs of var uint client and clock, clients
in descending order. Pure: no IO, no time, no randomness.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from crdtsync.model.yupdate import (
    MAX_CLIENT,
    MAX_CLOCK,
    DecodedUpdate,
    Ranges,
    StructSpan,
    _covers,
    _fail,
    _Reader,
    struct_layout,
)


@dataclass(frozen=True)
class Missing:
    """What an update needs that neither the local document nor the update itself has.

    Attributes:
        gaps: client -> ``(clock reached here, clock the update continues at)`` when the update's structs of
            that client start past what is known, or a Skip hole sits in the part not yet known.
        references: referenced IDs ``(client, clock)`` neither known here nor in the update.
        deletes: client -> highest clock a delete range names that neither here nor the update has.
    """

    gaps: dict[int, tuple[int, int]]
    references: frozenset[tuple[int, int]]
    deletes: dict[int, int]

    def __bool__(self) -> bool:
        return bool(self.gaps or self.references or self.deletes)

    def clients(self) -> frozenset[int]:
        """The Yjs client ids whose structs the update waits for."""
        return frozenset(self.gaps) | {client for client, _ in self.references} | frozenset(self.deletes)


def _reach(ranges: Ranges, known: int) -> tuple[int, int | None]:
    """End of the clock run contiguous from ``known``, and where the first range past it starts (or None)."""
    for start, end in ranges:
        if start > known:
            return known, start
        known = max(known, end)
    return known, None


def _highest_uncovered(cover: Ranges, start: int, end: int) -> int | None:
    """Highest clock in ``[start, end)`` outside ``cover`` (sorted, merged, non-adjacent ranges)."""
    i = bisect_right(cover, (end - 1, MAX_CLIENT)) - 1
    if i < 0 or cover[i][1] < end:
        return end - 1
    return cover[i][0] - 1 if cover[i][0] > start else None


def missing_dependencies(decoded: DecodedUpdate, state: Mapping[int, int]) -> Missing:
    """What ``decoded`` needs beyond the local state vector ``state`` (client -> next clock).

    An ID ``(c, k)`` is present when ``k < state.get(c, 0)`` or the update's own structs cover it. Structs
    entirely below the known clock are fine (Yjs skips them). An update with anything missing would stay
    pending inside yrs, where ``get_update`` omits it: keep it in the log until its dependencies arrive.
    """
    gaps: dict[int, tuple[int, int]] = {}
    for client, ranges in decoded.structs.items():
        reach, resume = _reach(ranges, state.get(client, 0))
        if resume is not None:
            gaps[client] = (reach, resume)
    refs = frozenset(
        (c, k)
        for c, k in decoded.references
        if k >= state.get(c, 0) and not _covers(decoded.structs.get(c, ()), k)
    )
    deletes: dict[int, int] = {}
    for client, ranges in decoded.deletes.items():
        cover: list[tuple[int, int]] = []
        known = state.get(client, 0)
        for start, end in ((0, known), *decoded.structs.get(client, ())):
            if cover and start <= cover[-1][1]:
                cover[-1] = (cover[-1][0], max(cover[-1][1], end))
            elif end > start:
                cover.append((start, end))
        covered = tuple(cover)
        for start, end in reversed(ranges):
            hole = _highest_uncovered(covered, start, end)
            if hole is not None:
                deletes[client] = hole
                break
    return Missing(gaps, refs, deletes)


def split_unknown_deletes(
    data: bytes, decoded: DecodedUpdate, state: Mapping[int, int]
) -> tuple[bytes, DecodedUpdate, bytes]:
    """Split a Yjs v1 update whose only missing dependencies are delete ranges of structs not known here.

    Returns ``(known, known_decoded, rest)``: ``known`` is ``data``'s structs, byte for byte, with the part of
    the delete set that names structs present here (``state``, client -> next clock) or in the update itself;
    ``known_decoded`` is what the strict reader reads from ``known`` (``decoded`` with those delete ranges);
    ``rest`` is an update without structs holding the other delete ranges. Applied in that order they do
    what ``data`` does: Yjs keeps deletes of unknown structs pending in the same way. ``known`` can integrate
    now and ``rest`` waits for those structs. This breaks waits that go round in a circle: a device's
    snapshot carries the whole delete set its Doc knows, so it can delete a newer struct of a second device
    whose next update refers to a struct in the snapshot.

    Args:
        data: the Yjs v1 update bytes ``decoded`` was read from (:func:`crdtsync.model.yupdate.decode_update`);
            both parts decode with the strict reader. Raises nothing.
    """
    known: dict[int, list[tuple[int, int]]] = {}
    rest: dict[int, list[tuple[int, int]]] = {}
    for client, ranges in decoded.deletes.items():
        cover = _merge(((0, state.get(client, 0)), *decoded.structs.get(client, ())))
        for start, end in ranges:
            inside, outside = _split_range(cover, start, end)
            known.setdefault(client, []).extend(inside)
            rest.setdefault(client, []).extend(outside)
    known_deletes = {client: _merge(rs) for client, rs in known.items() if rs}
    return (bytes(data[: decoded.delete_set_at]) + _encode_delete_set(known),
            replace(decoded, deletes=known_deletes), b"\x00" + _encode_delete_set(rest))


def split_integrable(data: bytes, decoded: DecodedUpdate, state: Mapping[int, int]) -> tuple[bytes, bytes] | None:
    """Cut a Yjs v1 update that cannot integrate whole into the part that can integrate now and the rest.

    Each client's structs are taken in clock order, as yjs ``integrateStructs`` takes them, from the clock known
    here (``state``, client -> next clock) up to the first struct that starts past what is known (a gap, or a
    Skip hole of a merged update) or refers to an ID neither known nor taken (other clients' taken structs
    count, so a chain across clients is followed). ``now`` holds the taken structs not known yet, byte for byte,
    with the delete ranges of what is known once it is applied; ``rest`` holds the other structs (from the first
    one not taken, leading Skips dropped) and delete ranges. Applied in that order after what ``state``
    describes, they do what ``data`` does, and ``now`` leaves nothing pending in yrs, which integrates
    pending structs wrongly (it can show records of a pending struct without counting its clock, or leave a
    pending struct out for ever once a later update fills the gap before it: shared/data/yjs-interop).

    Held updates that are complete together always make progress this way: the earliest struct (in causal
    order) that none of them has integrated yet is taken from whichever holds it.

    Args:
        data: Yjs v1 update bytes that passed :func:`crdtsync.model.yupdate.decode_update`, which read
            ``decoded`` from them.
        state: the local state vector.

    Returns:
        ``(now, rest)`` (both decode with the strict reader), or None when no struct of ``data`` can be taken
        now. Raises nothing for bytes that passed the strict reader.
    """
    if expected_state(decoded, state) == dict(state):
        return None  # no client's structs reach its known clock: nothing to take, and no need to read them
    layout = struct_layout(data)
    reached = dict(state)
    taken = dict.fromkeys((client for client, _ in layout), 0)
    progress = True
    while progress:
        progress = False
        for client, spans in layout:
            i = taken[client]
            while i < len(spans):
                span = spans[i]
                known = reached.get(client, 0)
                if span.end <= known:
                    i += 1
                    continue
                if span.clock > known or span.skip or any(k >= reached.get(c, 0) for c, k in span.references):
                    break
                reached[client] = span.end
                i += 1
                progress = True
            taken[client] = i
    now_runs = []
    rest_runs = []
    for client, spans in layout:
        now_spans = [s for s in spans[: taken[client]] if s.end > state.get(client, 0) and not s.skip]
        rest_spans = list(spans[taken[client] :])
        while rest_spans and rest_spans[0].skip:
            rest_spans.pop(0)
        if now_spans:
            now_runs.append((client, now_spans))
        if rest_spans:
            rest_runs.append((client, rest_spans))
    if not now_runs:
        return None
    now_deletes: dict[int, list[tuple[int, int]]] = {}
    rest_deletes: dict[int, list[tuple[int, int]]] = {}
    for client, ranges in decoded.deletes.items():
        cover = ((0, reached.get(client, 0)),)
        for start, end in ranges:
            inside, outside = _split_range(cover, start, end)
            now_deletes.setdefault(client, []).extend(inside)
            rest_deletes.setdefault(client, []).extend(outside)
    return (_encode_structs(data, now_runs) + _encode_delete_set(now_deletes),
            _encode_structs(data, rest_runs) + _encode_delete_set(rest_deletes))


def _encode_structs(data: bytes, runs: Sequence[tuple[int, Sequence[StructSpan]]]) -> bytes:
    """The struct part of a Yjs v1 update (``writeClientsStructs``): var uint client count, then per client its
    struct count, id and first clock, then its structs, copied from ``data`` (consecutive spans of one client
    each, as :func:`crdtsync.model.yupdate.struct_layout` found them)."""
    out = bytearray()
    _write_uint(out, len(runs))
    for client, spans in runs:
        _write_uint(out, len(spans))
        _write_uint(out, client)
        _write_uint(out, spans[0].clock)
        for span in spans:
            out += data[span.start : span.stop]
    return bytes(out)


def _merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, merged ``[start, end)`` ranges (empty ones dropped)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def _split_range(cover: Ranges, start: int, end: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The parts of ``[start, end)`` inside ``cover`` (sorted, merged ranges) and outside it, in order."""
    inside: list[tuple[int, int]] = []
    outside: list[tuple[int, int]] = []
    at = start
    for c_start, c_end in cover:
        if c_end <= at or c_start >= end:
            continue
        if c_start > at:
            outside.append((at, c_start))
        inside.append((max(at, c_start), min(end, c_end)))
        at = min(end, c_end)
    if at < end:
        outside.append((at, end))
    return inside, outside


def _encode_delete_set(ranges: Mapping[int, Sequence[tuple[int, int]]]) -> bytes:
    """lib0 encoding of a Yjs delete set (``writeDeleteSet``): var uint client count, then per client its id,
    its range count and each range as var uint clock and length. Clients without ranges are left out."""
    out = bytearray()
    clients = [(client, _merge(rs)) for client, rs in sorted(ranges.items())]
    clients = [(client, rs) for client, rs in clients if rs]
    _write_uint(out, len(clients))
    for client, rs in clients:
        _write_uint(out, client)
        _write_uint(out, len(rs))
        for start, end in rs:
            _write_uint(out, start)
            _write_uint(out, end - start)
    return bytes(out)


def _write_uint(out: bytearray, value: int) -> None:
    """lib0 ``writeVarUint``: 7 bits a byte, low bits first, the high bit set on every byte but the last."""
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def expected_state(decoded: DecodedUpdate, state: Mapping[int, int]) -> dict[int, int]:
    """The state vector (client -> next clock) after integrating ``decoded`` into a document at ``state``.

    Each client advances to the end of its covered run contiguous from the known clock; other clients keep
    their clock. Meaningful when :func:`missing_dependencies` finds nothing; compare it with the real state
    after apply to catch a clock that jumped past what the update's content fills.
    """
    out = dict(state)
    for client, ranges in decoded.structs.items():
        known = state.get(client, 0)
        reach, _ = _reach(ranges, known)
        if reach > known:
            out[client] = reach
    return out


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (``Y.encodeStateVector``, pycrdt ``get_state``): var uint count, then
    ``count`` pairs of var uint client and clock. Client -> next clock.

    Raises:
        UpdateRejectedError: ``UPDATE_MALFORMED`` on truncation, trailing bytes, a bad var uint, a client
            listed twice or a clock past 2^32-1.
    """
    r = _Reader(bytes(data))
    out: dict[int, int] = {}
    for _ in range(r.count(2)):
        at = r.pos
        client = r.uint()
        if client in out:
            _fail(f"client {client} listed twice", at)
        out[client] = r.clock()
    if r.pos != r.end:
        _fail(f"{r.end - r.pos} trailing bytes", r.pos)
    return out


def encode_state_vector(state: Mapping[int, int]) -> bytes:
    """Encode ``state`` (client -> next clock) as a Yjs state vector, clients in descending order as Yjs
    writes them; :func:`decode_state_vector` and pycrdt read it.

    Raises:
        ValueError: a client outside ``0..MAX_CLIENT`` or a clock outside ``0..MAX_CLOCK``.
    """
    out = bytearray()
    _write_uint(out, len(state))
    for client, clock in sorted(state.items(), reverse=True):
        if not (0 <= client <= MAX_CLIENT and 0 <= clock <= MAX_CLOCK):
            raise ValueError(f"state vector entry {client}: {clock} out of range")
        _write_uint(out, client)
        _write_uint(out, clock)
    return bytes(out)

