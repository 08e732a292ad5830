"""A device whose vault folder is restored from a backup, or copied and used in two places, never writes under
a Yjs client id at clocks that writes it lost (or the other copy) already used, and gets its lost writes back."""

from __future__ import annotations

import shutil
from pathlib import Path

from crdtsync.store.incarnation import ALARM
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf


def device(tmp_path: Path, name: str) -> Path:
    Vault.init(tmp_path / name, name="vault", device_name=name, passphrase=PASSPHRASE, kdf=cheap_kdf())
    return tmp_path / name


def clients(vault: Vault) -> list[int]:
    return list(vault.devices()[vault.device_id]["clients"])


def sync_errors(vault: Vault) -> list[str]:
    return [e["code"] for r in vault.sync() for e in r.errors]


def test_a_restored_vault_writes_under_a_new_client_id_and_recovers_its_lost_writes(tmp_path: Path) -> None:
    box = (tmp_path / "box").as_uri()
    laptop = device(tmp_path, "laptop")
    with Vault.open(laptop) as vault:
        kept = vault.add("written before the backup")
        vault.add_relay("box", box)
        assert sync_errors(vault) == []
        before = clients(vault)
    shutil.copytree(laptop, tmp_path / "backup")
    with Vault.open(laptop) as vault:
        lost = vault.add("written after the backup, then lost with the disk")
        assert sync_errors(vault) == []
    shutil.rmtree(laptop)
    shutil.copytree(tmp_path / "backup", laptop)

    with Vault.open(laptop) as vault:
        fresh = vault.add("written after the restore")
        now = clients(vault)
        assert set(before) < set(now), "the restored store must take a client id it never used"
        assert [a["code"] for a in vault.status()["alarms"]] == [ALARM]
        assert sync_errors(vault) == []
        assert vault.get(lost.id).content == "written after the backup, then lost with the disk"
    Vault.join(tmp_path / "phone", box, passphrase=PASSPHRASE, device_name="phone")
    with Vault.open(tmp_path / "phone") as phone:
        assert {m.id for m in phone.list()} == {kept.id, lost.id, fresh.id}
        phone.update(lost.id, content="edited on the phone")
        assert sync_errors(phone) == []
    with Vault.open(laptop) as vault:
        assert sync_errors(vault) == []
        assert vault.get(lost.id).content == "edited on the phone"
        assert vault.store.held() == []


def test_reopening_the_same_store_keeps_its_client_id_and_raises_no_alarm(tmp_path: Path) -> None:
    path = device(tmp_path, "laptop")
    for i in range(3):
        with Vault.open(path) as vault:
            vault.add(f"run {i}")
    with Vault.open(path) as vault:
        assert len(clients(vault)) == 1 and vault.status()["alarms"] == []


def test_two_copies_of_one_folder_never_share_a_client_id(tmp_path: Path) -> None:
    first = device(tmp_path, "laptop")
    with Vault.open(first) as vault:
        vault.add("before the copy")
    second = tmp_path / "copy"
    shutil.copytree(first, second)
    with Vault.open(first) as a:
        a.add("in the first copy")
        a_clients = set(clients(a))
    with Vault.open(second) as b:
        b.add("in the second copy")
        b_own = set(clients(b)) - a_clients
    with Vault.open(first) as a:
        a.add("in the first copy again")
        a_now = set(clients(a))
    assert b_own and not (b_own & a_now)


def test_a_crash_between_the_two_token_writes_raises_no_false_alarm(tmp_path: Path) -> None:
    """The outside copy accepts the old and the new token until the store's commit is known: a process killed
    in between (here: the store commits, the outside copy keeps both) reopens without a restore alarm."""
    import crdtsync.store.incarnation as incarnation

    path = device(tmp_path, "laptop")
    with Vault.open(path) as vault:
        vault.add("first")
        device_id = vault.device_id
    settled = incarnation._read_outside(device_id)
    with Vault.open(path) as vault:
        vault.add("second")
        token = vault.store.get_meta(incarnation.META_KEY)
    incarnation._write_outside(device_id, *settled, token)  # as if killed before the narrowing write
    with Vault.open(path) as vault:
        vault.add("third")
        assert vault.status()["alarms"] == [] and len(clients(vault)) == 1
