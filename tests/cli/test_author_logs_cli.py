"""Protocol v2 as a user meets it, in real processes: a relay restored from an old copy heals at the author's
next sync, and a join that waits for an entry says which one and exits with the mailbox status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.test_cli import cli, new_vault, ok, run_crdtsync, stdout_json


def test_the_issues_repro_a_relay_put_back_to_an_old_copy_heals_and_a_new_device_gets_everything(
    tmp_path: Path,
) -> None:
    m1, box = new_vault(tmp_path / "m1", "m1"), tmp_path / "box"
    ok(cli(m1, "add", "m1"))
    ok(cli(m1, "relay", "add", "box", str(box)))
    assert run_crdtsync(m1, "sync").returncode == 0
    shutil.copytree(box, tmp_path / "aside")
    ok(cli(m1, "add", "m2"))
    assert run_crdtsync(m1, "sync").returncode == 0
    shutil.rmtree(box)
    shutil.copytree(tmp_path / "aside", box)  # the store served an older state
    ok(cli(m1, "add", "m3"))
    synced = run_crdtsync(m1, "sync", "--json")
    assert synced.returncode == 0, synced.stderr
    (report,) = json.loads(synced.stdout)
    assert report["errors"] == [] and report["healed"] >= 1
    joined = run_crdtsync(tmp_path / "m2", "join", str(box), "--device-name", "m2")
    assert joined.returncode == 0, joined.stderr
    listed = run_crdtsync(tmp_path / "m2", "list", "--json")
    assert sorted(m["content"] for m in json.loads(listed.stdout)) == ["m1", "m2", "m3"]


def test_a_join_that_waits_for_a_lost_entry_names_it_and_exits_with_the_mailbox_status(tmp_path: Path) -> None:
    laptop, box = new_vault(tmp_path / "laptop", "laptop"), tmp_path / "box"
    ok(cli(laptop, "add", "written on the laptop"))
    ok(cli(laptop, "relay", "add", "box", str(box)))
    assert run_crdtsync(laptop, "sync").returncode == 0
    laptop_id = stdout_json(ok(cli(laptop, "status", "--json")))["device_id"]
    (entry,) = box.glob(f"crdtsync-v1/*/a/{laptop_id}/log/0000000000000001")
    entry.unlink()  # lost by the store
    joined = run_crdtsync(tmp_path / "phone", "join", str(box), "--device-name", "phone")
    assert joined.returncode == 8
    assert "MAILBOX_OBJECT_MISSING" in joined.stderr and f"log entry 1 of device {laptop_id}" in joined.stderr
    (waiting,) = stdout_json(ok(cli(tmp_path / "phone", "status", "--json")))["waiting"]
    assert (waiting["device"], waiting["seq"], waiting["holders"]) == (laptop_id, 1, [laptop_id])
    assert f"waiting: log entry 1 of device {laptop_id}" in ok(cli(tmp_path / "phone", "status")).stdout
    assert run_crdtsync(laptop, "sync").returncode == 0  # the laptop puts it back
    assert entry.exists()
    assert run_crdtsync(tmp_path / "phone", "sync").returncode == 0
    assert stdout_json(ok(cli(tmp_path / "phone", "status", "--json")))["waiting"] == []
    listed = run_crdtsync(tmp_path / "phone", "list", "--json")
    assert [m["content"] for m in json.loads(listed.stdout)] == ["written on the laptop"]
