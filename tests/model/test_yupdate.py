"""The strict Yjs v1 update reader: real pycrdt updates round-trip, crafted bytes are refused with the right
code, the pycrdt hazard cases never reach yrs as "clean and complete", and no input escapes as anything but
UpdateRejectedError. Hazard bytes are only decoded here, never applied to a pycrdt Doc."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.errors import UpdateRejectedError
from crdtsync.model.ystate import (
    decode_state_vector,
    encode_state_vector,
    expected_state,
    missing_dependencies,
    split_unknown_deletes,
)
from crdtsync.model.yupdate import MAX_CLIENT, MAX_CLOCK, MAX_RUN, DecodedUpdate, decode_update
from tests.conftest import shared_data

# -- crafting updates by hand (lib0 v1 encoding) -----------------------------------------------------------


def uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def vstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return uint(len(raw)) + raw


def item(content: bytes, *, ref: int, origin: tuple[int, int] | None = None,
         right: tuple[int, int] | None = None, root: str | None = "r",
         parent: tuple[int, int] | None = None, sub: str | bytes | None = None) -> bytes:
    """One Item struct: info byte, origins or parent info, then ``content`` (already encoded)."""
    info = ref | (0x80 if origin else 0) | (0x40 if right else 0) | (0x20 if sub is not None else 0)
    out = bytes([info])
    for ident in (origin, right):
        if ident:
            out += uint(ident[0]) + uint(ident[1])
    if not (origin or right):
        out += uint(0) + uint(parent[0]) + uint(parent[1]) if parent else uint(1) + vstr(root or "")
        if sub is not None:
            out += vstr(sub)
    return out + content


def text(value: str, **kw: object) -> bytes:
    return item(vstr(value), ref=4, **kw)  # type: ignore[arg-type]


def anys(*encoded: bytes, **kw: object) -> bytes:
    return item(uint(len(encoded)) + b"".join(encoded), ref=8, **kw)  # type: ignore[arg-type]


def block(client: int, clock: int, *structs: bytes) -> bytes:
    return uint(len(structs)) + uint(client) + uint(clock) + b"".join(structs)


def update(*blocks: bytes, deletes: bytes = b"\x00") -> bytes:
    return uint(len(blocks)) + b"".join(blocks) + deletes


def delete_set(*entries: tuple[int, list[tuple[int, int]]]) -> bytes:
    out = uint(len(entries))
    for client, ranges in entries:
        out += uint(client) + uint(len(ranges)) + b"".join(uint(k) + uint(n) for k, n in ranges)
    return out


def rejected(data: bytes, **kw: object) -> str:
    with pytest.raises(UpdateRejectedError) as info:
        decode_update(data, **kw)  # type: ignore[arg-type]
    assert " at byte " in info.value.message
    return info.value.code


# -- real pycrdt updates -----------------------------------------------------------------------------------

AnyDoc = pycrdt.Doc[Any]


def new_doc(client_id: int | None = None) -> AnyDoc:
    return pycrdt.Doc(client_id=client_id)



def state_of(doc: AnyDoc) -> dict[int, int]:
    return decode_state_vector(doc.get_state())


def assert_round_trip(data: bytes) -> DecodedUpdate:
    """A full update: nothing missing on an empty Doc, and the state it predicts is pycrdt's."""
    decoded = decode_update(data)
    fresh = new_doc()
    fresh.apply_update(data)
    assert expected_state(decoded, {}) == state_of(fresh)
    assert not missing_dependencies(decoded, {})
    return decoded


ANY_VALUES: list[object] = [
    0, 1, -1, 2**31, -(2**52), 2**53 + 1, 2**63 - 1, 0.5, 0.1, -1e300, True, False, None, "", "x",
    "中文😀", b"", b"\x00\xff", [], {}, {"k": [1, {"z": None, "b": b"\x01"}], "t": True}, [[[["deep"]]]],
]


def test_map_with_every_kind_of_value() -> None:
    doc = new_doc(client_id=11)
    m = doc.get("m", type=pycrdt.Map)
    for i, value in enumerate(ANY_VALUES):
        m[f"k{i}"] = value
    decoded = assert_round_trip(doc.get_update())
    assert decoded.structs == {11: ((0, len(ANY_VALUES)),)}
    assert decoded.root_names == {"m"} and not decoded.references and not decoded.deletes


def test_array_of_any_values_counts_one_clock_per_element() -> None:
    doc = new_doc(client_id=3)
    doc.get("a", type=pycrdt.Array).extend(ANY_VALUES)
    assert assert_round_trip(doc.get_update()).structs == {3: ((0, len(ANY_VALUES)),)}


def test_nested_maps_refer_to_their_parent_items() -> None:
    doc = new_doc(client_id=5)
    memories = doc.get("memories", type=pycrdt.Map)
    memories["m1"] = pycrdt.Map({"content@1": {"v": "hi"}, "tags": pycrdt.Map({"a": True})})
    decoded = assert_round_trip(doc.get_update())
    assert decoded.references and all(client == 5 for client, _ in decoded.references)


@pytest.mark.parametrize("value", ["a😀b", "中文テキスト", "𝄞𝄞 mixed é", "😀" * 50])
def test_text_clock_length_is_utf16_code_units(value: str) -> None:
    doc = new_doc(client_id=9)
    doc.get("t", type=pycrdt.Text).insert(0, value)
    decoded = assert_round_trip(doc.get_update())
    assert decoded.structs == {9: ((0, len(value.encode("utf-16-le")) // 2),)}


def test_text_edits_with_deletes_have_a_delete_set() -> None:
    doc = new_doc(client_id=4)
    t = doc.get("t", type=pycrdt.Text)
    t += "hello world"
    t.insert(5, " 😀,")  # pycrdt Text indices are UTF-8 byte offsets
    del t[0:2]
    decoded = assert_round_trip(doc.get_update())
    assert decoded.deletes == {4: ((0, 2),)}
    assert decoded.references


def test_rich_text_formats_and_embeds() -> None:
    doc = new_doc(client_id=3)
    t = doc.get("t", type=pycrdt.Text)
    t.insert(0, "hello world", attrs={"bold": True})
    t.insert_embed(5, {"image": "x.png"})
    t.format(0, 3, {"italic": True})
    assert assert_round_trip(doc.get_update()).structs == {3: ((0, 16),)}


#: Written by JavaScript Yjs 13.6.33 (pycrdt never writes var int numbers; Yjs does, and writes -0 as 0x40):
#: a Map of numbers (ints, -0, 0.5, 1e300, NaN, Infinity, 2n**63n-1n) and of mixed values, a Text with a
#: surrogate pair, formats, an embed and a delete, an XmlFragment holding an XmlElement and an XmlText.
JS_YJS_UPDATE = (
    "01102a002801016d04696e74730175117d007d017d417d3f7d80017dc0017dc1017c4f0000007ccf0000007b433fffffffffffff7bc33f"
    "ffffffffffff7d407c3f0000007b7e37e43c8800759c7b7ff80000000000007c7f8000007a7fffffffffffffff2801016d046d6973630176"
    "0701617e01627f0163780164790165770578f09f98800166740201020167750175017500040101740168812a0201842a03016c842a04"
    "026c6f842a060c20f09f988020e4b8ade69687462a0204626f6c640474727565c62a062a0704626f6c64046e756c6cc62a042a050462"
    "6f6c64046e756c6cc52a0f2a05117b22696d616765223a22782e706e67227dc62a102a0504626f6c64047472756507010178030170"
    "28002a1205636c61737301770163872a120604002a14026869012a010301"
)


def test_an_update_written_by_javascript_yjs() -> None:
    decoded = assert_round_trip(bytes.fromhex(JS_YJS_UPDATE))
    assert expected_state(decoded, {}) == {42: 23}  # Y.encodeStateVector of the JS Doc
    assert decoded.deletes == {42: ((3, 4),)} and decoded.root_names == {"m", "t", "x"}


def test_xml_types() -> None:
    doc = new_doc(client_id=8)
    frag = doc.get("x", type=pycrdt.XmlFragment)
    element = frag.children.append(pycrdt.XmlElement("p", {"class": "a"}))
    element.children.append(pycrdt.XmlText("text 😀"))
    assert_round_trip(doc.get_update())


def random_edits(seed: int, steps: int = 150) -> tuple[list[AnyDoc], list[bytes]]:
    """Three replicas editing a Text, Array and Map concurrently, syncing now and then; each step's diff."""
    rng = random.Random(seed)
    docs = [new_doc(client_id=100 + i) for i in range(3)]
    diffs = []
    for step in range(steps):
        doc = rng.choice(docs)
        t, a = doc.get("t", type=pycrdt.Text), doc.get("a", type=pycrdt.Array)
        before = doc.get_state()
        roll = rng.random()
        if roll < 0.3 and len(t) > 2:
            i = rng.randrange(len(t) - 1)
            del t[i : i + rng.randint(1, min(3, len(t) - i))]
        elif roll < 0.4 and len(a) > 1:
            del a[rng.randrange(len(a))]
        elif roll < 0.5:
            a.insert(rng.randint(0, len(a)), {"step": step})
        else:
            t.insert(rng.randint(0, len(t)), rng.choice(["ab", "x", "yz"]))
        doc.get("m", type=pycrdt.Map)[str(rng.randrange(5))] = step
        diffs.append(doc.get_update(before))
        if rng.random() < 0.3:
            other = rng.choice(docs)
            other.apply_update(doc.get_update(other.get_state()))
    return docs, diffs


@pytest.fixture(scope="module")
def edits() -> tuple[list[AnyDoc], list[bytes]]:
    return random_edits(1)


def test_several_clients_with_deletes(edits: tuple[list[AnyDoc], list[bytes]]) -> None:
    docs, _ = edits
    for doc in docs:
        decoded = assert_round_trip(doc.get_update())
        assert decoded.deletes
        assert len({client for client, _ in decoded.references}) > 1


def test_merged_updates_with_skip_holes(edits: tuple[list[AnyDoc], list[bytes]]) -> None:
    _, diffs = edits
    assert_round_trip(pycrdt.merge_updates(*diffs))
    rng = random.Random(2)
    holes = 0
    for _ in range(40):
        merged = pycrdt.merge_updates(*rng.sample(diffs, rng.randint(2, 20)))
        decoded = decode_update(merged)
        holes += any(len(ranges) > 1 for ranges in decoded.structs.values())
        missing = missing_dependencies(decoded, {})
        assert missing or expected_state(decoded, {}) == merged_state(merged)
    assert holes  # merge_updates wrote Skip structs, and the reader left them out of `structs`


def merged_state(data: bytes) -> dict[int, int]:
    doc = new_doc()
    doc.apply_update(data)
    return state_of(doc)


def test_diffs_replayed_in_order_are_complete_and_predict_the_state(
    edits: tuple[list[AnyDoc], list[bytes]],
) -> None:
    _, diffs = edits
    sink = new_doc()
    for diff in diffs:
        decoded = decode_update(diff)
        state = state_of(sink)
        assert not missing_dependencies(decoded, state)
        sink.apply_update(diff)
        assert state_of(sink) == expected_state(decoded, state)


# -- out of order ------------------------------------------------------------------------------------------


def test_a_later_diff_on_an_empty_state_reports_a_gap_until_the_earlier_one_is_known() -> None:
    doc = new_doc(client_id=21)
    m = doc.get("m", type=pycrdt.Map)
    m["a"] = "first"
    first = doc.get_update()
    after_first = doc.get_state()
    m["b"] = "second"
    m["a"] = "third"
    second = doc.get_update(after_first)
    decoded = decode_update(second)
    assert missing_dependencies(decoded, {}).gaps == {21: (0, 1)}
    known = expected_state(decode_update(first), {})
    assert not missing_dependencies(decoded, known)
    assert expected_state(decoded, known) == state_of(doc)


def test_a_reference_to_another_clients_unknown_item_is_reported() -> None:
    alice, bob = new_doc(client_id=1), new_doc(client_id=2)
    alice.get("t", type=pycrdt.Text).insert(0, "abcd")
    bob.apply_update(alice.get_update())
    bob.get("t", type=pycrdt.Text).insert(2, "XY")
    diff = bob.get_update(alice.get_state())
    decoded = decode_update(diff)
    missing = missing_dependencies(decoded, {})
    assert not missing.gaps and missing.references == {(1, 1), (1, 2)}
    assert not missing_dependencies(decoded, {1: 4})
    assert expected_state(decoded, {1: 4}) == {1: 4, 2: 2}


def test_structs_below_the_known_clock_are_already_integrated() -> None:
    data = update(block(4, 0, text("abc"), bytes([10]) + uint(5), text("de", origin=(4, 2))))
    decoded = decode_update(data)
    assert decoded.structs == {4: ((0, 3), (8, 10))}
    assert missing_dependencies(decoded, {}).gaps == {4: (3, 8)}
    assert not missing_dependencies(decoded, {4: 8})
    assert not missing_dependencies(decoded, {4: 20})
    assert expected_state(decoded, {4: 8}) == {4: 10}
    assert expected_state(decoded, {4: 20}) == {4: 20}


def test_deletes_of_unknown_clocks_are_reported() -> None:
    data = update(block(4, 0, text("abc")), deletes=delete_set((4, [(1, 1), (5, 3)]), (6, [(0, 2)])))
    decoded = decode_update(data)
    assert decoded.deletes == {4: ((1, 2), (5, 8)), 6: ((0, 2),)}
    assert missing_dependencies(decoded, {}).deletes == {4: 7, 6: 1}
    assert missing_dependencies(decoded, {4: 6, 6: 1}).deletes == {4: 7, 6: 1}
    assert not missing_dependencies(decoded, {4: 8, 6: 2})
    assert not missing_dependencies(decode_update(update(deletes=delete_set((4, [(1, 2)])))), {4: 3})


# -- the pycrdt hazard cases -------------------------------------------------------------------------------

#: The lone updates of the hazard cases: a clock past u32 (yrs wraps it, then panics or jumps the clock), and
#: a struct at clock ~2.2e9 whose parent is 7:8 (yrs panics).
CLOCK_PAST_U32 = "010107ede4b495ff072801016d016b0177017d00"
PARENT_FAR_BELOW = "010207a3e3baaf082701016d016e0128000708017d017c3f80000000"


def test_the_two_lone_hazard_updates() -> None:
    assert rejected(bytes.fromhex(CLOCK_PAST_U32)) == "UPDATE_MALFORMED"
    decoded = decode_update(bytes.fromhex(PARENT_FAR_BELOW))
    missing = missing_dependencies(decoded, {})
    assert missing.gaps == {7: (0, 2247012771)} and missing.references == {(7, 8)}
    assert missing_dependencies(decoded, {7: 1}).gaps == {7: (1, 2247012771)}


def hazard_cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = json.loads(shared_data("pycrdt-hazards", "cases.json").read_text())["cases"]
    return cases


def setup_state(case: dict[str, object]) -> dict[int, int]:
    """The state the case starts from, built with honest pycrdt calls."""
    if case["setup"] == "an empty Doc":
        return {}
    if case["name"] == "panic-after-client-7-entry":
        doc = new_doc(client_id=7)
        doc.get("m", type=pycrdt.Map)["a"] = "honest-1"
        return state_of(doc)
    pytest.fail(f"no state for the setup {case['setup']!r} of {case['name']}")


def receive(updates: list[bytes], state: dict[int, int]) -> Iterator[tuple[int, str]]:
    """A receiver: refuse what does not decode, hold what misses something, integrate the rest (advancing
    the state by expected_state) and retry the held ones after each integration. Yields (index, outcome)."""
    held: dict[int, DecodedUpdate] = {}
    for index, data in enumerate(updates):
        try:
            held[index] = decode_update(data)
        except UpdateRejectedError as exc:
            yield index, exc.code
            continue
        progress = True
        while progress:
            progress = False
            for i, decoded in list(held.items()):
                if not missing_dependencies(decoded, state):
                    state.update(expected_state(decoded, state))
                    del held[i]
                    progress = True
                    yield i, "integrated"
        if index in held:
            yield index, "held"


@pytest.mark.parametrize(
    ("name", "outcome"),
    [("panic-after-client-7-entry", "UPDATE_MALFORMED"), ("clock-jump-silent", "UPDATE_MALFORMED"),
     ("panic-empty", "held"), ("hang", "held"), ("hang-2", "UPDATE_MALFORMED")],
)
def test_the_killer_update_of_each_hazard_case_never_integrates(name: str, outcome: str) -> None:
    (case,) = [c for c in hazard_cases() if c["name"] == name]
    updates = [bytes.fromhex(h) for h in case["updates"]]  # type: ignore[attr-defined]
    state = setup_state(case)
    outcomes = dict(receive(updates, state))
    assert outcomes[len(updates) - 1] == outcome
    assert all(clock <= 1000 for clock in state.values()), state


def test_no_hazard_case_ends_with_an_integrated_update() -> None:
    for case in hazard_cases():
        updates = [bytes.fromhex(h) for h in case["updates"]]  # type: ignore[attr-defined]
        state = setup_state(case)
        outcomes = dict(receive(updates, state))
        assert outcomes[len(updates) - 1] != "integrated", case["name"]
        assert set(outcomes.values()) <= {"integrated", "held", "UPDATE_MALFORMED", "UPDATE_UNSUPPORTED_CONTENT"}


# -- refusals, one per rule --------------------------------------------------------------------------------

GOOD = update(block(1, 0, text("ab")))


def test_good_crafted_update_decodes() -> None:
    assert decode_update(GOOD).structs == {1: ((0, 2),)}
    assert decode_update(b"\x00\x00").is_empty()


def test_trailing_bytes_and_truncation_at_every_position_are_malformed(
    edits: tuple[list[AnyDoc], list[bytes]],
) -> None:
    data = edits[0][0].get_update()
    assert rejected(data + b"\x00") == "UPDATE_MALFORMED"
    for cut in range(len(data)):
        assert rejected(data[:cut]) == "UPDATE_MALFORMED", cut


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\x00" + GOOD[1:],  # non-minimal numClients
        update(block(1, 0, text("ab"))[:-3] + b"\x82\x00ab"),  # non-minimal string length
        b"\x01" + b"\x01" + b"\xff" * 8 + b"\x7f" + b"\x00" + text("a") + b"\x00",  # 9-byte var uint
        b"\x01\x01" + uint(MAX_CLIENT + 1) + b"\x00" + text("a") + b"\x00",  # client past 2^53-1
        update(block(1, MAX_CLOCK + 1, text("a"))),  # clock past u32
        update(block(1, MAX_CLOCK - 1, text("ab"))),  # end past u32
        update(block(1, 0, text(""))),  # zero-length struct
        update(block(1, 0, b"\x00\x00")),  # zero-length GC
        update(block(1, 0, b"\x80\x01")),  # GC info byte with high bits
        update(block(1, 0, b"\x4a\x01")),  # Skip info byte with high bits
        update(block(1, 0, item(uint(0), ref=1))),  # zero-length Deleted
        update(block(1, 0, anys())),  # zero-length Any
        update(block(1, 0, b"\x04" + uint(2) + b"\x01")),  # parent info flag 2
        update(block(1, 0, text("ab"), text("c"))) + b"\x00",  # trailing byte
        update(block(1, 0, item(vstr(b"\xed\xa0\x80"), ref=4))),  # UTF-8 surrogate
        update(block(1, 0, item(vstr(b"\xc0\xaf"), ref=4))),  # over-long UTF-8
        update(block(1, 0, text("a", sub=b"\xed\xb2\x80"))),  # map key with a UTF-8 surrogate
        update(block(1, 0, item(vstr("{nope"), ref=5))),  # Embed that is not JSON
        update(block(1, 0, item(vstr("NaN"), ref=5))),
        update(block(1, 0, item(vstr('"\\ud800"'), ref=5))),  # lone surrogate escape
        update(block(1, 0, item(vstr("[" * 100_000), ref=5))),
        update(block(1, 0, item(vstr("k") + vstr(""), ref=6))),  # Format with an empty JSON value
        update(block(1, 0, anys(b"\x80"))),  # unknown Any tag
        update(block(1, 0, anys(b"\x7d\x80\x00"))),  # non-minimal Any var int
        update(block(1, 0, anys(b"\x7d" + b"\xff" * 9 + b"\x01"))),  # over-long Any var int
        update(block(1, 0, anys(b"\x7c\x00\x00"))),  # truncated float32
        update(block(1, 0, anys(b"\x75" + uint(2**40) + b"\x7e"))),  # array count past the bytes left
        update(block(1, 0, anys(b"\x75\x01" * 65 + b"\x7e"))),  # Any nested 65 deep
        update(block(1, 0, item(uint(3) + b"\xff", ref=3))),  # Binary longer than the bytes left
        uint(2**40) + b"\x00",  # numClients past the bytes left
        update(block(1, 0, text("a")), block(1, 1, text("b"))),  # a client listed twice
        update(block(1, 0, text("ab"), text("c", origin=(1, 2)))),  # origin is the Item itself
        update(block(1, 0, text("ab", parent=(1, 5), root=None))),  # parent later in its own client
        update(block(2, 0, text("x", origin=(3, 0))), block(3, 0, text("y", origin=(2, 0)))),  # cycle
        update(block(2, 0, text("x", parent=(3, 0), sub="k")), block(3, 0, text("y", right=(2, 0)))),
        update(deletes=delete_set((1, [(0, 0)]))),  # zero-length delete range
        update(deletes=delete_set((1, [(MAX_CLOCK, 1)]))),  # delete range end past u32
        update(deletes=delete_set((1, [(5, 2), (0, 1)]))),  # delete ranges out of order
        update(deletes=delete_set((1, [(0, 3), (2, 1)]))),  # delete ranges overlapping
        update(deletes=delete_set((1, [(0, 1)]), (1, [(3, 1)]))),  # a client listed twice in the delete set
        update(deletes=uint(2) + uint(1) + uint(1)),  # truncated delete set
    ],
)
def test_malformed(data: bytes) -> None:
    assert rejected(data) == "UPDATE_MALFORMED"


@pytest.mark.parametrize(
    "data",
    [
        update(block(1, 0, item(uint(1) + vstr("1"), ref=2))),  # JSON content: yrs reads len+1 strings
        update(block(1, 0, item(uint(5) + vstr("hook"), ref=7))),  # XmlHook: yrs does not read its name
        update(block(1, 0, item(uint(9), ref=7))),  # type ref 9 (subdocument type)
        update(block(1, 0, item(uint(15), ref=7))),  # type ref 15 (undefined)
        update(block(1, 0, item(vstr("guid") + b"\x76\x00", ref=9))),  # subdocument
        update(block(1, 0, item(b"\x00", ref=11))),  # ref 11 (yrs Move)
        update(block(1, 0, item(vstr("ab"), ref=0x14))),  # ref 20: yrs would mask it to String
    ],
)
def test_unsupported_content(data: bytes) -> None:
    assert rejected(data) == "UPDATE_UNSUPPORTED_CONTENT"


def test_subdocuments_only_when_allowed() -> None:
    data = update(block(1, 0, item(vstr("guid") + b"\x76\x01" + vstr("gc") + b"\x78", ref=9)))
    assert decode_update(data, allow_subdocs=True).structs == {1: ((0, 1),)}


def test_xml_element_and_every_supported_type_ref() -> None:
    types = [item(uint(t) + (vstr("p") if t == 3 else b""), ref=7) for t in (0, 1, 2, 3, 4, 6)]
    assert decode_update(update(block(1, 0, *types))).structs == {1: ((0, 6),)}


def test_every_any_tag_and_the_deepest_nesting_accepted() -> None:
    values = [b"\x7f", b"\x7e", b"\x7d\x40", b"\x7d" + b"\xbf" + b"\xff" * 6 + b"\x0f", b"\x7c\x3f\x80\x00\x00",
              b"\x7b" + b"\x00" * 8, b"\x7a" + b"\xff" * 8, b"\x79", b"\x78", b"\x77" + vstr("s"),
              b"\x76\x01" + vstr("k") + b"\x7e", b"\x75\x01\x78", b"\x74" + vstr(b"\x00\x01"),
              b"\x75\x01" * 64 + b"\x7e"]
    assert decode_update(update(block(1, 0, anys(*values)))).structs == {1: ((0, len(values)),)}


def test_too_large() -> None:
    assert rejected(update(block(1, 0, item(uint(MAX_RUN + 1), ref=1)))) == "UPDATE_TOO_LARGE"
    assert rejected(update(block(1, 0, b"\x0a" + uint(MAX_RUN + 1), text("a")))) == "UPDATE_TOO_LARGE"
    long_run = update(block(1, 0, *[text("abcd")] * 3))
    assert rejected(long_run, max_run=3) == "UPDATE_TOO_LARGE"
    assert decode_update(long_run, max_run=4).structs == {1: ((0, 12),)}


def test_a_client_may_span_more_than_max_run_in_many_structs() -> None:
    many = update(block(1, 0, *[text("abcd")] * 300))
    assert decode_update(many, max_run=4).structs == {1: ((0, 1200),)}


# -- never anything but UpdateRejectedError, and fast ------------------------------------------------------


@pytest.fixture(scope="module")
def samples(edits: tuple[list[AnyDoc], list[bytes]]) -> list[bytes]:
    docs, diffs = edits
    doc = new_doc(client_id=77)
    doc.get("m", type=pycrdt.Map).update({f"k{i}": v for i, v in enumerate(ANY_VALUES)})
    return [doc.get_update(), docs[0].get_update(), pycrdt.merge_updates(*diffs[:30]), *diffs[:10]]


def decodes_or_refuses(data: bytes) -> None:
    try:
        decoded = decode_update(data)
    except UpdateRejectedError as exc:
        assert exc.code in ("UPDATE_MALFORMED", "UPDATE_UNSUPPORTED_CONTENT", "UPDATE_TOO_LARGE")
        return
    missing_dependencies(decoded, {1: 3, 100: 10})
    expected_state(decoded, {})


@settings(max_examples=500, deadline=200)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


Mutation = Callable[[bytes, int, int], bytes]
MUTATIONS: list[Mutation] = [
    lambda d, i, b: d[:i] + bytes([b]) + d[i + 1 :],
    lambda d, i, b: d[:i] + bytes([b]) + d[i:],
    lambda d, i, b: d[:i] + d[i + 1 :],
    lambda d, i, b: d[:i],
    lambda d, i, b: d[:i] + bytes([d[i] ^ (1 << (b % 8))]) + d[i + 1 :] if i < len(d) else d,
]


@settings(max_examples=1500, deadline=500)
@given(st.data())
def test_mutated_real_updates(samples: list[bytes], data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(samples))
    mutated = original
    for _ in range(data.draw(st.integers(1, 3))):
        mutate = data.draw(st.sampled_from(MUTATIONS))
        mutated = mutate(mutated, data.draw(st.integers(0, max(len(mutated) - 1, 0))), data.draw(st.integers(0, 255)))
    decodes_or_refuses(mutated)


def test_huge_counts_fail_fast() -> None:
    for data in (uint(MAX_CLIENT) + b"\x00" * 10, update(block(1, 0, anys(b"\x76" + uint(2**50) + b"\x00")))):
        assert rejected(data) == "UPDATE_MALFORMED"


# -- state vectors -----------------------------------------------------------------------------------------


def test_state_vector_round_trip_against_pycrdt(edits: tuple[list[AnyDoc], list[bytes]]) -> None:
    doc = edits[0][0]
    state = state_of(doc)
    assert len(state) == 3
    encoded = encode_state_vector(state)
    assert decode_state_vector(encoded) == state
    assert doc.get_update(encoded) == doc.get_update(doc.get_state())
    assert len(encoded) == len(doc.get_state())
    assert encode_state_vector({}) == new_doc().get_state() == b"\x00"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x01\x01", b"\x00\x00", b"\x02\x01\x01\x01\x02", b"\x01\x01" + uint(MAX_CLOCK + 1),
     b"\x01\x81\x00\x01", uint(2**30) + b"\x01\x01"],
)
def test_malformed_state_vectors(data: bytes) -> None:
    with pytest.raises(UpdateRejectedError) as info:
        decode_state_vector(data)
    assert info.value.code == "UPDATE_MALFORMED"


def test_encode_state_vector_refuses_out_of_range_entries() -> None:
    with pytest.raises(ValueError):
        encode_state_vector({1: MAX_CLOCK + 1})
    with pytest.raises(ValueError):
        encode_state_vector({-1: 0})


def test_an_update_splits_into_its_structs_with_known_deletes_and_the_deletes_that_wait() -> None:
    """Client 1's contribution carries the delete of a struct client 2 wrote (the whole delete set its Doc
    knows) to a replica that has nothing of client 2: the structs and the known deletes go now, the rest waits;
    applied in order (with client 2's structs in between) they give what the whole update gives."""
    one: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    two: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2)
    m1, m2 = one.get("m", type=pycrdt.Map), two.get("m", type=pycrdt.Map)
    m1["kept"] = "a"
    m1["replaced"] = "b"
    two.apply_update(one.get_update())
    m2["temporary"] = "c"
    del m2["temporary"]
    m2["lasting"] = "d"
    one.apply_update(two.get_update())
    m1["replaced"] = "e"
    contribution = one.get_update(encode_state_vector(decode_state_vector(two.get_state()) | {1: 0}))
    decoded = decode_update(contribution)
    state: dict[int, int] = {}
    missing = missing_dependencies(decoded, state)
    assert missing.deletes and not missing.gaps and 2 in decoded.deletes

    known, known_decoded, rest = split_unknown_deletes(contribution, decoded, state)
    assert decode_update(known) == known_decoded and known_decoded.structs == decoded.structs
    assert 2 not in known_decoded.deletes and known_decoded.deletes[1] == decoded.deletes[1]
    assert not missing_dependencies(known_decoded, state)
    rest_decoded = decode_update(rest)
    assert not rest_decoded.structs and rest_decoded.deletes == {2: decoded.deletes[2]}

    whole: pycrdt.Doc[Any] = pycrdt.Doc()
    whole.apply_update(contribution)
    whole.apply_update(two.get_update())
    parts: pycrdt.Doc[Any] = pycrdt.Doc()
    parts.apply_update(known)
    parts.apply_update(two.get_update())
    parts.apply_update(rest)
    assert parts.get("m", type=pycrdt.Map).to_py() == whole.get("m", type=pycrdt.Map).to_py() == {
        "kept": "a", "replaced": "e", "lasting": "d"}
    assert parts.get_state() == whole.get_state()
    assert decode_update(parts.get_update()).deletes == decode_update(whole.get_update()).deletes
