"""Devices that share no relay: the laptop carries each author's entries between box1 and box2, so writes
travel phone -> laptop -> tablet. When a relay loses an author's entries, what waits, and for whom, must be
visible, nothing is refused for it, and the next sync of a device that holds them heals the relay.

The devices (:func:`tests.conftest.devices_on_two_relays`): d0 is a laptop on box1 and box2, d1 a phone on box1,
d2 a tablet on box2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import crdtsync.mailbox.sync as sync_module
import crdtsync.store.integration as integration_module
from crdtsync.cli.app import app
from crdtsync.model.records import Memory
from crdtsync.vault import Vault
from tests.conftest import devices_on_two_relays


def _memories(vault: Vault) -> list[dict[str, object]]:
    return [m.to_json() for m in vault.list(include_deleted=True) if m.level == 1]


def _laptop_edits_a_phone_memory(laptop: Vault, phone: Vault) -> Memory:
    """The phone writes a memory and syncs (box1); the laptop syncs and edits it, so the laptop's next push
    needs the phone's writes wherever it lands."""
    memory = phone.add("written on the phone, which syncs through box1 only")
    phone.sync()
    laptop.sync()
    laptop.update(memory.id, content="edited on the laptop")
    return memory


def _drop_author(box: Path, device_id: str) -> None:
    """What a relay that loses objects does: the author's folder is gone."""
    shutil.rmtree(next(box.glob(f"crdtsync-v1/*/a/{device_id}")))


def test_a_write_that_waits_for_an_author_a_relay_lost_is_shown_and_integrates_once_the_relay_is_healed(
    tmp_path: Path,
) -> None:
    devices_on_two_relays(tmp_path, second_on_both=False)
    with Vault.open(tmp_path / "d0") as a, Vault.open(tmp_path / "d1") as b, Vault.open(tmp_path / "d2") as c:
        from_phone = _laptop_edits_a_phone_memory(a, b)
        from_laptop = a.add("written on the laptop in the same push")
        assert all(not r.errors for r in a.sync())
        _drop_author(tmp_path / "box2", b.device_id)

        assert all(not r.errors for r in c.sync())
        assert {m.id for m in c.list()}.isdisjoint({from_phone.id, from_laptop.id})
        status = c.status()
        assert status["held_updates"] == 1
        (held,) = status["held"]
        assert held["origin"] == a.device_id
        assert [w["device"] for w in held["waits_for"]] == [None]  # the phone's registration never reached it
        (phone_client,) = b.devices()[b.device_id]["clients"]
        assert [w["client"] for w in held["waits_for"]] == [phone_client]
        shown = CliRunner().invoke(app, ["--vault", str(c.path), "status"], env={"CRDTSYNC_PASSPHRASE": None})
        assert shown.exit_code == 0 and f"Yjs client {phone_client}" in shown.stdout

        (_, healed) = a.sync()
        assert healed.errors == [] and any(key.endswith(f"{b.device_id}/head") for key in healed.healed)
        assert [e for r in c.sync() for e in r.errors] == []
        assert c.status()["held"] == []
        assert c.get(from_phone.id).content == "edited on the laptop" and c.get(from_laptop.id)
        assert _memories(c) == _memories(a)


def test_a_full_inbox_leaves_the_rest_in_the_mailbox_instead_of_refusing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the tablet waits on the phone, every later entry of the laptop waits too (its clocks continue the
    held one). Once the inbox is full, a pull must leave the laptop's further entries in the relay: refused,
    they were quarantined and the applied point moved past them, so the tablet lost them for good."""
    monkeypatch.setattr(integration_module, "MAX_HELD", 3)
    monkeypatch.setattr(sync_module, "PULL_GROUP", 2)  # entries handed over per apply: the inbox grows by 2
    devices_on_two_relays(tmp_path, second_on_both=False)
    with Vault.open(tmp_path / "d0") as a, Vault.open(tmp_path / "d1") as b, Vault.open(tmp_path / "d2") as c:
        _laptop_edits_a_phone_memory(a, b)
        a.sync()
        for i in range(5):
            a.add(f"laptop memory {i}")
            a.sync()
        _drop_author(tmp_path / "box2", b.device_id)
        codes = [e["code"] for r in c.sync() for e in r.errors]
        assert codes == ["UPDATE_INBOX_FULL"]
        assert c.status()["held_updates"] == 4 and c.store.quarantined() == []  # 3 reached, then one group more
        a.sync()
        assert [e for r in c.sync() for e in r.errors] == []
        assert c.status()["held"] == [] and c.store.quarantined() == []
        assert _memories(c) == _memories(a)
