"""Two processes syncing one vault with one relay at once (an agent's periodic sync and `crdtsync sync`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import crdtsync.mailbox.sync as sync_module
from crdtsync.mailbox.sync import sync_lock_path
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

WRITER = textwrap.dedent("""
    import json, sys
    from crdtsync.vault import Vault

    vault_path, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    codes = []
    with Vault.open(vault_path) as vault:
        for i in range(rounds):
            vault.add(f"{name} wrote memory {i}")
            codes += [e["code"] for report in vault.sync() for e in report.errors]
    print(json.dumps(codes))
""")


def test_two_processes_syncing_one_vault_at_once_lose_nothing_and_fork_nothing(tmp_path: Path) -> None:
    box = tmp_path / "box"
    Vault.init(tmp_path / "laptop", name="vault", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.add_relay("box", box.as_uri())
        assert [e for r in laptop.sync() for e in r.errors] == []
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rounds = 60
    writers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "laptop"), name, str(rounds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("agent", "cli")]
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        assert json.loads(out) == []
    with Vault.open(tmp_path / "laptop") as laptop:
        assert [e for r in laptop.sync() for e in r.errors] == []
        written = sorted(m.content for m in laptop.list())
    assert len(written) == 2 * rounds
    Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, device_name="phone")
    with Vault.open(tmp_path / "phone") as phone:
        assert [e for r in phone.sync() for e in r.errors] == []
        assert sorted(m.content for m in phone.list()) == written
        assert phone.status().get("alarms", []) == []


HOLDER = textwrap.dedent("""
    import sys, time
    from filelock import FileLock

    lock = FileLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_sync_that_cannot_get_the_lock_reports_sync_busy_and_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "box"
    Vault.init(tmp_path / "laptop", name="vault", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.add_relay("box", box.as_uri())
        laptop.add("waits for the other sync")
        holder = subprocess.Popen([sys.executable, str(script), str(sync_lock_path(laptop.path, "box"))],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            monkeypatch.setattr(sync_module, "SYNC_LOCK_SECONDS", 0.3)
            (busy,) = laptop.sync()
            assert [e["code"] for e in busy.errors] == ["SYNC_BUSY"]
            assert busy.objects_up == busy.objects_down == 0 and not list(box.rglob("log/*"))
        finally:
            holder.kill()  # SIGKILL: the OS releases a dead process's lock
            holder.wait()
        (done,) = laptop.sync()
        assert done.errors == [] and done.objects_up > 0
