"""Process and storage hygiene: the integration worker's environment holds no secret, processes that hold keys
write no core dump, and text replaced in SQLite does not linger in its free pages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from crdtsync.store.worker import IntegrationWorker
from crdtsync.vault import Vault

MakeVault = Callable[..., Vault]

SECRETS = {
    "CRDTSYNC_PASSPHRASE": "hunter2-passphrase-in-env",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE0123",
    "AWS_SESSION_TOKEN": "session-token-abcdef",
    "MY_APP_TOKEN": "unrelated-secret-of-the-host-app",
}


def _proc_file(pid: int, name: str) -> bytes:
    path = Path(f"/proc/{pid}/{name}")
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("/proc is needed to inspect the worker in CI")
        pytest.skip("no /proc here")
    return path.read_bytes()


def test_the_integration_worker_starts_without_any_secret_of_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    with IntegrationWorker([]) as worker:
        environ = _proc_file(worker.pid, "environ")
        limits = _proc_file(worker.pid, "limits").decode()
        assert worker.apply(b"\x00\x00").rows == ()  # it works all the same
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    assert not names & set(SECRETS)
    for value in SECRETS.values():
        assert value.encode() not in environ
    assert "PATH" in names
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4] == "0"  # the soft limit: the worker holds decrypted memories


@pytest.mark.parametrize("how", ["library", "cli"])
def test_a_process_that_holds_the_keys_writes_no_core_dump(tmp_path: Path, make_vault: MakeVault, how: str) -> None:
    vault = make_vault("a")
    vault.close()
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
    )
    if how == "library":
        script += (
            "from crdtsync.vault import Vault\n"
            f"with Vault.open({str(vault.path)!r}) as v:\n"
            "    assert v.secrets.device\n"
            "    print(resource.getrlimit(resource.RLIMIT_CORE)[0])\n"
        )
    else:
        script += (
            "import atexit\n"
            "atexit.register(lambda: print(resource.getrlimit(resource.RLIMIT_CORE)[0]))\n"
            f"sys.argv = ['crdtsync', 'status', '--vault', {str(vault.path)!r}]\n"
            "from crdtsync.cli import main\n"
            "main()\n"
        )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "0", done.stderr


def test_replaced_text_does_not_linger_in_the_database_file(make_vault: MakeVault) -> None:
    """Level-0 memories live only in SQLite: their old text, once edited away, must not stay readable in the
    file's free space (``PRAGMA secure_delete``) once the vault is closed."""
    vault = make_vault("a")
    old = "the safe combination is 4417-2209, behind the painting"
    memories = [vault.add(f"{old} #{n}", level=0) for n in range(3)]
    for memory in memories:
        vault.update(memory.id, content="moved the valuables to the bank")
    path = vault.path
    vault.close()
    assert not (path / "vault.db-wal").exists()
    assert b"the safe combination" not in (path / "vault.db").read_bytes()
