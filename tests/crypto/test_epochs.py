"""Epoch statements: HPKE wraps for one recipient each, the signed canonical statement, the commitment check, and
the rules that give every device the same revocations and current epoch whatever order statements came in."""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.crypto.epochs import (
    MAX_STATEMENT_BYTES,
    WRAP_BYTES,
    EpochStatement,
    EpochView,
    make_statement,
    open_statement,
    resolve,
    unwrap_key,
    wrap_key,
)
from crdtsync.crypto.keys import DeviceKeys, new_vault_id, new_vault_key
from crdtsync.errors import CryptoError

VAULT = new_vault_id()
#: Six devices of the vault, made once (key generation is cheap, but the hypothesis test reuses them).
A, B, C, D, E, F = DEVICES = tuple(DeviceKeys.generate() for _ in range(6))
REGISTRY = {d.device_id: d.sign_pk for d in DEVICES}
LOW_ORDER_POINT = bytes(32)


def kx(*devices: DeviceKeys) -> dict[str, bytes]:
    return {d.device_id: d.kx_pk for d in devices}


def statement(author: DeviceKeys, prev: int, recipients: tuple[DeviceKeys, ...], revoke: dict[DeviceKeys, int],
              *, key: bytes | None = None, reason: str = "revoke") -> EpochStatement:
    return make_statement(author, vault_id=VAULT, prev=prev, epoch=prev + 1, vault_key=key or new_vault_key(),
                          reason=reason, recipients=kx(*recipients),
                          revoke={d.device_id: seq for d, seq in revoke.items()})


# -- wraps -------------------------------------------------------------------------------------------------


def test_a_wrap_opens_for_its_recipient_only_and_each_wrap_is_fresh() -> None:
    key = new_vault_key()
    blob = wrap_key(key, vault_id=VAULT, epoch=3, recipient=B.device_id, recipient_kx_pk=B.kx_pk)
    assert len(blob) == WRAP_BYTES
    assert unwrap_key(blob, vault_id=VAULT, epoch=3, recipient=B) == key
    assert wrap_key(key, vault_id=VAULT, epoch=3, recipient=B.device_id, recipient_kx_pk=B.kx_pk) != blob
    for args in ({"vault_id": new_vault_id(), "epoch": 3, "recipient": B},  # copied to another vault
                 {"vault_id": VAULT, "epoch": 4, "recipient": B},  # or epoch
                 {"vault_id": VAULT, "epoch": 3, "recipient": C}):  # opened by another device
        with pytest.raises(CryptoError) as caught:
            unwrap_key(blob, **args)  # type: ignore[arg-type]
        assert caught.value.code == "KEY_UNWRAP_FAILED"
    for flipped in range(0, WRAP_BYTES, 7):
        altered = bytearray(blob)
        altered[flipped] ^= 1
        with pytest.raises(CryptoError):
            unwrap_key(bytes(altered), vault_id=VAULT, epoch=3, recipient=B)


def test_a_wrap_bound_to_one_recipient_id_does_not_open_under_another_id_with_the_same_key() -> None:
    """The recipient's id is in the HPKE info: a wrap made out to C's id with B's key does not open for B."""
    blob = wrap_key(new_vault_key(), vault_id=VAULT, epoch=1, recipient=C.device_id, recipient_kx_pk=B.kx_pk)
    with pytest.raises(CryptoError):
        unwrap_key(blob, vault_id=VAULT, epoch=1, recipient=B)


def test_a_low_order_recipient_key_is_key_invalid() -> None:
    with pytest.raises(CryptoError) as caught:
        wrap_key(new_vault_key(), vault_id=VAULT, epoch=1, recipient=B.device_id, recipient_kx_pk=LOW_ORDER_POINT)
    assert caught.value.code == "KEY_INVALID"


# -- the statement -----------------------------------------------------------------------------------------


def test_a_statement_round_trips_verifies_and_gives_each_recipient_the_committed_key() -> None:
    key = new_vault_key()
    made = statement(A, 0, (B, C), {D: 7}, key=key)
    assert set(made.wraps) == {A.device_id, B.device_id, C.device_id}  # the author always gets one
    parsed = EpochStatement.from_bytes(made.to_bytes())
    assert parsed == made and parsed.digest == made.digest
    assert parsed.signed_by(A.sign_pk) and not parsed.signed_by(B.sign_pk)
    assert all(open_statement(parsed, device) == key for device in (A, B, C))
    with pytest.raises(CryptoError) as caught:
        open_statement(parsed, D)
    assert caught.value.code == "KEY_NOT_WRAPPED"


def test_an_author_that_wraps_different_keys_is_caught_by_the_commitment() -> None:
    """A dishonest author gives C another key than B: the statement is validly signed, but C's key does not
    match the one commitment every recipient checks."""
    honest = statement(A, 0, (B, C), {}, key=new_vault_key())
    other = wrap_key(new_vault_key(), vault_id=VAULT, epoch=1, recipient=C.device_id, recipient_kx_pk=C.kx_pk)
    unsigned = dataclasses.replace(honest, wraps={**honest.wraps, C.device_id: other})
    forged = dataclasses.replace(unsigned, signature=A.sign(b"crdtsync/v1/epoch-statement\0" + unsigned.body()))
    assert forged.signed_by(A.sign_pk)
    open_statement(forged, B)
    with pytest.raises(CryptoError) as caught:
        open_statement(forged, C)
    assert caught.value.code == "KEY_COMMIT_MISMATCH"


def test_a_device_cannot_revoke_itself() -> None:
    with pytest.raises(CryptoError) as caught:
        statement(A, 0, (B,), {A: 3})
    assert caught.value.code == "EPOCH_SELF_REVOKE"


def _repacked(made: EpochStatement, **changes: object) -> bytes:
    body = msgpack.unpackb(made.body(), raw=False)
    body.update(changes)
    return msgpack.packb([msgpack.packb(body, use_bin_type=True), made.signature], use_bin_type=True)


@pytest.mark.parametrize("changes", [
    {"t": "head"}, {"v": 2}, {"vault": b"short"}, {"epoch": 0}, {"prev": -1}, {"author": "not an id"},
    {"reason": "whim"}, {"commit": b"x" * 31}, {"revoke": {"zz": 1}}, {"wraps": {}},
    {"wraps": {B.device_id: b"x" * (WRAP_BYTES - 1)}},
])
def test_a_statement_with_a_bad_field_is_malformed(changes: dict[str, object]) -> None:
    with pytest.raises(CryptoError) as caught:
        EpochStatement.from_bytes(_repacked(statement(A, 0, (B,), {C: 1}), **changes))
    assert caught.value.code == "EPOCH_STATEMENT_MALFORMED"


def test_a_non_canonical_or_oversized_statement_is_malformed() -> None:
    made = statement(A, 0, (B,), {C: 1})
    body = made.body()
    wide = msgpack.packb([body, made.signature], use_bin_type=False)  # bytes as str: another encoding
    for data in (wide, made.to_bytes() + b"\0", b"x" * (MAX_STATEMENT_BYTES + 1), b""):
        with pytest.raises(CryptoError) as caught:
            EpochStatement.from_bytes(data)
        assert caught.value.code == "EPOCH_STATEMENT_MALFORMED"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_change_is_refused_or_breaks_the_signature(data: st.DataObject) -> None:
    made = statement(A, 2, (B, C), {D: 4})
    raw = bytearray(made.to_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    try:
        parsed = EpochStatement.from_bytes(bytes(raw))
    except CryptoError as exc:
        assert exc.code == "EPOCH_STATEMENT_MALFORMED"
    else:
        assert not parsed.signed_by(A.sign_pk)


# -- the rules ---------------------------------------------------------------------------------------------


def view(*statements: EpochStatement, registry: dict[str, bytes] = REGISTRY) -> EpochView:
    return resolve(statements, vault_id=VAULT, registry=registry)


def test_no_statement_leaves_the_founding_epoch_current() -> None:
    empty = view()
    assert empty.current == 0 and empty.winner is None and empty.clean and not empty.revoked


def test_one_revocation_moves_to_its_epoch_and_refuses_the_revoked_devices_later_entries() -> None:
    revoking = statement(A, 0, (B,), {C: 5})
    seen = view(revoking)
    assert seen.current == 1 and seen.winner == revoking and seen.clean
    assert seen.revoked[C.device_id].by == A.device_id
    assert not seen.refuses(C.device_id, 5) and seen.refuses(C.device_id, 6) and not seen.refuses(B.device_id, 99)


def test_concurrent_revocations_of_two_devices_revoke_both_and_a_rekey_makes_the_epoch_clean() -> None:
    by_a = statement(A, 0, (B, D), {C: 3})  # A had not seen B's: D still gets A's key
    by_b = statement(B, 0, (A, C), {D: 4})
    seen = view(by_a, by_b)
    assert set(seen.revoked) == {C.device_id, D.device_id}
    assert seen.current == 1 and len(seen.keys_for(1)) == 2 and not seen.clean
    assert seen.winner is not None
    rekey = statement(A if seen.winner.author == A.device_id else B, 1, (A, B), {}, reason="rekey")
    after = view(by_a, by_b, rekey)
    assert after.current == 2 and after.winner == rekey and after.clean


def test_two_devices_revoking_each_other_at_once_resolve_to_the_first_statement_in_order() -> None:
    a_revokes_c = statement(A, 0, (B,), {C: 2})
    c_revokes_a = statement(C, 0, (B,), {A: 9})
    seen = view(c_revokes_a, a_revokes_c)
    first = min((a_revokes_c, c_revokes_a), key=lambda s: s.digest)
    second = a_revokes_c if first is c_revokes_a else c_revokes_a
    assert seen.counted == (first,) and seen.void[second.digest] == "EPOCH_AUTHOR_REVOKED"
    assert list(seen.revoked) == list(first.revoke)


def test_a_revoked_device_that_later_revokes_another_does_not_count() -> None:
    revoking = statement(A, 0, (B,), {C: 2})
    late = statement(C, 1, (B,), {A: 9})  # made after C was revoked at epoch 1
    seen = view(late, revoking)
    assert seen.counted == (revoking,) and seen.void[late.digest] == "EPOCH_AUTHOR_REVOKED"


def test_a_statement_that_wraps_for_a_device_its_author_knew_was_revoked_is_void() -> None:
    revoking = statement(A, 0, (B, D), {C: 2})
    rekey = statement(B, 1, (A, D), {})
    wrong = statement(D, 2, (A, B, C), {})  # D sealed past epoch 1: it knew C was revoked
    seen = view(revoking, rekey, wrong)
    assert seen.void[wrong.digest] == "EPOCH_WRAPS_REVOKED" and seen.current == 2


def test_a_statement_of_the_epoch_a_sibling_revoked_at_counts_and_calls_for_a_rekey() -> None:
    """A and B revoke C and D at once (both epoch 1); A then revokes E on top of its own epoch 1, still wrapping
    for D, whose revocation it never saw: every revocation counts, and the current key is due for a rekey."""
    a_revokes_c = statement(A, 0, (B, D, E), {C: 2})
    b_revokes_d = statement(B, 0, (A, C, E), {D: 3})
    a_revokes_e = statement(A, 1, (B, D), {E: 4})
    seen = view(a_revokes_e, b_revokes_d, a_revokes_c)
    assert seen.void == {} and set(seen.revoked) == {C.device_id, D.device_id, E.device_id}
    assert seen.current == 2 and not seen.clean


def test_the_same_device_revoked_twice_keeps_the_first_revocation_and_the_highest_point() -> None:
    first = statement(A, 0, (B, D), {C: 2})
    again = statement(B, 0, (A, D), {C: 6})
    seen = view(again, first)
    revocation = seen.revoked[C.device_id]
    earliest = min((first, again), key=lambda s: s.digest)
    assert revocation.seq == 6 and revocation.by == earliest.author


def test_statements_that_break_the_rules_are_void_with_their_code() -> None:
    other_vault = make_statement(A, vault_id=new_vault_id(), prev=0, epoch=1, vault_key=new_vault_key(),
                                 reason="revoke", recipients=kx(B), revoke={C.device_id: 1})
    stranger = DeviceKeys.generate()
    by_stranger = statement(stranger, 0, (A,), {C: 1})
    to_stranger = make_statement(A, vault_id=VAULT, prev=0, epoch=1, vault_key=new_vault_key(), reason="rekey",
                                 recipients={**kx(B), stranger.device_id: stranger.kx_pk})
    impostor_registry = {**REGISTRY, A.device_id: B.sign_pk}  # A's registered key is not the one that signed
    assert view(other_vault).void[other_vault.digest] == "EPOCH_OTHER_VAULT"
    assert view(by_stranger).void[by_stranger.digest] == "EPOCH_UNKNOWN_AUTHOR"
    assert view(to_stranger).void[to_stranger.digest] == "EPOCH_UNKNOWN_DEVICE"
    signed = statement(A, 0, (B,), {C: 1})
    assert view(signed, registry=impostor_registry).void[signed.digest] == "EPOCH_BAD_SIGNATURE"
    assert all(v.current == 0 for v in (view(other_vault), view(by_stranger), view(to_stranger)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.sets(st.integers(0, 5), max_size=2),
                          st.integers(0, 9)), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_every_order_and_repetition_of_the_same_statements_gives_the_same_view(
        plan: list[tuple[int, int, set[int], int]], shuffle: random.Random) -> None:
    """Devices receive statements by different paths, in different orders, some twice: the view is one."""
    made = []
    for author, prev, targets, seq in plan:
        targets.discard(author)
        recipients = tuple(d for i, d in enumerate(DEVICES) if i != author and i not in targets)
        made.append(statement(DEVICES[author], prev, recipients, {DEVICES[t]: seq for t in targets}))
    reference = view(*made)
    for _ in range(3):
        again = made + shuffle.sample(made, k=len(made) // 2)
        shuffle.shuffle(again)
        other = view(*again)
        assert (other.current, other.winner, other.counted, dict(other.revoked), dict(other.void)) == \
            (reference.current, reference.winner, reference.counted, dict(reference.revoked), dict(reference.void))
    assert reference.counted[0] == min(made, key=lambda s: (s.prev, s.epoch, s.digest))  # the first always counts
