"""A revocation killed with SIGKILL at each step of its path (crdtsync._vault_epochs: the statement and the next
header in one transaction, the commit of the entry that carries it under the old epoch, the new keys saved, the
header promoted): a child process runs ``Vault.revoke_device`` and kills itself when it reaches the step. The
next sync of the reopened device either finds nothing published (killed before the statement's transaction: the
old epoch stays current) or finishes the revocation: the new epoch current, the device revoked, the header the
one of the new passphrase, and the other member reading everything the revoking device sealed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from crdtsync._vault_epochs import HEADER_NEXT_META
from crdtsync.crypto.header import open_header
from crdtsync.errors import CrdtsyncError
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

ROOT = Path(__file__).resolve().parents[2]
NEW_PASSPHRASE = "the passphrase after the revocation"

#: The child: revoke device C of the vault in argv[1] and SIGKILL itself at step argv[2] (each step is reached
#: by wrapping, in this process only, a function along the revocation's path).
CHILD = """
import os, signal, sys

from crdtsync import _vault_epochs
from crdtsync import vault as vault_module
from crdtsync.replication import AuthorLogReplica
from crdtsync.store.db import Store
from crdtsync.vault import Vault

path, step, passphrase, new_passphrase = sys.argv[1:5]
state = {"published": False, "adopting": False}


def die(reached):
    print(reached, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


rotate_header = _vault_epochs.rotate_header
def rotate(*args, **kwargs):
    header = rotate_header(*args, **kwargs)
    if step == "rotate":  # the new header is made, nothing of the new epoch is written
        die("rotate")
    return header
_vault_epochs.rotate_header = rotate

publish_statement = Vault.publish_statement
def publish(self, statement, header):
    publish_statement(self, statement, header)
    state["published"] = True
    if step == "published":
        die("published")
Vault.publish_statement = publish

commit = AuthorLogReplica.commit
def committed(self):
    entry = commit(self)
    if step == "committed" and state["published"]:  # the entry that carries the statement, under the old epoch
        die("committed" if entry is not None else "committed nothing")
    return entry
AuthorLogReplica.commit = committed

save_secrets = vault_module.save_secrets
def save(folder, secrets):
    if step == "before_save":
        die("before_save")
    location = save_secrets(folder, secrets)
    if step == "after_save":  # the keys file holds the new epoch; the store does not know it yet
        die("after_save")
    return location
vault_module.save_secrets = save

adopt_header = _vault_epochs.adopt_header
def adopt(vault, header):
    state["adopting"] = True
    try:
        return adopt_header(vault, header)
    finally:
        state["adopting"] = False
_vault_epochs.adopt_header = adopt

write = Store.write
def store_write(self, *args, **kwargs):
    if step == "adopt" and state["adopting"]:  # the header checked, about to be stored
        die("adopt")
    return write(self, *args, **kwargs)
Store.write = store_write

with Vault.open(path) as vault:
    vault.revoke_device("C", passphrase=passphrase, new_passphrase=new_passphrase)
print("finished", flush=True)
"""

#: Where the child kills itself, in the order the revocation reaches them.
STEPS = ["rotate", "published", "committed", "before_save", "after_save", "adopt"]


@dataclass(frozen=True)
class Trio:
    a: Path
    b: Path
    c: Path
    box: str


def codes(vault: Vault) -> list[str]:
    return [e["code"] for report in vault.sync() for e in report.errors]


def contents(vault: Vault) -> set[str]:
    return {m.content for m in vault.list()}


@pytest.fixture
def trio(tmp_path: Path) -> Trio:
    """Devices A, B and C of one vault, in step through the folder relay ``box``, all closed; A then writes once
    more without syncing (the revocation commits that first)."""
    box = (tmp_path / "box").as_uri()
    Vault.init(tmp_path / "a", name="v", device_name="A", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "a") as a:
        a.add("A before")
        a.add_relay("box", box)
        assert codes(a) == []
    for name in ("b", "c"):
        Vault.join(tmp_path / name, box, passphrase=PASSPHRASE, device_name=name.upper())
    with Vault.open(tmp_path / "c") as c:
        c.add("C before")
        assert codes(c) == []
    for name in ("a", "b"):
        with Vault.open(tmp_path / name) as vault:
            assert codes(vault) == []
    with Vault.open(tmp_path / "a") as a:
        a.add("A just before the revocation")
    return Trio(tmp_path / "a", tmp_path / "b", tmp_path / "c", box)


def revoke_and_die(folder: Path, step: str, script: Path) -> None:
    """Run the child on ``folder`` and assert that it killed itself at ``step``."""
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, str(script), str(folder), step, PASSPHRASE, NEW_PASSPHRASE],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=120)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # an integration worker it may have started
    assert child.returncode == -signal.SIGKILL, (child.returncode, out, err[-3000:])
    assert out.split() == [step], (out, err[-3000:])


def join_code(folder: Path, url: str, passphrase: str) -> str | None:
    """Join the vault at ``url`` into ``folder`` with ``passphrase``: None when it worked, else the error code."""
    try:
        Vault.join(folder, url, passphrase=passphrase, device_name=folder.name)
    except CrdtsyncError as exc:
        return exc.code
    return None


@pytest.mark.parametrize("step", STEPS)
def test_a_revocation_killed_at_a_step_is_finished_or_left_undone_by_the_next_sync(
        trio: Trio, tmp_path: Path, step: str) -> None:
    revoke_and_die(trio.a, step, tmp_path / "child.py")
    with Vault.open(trio.a) as a, Vault.open(trio.b) as b, Vault.open(trio.c) as c:
        a_id, c_id = a.device_id, c.device_id
        assert codes(a) == []
        a.add("A after the revocation")
        assert codes(a) == []
        assert codes(b) == []

        if step == "rotate":  # killed before the statement's transaction: nothing was published
            assert a.secrets.current_epoch == 0 and b.secrets.current_epoch == 0
            assert a.epochs().revoked == {} and b.epochs().revoked == {}
            assert all(not entry.get("statements") for entry in a.devices().values())
            assert a.store.get_meta(HEADER_NEXT_META) is None
            assert a.device_states()[a_id]["epoch"] == 0  # A still seals under epoch 0
            assert open_header(a.header, PASSPHRASE).current == 0
            assert codes(c) == []
            assert {"A just before the revocation", "A after the revocation"} <= contents(c)
            assert join_code(tmp_path / "late", trio.box, PASSPHRASE) is None
            # and the revocation, done again, goes through
            a.revoke_device("C", passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
            assert a.secrets.current_epoch == 1
            return

        # The revocation completed: A at epoch 1, C revoked by A, A's header the v3 one of the new passphrase.
        assert a.secrets.current_epoch == 1
        revocation = a.epochs().revoked[c_id]
        assert (revocation.by, revocation.epoch) == (a_id, 1)
        assert set(a.epochs().revoked) == {c_id}
        header = a.header
        assert set(header.epochs) == {1} and header.history  # v3: only the new epoch under the passphrase
        assert open_header(header, NEW_PASSPHRASE).current == 1
        with pytest.raises(CrdtsyncError) as caught:
            open_header(header, PASSPHRASE)
        assert caught.value.code == "WRONG_PASSPHRASE"
        assert a.store.get_meta(HEADER_NEXT_META) is None
        assert a.device_states()[a_id]["epoch"] == 1

        # B took epoch 1 and read everything A sealed, before and after the kill.
        assert b.secrets.current_epoch == 1
        assert b.header.commits == header.commits
        assert b.device_states()[c_id]["revoked"] == {"seq": revocation.seq, "by": a_id, "epoch": 1}
        assert {"A before", "C before", "A just before the revocation", "A after the revocation"} <= contents(b)
        assert b.store.author(a_id).applied == a.store.author(a_id).applied
        assert b.store.held_count() == 0 and not b.store.quarantined()
        b.add("B after the revocation")
        assert codes(b) == [] and codes(a) == []
        assert "B after the revocation" in contents(a)

        assert set(codes(c)) == {"DEVICE_REVOKED"}
        assert "A after the revocation" not in contents(c)
        assert join_code(tmp_path / "thief", trio.box, PASSPHRASE) == "WRONG_PASSPHRASE"
        assert join_code(tmp_path / "late", trio.box, NEW_PASSPHRASE) is None
        with Vault.open(tmp_path / "late") as late:
            assert late.secrets.current_epoch == 1
            assert {"A after the revocation", "B after the revocation"} <= contents(late)
