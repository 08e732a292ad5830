"""The registry and attribution rules as pure functions (the hostile-client tests in tests/mailbox drive them
end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from crdtsync.crypto.epochs import make_statement
from crdtsync.crypto.keys import DeviceKeys, new_vault_id, new_vault_key
from crdtsync.errors import UpdateRejectedError
from crdtsync.model.authorship import check_attribution, check_registry_change, owners, registered_key
from crdtsync.model.schema import UNBELIEVED_TIME, check_record, statement_key, statement_value

KEYS = DeviceKeys.generate()
ME = KEYS.device_id
NOW = "2026-12-07T10:00:00.000Z"
BOUND = "2026-12-07T10:10:00.000Z"


def entry(clients: list[int], **fields: str) -> dict[str, Any]:
    base = {"name": "phone", "sign_pk": KEYS.sign_pk.hex(), "kx_pk": KEYS.kx_pk.hex(), "added_by": ME,
            "added_at": NOW}
    return {**base, **fields, "clients": clients}


def test_a_device_registers_itself_and_may_announce_more_clients_and_rename() -> None:
    registry = check_registry_change(ME, {}, {ME: entry([5])})
    registry = check_registry_change(ME, registry, {ME: entry([5, 9], name="phone 2")})
    assert registry[ME]["clients"] == [5, 9] and registered_key(registry, ME) == KEYS.sign_pk


@pytest.mark.parametrize(("change", "code"), [
    ({ME: entry([5], sign_pk=DeviceKeys.generate().sign_pk.hex())}, "UPDATE_REGISTRY_FORGED"),
    ({ME: entry([5], sign_pk=KEYS.sign_pk.hex().upper())}, "UPDATE_REGISTRY_FORGED"),
    ({ME: entry([5], kx_pk="00" * 31)}, "UPDATE_REGISTRY_FORGED"),
    ({ME: entry([])}, "UPDATE_REGISTRY_FORGED"),
    ({ME: entry([5, 7])}, "UPDATE_CLIENT_CLAIMED"),
    ({"0123456789abcdef": entry([5])}, "UPDATE_REGISTRY_FORGED"),
])
def test_what_a_device_may_not_do_to_the_registry(change: dict[str, Any], code: str) -> None:
    before = {ME: entry([5]), "0123456789abcdef": {"name": "other", "clients": [7]}}
    with pytest.raises(UpdateRejectedError) as info:
        check_registry_change(ME, before, change)
    assert info.value.code == code


def test_an_unregistered_author_that_does_not_register_is_refused() -> None:
    with pytest.raises(UpdateRejectedError) as info:
        check_registry_change(ME, {}, {})
    assert info.value.code == "UPDATE_UNREGISTERED_SENDER"


def test_a_client_claimed_twice_in_an_old_vault_belongs_to_the_smaller_device_id_everywhere() -> None:
    registry = {"b" * 16: {"clients": [3]}, "a" * 16: {"clients": [3, 4]}}
    assert owners(registry) == {3: "a" * 16, 4: "a" * 16}


def test_a_registry_key_that_does_not_hash_to_its_device_id_is_not_trusted() -> None:
    other = DeviceKeys.generate()
    assert registered_key({ME: {"sign_pk": other.sign_pk.hex()}}, ME) is None
    assert registered_key({ME: {"sign_pk": "zz" * 32}}, ME) is None


RECORD = {"created": [NOW, ME], "content@": "hello", "content@ab12": ["edited", ME, NOW], "t:x@": True}


@pytest.mark.parametrize(("record", "written", "code"), [
    ({**RECORD, "content@cd34": ["forged", "0123456789abcdef", NOW]}, ["content@cd34"], "UPDATE_AUTHOR_FORGED"),
    ({**RECORD, "created": [NOW, "0123456789abcdef"]}, None, "UPDATE_AUTHOR_FORGED"),
    ({**RECORD, "category@": "slipped"}, ["category@"], "UPDATE_AUTHOR_FORGED"),
    ({**RECORD, "content@cd34": ["late", ME, "tomorrow"]}, ["content@cd34"], "UPDATE_SCHEMA_VIOLATION"),
])
def test_attribution_refusals(record: dict[str, Any], written: list[str] | None, code: str) -> None:
    with pytest.raises(UpdateRejectedError) as info:
        check_attribution(frozenset({ME}), "m", record, written, BOUND)
    assert info.value.code == code


def test_a_new_record_may_carry_creating_entries_and_a_far_future_time_is_flagged() -> None:
    assert check_attribution(frozenset({ME}), "m", RECORD, None, BOUND) is False
    late = {**RECORD, "content@cd34": ["late", ME, "9999-12-31T23:59:59.999Z"]}
    assert check_attribution(frozenset({ME}), "m", late, ["content@cd34"], BOUND) is True


def test_a_time_not_believed_never_settles_a_conflict_and_shows_as_the_creation_time() -> None:
    record = {"created": [NOW, ME], "content@a": ["honest", "b" * 16, "2026-12-07T10:01:00.000Z"],
              "content@b": ["pushy", ME, "9999-12-31T23:59:59.999Z"]}
    memory, (conflict,) = check_record("m", record, BOUND) or (None, [])
    assert memory is not None and memory.content == "honest"
    assert {c.value: c.at for c in conflict.candidates}["pushy"] == NOW
    created_late = {"created": ["9999-12-31T23:59:59.999Z", ME], "content@": "x"}
    shown = check_record("m", created_late, BOUND)
    assert shown is not None and shown[0].created == UNBELIEVED_TIME


def test_a_record_created_whole_that_is_not_a_v1_record_is_a_schema_violation() -> None:
    with pytest.raises(UpdateRejectedError) as info:
        check_attribution(frozenset({ME}), "m", {"created": [NOW, ME], "content@x": ["v", ME]}, None, BOUND)
    assert info.value.code == "UPDATE_SCHEMA_VIOLATION"


def _statement(author: DeviceKeys) -> tuple[str, str]:
    """A statement by ``author`` (revoking a stranger) as its registry key and value."""
    made = make_statement(author, vault_id=new_vault_id(), prev=0, epoch=1, vault_key=new_vault_key(),
                          reason="revoke", recipients={}, revoke={DeviceKeys.generate().device_id: 3})
    return statement_key(made.epoch, made.digest), statement_value(made.to_bytes())


def test_a_device_publishes_its_epoch_statement_once_in_its_own_entry() -> None:
    key, value = _statement(KEYS)
    registry = check_registry_change(ME, {ME: entry([5])}, {ME: {**entry([5]), "statements": {key: value}}})
    assert registry[ME]["statements"] == {key: value}
    later, more = _statement(KEYS)
    registry = check_registry_change(ME, registry, {ME: {**entry([5]), "statements": {key: value, later: more}}})
    assert set(registry[ME]["statements"]) == {key, later}


def test_what_a_device_may_not_do_with_epoch_statements() -> None:
    key, value = _statement(KEYS)
    other_key, other_value = _statement(DeviceKeys.generate())
    published = {ME: {**entry([5]), "statements": {key: value}}}
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    forbidden = [
        {key: value[:40]},  # does not parse
        {other_key: other_value},  # another device's statement, copied into this entry
        {statement_key(2, bytes(32)): value},  # under a key that is not its own
        {key: flipped},  # altered: the signature no longer holds (or it no longer parses)
        {key: value + "="},  # padded: not the one encoding
    ]
    for statements in forbidden:
        with pytest.raises(UpdateRejectedError) as info:
            check_registry_change(ME, {ME: entry([5])}, {ME: {**entry([5]), "statements": statements}})
        assert info.value.code == "UPDATE_REGISTRY_FORGED", statements
    for after in ({}, {key: other_value}):  # removed, or replaced
        with pytest.raises(UpdateRejectedError) as info:
            check_registry_change(ME, published, {ME: {**entry([5]), "statements": after}})
        assert info.value.code == "UPDATE_REGISTRY_FORGED"
