"""Protocol v2: every device carries every author's log, bytes unchanged, through any relay it shares; relays
that lose or roll back objects are healed by any device that holds them; two histories of one author are caught
by whoever compares them."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from crdtsync.crypto.envelope import KIND_UPDATE
from crdtsync.mailbox.backend import MAX_OBJECT_BYTES
from crdtsync.protocol.messages import Batch
from crdtsync.protocol.sealing import Keyring, seal_entry
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, crash_workers_applying
from tests.mailbox.forge import push_raw


def _errors(reports: list) -> list[str]:  # type: ignore[type-arg]
    return [e["code"] for r in reports for e in r.errors]


def _memories(vault: Vault) -> list[dict[str, object]]:
    return [m.to_json() for m in vault.list(include_deleted=True) if m.level == 1]


def _chain(tmp_path: Path) -> tuple[Vault, Vault, Vault, Path, Path]:
    """phone -box1- laptop -box2- tablet: no relay is shared by the phone and the tablet."""
    box1, box2 = tmp_path / "box1", tmp_path / "box2"
    Vault.init(tmp_path / "laptop", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    laptop = Vault.open(tmp_path / "laptop")
    laptop.add_relay("box1", box1.as_uri())
    laptop.add_relay("box2", box2.as_uri())
    assert _errors(laptop.sync()) == []
    Vault.join(tmp_path / "phone", box1.as_uri(), passphrase=PASSPHRASE, device_name="phone")
    Vault.join(tmp_path / "tablet", box2.as_uri(), passphrase=PASSPHRASE, device_name="tablet")
    return laptop, Vault.open(tmp_path / "phone"), Vault.open(tmp_path / "tablet"), box1, box2


def test_a_write_reaches_a_device_that_shares_no_relay_with_its_author_with_its_proof_intact(tmp_path: Path) -> None:
    laptop, phone, tablet, box1, box2 = _chain(tmp_path)
    memory = phone.add("written on the phone, which syncs through box1 only")
    for device in (phone, laptop, tablet, laptop, phone):
        assert _errors(device.sync()) == []
    assert tablet.get(memory.id).content == "written on the phone, which syncs through box1 only"
    edit = tablet.update(memory.id, content="edited on the tablet, which syncs through box2 only")
    for device in (tablet, laptop, phone):
        assert _errors(device.sync()) == []
    assert phone.get(memory.id).content == edit.content
    assert _memories(phone) == _memories(laptop) == _memories(tablet)
    # The phone's entries sit in box2 byte for byte as the phone sealed them.
    in_box1 = {p.relative_to(box1): p.read_bytes() for p in box1.rglob(f"a/{phone.device_id}/log/*")}
    in_box2 = {p.relative_to(box2): p.read_bytes() for p in box2.rglob(f"a/{phone.device_id}/log/*")}
    assert in_box1 and in_box1 == in_box2
    for v in (laptop, phone, tablet):
        v.close()


def test_a_relay_restored_from_an_old_copy_is_healed_by_its_author_and_a_new_device_gets_everything(
    tmp_path: Path,
) -> None:
    """The repro of the issue: add m1, sync; copy the relay aside; add m2, sync; put the old copy back; add m3,
    sync. Before, log 2 was never written again and a device that joined then waited for it forever."""
    box = tmp_path / "box"
    Vault.init(tmp_path / "m1", name="v", device_name="m1", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "m1") as m1:
        m1.add_relay("box", box.as_uri())
        m1.add("m1")
        assert _errors(m1.sync()) == []
        shutil.copytree(box, tmp_path / "aside")
        m1.add("m2")
        assert _errors(m1.sync()) == []
        shutil.rmtree(box)
        shutil.copytree(tmp_path / "aside", box)
        m1.add("m3")
        (report,) = m1.sync()
        assert report.errors == [] and report.healed
        Vault.join(tmp_path / "m2", box.as_uri(), passphrase=PASSPHRASE, device_name="m2")
        with Vault.open(tmp_path / "m2") as m2:
            assert sorted(m.content for m in m2.list()) == ["m1", "m2", "m3"]


def test_a_wiped_relay_is_rebuilt_by_any_device_that_holds_the_data(tmp_path: Path) -> None:
    laptop, phone, tablet, box1, _ = _chain(tmp_path)
    phone.add("from the phone")
    for device in (phone, laptop, tablet):
        assert _errors(device.sync()) == []
    vault_folder = next(box1.glob("crdtsync-v1/*"))
    shutil.rmtree(vault_folder)
    box1.mkdir(exist_ok=True)
    (report, _) = laptop.sync()
    assert report.errors == [] and report.healed
    assert (vault_folder / "vault.json").exists()
    Vault.join(tmp_path / "new", box1.as_uri(), passphrase=PASSPHRASE, device_name="new")
    with Vault.open(tmp_path / "new") as new:
        assert _memories(new) == _memories(laptop)
    for v in (laptop, phone, tablet):
        v.close()


def test_an_author_that_shows_two_histories_raises_the_fork_alarm_on_both_readers(tmp_path: Path) -> None:
    """A member rewrites its own log entry at the same seq after one device read it; another device reads the
    other version. Once either reads the other's head (whose acks carry digests), both raise MAILBOX_FORK."""
    box = tmp_path / "box"
    Vault.init(tmp_path / "b", name="v", device_name="b", passphrase=PASSPHRASE, kdf=cheap_kdf())
    b = Vault.open(tmp_path / "b")
    b.add_relay("box", box.as_uri())
    assert _errors(b.sync()) == []
    Vault.join(tmp_path / "c", box.as_uri(), passphrase=PASSPHRASE, device_name="c")
    c = Vault.open(tmp_path / "c")
    b.add("meet at 10:00")
    assert _errors(b.sync()) == []
    assert _errors(c.sync()) == [] and [m.content for m in c.list()] == ["meet at 10:00"]
    seq = b.store.author(b.device_id).applied
    b.update(b.list()[0].id, content="meet at 14:00")
    rewritten = b.store.local_updates_after(0)[-1][1]
    before = b.store.known_digests(b.device_id)[seq - 1]
    push_raw(b, b.secrets.device, rewritten, tuple(b.devices()[b.device_id]["clients"]), seq=seq, prev=before)
    Vault.join(tmp_path / "d", box.as_uri(), passphrase=PASSPHRASE, device_name="d")
    d = Vault.open(tmp_path / "d")
    assert _errors(c.sync()) + _errors(d.sync()) + _errors(c.sync())
    assert any(a["code"] == "MAILBOX_FORK" for a in c.store.alarms())
    assert any(a["code"] == "MAILBOX_FORK" for a in d.store.alarms())
    for v in (b, c, d):
        v.close()


def _triangle(tmp_path: Path) -> tuple[Vault, Vault, Vault, Path]:
    """phone on box1 and box3, laptop on box1 and box2, tablet on box2 and box3: the laptop carries the phone's
    entries into box2, and box3 is an honest second path from the phone to the tablet."""
    box1, box2, box3 = (tmp_path / f"box{n}" for n in (1, 2, 3))
    Vault.init(tmp_path / "phone", name="v", device_name="phone", passphrase=PASSPHRASE, kdf=cheap_kdf())
    phone = Vault.open(tmp_path / "phone")
    phone.add_relay("box1", box1.as_uri())
    phone.add_relay("box3", box3.as_uri())
    assert _errors(phone.sync()) == []
    Vault.join(tmp_path / "laptop", box1.as_uri(), passphrase=PASSPHRASE, device_name="laptop", relay_name="box1")
    laptop = Vault.open(tmp_path / "laptop")
    laptop.add_relay("box2", box2.as_uri())
    assert _errors(laptop.sync()) == []
    Vault.join(tmp_path / "tablet", box3.as_uri(), passphrase=PASSPHRASE, device_name="tablet", relay_name="box3")
    tablet = Vault.open(tmp_path / "tablet")
    tablet.add_relay("box2", box2.as_uri())
    for device in (tablet, phone, laptop, tablet):
        assert _errors(device.sync()) == []
    return phone, laptop, tablet, box2


def _flip_a_byte(path: Path, laptop: Vault, phone: Vault, seq: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _resign_as_the_laptop(path: Path, laptop: Vault, phone: Vault, seq: int) -> None:
    """The laptop seals the phone's update as its own envelope, under the phone's name in the layout."""
    secrets = laptop.secrets
    keyring = Keyring(secrets.vault_id, secrets.epochs, secrets.current_epoch, secrets.device)
    update = phone.store.local_updates_after(0)[-1][1]
    body = Batch(seq, update, (), prev=phone.store.known_digests(phone.device_id)[seq - 1]).to_body()
    (part,), _ = seal_entry(keyring, KIND_UPDATE, body, sealed_count=10**6, max_part_bytes=MAX_OBJECT_BYTES,
                            randbytes=os.urandom)
    path.write_bytes(part)


def _replay_an_old_entry(path: Path, laptop: Vault, phone: Vault, seq: int) -> None:
    path.write_bytes((path.parent / f"{seq - 1:016x}").read_bytes())


def _splice_the_laptops_entry(path: Path, laptop: Vault, phone: Vault, seq: int) -> None:
    own = sorted(path.parents[2].glob(f"{laptop.device_id}/log/*"))[-1]
    path.write_bytes(own.read_bytes())


@pytest.mark.parametrize("tamper, code", [
    (_flip_a_byte, "ENVELOPE_BAD_SIGNATURE"),
    (_resign_as_the_laptop, "MAILBOX_OBJECT_CORRUPT"),
    (_replay_an_old_entry, "MAILBOX_OBJECT_CORRUPT"),
    (_splice_the_laptops_entry, "MAILBOX_OBJECT_CORRUPT"),
], ids=["flip", "resign", "replay", "splice"])
def test_an_entry_a_member_alters_on_the_way_is_refused_and_the_honest_copy_still_arrives(
    tmp_path: Path, tamper: Any, code: str,
) -> None:
    phone, laptop, tablet, box2 = _triangle(tmp_path)
    memory = phone.add("written on the phone")
    assert _errors(phone.sync()) == []
    assert _errors(laptop.sync()) == []  # carried into box2, then altered there
    seq = phone.store.author(phone.device_id).applied
    (carried,) = box2.glob(f"crdtsync-v1/*/a/{phone.device_id}/log/{seq:016x}")
    tamper(carried, laptop, phone, seq)
    assert _errors(tablet.sync("box2")) == [code]
    assert memory.id not in {m.id for m in tablet.list()} and tablet.store.quarantined() == []
    assert _errors(tablet.sync()) in ([], [code])  # box3 brings the phone's own bytes
    assert tablet.get(memory.id).content == "written on the phone"
    assert _memories(tablet) == _memories(phone)
    for v in (phone, laptop, tablet):
        v.close()


def test_a_bridged_chain_through_a_folder_and_s3_converges_and_s3_heals(
    tmp_path: Path, s3_bucket: str, s3_endpoint: str,
) -> None:
    """phone -folder- laptop -S3 (moto's server)- tablet: the laptop carries each side's entries to the other,
    and a head and an entry the bucket lost are put back by the next sync of a device that holds them."""
    import boto3

    box, bucket = tmp_path / "box", f"s3://{s3_bucket}/vault"
    Vault.init(tmp_path / "laptop", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    laptop = Vault.open(tmp_path / "laptop")
    laptop.add_relay("box", box.as_uri())
    laptop.add_relay("s3", bucket)
    assert _errors(laptop.sync()) == []
    Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, device_name="phone")
    Vault.join(tmp_path / "tablet", bucket, passphrase=PASSPHRASE, device_name="tablet")
    phone, tablet = Vault.open(tmp_path / "phone"), Vault.open(tmp_path / "tablet")
    from_phone, from_tablet = phone.add("written on the phone"), tablet.add("written on the tablet")
    for device in (phone, tablet, laptop, phone, tablet):
        assert _errors(device.sync()) == []
    assert tablet.get(from_phone.id).content == "written on the phone"
    assert phone.get(from_tablet.id).content == "written on the tablet"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    lost = [k for k in keys if f"/a/{phone.device_id}/" in k]
    assert lost and any(k.endswith("/head") for k in lost)
    for key in lost:
        s3.delete_object(Bucket=s3_bucket, Key=key)
    (_, healed) = laptop.sync()
    assert healed.errors == [] and healed.objects_up >= len(lost)
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]} >= set(lost)
    Vault.join(tmp_path / "late", bucket, passphrase=PASSPHRASE, device_name="late")
    with Vault.open(tmp_path / "late") as late:
        assert _memories(late) == _memories(laptop)
    for v in (laptop, phone, tablet):
        v.close()


def test_a_write_on_top_of_an_update_a_repair_quarantined_reaches_every_device_with_nothing_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the first issue's note: after a repair (a received update that breaks every rebuild is quarantined),
    this device's write made on top of it stays pending in its yrs, and its dependency was then refused elsewhere
    as UPDATE_CLOCK_JUMP. With author logs the write travels in this device's entry: every device, a late joiner
    included, integrates it with nothing refused or held."""
    url = f"memory://{uuid.uuid4().hex}"
    Vault.init(tmp_path / "a", name="v", device_name="a", passphrase=PASSPHRASE, kdf=cheap_kdf())
    a = Vault.open(tmp_path / "a")
    a.add_relay("box", url)
    assert _errors(a.sync()) == []
    Vault.join(tmp_path / "sink", url, passphrase=PASSPHRASE, device_name="sink")
    Vault.join(tmp_path / "c", url, passphrase=PASSPHRASE, device_name="c")
    sink, c = Vault.open(tmp_path / "sink"), Vault.open(tmp_path / "c")
    for vault in (a, sink, c):
        assert _errors(vault.sync()) == []
    memory = a.add("the record whose update later breaks every rebuild")
    assert _errors(a.sync()) == [] and _errors(sink.sync()) == [] and _errors(c.sync()) == []
    culprit = a.store.local_updates_after(0)[-1][1]
    sink.add("a write of its own first")
    sink.update(memory.id, content="edited here, on top of it")
    flag = crash_workers_applying(culprit, tmp_path, monkeypatch)
    c.add("from c")
    assert _errors(c.sync()) == []
    assert _errors(sink.sync()) == []  # the repair runs in this pull
    assert [q[2] for q in sink.store.quarantined()] == ["UPDATE_REBUILD_FAILED"]
    flag.unlink()
    for vault in (a, c, sink, a, c):
        assert _errors(vault.sync()) == []
    for vault in (a, c):
        assert vault.get(memory.id).content == "edited here, on top of it"
        assert vault.store.quarantined() == [] and vault.store.held_count() == 0
    Vault.join(tmp_path / "late", url, passphrase=PASSPHRASE, device_name="late")
    with Vault.open(tmp_path / "late") as late:
        assert late.get(memory.id).content == "edited here, on top of it"
        assert late.store.quarantined() == [] and late.store.held_count() == 0
    for vault in (a, sink, c):
        vault.close()
