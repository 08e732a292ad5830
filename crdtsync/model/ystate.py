"""State vectors, and what a decoded Yjs v1 update needs from and does to the local state vector.

:func:`missing_dependencies` says whether everything a :class:`~crdtsync.model.yupdate.DecodedUpdate` needs
(its clients' earlier clocks, the IDs its Items refer to, what its delete set names) is present locally or
in the update itself, and :func:`expected_state` what the state vector must become once it is applied.
:func:`decode_state_vector` reads a state vector as strictly as :mod:`crdtsync.model.yupdate` reads an update
and :func:`encode_state_vector` writes one.

The state vector format is Yjs ``encodeStateVector`` / ``decodeStateVector`` (yjs ``src/utils/encoding.js``:
``writeStateVector``, ``readStateVector``) on lib0 varuints (lib0 ``encoding.js`` ``writeVarUint``,
``decoding.js`` ``readVarUint``): a var uint count, then that many pairs of var uint client and clock, clients
in descending order. Pure: no IO, no time, no randomness.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

from crdtsync.model.yupdate import MAX_CLIENT, MAX_CLOCK, DecodedUpdate, Ranges, _covers, _fail, _Reader


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


def _write_uint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


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


# yupdate re-exports this module's names, so it imports this module in turn: binding its names last lets
# either module be imported first.
