"""The live session (crdtsync.protocol.session): two sessions wired together in memory, each driven by a tiny
in-memory replica (entries per author; it "stores durably" by putting an entry in its dict, then acks)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync.crypto.envelope import KIND_HEAD, KIND_SNAPSHOT, KIND_UPDATE, MAX_ENVELOPE_BYTES
from crdtsync.errors import MailboxError, ProtocolError, exit_status
from crdtsync.protocol.authorlog import Send, plan_sends
from crdtsync.protocol.messages import (
    MAX_CHUNKS,
    MAX_PARTS,
    PROTOCOL_VERSION,
    Entry,
    Have,
    Summary,
    pack_part,
    unpack_part,
)
from crdtsync.protocol.session import (
    MAX_AUTHORS,
    MAX_BUFFER,
    MAX_ENTRY_BYTES,
    MAX_FRAME,
    MAX_MESSAGE,
    NEED_DATA,
    WINDOW_BYTES,
    Ack,
    Acked,
    Close,
    Closed,
    EntryReceived,
    Error,
    Event,
    HeadEnvelope,
    HeadReceived,
    Hello,
    NeedData,
    PeerError,
    PeerHello,
    Ping,
    PingReceived,
    Pong,
    PongReceived,
    Session,
    SummaryReceived,
    SummaryUpdate,
    plan,
)

VAULT = "0123456789abcdef"
DEV_A, DEV_B = "a" * 32, "b" * 32
DEV_C, DEV_D = "c" * 32, "d" * 32


def envelopes(author: str, kind: int, seq: int, count: int) -> list[bytes]:
    """``count`` distinct fake envelopes of varied sizes (the session never opens them)."""
    return [hashlib.sha256(f"{author}/{kind}/{seq}/{i}".encode()).digest() * (1 + (seq + i) % 4)
            for i in range(count)]


def make_entry(author: str, kind: int, seq: int, count: int = 1, per_part: int = MAX_CHUNKS) -> Entry:
    """An entry of ``count`` envelopes, ``per_part`` to a part."""
    envs = envelopes(author, kind, seq, count)
    return Entry(author, kind, seq, tuple(pack_part(envs[i:i + per_part]) for i in range(0, count, per_part)))


def logs(author: str, seqs: range, count: int = 1, per_part: int = MAX_CHUNKS) -> list[Entry]:
    return [make_entry(author, KIND_UPDATE, seq, count, per_part) for seq in seqs]


class Replica:
    """Entries held, by (author, kind, seq); the summary is derived from them."""

    def __init__(self, entries: list[Entry]) -> None:
        self.held: dict[tuple[str, int, int], Entry] = {}
        for entry in entries:
            self.put(entry)

    def put(self, entry: Entry) -> None:
        self.held[(entry.author, entry.kind, entry.seq)] = entry

    def get(self, send: Send) -> Entry:
        return self.held[(send.author, send.kind, send.seq)]

    def summary(self) -> Summary:
        out: Summary = {}
        for author in {a for a, _, _ in self.held}:
            log_seqs = {s for a, k, s in self.held if a == author and k == KIND_UPDATE}
            snap = max((s for a, k, s in self.held if a == author and k == KIND_SNAPSHOT), default=0)
            seq = max(log_seqs | {snap})
            first = seq + 1
            while first - 1 in log_seqs:
                first -= 1
            out[author] = Have(seq, hashlib.sha256(f"{author}/{seq}".encode()).digest(), first, snap)
        return out


class Peer:
    """A driver: a session, a replica, the bytes it has written for the other side."""

    def __init__(self, device: str, entries: list[Entry], *, window_bytes: int = WINDOW_BYTES,
                 ack_at_once: bool = True) -> None:
        self.device = device
        self.session = Session(VAULT, device, window_bytes=window_bytes)
        self.replica = Replica(entries)
        self.out = bytearray()
        self.started = False
        self.ack_at_once = ack_at_once
        self.acks: list[Ack] = []
        self.events: list[Event] = []
        self.received: list[Entry] = []

    def start(self) -> None:
        self.out += self.session.send(Hello(self.replica.summary()))
        self.started = True
        self.pump()

    def pump(self) -> None:
        """Send what the peer lacks, as far as the window allows."""
        theirs = self.session.peer_summary
        if not self.started or theirs is None:
            return
        for send in plan(self.replica.summary(), theirs, self.session.peer_holds):
            entry = self.replica.get(send)
            if not self.session.can_send_entry(entry.size):
                return
            self.out += self.session.send(entry)

    def write(self) -> Entry:
        """A new entry of this device's own log, sent live."""
        seq = self.replica.summary().get(self.device, Have(0)).seq + 1
        entry = make_entry(self.device, KIND_UPDATE, seq, count=1 + seq % 3, per_part=2)
        self.replica.put(entry)
        self.pump()
        return entry

    def feed(self, data: bytes) -> None:
        self.session.receive_data(data)
        while (event := self.session.next_event()) is not NEED_DATA:
            self.events.append(event)
            if isinstance(event, Closed):
                return
            if isinstance(event, EntryReceived):
                entry = event.entry
                self.replica.put(entry)  # "durably"
                self.received.append(entry)
                self.acks.append(Ack(entry.author, entry.kind, entry.seq))
                if self.ack_at_once:
                    self.flush_acks()
            elif isinstance(event, PingReceived):
                self.out += self.session.send(Pong())
            elif isinstance(event, PeerHello | SummaryReceived | Acked):
                self.pump()

    def flush_acks(self) -> None:
        for ack in self.acks:
            self.out += self.session.send(ack)
        self.acks.clear()


def deliver(src: Peer, dst: Peer, size: int | None = None) -> None:
    """Move ``size`` bytes (all by default) of what ``src`` wrote to ``dst``, if there are any (b"" would be the
    end of the stream)."""
    size = len(src.out) if size is None else size
    chunk = bytes(src.out[:size])
    del src.out[:size]
    if chunk:
        dst.feed(chunk)


def settle(a: Peer, b: Peer) -> None:
    """Deliver both ways (acks flushed) until nothing moves."""
    while a.out or b.out or a.acks or b.acks:
        for peer in (a, b):
            peer.flush_acks()
        deliver(a, b)
        deliver(b, a)


def frame(**fields: object) -> bytes:
    """A frame as the module docstring specifies it, written independently of the module."""
    body = msgpack.packb(fields, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def frame_ends(data: bytes) -> list[int]:
    """0 and the offset where each frame of ``data`` ends, read from the length prefixes."""
    ends = [0]
    while ends[-1] < len(data):
        ends.append(ends[-1] + 4 + int.from_bytes(data[ends[-1]:ends[-1] + 4], "big"))
    return ends


def read_frames(data: bytes) -> list[dict[str, object]]:
    frames = []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(msgpack.unpackb(data[4:4 + length], raw=False))
        data = data[4 + length:]
    return frames


def hello_frame(**over: object) -> bytes:
    fields: dict[str, object] = {"t": "hello", "v": PROTOCOL_VERSION, "vault": VAULT, "device": DEV_B,
                                 "summary": {}}
    fields.update(over)
    return frame(**fields)


def opened(**kwargs: int) -> Session:
    """Our session (device A) after both hellos; the peer (device B) holds nothing."""
    session = Session(VAULT, DEV_A, **kwargs)
    session.send(Hello({}))
    session.receive_data(hello_frame())
    assert session.next_event() == PeerHello(DEV_B, VAULT, {})
    return session


def events_of(session: Session, data: bytes) -> list[Event | NeedData]:
    session.receive_data(data)
    out: list[Event | NeedData] = []
    while (event := session.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, Closed):
            break
    return out


def refused(session: Session, data: bytes, code: str) -> ProtocolError:
    """Feed ``data``; the session must fail with ``code`` and stay failed."""
    session.receive_data(data)
    with pytest.raises(ProtocolError) as caught:
        while session.next_event() is not NEED_DATA:
            pass
    assert caught.value.code == code, caught.value
    with pytest.raises(ProtocolError) as again:
        session.next_event()
    assert again.value.code == "PROTOCOL_STATE"
    return caught.value


# -- the scenario: four authors, each side holding different parts of their logs

def d_logs() -> list[Entry]:
    """D's logs 1..2: entries of 5 envelopes in 3 parts."""
    return logs(DEV_D, range(1, 3), count=5, per_part=2)


def scenario(window_bytes: int = WINDOW_BYTES, ack_at_once: bool = True) -> tuple[Peer, Peer]:
    """A holds its own log 1..3 and C's snapshot as of 5 with C's logs 6..7; B holds A's log 1, its own log
    1..4, C's logs 1..2 and D's logs 1..2."""
    a = Peer(DEV_A, [*logs(DEV_A, range(1, 4)), make_entry(DEV_C, KIND_SNAPSHOT, 5, count=3),
                     *logs(DEV_C, range(6, 8))], window_bytes=window_bytes, ack_at_once=ack_at_once)
    b = Peer(DEV_B, [*logs(DEV_A, range(1, 2)), *logs(DEV_B, range(1, 5)), *logs(DEV_C, range(1, 3)), *d_logs()],
             window_bytes=window_bytes, ack_at_once=ack_at_once)
    return a, b


def keys(entries: list[Entry]) -> list[tuple[str, int, int]]:
    return [(e.author, e.kind, e.seq) for e in entries]


def check_converged(a: Peer, b: Peer) -> None:
    """Both hold every author up to the same seq; what each received is what the other holds, byte for byte,
    each entry once; nothing is left in flight."""
    sa, sb = a.replica.summary(), b.replica.summary()
    assert {k: h.seq for k, h in sa.items()} == {k: h.seq for k, h in sb.items()}
    for side, other in ((a, b), (b, a)):
        assert all(side.replica.held[k] == other.replica.held[k] for k in keys(side.received))
        assert max(Counter(keys(side.received)).values(), default=1) == 1
        assert side.session.unacked_entries == 0 and side.session.unacked_bytes == 0
    # the snapshot-then-logs case: B got C's snapshot and the logs after it, in that order, and no earlier log
    c_received = [k for k in keys(b.received) if k[0] == DEV_C]
    assert c_received == [(DEV_C, KIND_SNAPSHOT, 5), (DEV_C, KIND_UPDATE, 6), (DEV_C, KIND_UPDATE, 7)]
    assert [k for k in keys(a.received) if k[0] == DEV_C] == []
    d_entries = [a.replica.held[(DEV_D, KIND_UPDATE, seq)] for seq in (1, 2)]
    assert [len(e.parts) for e in d_entries] == [3, 3]
    assert d_entries == d_logs()


@pytest.mark.parametrize("first", ["a", "b"])
def test_either_side_may_start_first(first: str) -> None:
    a, b = scenario()
    one, other = (a, b) if first == "a" else (b, a)
    one.start()
    deliver(one, other)  # the other reads the hello before it sent its own
    assert isinstance(other.events[0], PeerHello) and other.events[0].device == one.device
    assert not other.out  # it cannot plan before its own hello
    other.start()
    settle(a, b)
    check_converged(a, b)
    assert sorted(keys(a.received)) == sorted(
        [(DEV_B, KIND_UPDATE, s) for s in range(1, 5)] + [(DEV_D, KIND_UPDATE, s) for s in (1, 2)])
    assert sorted(keys(b.received)) == sorted(
        [(DEV_A, KIND_UPDATE, 2), (DEV_A, KIND_UPDATE, 3), (DEV_C, KIND_SNAPSHOT, 5), (DEV_C, KIND_UPDATE, 6),
         (DEV_C, KIND_UPDATE, 7)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), window=st.sampled_from([1, 200, WINDOW_BYTES]), ack_at_once=st.booleans(),
       writes=st.tuples(st.integers(0, 2), st.integers(0, 2)))
def test_converges_whatever_the_chunking_and_interleaving(
        data: st.DataObject, window: int, ack_at_once: bool, writes: tuple[int, int]) -> None:
    a, b = scenario(window_bytes=window, ack_at_once=ack_at_once)
    written: dict[str, list[Entry]] = {DEV_A: [], DEV_B: []}
    left = dict(zip((DEV_A, DEV_B), writes, strict=True))
    for _ in range(5000):
        actions: list[str] = []
        for name, peer in (("a", a), ("b", b)):
            if not peer.started:
                actions.append(f"start {name}")
            if peer.out:
                actions.append(f"deliver {name}")
            if peer.acks:
                actions.append(f"ack {name}")
            if peer.started and left[peer.device]:
                actions.append(f"write {name}")
        if not actions:
            break
        verb, name = data.draw(st.sampled_from(actions)).split()
        peer, other = (a, b) if name == "a" else (b, a)
        if verb == "start":
            peer.start()
        elif verb == "deliver":
            # how much to hold back: it shrinks toward whole deliveries, so the simplest case is short
            deliver(peer, other, len(peer.out) - data.draw(st.integers(0, len(peer.out) - 1)))
        elif verb == "ack":
            peer.flush_acks()
        else:
            left[peer.device] -= 1
            written[peer.device].append(peer.write())
    else:
        pytest.fail("no quiescence")
    check_converged(a, b)
    # live writes reached the other side byte for byte
    assert [b.replica.held[k] for k in keys(written[DEV_A])] == written[DEV_A]
    assert [a.replica.held[k] for k in keys(written[DEV_B])] == written[DEV_B]
    # both close cleanly
    a.out += a.session.send(Close())
    b.out += b.session.send(Close())
    for src, dst in ((a, b), (b, a)):
        deliver(src, dst)
        dst.feed(b"")
        assert dst.events[-1] == Closed(clean=True)


def test_live_entries_after_the_exchange_flow_once_and_are_not_echoed() -> None:
    a, b = scenario()
    a.start()
    b.start()
    settle(a, b)
    before_a, before_b = len(a.received), len(b.received)
    new = a.write()
    assert a.session.unacked_entries == 1
    settle(a, b)
    assert b.received[before_b:] == [new]
    assert len(a.received) == before_a  # B does not send it back
    assert plan(b.replica.summary(), b.session.peer_summary or {}, b.session.peer_holds) == []
    assert b.session.peer_holds[DEV_A] == new.seq
    # without what the session knows, the stale summary would send it back
    assert Send(DEV_A, KIND_UPDATE, new.seq) in plan(b.replica.summary(), b.session.peer_summary or {})


def test_plan_is_plan_sends_less_what_the_peer_holds() -> None:
    ours = {DEV_A: Have(5), DEV_C: Have(7, first=6, snap=5)}
    theirs = {DEV_A: Have(1)}
    assert plan(ours, theirs) == plan_sends(ours, theirs)
    assert plan(ours, theirs, {DEV_A: 3, DEV_C: 5}) == [
        Send(DEV_A, KIND_UPDATE, 4), Send(DEV_A, KIND_UPDATE, 5), Send(DEV_C, KIND_UPDATE, 6),
        Send(DEV_C, KIND_UPDATE, 7)]


# -- entries on the wire

def test_frames_are_as_the_docstring_says() -> None:
    session = Session(VAULT, DEV_A)
    summary = {DEV_C: Have(7, b"\x01" * 32, 6, 5)}
    data = session.send(Hello(summary))
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert read_frames(data) == [{"t": "hello", "v": PROTOCOL_VERSION, "vault": VAULT, "device": DEV_A,
                                  "summary": {DEV_C: [7, b"\x01" * 32, 6, 5]}}]
    session.receive_data(hello_frame())
    session.next_event()
    entry = make_entry(DEV_C, KIND_UPDATE, 6, count=3, per_part=2)
    frames = read_frames(session.send(entry))
    assert frames[0] == {"t": "entry", "author": DEV_C, "kind": KIND_UPDATE, "seq": 6, "size": entry.size,
                         "parts": [2, 1]}
    assert frames[1:] == [{"t": "envelope", "data": e} for e in envelopes(DEV_C, KIND_UPDATE, 6, 3)]
    assert read_frames(session.send(Ping()) + session.send(Close())) == [{"t": "ping"}, {"t": "close"}]


@pytest.mark.parametrize("sizes", [
    [1], [255, 256], [65535, 65536, 3], [MAX_ENVELOPE_BYTES], [7] * MAX_CHUNKS * MAX_PARTS,
])
def test_entries_round_trip_byte_identical(sizes: list[int]) -> None:
    """Parts of several envelopes of sizes across msgpack's bin8/bin16/bin32 boundaries, up to the largest
    envelope and the most parts and envelopes an entry may have."""
    envs = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    parts = tuple(pack_part(envs[i:i + MAX_CHUNKS]) for i in range(0, len(envs), MAX_CHUNKS))
    entry = Entry(DEV_C, KIND_SNAPSHOT, 9, parts)
    sender, receiver = opened(), opened()
    got = events_of(receiver, sender.send(entry))
    assert got == [EntryReceived(entry)]
    received = got[0].entry  # type: ignore[union-attr]
    assert received.parts == parts and received.parts is not parts
    assert [unpack_part(p, "part") for p in received.parts] == [unpack_part(p, "part") for p in parts]
    assert sender.unacked_bytes == entry.size


def test_an_entry_arrives_whole_whatever_the_chunking() -> None:
    entry = make_entry(DEV_D, KIND_UPDATE, 2, count=5, per_part=2)
    data = opened().send(entry)
    receiver = opened()
    got: list[Event | NeedData] = []
    for i in range(len(data)):
        got += events_of(receiver, data[i:i + 1])
    assert got == [EntryReceived(entry)]


@pytest.mark.parametrize("cut", ["in the entry frame", "after the entry frame", "in an envelope",
                                 "between envelopes", "before the last envelope"])
def test_a_peer_that_stops_mid_entry_leaves_no_entry(cut: str) -> None:
    first, second = make_entry(DEV_C, KIND_UPDATE, 1), make_entry(DEV_C, KIND_UPDATE, 2, count=4, per_part=2)
    sender = opened()
    whole, data = sender.send(first), sender.send(second)
    ends = frame_ends(data)
    assert len(ends) == 6  # the entry frame and 4 envelopes
    at = {"in the entry frame": ends[1] - 3, "after the entry frame": ends[1], "in an envelope": ends[2] - 10,
          "between envelopes": ends[3], "before the last envelope": ends[-2]}[cut]
    receiver = opened()
    assert events_of(receiver, whole + data[:at]) == [EntryReceived(first)]
    assert events_of(receiver, b"") == [Closed(clean=False)]
    assert receiver.next_event() == Closed(clean=False)
    assert receiver.peer_holds == {DEV_C: 1}


# -- closing

def test_close_then_end_of_stream_is_clean_and_acks_may_still_go() -> None:
    sender, receiver = opened(), opened()
    entry = make_entry(DEV_C, KIND_UPDATE, 1)
    assert events_of(receiver, sender.send(entry) + sender.send(Close())) == [EntryReceived(entry)]
    with pytest.raises(ProtocolError) as caught:
        sender.send(Ping())
    assert caught.value.code == "PROTOCOL_STATE"
    assert events_of(sender, receiver.send(Ack(DEV_C, KIND_UPDATE, 1))) == [Acked(DEV_C, KIND_UPDATE, 1)]
    assert events_of(receiver, b"") == [Closed(clean=True)]
    with pytest.raises(ProtocolError) as after:
        receiver.receive_data(b"x")
    assert after.value.code == "PROTOCOL_STATE"


@pytest.mark.parametrize("tail", [b"", frame(t="close")[:3], frame(t="close") + b"\x00\x00"],
                         ids=["no close", "part of a close", "bytes after the close"])
def test_end_of_stream_without_a_whole_close_last_is_unclean(tail: bytes) -> None:
    receiver = opened()
    assert events_of(receiver, frame(t="ping") + tail) == [PingReceived()]
    assert events_of(receiver, b"") == [Closed(clean=False)]


def test_end_of_stream_before_any_hello_is_unclean() -> None:
    assert events_of(Session(VAULT, DEV_A), b"") == [Closed(clean=False)]


def test_a_frame_after_close_is_malformed() -> None:
    refused(opened(), frame(t="close") + frame(t="ping"), "PROTOCOL_MALFORMED")


# -- a peer that breaks the protocol

def test_garbage_fails_the_session_and_the_peer_is_told() -> None:
    ours, theirs = opened(), opened()
    error = refused(ours, b"\x00\x00\x00\x05hello", "PROTOCOL_MALFORMED")
    assert exit_status(error) == 8 and isinstance(error, MailboxError)
    for message in (Ping(), Pong(), Close(), SummaryUpdate({})):
        with pytest.raises(ProtocolError) as caught:
            ours.send(message)
        assert caught.value.code == "PROTOCOL_STATE"
    with pytest.raises(ProtocolError) as caught_receive:
        ours.receive_data(b"more")
    assert caught_receive.value.code == "PROTOCOL_STATE"
    told = ours.send(Error(error.code, error.message))
    assert events_of(theirs, told) == [PeerError(error.code, error.message)]
    assert events_of(theirs, b"") == [Closed(clean=False)]
    with pytest.raises(ProtocolError) as caught_again:
        ours.send(Error(error.code, error.message))
    assert caught_again.value.code == "PROTOCOL_STATE"


@pytest.mark.parametrize("prefix, code", [
    (MAX_FRAME + 1, "PROTOCOL_FRAME_TOO_LARGE"), (2**32 - 1, "PROTOCOL_FRAME_TOO_LARGE"), (MAX_FRAME, None),
])
def test_the_length_prefix_is_checked_before_the_frame_is_awaited(prefix: int, code: str | None) -> None:
    session = opened()
    data = prefix.to_bytes(4, "big") + b"\x81"
    if code is None:
        assert events_of(session, data) == []
    else:
        refused(session, data, code)


def test_unparsed_bytes_are_bounded_and_the_driver_drains_first() -> None:
    session = opened()
    head = frame(t="head", author=DEV_C, data=b"h" * (1 << 20))
    count = MAX_BUFFER // len(head) + 1
    with pytest.raises(ProtocolError) as caught:
        session.receive_data(head * count)
    assert caught.value.code == "PROTOCOL_STATE"
    session.receive_data(head * (count // 2))
    with pytest.raises(ProtocolError):
        session.receive_data(head * (count - count // 2))  # not drained: refused, nothing taken
    drained = []
    while (event := session.next_event()) is not NEED_DATA:
        drained.append(event)
    assert drained == [HeadReceived(DEV_C, b"h" * (1 << 20))] * (count // 2)
    assert events_of(session, head * (count - count // 2)) == [HeadReceived(DEV_C, b"h" * (1 << 20))] * (
        count - count // 2)


@pytest.mark.parametrize("version, upgrade", [(PROTOCOL_VERSION + 1, "this device"),
                                              (PROTOCOL_VERSION - 1, "the other device")])
def test_another_protocol_version_is_named(version: int, upgrade: str) -> None:
    """The version is read first: a later version's hello may have other fields."""
    later = frame(t="hello", v=version, vault=VAULT, peer={"id": DEV_B}, capabilities=["x"])
    error = refused(Session(VAULT, DEV_A), later, "PROTOCOL_VERSION")
    assert f"version {version}" in error.message and f"speaks {PROTOCOL_VERSION}" in error.message
    assert upgrade in error.message


def test_another_vault_is_refused() -> None:
    error = refused(Session(VAULT, DEV_A), hello_frame(vault="fedcba9876543210"), "PROTOCOL_OTHER_VAULT")
    assert "fedcba9876543210" in error.message and VAULT in error.message and DEV_B in error.message


@pytest.mark.parametrize("data", [
    frame(t="ping"), frame(t="summary", summary={}), frame(t="ack", author=DEV_A, kind=1, seq=1),
    frame(t="close"),
], ids=["ping", "summary", "ack", "close"])
def test_a_frame_before_hello_is_malformed(data: bytes) -> None:
    refused(Session(VAULT, DEV_A), data, "PROTOCOL_MALFORMED")


def test_an_error_may_come_before_hello() -> None:
    assert events_of(Session(VAULT, DEV_A), frame(t="error", code="PROTOCOL_VERSION", message="no")) == [
        PeerError("PROTOCOL_VERSION", "no")]


def test_a_second_hello_is_malformed() -> None:
    refused(opened(), hello_frame(), "PROTOCOL_MALFORMED")


def _entry_frames(size: int = 10, counts: object = None, datas: tuple[bytes, ...] = (b"x" * 8,)) -> bytes:
    head = frame(t="entry", author=DEV_C, kind=KIND_UPDATE, seq=1, size=size,
                 parts=[len(datas)] if counts is None else counts)
    return head + b"".join(frame(t="envelope", data=d) for d in datas)


def test_the_entry_frames_of_these_tests_are_right() -> None:
    """The control for the malformed entries below: with the right size, the same frames make an entry."""
    assert events_of(opened(), _entry_frames(size=11)) == [EntryReceived(Entry(DEV_C, KIND_UPDATE, 1, (
        pack_part([b"x" * 8]),)))]
    assert events_of(opened(), _entry_frames(size=14, datas=(b"x" * 8, b"y"))) == [EntryReceived(Entry(
        DEV_C, KIND_UPDATE, 1, (pack_part([b"x" * 8, b"y"]),)))]


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x00",
    b"\x00\x00\x00\x01\xc1",
    b"\x00\x00\x00\x02\x01\x02",
    frame(t="ping") + b"\x00\x00\x00\x01\x93",
    (lambda body: len(body).to_bytes(4, "big") + body)(msgpack.packb({"t": "ping"}) + b"\x00"),
    (lambda body: len(body).to_bytes(4, "big") + body)(msgpack.packb([1, 2])),
    (lambda body: len(body).to_bytes(4, "big") + body)(msgpack.packb({"t": "ping", b"x": 1})),
    (lambda body: len(body).to_bytes(4, "big") + body)(msgpack.packb({"t": msgpack.ExtType(1, b"x")})),
    frame(t=7), frame(t="dance"), frame(t="ping", extra=1), frame(t="head", author=DEV_C),
    frame(t="head", author=DEV_C, data=b""), frame(t="head", author="C" * 32, data=b"x"),
    frame(t="head", author=DEV_C * 1000, data=b"x"), frame(t="head", author=DEV_C, data="x"),
    frame(t="envelope", data=b"x"),
    frame(t="ack", author=DEV_C, kind=KIND_UPDATE, seq=1),
    frame(t="ack", author=DEV_C, kind=KIND_HEAD, seq=1), frame(t="ack", author=DEV_C, kind=True, seq=1),
    frame(t="ack", author=DEV_C, kind=1, seq=0), frame(t="ack", author=DEV_C, kind=1, seq=2**63),
    frame(t="ack", author=DEV_C, kind=1, seq=-1),
    frame(t="summary", summary={DEV_C: [1, b"", 5, 0]}), frame(t="summary", summary={"c": [1, b"", 1, 0]}),
    frame(t="summary", summary=[]),
    frame(t="error", code="lower", message=""), frame(t="error", code="X", message="m" * (MAX_MESSAGE + 1)),
    frame(t="error", code="X", message=b"m"),
    frame(t="error", code="X", message="") + frame(t="ping"),
    _entry_frames(counts=[]), _entry_frames(counts=[1] * (MAX_PARTS + 1)), _entry_frames(counts=[0]),
    _entry_frames(counts=[MAX_CHUNKS + 1]), _entry_frames(counts=[True]), _entry_frames(size=0),
    _entry_frames(size=True),
    _entry_frames(size=11) + frame(t="envelope", data=b"z"),
    _entry_frames(size=5),
    _entry_frames(size=11, counts=[2], datas=(b"x" * 20,)),  # refused at once, not when the entry is whole
    _entry_frames(size=100),
    _entry_frames(size=14, counts=[2]) + frame(t="ping"),
    _entry_frames(size=14, counts=[2]) + frame(t="close"),
    _entry_frames(size=14, counts=[2]) + hello_frame(),
])
def test_malformed_frames_are_refused(data: bytes) -> None:
    refused(opened(), data, "PROTOCOL_MALFORMED")


def test_an_entry_announcing_more_than_the_limit_is_refused_before_its_envelopes() -> None:
    error = refused(opened(), frame(t="entry", author=DEV_C, kind=KIND_UPDATE, seq=1, size=MAX_ENTRY_BYTES + 1,
                                    parts=[MAX_CHUNKS] * MAX_PARTS), "PROTOCOL_ENTRY_TOO_LARGE")
    assert str(MAX_ENTRY_BYTES) in error.message


def test_an_entry_sent_again_before_its_ack_is_malformed() -> None:
    entry = make_entry(DEV_C, KIND_UPDATE, 1)
    data = opened().send(entry)
    receiver = opened()
    assert events_of(receiver, data) == [EntryReceived(entry)]
    refused(receiver, data, "PROTOCOL_MALFORMED")


def test_an_entry_acked_may_come_again() -> None:
    entry = make_entry(DEV_C, KIND_UPDATE, 1)
    data = opened().send(entry)
    receiver = opened()
    assert events_of(receiver, data) == [EntryReceived(entry)]
    receiver.send(Ack(DEV_C, KIND_UPDATE, 1))
    assert events_of(receiver, data) == [EntryReceived(entry)]


def test_error_messages_are_cut_and_shown_safely() -> None:
    ours, theirs = opened(), opened()
    events = events_of(theirs, ours.send(Error("SOME_CODE", "bad\x1b[31m\n" + "x" * 5000)))
    assert events == [PeerError("SOME_CODE", "bad\ufffd[31m\ufffd" + "x" * (MAX_MESSAGE - 9))]
    with pytest.raises(ProtocolError) as caught:
        opened().send(Error("not a code", "m"))
    assert caught.value.code == "PROTOCOL_MALFORMED"


# -- our own side

def test_nothing_but_hello_or_error_goes_before_our_hello() -> None:
    session = Session(VAULT, DEV_A)
    for message in (Ping(), Pong(), Close(), SummaryUpdate({}), make_entry(DEV_C, 1, 1), Ack(DEV_C, 1, 1),
                    HeadEnvelope(DEV_C, b"h")):
        with pytest.raises(ProtocolError) as caught:
            session.send(message)
        assert caught.value.code == "PROTOCOL_STATE"
    session.send(Hello({}))
    with pytest.raises(ProtocolError) as second:
        session.send(Hello({}))
    assert second.value.code == "PROTOCOL_STATE"


def test_entries_heads_and_acks_wait_for_the_peers_hello() -> None:
    session = Session(VAULT, DEV_A)
    session.send(Hello({}))
    session.send(Ping())
    for message in (make_entry(DEV_C, 1, 1), HeadEnvelope(DEV_C, b"h")):
        with pytest.raises(ProtocolError) as caught:
            session.send(message)
        assert caught.value.code == "PROTOCOL_STATE"
    assert session.unacked_entries == 0 and session.peer_holds == {}


def test_acks_only_for_entries_received_and_unacked() -> None:
    receiver = opened()
    with pytest.raises(ProtocolError) as caught:
        receiver.send(Ack(DEV_C, KIND_UPDATE, 1))
    assert caught.value.code == "PROTOCOL_STATE"
    events_of(receiver, opened().send(make_entry(DEV_C, KIND_UPDATE, 1)))
    with pytest.raises(ProtocolError):
        receiver.send(Ack(DEV_C, KIND_SNAPSHOT, 1))
    assert read_frames(receiver.send(Ack(DEV_C, KIND_UPDATE, 1))) == [
        {"t": "ack", "author": DEV_C, "kind": KIND_UPDATE, "seq": 1}]
    with pytest.raises(ProtocolError) as twice:
        receiver.send(Ack(DEV_C, KIND_UPDATE, 1))
    assert twice.value.code == "PROTOCOL_STATE"


@pytest.mark.parametrize("make, code", [
    (lambda: Entry(DEV_C, KIND_UPDATE, 1, ()), "PROTOCOL_MALFORMED"),
    (lambda: Entry(DEV_C, KIND_UPDATE, 1, (pack_part([b"x"]),) * (MAX_PARTS + 1)), "PROTOCOL_MALFORMED"),
    (lambda: Entry(DEV_C, KIND_HEAD, 1, (pack_part([b"x"]),)), "PROTOCOL_MALFORMED"),
    (lambda: Entry(DEV_C, KIND_UPDATE, 0, (pack_part([b"x"]),)), "PROTOCOL_MALFORMED"),
    (lambda: Entry("someone", KIND_UPDATE, 1, (pack_part([b"x"]),)), "PROTOCOL_MALFORMED"),
    (lambda: Entry(DEV_C, KIND_UPDATE, 1, (b"\xdc\x00\x01\xc4\x01x",)), "PROTOCOL_MALFORMED"),  # array16
    (lambda: Entry(DEV_C, KIND_UPDATE, 1, (b"not a part",)), "PROTOCOL_MALFORMED"),
    (lambda: Entry(DEV_C, KIND_UPDATE, 1, (pack_part([b""]),)), "PROTOCOL_MALFORMED"),
    # one buffer four times: just over the limit for 64 MiB of memory
    (lambda: Entry(DEV_C, KIND_UPDATE, 1, (b"\x00" * (MAX_ENTRY_BYTES // 4 + 1),) * 4), "PROTOCOL_ENTRY_TOO_LARGE"),
], ids=["no parts", "too many parts", "head kind", "seq 0", "bad author", "non-canonical part", "not a part",
        "empty envelope", "too large"])
def test_an_entry_the_peer_would_refuse_is_not_sent(make: Callable[[], Entry], code: str) -> None:
    session = opened()
    with pytest.raises(ProtocolError) as caught:
        session.send(make())
    assert caught.value.code == code
    assert caught.value.message.startswith("refusing to send")
    assert session.unacked_entries == 0 and session.unacked_bytes == 0 and session.peer_holds == {}


def test_a_summary_the_peer_would_refuse_is_not_sent() -> None:
    session = Session(VAULT, DEV_A)
    for summary in ({"someone": Have(1)}, {DEV_C: Have(1, first=5)}):
        with pytest.raises(ProtocolError) as caught:
            session.send(Hello(summary))
        assert caught.value.code == "PROTOCOL_MALFORMED"
    session.send(Hello({}))  # the refused hellos did not count


def test_the_largest_frames_we_write_fit() -> None:
    """A hello with the largest summary and an envelope frame with the largest envelope stay under MAX_FRAME,
    and the peer takes them."""
    summary = {f"{i:032x}": Have(2**63 - 1, b"\xff" * 32, 2**63 - 1, 2**63 - 1) for i in range(MAX_AUTHORS)}
    data = Session(VAULT, DEV_B).send(Hello(summary))
    assert len(data) - 4 <= MAX_FRAME
    peer = Session(VAULT, DEV_A)
    hello = events_of(peer, data)
    assert len(hello) == 1 and isinstance(hello[0], PeerHello) and hello[0].summary == summary
    entry = Entry(DEV_C, KIND_UPDATE, 1, (pack_part([b"e" * MAX_ENVELOPE_BYTES]),))
    frames = opened().send(entry)
    ends = frame_ends(frames)
    assert len(ends) == 3 and ends[2] - ends[1] - 4 <= MAX_FRAME
    assert events_of(opened(), frames) == [EntryReceived(entry)]


# -- flow control

def test_the_window_bounds_bytes_in_flight_and_acks_release_them() -> None:
    sender, receiver = opened(window_bytes=250), opened()
    entries = [make_entry(DEV_C, KIND_UPDATE, seq) for seq in range(1, 4)]
    sizes = [e.size for e in entries]
    assert sizes == [67, 99, 131]
    data = b""
    sent = 0
    while sender.can_send_entry(entries[sent].size):
        data += sender.send(entries[sent])
        sent += 1
    assert sent == 2
    assert sender.unacked_entries == 2 and sender.unacked_bytes == 67 + 99
    with pytest.raises(ProtocolError) as full:
        sender.send(entries[sent])
    assert full.value.code == "PROTOCOL_STATE"
    with pytest.raises(ProtocolError) as again:
        sender.send(entries[0])
    assert again.value.code == "PROTOCOL_STATE"
    assert sender.unacked_entries == sent
    events_of(receiver, data)
    acked = events_of(sender, receiver.send(Ack(DEV_C, KIND_UPDATE, 2)))
    assert acked == [Acked(DEV_C, KIND_UPDATE, 2)]
    assert sender.unacked_entries == 1 and sender.unacked_bytes == 67
    assert sender.can_send_entry(131) and not sender.can_send_entry(184)
    sender.send(entries[2])
    assert sender.unacked_entries == 2 and sender.unacked_bytes == 67 + 131


def test_the_window_bounds_entries_in_flight() -> None:
    sender = opened(window_entries=2)
    sender.send(make_entry(DEV_C, KIND_UPDATE, 1))
    sender.send(make_entry(DEV_C, KIND_UPDATE, 2))
    assert not sender.can_send_entry(1)
    with pytest.raises(ProtocolError) as full:
        sender.send(make_entry(DEV_C, KIND_UPDATE, 3))
    assert full.value.code == "PROTOCOL_STATE" and sender.unacked_entries == 2


def test_an_entry_larger_than_the_window_goes_alone() -> None:
    sender = opened(window_bytes=10)
    big, small = make_entry(DEV_C, KIND_UPDATE, 1, count=4), make_entry(DEV_C, KIND_UPDATE, 2)
    assert big.size > 10 and sender.can_send_entry(big.size)
    sender.send(big)
    assert not sender.can_send_entry(small.size) and not sender.can_send_entry(1)
    events_of(sender, frame(t="ack", author=DEV_C, kind=KIND_UPDATE, seq=1))
    assert sender.unacked_bytes == 0 and sender.can_send_entry(small.size)


def test_acks_for_entries_never_sent_or_acked_already_are_malformed() -> None:
    sender = opened()
    sender.send(make_entry(DEV_C, KIND_UPDATE, 1))
    ack = frame(t="ack", author=DEV_C, kind=KIND_UPDATE, seq=1)
    assert events_of(sender, ack) == [Acked(DEV_C, KIND_UPDATE, 1)]
    refused(sender, ack, "PROTOCOL_MALFORMED")
    other = opened()
    other.send(make_entry(DEV_C, KIND_UPDATE, 1))
    refused(other, frame(t="ack", author=DEV_C, kind=KIND_SNAPSHOT, seq=1), "PROTOCOL_MALFORMED")


# -- the rest of the frames

def test_ping_pong_head_and_summary_updates() -> None:
    a, b = Peer(DEV_A, []), Peer(DEV_B, [])
    a.start()
    b.start()
    settle(a, b)
    a.out += a.session.send(Ping())
    deliver(a, b)  # B's driver answers
    deliver(b, a)
    assert a.events[-1] == PongReceived() and b.events[-1] == PingReceived()
    head = b"\x99" * 300
    a.out += a.session.send(HeadEnvelope(DEV_C, head))
    newer = {DEV_C: Have(3, b"\x02" * 32, 1, 0)}
    a.out += a.session.send(SummaryUpdate(newer))
    deliver(a, b)
    assert b.events[-2:] == [HeadReceived(DEV_C, head), SummaryReceived(newer)]
    assert b.session.peer_summary == newer
    with pytest.raises(ProtocolError) as caught:
        a.session.send(HeadEnvelope(DEV_C, b"h" * (MAX_ENVELOPE_BYTES + 1)))
    assert caught.value.code == "PROTOCOL_MALFORMED"


def test_the_constructor_refuses_arguments_out_of_shape() -> None:
    for args, kwargs in ((("", DEV_A), {}), ((VAULT, "someone"), {}), ((VAULT, DEV_A), {"window_bytes": 0}),
                         ((VAULT, DEV_A), {"window_entries": 0})):
        with pytest.raises(ValueError):
            Session(*args, **kwargs)  # type: ignore[arg-type]
