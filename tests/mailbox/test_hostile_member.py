"""A member device that turns hostile (a stolen phone, a modified client) or a holder of the vault key who is no
device of the vault, written as such a client would be written: the library's own primitives, a Doc edited by
hand, objects sealed and put in the mailbox directly. Each attack is refused with its code and raises an alarm
on the honest devices, which stay converged and lose nothing."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from crdtsync.crypto.keys import DeviceKeys
from crdtsync.model.authorship import FORGERY_CODES
from crdtsync.model.schema import MemoryDoc, WriteContext
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf
from tests.mailbox.forge import push_raw


def errors(vault: Vault, **kwargs: bool) -> list[str]:
    return [e["code"] for report in vault.sync(**kwargs) for e in report.errors]


def alarms(vault: Vault) -> list[tuple[str, str]]:
    return [(a["code"], a.get("device", "")) for a in vault.status()["alarms"]]


class Trio:
    """Three honest-to-start devices on one folder mailbox: ``a`` (the victim), ``m`` (turns hostile), ``c`` (a
    bystander whose view must stay honest)."""

    def __init__(self, root: Path) -> None:
        self.url = (root / "box").as_uri()
        Vault.init(root / "a", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
        self.a = Vault.open(root / "a")
        self.a.add("pay the rent on the 1st", category="finance")
        self.a.add_relay("box", self.url)
        assert errors(self.a) == []
        for name in ("m", "c"):
            Vault.join(root / name, self.url, passphrase=PASSPHRASE, device_name=name)
        self.m, self.c = Vault.open(root / "m"), Vault.open(root / "c")
        for vault in (self.a, self.m, self.c, self.a):
            assert errors(vault) == []
        self.honest_registry = self.c.devices()

    def close(self) -> None:
        for vault in (self.a, self.m, self.c):
            vault.close()


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Trio]:
    devices = Trio(tmp_path)
    yield devices
    devices.close()


def hostile_write(vault: Vault, edit: Callable[[MemoryDoc], object]) -> None:
    """What a modified client does: edit its own Doc any way it likes (the edit is signed by it and pushed under
    its own client id, as every write of it is), then push."""
    vault._replica.local_write(edit, ())
    assert errors(vault, pull=False) == []


def entry_of(doc: MemoryDoc, device_id: str) -> Map[Any]:
    entry = doc.devices[device_id]
    assert isinstance(entry, Map)
    return entry


def assert_honest_devices_unaffected(trio: Trio) -> None:
    """The victim still writes and every honest device receives it; the registry is what it was."""
    memory = trio.a.add("the victim still writes")
    refusals = {*FORGERY_CODES, "UPDATE_SCHEMA_VIOLATION"}
    assert set(errors(trio.a)) <= refusals  # the victim refuses the forgery too, and pushes its write
    assert set(errors(trio.c)) <= refusals
    assert trio.c.get(memory.id).content == "the victim still writes"
    assert trio.c.get(memory.id).created_by == trio.a.device_id
    for device_id, entry in trio.honest_registry.items():
        registry = trio.c.devices()
        assert {k: v for k, v in registry[device_id].items() if k != "clients"} == \
            {k: v for k, v in entry.items() if k != "clients"}
        assert set(entry["clients"]) <= set(registry[device_id]["clients"])


REWRITES: dict[str, Callable[[Trio], Callable[[MemoryDoc], object]]] = {
    "sign_pk": lambda t: lambda d: entry_of(d, t.a.device_id).__setitem__("sign_pk", t.m.secrets.device.sign_pk.hex()),
    "kx_pk": lambda t: lambda d: entry_of(d, t.a.device_id).__setitem__("kx_pk", t.m.secrets.device.kx_pk.hex()),
    "name": lambda t: lambda d: entry_of(d, t.a.device_id).__setitem__("name", "attacker's laptop"),
    "revoked_at": lambda t: lambda d: entry_of(d, t.a.device_id).__setitem__("revoked_at", "2026-01-01T00:00:00Z"),
    "client id": lambda t: lambda d: entry_of(d, t.a.device_id).__setitem__(f"c:{secrets.randbits(31) + 1}", True),
    "removed client id": lambda t: lambda d: entry_of(d, t.a.device_id).__delitem__(
        f"c:{t.a.devices()[t.a.device_id]['clients'][0]}"),
    "whole entry replaced": lambda t: lambda d: d.devices.__setitem__(t.a.device_id, Map({"name": "x"})),
    "entry removed": lambda t: lambda d: d.devices.__delitem__(t.a.device_id),
}


@pytest.mark.parametrize("field", sorted(REWRITES))
def test_a_member_cannot_rewrite_another_devices_registry_entry(trio: Trio, field: str) -> None:
    hostile_write(trio.m, REWRITES[field](trio))
    if field == "entry removed":  # schema v1 never removes an entry: refused before the authorship rules
        assert "UPDATE_SCHEMA_VIOLATION" in errors(trio.c)
        assert_honest_devices_unaffected(trio)
        return
    assert "UPDATE_REGISTRY_FORGED" in errors(trio.c)
    assert ("UPDATE_REGISTRY_FORGED", trio.m.device_id) in alarms(trio.c)
    assert_honest_devices_unaffected(trio)
    assert ("UPDATE_REGISTRY_FORGED", trio.m.device_id) in alarms(trio.a)
    assert trio.a.devices()[trio.a.device_id] == trio.c.devices()[trio.a.device_id]


OWN_REWRITES: dict[str, Callable[[Trio], Callable[[MemoryDoc], object]]] = {
    "sign_pk of another key": lambda t: lambda d: entry_of(d, t.m.device_id).__setitem__(
        "sign_pk", DeviceKeys.generate().sign_pk.hex()),
    "kx_pk changed": lambda t: lambda d: entry_of(d, t.m.device_id).__setitem__(
        "kx_pk", DeviceKeys.generate().kx_pk.hex()),
    "revoked_at": lambda t: lambda d: entry_of(d, t.m.device_id).__setitem__("revoked_at", "2026-01-01T00:00:00Z"),
    "added_at changed": lambda t: lambda d: entry_of(d, t.m.device_id).__setitem__("added_at", "2020-01-01T00:00:00Z"),
}


@pytest.mark.parametrize("field", sorted(OWN_REWRITES))
def test_a_device_cannot_change_what_its_own_entry_fixed_at_registration(trio: Trio, field: str) -> None:
    hostile_write(trio.m, OWN_REWRITES[field](trio))
    assert "UPDATE_REGISTRY_FORGED" in errors(trio.c)
    assert ("UPDATE_REGISTRY_FORGED", trio.m.device_id) in alarms(trio.c)
    assert_honest_devices_unaffected(trio)


def test_a_device_may_rename_itself(trio: Trio) -> None:
    hostile_write(trio.m, lambda d: entry_of(d, trio.m.device_id).__setitem__("name", "m, renamed"))
    assert errors(trio.c) == []
    assert trio.c.devices()[trio.m.device_id]["name"] == "m, renamed"


def test_a_second_claim_of_a_client_id_and_writes_under_it_are_refused(trio: Trio) -> None:
    """The attack of the issue: M announces the victim's client id as its own, then writes under it at the
    victim's next clock, crediting the victim. Neither lands; the victim's own next write is not shadowed."""
    victim_client = trio.a.devices()[trio.a.device_id]["clients"][0]
    hostile_write(trio.m, lambda d: entry_of(d, trio.m.device_id).__setitem__(f"c:{victim_client}", True))
    assert "UPDATE_CLIENT_CLAIMED" in errors(trio.c)
    assert ("UPDATE_CLIENT_CLAIMED", trio.m.device_id) in alarms(trio.c)
    assert victim_client not in trio.c.devices()[trio.m.device_id]["clients"]

    forged = Doc(client_id=victim_client)
    forged.apply_update(trio.m.encode_update())
    doc = MemoryDoc(forged)
    produced: list[bytes] = []
    forged.observe(lambda event: produced.append(event.update))
    ctx = WriteContext(device=trio.a.device_id, at="2026-12-07T10:00:00.000Z", new_op_id=lambda: "f0rged")
    doc.add("0190f000-0000-7000-8000-00000000f0f0", ctx, content="FORGED: wire the savings to acct 123")
    push_raw(trio.m, trio.m.secrets.device, produced[-1], (victim_client,))
    assert "UPDATE_FOREIGN_CLIENT" in errors(trio.c, push=False)
    assert all("FORGED" not in m.content for m in trio.c.list())
    assert_honest_devices_unaffected(trio)


@pytest.mark.parametrize(("in_the_name_of", "code"), [("itself", "UPDATE_UNREGISTERED_SENDER"),
                                                      ("the victim", "UPDATE_AUTHOR_FORGED")])
def test_a_holder_of_the_vault_key_who_never_registered_cannot_write(trio: Trio, in_the_name_of: str,
                                                                      code: str) -> None:
    """A stealth writer: a fresh key (no registration), the vault key (a past member, anyone who once knew the
    passphrase), a memory in its own name or credited to the victim."""
    stealth = DeviceKeys.generate()
    client = secrets.randbits(31) + 1
    doc = Doc(client_id=client)
    doc.apply_update(trio.c.encode_update())
    produced: list[bytes] = []
    doc.observe(lambda event: produced.append(event.update))
    writer = stealth.device_id if in_the_name_of == "itself" else trio.a.device_id
    ctx = WriteContext(device=writer, at="2026-12-07T10:00:00.000Z", new_op_id=lambda: "s7ealth")
    MemoryDoc(doc).add("0190f000-0000-7000-8000-00000000beef", ctx, content="created by the laptop, honestly")
    push_raw(trio.c, stealth, produced[-1], (client,))
    assert code in errors(trio.c, push=False)
    assert (code, stealth.device_id) in alarms(trio.c)
    assert all("honestly" not in m.content for m in trio.c.list())
    assert stealth.device_id not in trio.c.devices()
    assert_honest_devices_unaffected(trio)


def test_a_new_device_that_registers_in_its_first_entry_is_admitted(trio: Trio, tmp_path: Path) -> None:
    Vault.join(tmp_path / "d", trio.url, passphrase=PASSPHRASE, device_name="tablet")
    with Vault.open(tmp_path / "d") as d:
        memory = d.add("from the new tablet")
        assert errors(d) == []
        device_id = d.device_id
    assert errors(trio.c) == []
    assert trio.c.get(memory.id).created_by == device_id
    assert trio.c.devices()[device_id]["name"] == "tablet"
    assert alarms(trio.c) == []


def forged_ctx(device: str, at: str = "2026-12-07T10:00:00.000Z") -> WriteContext:
    return WriteContext(device=device, at=at, new_op_id=lambda: secrets.token_hex(4))


def test_an_edit_in_another_devices_name_is_refused(trio: Trio) -> None:
    memory = trio.a.list()[0]
    hostile_write(trio.m, lambda d: d.write(memory.id, forged_ctx(trio.a.device_id), {"content": "FORGED by laptop"}))
    assert "UPDATE_AUTHOR_FORGED" in errors(trio.c)
    assert ("UPDATE_AUTHOR_FORGED", trio.m.device_id) in alarms(trio.c)
    assert trio.c.get(memory.id).content == "pay the rent on the 1st"
    assert_honest_devices_unaffected(trio)


def test_a_memory_created_in_another_devices_name_is_refused(trio: Trio) -> None:
    memory_id = "0190f000-0000-7000-8000-00000000abcd"
    hostile_write(trio.m, lambda d: d.add(memory_id, forged_ctx(trio.a.device_id), content="the laptop says hi"))
    assert "UPDATE_AUTHOR_FORGED" in errors(trio.c)
    assert all(m.id != memory_id for m in trio.c.list())
    assert_honest_devices_unaffected(trio)


def test_an_entry_credited_to_the_creator_cannot_be_slipped_into_an_existing_memory(trio: Trio) -> None:
    """Entries without by/at read as written by the record's creator when it was created: only the update that
    creates the record may write them."""
    memory = trio.a.list()[0]

    def slip(doc: MemoryDoc) -> None:
        record = doc.memories[memory.id]
        for key in [k for k in record if k.startswith("content@")]:
            del record[key]
        record["content@"] = "FORGED, as if the laptop wrote it first"

    hostile_write(trio.m, slip)
    assert "UPDATE_AUTHOR_FORGED" in errors(trio.c)
    assert trio.c.get(memory.id).content == "pay the rent on the 1st"
    assert_honest_devices_unaffected(trio)


@pytest.mark.parametrize("at", ["x" * (1 << 20), "yesterday", "2026-12-07T10:00:00Z", "2026-12-07 10:00:00.000Z"])
def test_a_claimed_time_that_is_not_a_time_is_refused(trio: Trio, at: str) -> None:
    memory = trio.m.add("mine")
    assert errors(trio.m) == []
    hostile_write(trio.m, lambda d: d.write(memory.id, forged_ctx(trio.m.device_id, at), {"content": "later"}))
    assert "UPDATE_SCHEMA_VIOLATION" in errors(trio.c)
    assert trio.c.get(memory.id).content == "mine"
    assert_honest_devices_unaffected(trio)


def test_a_far_future_time_is_clamped_flagged_and_never_wins_a_conflict(trio: Trio) -> None:
    """M edits concurrently with A and claims the year 9999 so that its value shows: both values are kept as a
    conflict, A's shows, M's candidate shows at the limit of what C believes, and C raises an alarm."""
    memory = trio.a.list()[0]
    errors(trio.m)
    trio.a.update(memory.id, content="pay the rent on the 3rd")
    assert errors(trio.a) == []
    hostile_write(trio.m, lambda d: d.write(memory.id, forged_ctx(trio.m.device_id, "9999-12-31T23:59:59.999Z"),
                                            {"content": "pay the rent to acct 123"}))
    assert errors(trio.c) == []
    shown = trio.c.get(memory.id)
    assert shown.content == "pay the rent on the 3rd"
    assert shown.updated < "9999"
    (conflict,) = trio.c.conflicts(memory.id)
    forged = next(c for c in conflict.candidates if c.device == trio.m.device_id)
    assert forged.value == "pay the rent to acct 123"
    assert forged.at == shown.created
    assert ("CLOCK_AHEAD", trio.m.device_id) in alarms(trio.c)
    for vault in (trio.a, trio.m):  # every replica shows the same value
        errors(vault)
        assert vault.get(memory.id).content == "pay the rent on the 3rd"


def test_a_resurfaced_concurrent_creation_is_credited_to_the_device_that_resurfaced_it(
        trio: Trio, tmp_path: Path) -> None:
    """Two devices import the same record concurrently, and a third had already edited the copy that Yjs drops: the
    device that loses its copy re-adds that edit as its own write (a device writes only in its own name), which
    every other device accepts, and the edit survives everywhere."""
    source = tmp_path / "same.jsonl"
    source.write_text('{"id": "same-1", "text": "imported on both"}\n')
    # Yjs keeps the record Map of the higher client id: the other device's copy is the one dropped.
    low, high = sorted((trio.a, trio.m), key=lambda v: v.devices()[v.device_id]["clients"][0])
    low.import_path(source)
    assert errors(low) == [] and errors(trio.c) == []
    (imported,) = [m for m in trio.c.list() if m.content == "imported on both"]
    trio.c.update(imported.id, content="edited on the bystander")
    assert errors(trio.c) == [] and errors(low) == []
    high.import_path(source)
    assert errors(high, pull=False) == []
    for vault in (low, high, trio.c) * 3:  # a resurface written during a pull is pushed by the next sync
        assert errors(vault) == []
    views = []
    for vault in (trio.a, trio.m, trio.c):
        memory = vault.get(imported.id)
        candidates = {(c.value, c.device) for conflict in vault.conflicts(memory.id) for c in conflict.candidates}
        views.append((memory.content, candidates))
    assert views[0] == views[1] == views[2]
    assert ("edited on the bystander", low.device_id) in views[0][1]
