"""Crash safety of a mailbox sync: a child process pulling (and pushing) through a folder mailbox is killed
with SIGKILL at random points; the reopened vault opens without error, loses nothing it had acknowledged, and
the next sync completes and converges."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

ROUNDS = 6


def _child(vault: Path) -> subprocess.Popen[str]:
    script = textwrap.dedent(
        f"""
        from crdtsync.vault import Vault
        with Vault.open({str(vault)!r}) as v:
            for i in range(40):
                m = v.add(f"written by the child during sync {{i}}")
                print(m.id, flush=True)
                v.sync()
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def test_a_sync_killed_at_random_points_resumes_and_converges(tmp_path: Path) -> None:
    box = (tmp_path / "box").as_uri()
    Vault.init(tmp_path / "a", name="v", device_name="a", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "a") as a:
        a.add_relay("box", box)
        a.sync()
    Vault.join(tmp_path / "b", box, passphrase=PASSPHRASE, device_name="b", relay_name="box")
    rng = random.Random(7)
    acknowledged: list[str] = []
    for round_ in range(ROUNDS):
        with Vault.open(tmp_path / "a") as a:
            for i in range(150):
                a.add(f"backlog {round_}.{i} from device a")
                if i % 10 == 0:
                    a.sync(pull=False)
            a.sync(pull=False)
        child = _child(tmp_path / "b")
        time.sleep(rng.uniform(0.3, 2.5))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        acknowledged += out.split()
        with Vault.open(tmp_path / "b") as b:
            ids = {m.id for m in b.list()}
            assert set(acknowledged) <= ids, "an acknowledged write was lost"
    with Vault.open(tmp_path / "a") as a, Vault.open(tmp_path / "b") as b:
        for _ in range(2):
            assert all(not r.errors for r in b.sync()), "the sync after the crashes did not complete"
            assert all(not r.errors for r in a.sync())
        assert [m.to_json() for m in a.list(include_deleted=True)] == [
            m.to_json() for m in b.list(include_deleted=True)
        ]
        assert set(acknowledged) <= {m.id for m in a.list()}
        assert b.store.held_count() == 0 and not b.store.quarantined()
