"""The pure pairing layer (crdtsync.crypto.pairing): codes, SPAKE2 with key confirmation, the invitation's
policy, sealed records and the grant. No sockets, no clock: randomness and time are arguments."""

from __future__ import annotations

import os
import random

import pytest

from crdtsync.crypto.header import create_header
from crdtsync.crypto.keys import new_vault_id, new_vault_key
from crdtsync.crypto.pairing import (
    CODE_PATTERN,
    FIRST_WORDS,
    MAGIC,
    MAX_FRAME,
    MAX_RECORD,
    SECOND_WORDS,
    Grant,
    Invitation,
    InvitationState,
    InviterHandshake,
    JoinerHandshake,
    PairingCode,
    RecordOpener,
    RecordSealer,
    frame,
    looks_like_code,
    new_code,
    parse_code,
)
from crdtsync.errors import LanError
from crdtsync.protocol.knock import MAGIC as KNOCK_MAGIC
from tests.conftest import cheap_kdf

CODE = PairingCode(7, "cobra", "hamburger")


def _seeded(seed: int) -> object:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def _pair(joiner_code: PairingCode, invitation: Invitation, now: float = 1.0) -> tuple[JoinerHandshake,
                                                                                       InviterHandshake]:
    """Run the exchange to the end, or until one side raises."""
    joiner, inviter = JoinerHandshake(joiner_code, os.urandom), InviterHandshake(invitation, os.urandom)
    to_joiner = inviter.receive_data(joiner.start(), now)
    to_inviter = joiner.receive_data(to_joiner)
    joiner.receive_data(inviter.receive_data(to_inviter, now))
    return joiner, inviter


def _attempt(code: PairingCode, invitation: Invitation, now: float = 1.0) -> tuple[LanError, LanError]:
    """A failing attempt: the inviter's error, and the joiner's once it reads the inviter's error frame."""
    from crdtsync.crypto.pairing import error_frame

    joiner, inviter = JoinerHandshake(code, os.urandom), InviterHandshake(invitation, os.urandom)
    try:
        to_inviter = joiner.receive_data(inviter.receive_data(joiner.start(), now))
        inviter.receive_data(to_inviter, now)
    except LanError as exc:
        inviter_error = exc
    else:
        raise AssertionError("the inviter accepted")
    with pytest.raises(LanError) as joiner_error:
        joiner.receive_data(error_frame(inviter_error))
    return inviter_error, joiner_error.value


# -- codes ------------------------------------------------------------------------------------------------


def test_word_lists_hold_256_distinct_short_lowercase_words_each_and_share_none() -> None:
    for words in (FIRST_WORDS, SECOND_WORDS):
        assert len(words) == len(set(words)) == 256
        assert all(word.isascii() and word.isalpha() and word.islower() and len(word) <= 11 for word in words)
    assert not set(FIRST_WORDS) & set(SECOND_WORDS)


def test_a_new_code_is_a_number_and_two_words_that_parse_back() -> None:
    for seed in range(200):
        code = new_code(_seeded(seed))  # type: ignore[arg-type]
        assert CODE_PATTERN.match(str(code)) and looks_like_code(str(code))
        assert 1 <= code.number <= 999
        assert parse_code(str(code)) == code
    assert str(CODE) == "7-cobra-hamburger"


def test_the_words_are_drawn_uniformly_from_the_randomness_given() -> None:
    assert new_code(lambda n: bytes([0, 6, 0, 255])) == PairingCode(7, "aardvark", "yucatan")
    assert new_code(lambda n: bytes([0, 0, 255, 0])).first == "zulu"


def test_the_discovery_key_names_the_invitation_by_its_number_alone() -> None:
    """Joiner and inviter tag and recognise the announcement with the same key, derived from the number only:
    the words (the secret) never reach the network through it; another number gives another key."""
    key = PairingCode(7, "cobra", "hamburger").discovery_key
    assert len(key) == 32 and key == PairingCode(7, "upset", "vertigo").discovery_key
    assert key != PairingCode(8, "cobra", "hamburger").discovery_key
    assert len({PairingCode(n, "cobra", "hamburger").discovery_key for n in range(1, 1000)}) == 999


def test_parsing_ignores_case_and_surrounding_blanks() -> None:
    assert parse_code("  7-Cobra-HAMBURGER\n") == CODE


@pytest.mark.parametrize("text", ["7-cobra", "cobra-hamburger", "7 cobra hamburger", "0-cobra-hamburger",
                                  "1000-cobra-hamburger", "07-cobra-hamburger", "7-cobras-hamburger",
                                  "7-hamburger-cobra", "7-cobra-hamburger-extra", ""])
def test_a_code_that_does_not_parse_is_pairing_code_invalid(text: str) -> None:
    with pytest.raises(LanError) as caught:
        parse_code(text)
    assert caught.value.code == "PAIRING_CODE_INVALID"


# -- SPAKE2 and key confirmation --------------------------------------------------------------------------


def test_the_right_code_gives_both_sides_crossed_channel_keys_and_spends_the_invitation() -> None:
    invitation = Invitation(CODE, created=0.0)
    joiner, inviter = _pair(CODE, invitation)
    assert joiner.keys is not None and inviter.keys is not None
    assert joiner.keys.send == inviter.keys.receive and joiner.keys.receive == inviter.keys.send
    assert joiner.keys.send != joiner.keys.receive
    assert joiner.keys.transcript == inviter.keys.transcript
    assert invitation.state is InvitationState.CLAIMED and invitation.failures == 0


def test_two_runs_with_the_same_code_give_different_keys() -> None:
    first, _ = _pair(CODE, Invitation(CODE, created=0.0))
    second, _ = _pair(CODE, Invitation(CODE, created=0.0))
    assert first.keys is not None and second.keys is not None and first.keys.send != second.keys.send


def test_a_wrong_code_fails_on_both_sides_with_pairing_wrong_code_and_counts_one_attempt() -> None:
    invitation = Invitation(CODE, created=0.0)
    inviter_error, joiner_error = _attempt(PairingCode(7, "cobra", "hamilton"), invitation)
    assert inviter_error.code == joiner_error.code == "PAIRING_WRONG_CODE"
    assert "2 attempts left" in joiner_error.message
    assert invitation.failures == 1 and invitation.state is InvitationState.OPEN


def test_the_third_failure_withdraws_the_code_and_then_the_right_code_is_refused() -> None:
    invitation = Invitation(CODE, created=0.0)
    codes = [_attempt(PairingCode(7, "cobra", word), invitation) for word in ("hamilton", "hideaway", "holiness")]
    assert [i.code for i, _ in codes] == ["PAIRING_WRONG_CODE", "PAIRING_WRONG_CODE", "PAIRING_WITHDRAWN"]
    assert [j.code for _, j in codes] == ["PAIRING_WRONG_CODE", "PAIRING_WRONG_CODE", "PAIRING_WITHDRAWN"]
    assert "withdrawn" in codes[2][1].message
    inviter_error, joiner_error = _attempt(CODE, invitation)
    assert inviter_error.code == joiner_error.code == "PAIRING_WITHDRAWN"
    assert invitation.failures == 3


def test_another_invitation_number_is_refused_without_costing_an_attempt() -> None:
    invitation = Invitation(CODE, created=0.0)
    inviter_error, joiner_error = _attempt(PairingCode(8, "cobra", "hamburger"), invitation)
    assert inviter_error.code == joiner_error.code == "PAIRING_WRONG_CODE"
    assert "numbered 8" in joiner_error.message and invitation.failures == 0


def test_an_invitation_expires_after_ten_minutes() -> None:
    invitation = Invitation(CODE, created=100.0)
    inviter_error, joiner_error = _attempt(CODE, invitation, now=700.0)
    assert inviter_error.code == joiner_error.code == "PAIRING_EXPIRED"
    _pair(CODE, Invitation(CODE, created=100.0), now=699.9)  # just before: it works


def test_a_code_never_works_twice() -> None:
    invitation = Invitation(CODE, created=0.0)
    _pair(CODE, invitation)
    inviter_error, joiner_error = _attempt(CODE, invitation)
    assert inviter_error.code == joiner_error.code == "PAIRING_WITHDRAWN"
    assert "used" in joiner_error.message


def test_an_altered_spake2_message_fails_confirmation_and_an_altered_confirmation_is_detected() -> None:
    invitation = Invitation(CODE, created=0.0)
    joiner, inviter = JoinerHandshake(CODE, os.urandom), InviterHandshake(invitation, os.urandom)
    answer = bytearray(inviter.receive_data(joiner.start(), 1.0))
    answer[-1] ^= 1  # the inviter's SPAKE2 point, altered on the way
    try:
        confirm = joiner.receive_data(bytes(answer))
    except LanError as exc:  # not a point of the group at all
        assert exc.code == "PAIRING_MALFORMED"
    else:
        with pytest.raises(LanError) as caught:
            inviter.receive_data(confirm, 1.0)
        assert caught.value.code == "PAIRING_WRONG_CODE" and invitation.failures == 1

    joiner, inviter = JoinerHandshake(CODE, os.urandom), InviterHandshake(Invitation(CODE, created=0.0), os.urandom)
    reply = inviter.receive_data(joiner.receive_data(inviter.receive_data(joiner.start(), 1.0)), 1.0)
    altered = bytearray(reply)
    altered[-1] ^= 1  # the inviter's confirmation MAC
    with pytest.raises(LanError) as caught:
        joiner.receive_data(bytes(altered))
    assert caught.value.code == "PAIRING_WRONG_CODE" and joiner.keys is None


def test_bytes_that_do_not_start_with_the_magic_are_refused_without_costing_an_attempt() -> None:
    invitation = Invitation(CODE, created=0.0)
    for data in (b"\x16\x03\x01\x02\x00", b"\x00\x00\x00\x10hello", b"GET / HTTP/1.1\r\n",
                 KNOCK_MAGIC + bytes(32)):  # TLS, a session frame, HTTP, a LAN sync connection's knock
        with pytest.raises(LanError) as caught:
            InviterHandshake(invitation, os.urandom).receive_data(data, 1.0)
        assert caught.value.code == "PAIRING_MALFORMED"
    assert invitation.failures == 0 and invitation.state is InvitationState.OPEN


def test_an_oversized_or_malformed_handshake_frame_is_pairing_malformed() -> None:
    invitation = Invitation(CODE, created=0.0)
    for body in ((MAX_FRAME + 1).to_bytes(2, "big"), b"\x00\x03abc", frame({"t": "pake", "v": 1, "n": 7, "m": b"x"}),
                 frame({"t": "pake", "v": 1, "n": 7, "m": b"\0" * 33, "extra": 1})):
        with pytest.raises(LanError) as caught:
            InviterHandshake(invitation, os.urandom).receive_data(MAGIC + body, 1.0)
        assert caught.value.code == "PAIRING_MALFORMED"
    assert invitation.failures == 0


def test_the_handshake_accepts_its_bytes_in_pieces_of_one_byte() -> None:
    invitation = Invitation(CODE, created=0.0)
    joiner, inviter = JoinerHandshake(CODE, os.urandom), InviterHandshake(invitation, os.urandom)
    pending, back = joiner.start(), b""
    while joiner.keys is None:
        for i in range(len(pending)):
            back += inviter.receive_data(pending[i:i + 1], 1.0)
        pending = b"".join(joiner.receive_data(back[i:i + 1]) for i in range(len(back)))
        back = b""
    assert inviter.keys is not None and joiner.keys.send == inviter.keys.receive


# -- sealed records ---------------------------------------------------------------------------------------


def _channel() -> tuple[RecordSealer, RecordOpener]:
    key = os.urandom(32)
    return RecordSealer(key), RecordOpener(key)


def _drain(opener: RecordOpener) -> bytes:
    out = b""
    while (data := opener.next_data()) is not None:
        out += data
    return out


def test_sealed_records_carry_any_bytes_in_bounded_records_and_mark_the_end() -> None:
    sealer, opener = _channel()
    payload = os.urandom(3 * MAX_RECORD + 5)
    wire = sealer.seal(payload) + sealer.end()
    assert payload not in wire
    for i in range(0, len(wire), 1000):
        opener.receive_data(wire[i:i + 1000])
    assert _drain(opener) == payload and opener.ended


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "drop", "other key", "after end"])
def test_a_tampered_replayed_reordered_or_dropped_record_is_refused(attack: str) -> None:
    sealer, opener = _channel()
    records = [sealer.seal(bytes([n]) * 100) for n in range(3)]
    if attack == "flip":
        flipped = bytearray(records[1])
        flipped[20] ^= 1
        wire = records[0] + bytes(flipped)
    elif attack == "replay":
        wire = records[0] + records[0]
    elif attack == "reorder":
        wire = records[0] + records[2] + records[1]
    elif attack == "drop":
        wire = records[0] + records[2]
    elif attack == "other key":
        wire = records[0] + RecordSealer(os.urandom(32)).seal(b"x")
    else:
        wire = records[0] + sealer.end() + records[1]
    opener.receive_data(wire)
    assert opener.next_data() is not None  # the first record is fine
    with pytest.raises(LanError) as caught:
        opener.next_data()
    assert caught.value.code == "PAIRING_MALFORMED"


def test_an_oversized_record_length_is_refused_before_its_bytes_arrive() -> None:
    _, opener = _channel()
    opener.receive_data((MAX_RECORD + 100).to_bytes(4, "big"))
    with pytest.raises(LanError) as caught:
        opener.next_data()
    assert caught.value.code == "PAIRING_MALFORMED"


# -- the grant --------------------------------------------------------------------------------------------


def _grant() -> Grant:
    vault_id, key = new_vault_id(), new_vault_key()
    header = create_header(vault_id, key, "pw", cheap_kdf())
    return Grant(header, {0: key}, 0, "memories", (("box", "memory://x"), ("s3", "s3://b/p")))


def test_a_grant_round_trips() -> None:
    grant = _grant()
    assert Grant.from_bytes(grant.to_bytes()) == grant


def test_a_grant_whose_key_the_header_does_not_commit_to_is_refused() -> None:
    grant = _grant()
    forged = Grant(grant.header, {0: new_vault_key()}, 0, grant.name, grant.relays)
    with pytest.raises(LanError) as caught:
        Grant.from_bytes(forged.to_bytes())
    assert caught.value.code == "PAIRING_MALFORMED"
    with pytest.raises(LanError):
        Grant.from_bytes(b"\x81\xa1t\xa5grant")


def test_a_reflected_spake2_message_is_refused() -> None:
    """A fake inviter that sends the joiner's own SPAKE2 message back."""
    joiner = JoinerHandshake(CODE, os.urandom)
    start = joiner.start()
    with pytest.raises(LanError) as caught:
        joiner.receive_data(start[len(MAGIC):])
    assert caught.value.code == "PAIRING_MALFORMED" and joiner.keys is None


def test_a_joiner_that_leaves_after_spake2_without_confirming_costs_no_attempt() -> None:
    invitation = Invitation(CODE, created=0.0)
    for _ in range(5):
        joiner = JoinerHandshake(PairingCode(7, "cobra", "hamilton"), os.urandom)
        InviterHandshake(invitation, os.urandom).receive_data(joiner.start(), 1.0)  # then it leaves
    assert invitation.failures == 0
    _pair(CODE, invitation)
    assert invitation.state is InvitationState.CLAIMED
