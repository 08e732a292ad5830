"""``crdtsync keys store keyring|file``, and where ``status`` and ``devices`` say this device's keys live: real
``crdtsync`` processes whose default keyring is the tests' own backend (tests/keyring_backend.py, selected with
``PYTHON_KEYRING_BACKEND``), never the developer's keyring."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from crdtsync.store.keystore import KEYS_NAME, SERVICE, keys_location, load_secrets
from crdtsync.store.secrets_file import VaultSecrets
from tests.cli.test_cli import assert_fails, cli, new_vault, process_env, run_crdtsync, stdout_json
from tests.keyring_backend import CLASS_PATH, FILE_VARIABLE, FileTestKeyring

ROOT = Path(__file__).resolve().parents[2]


def keyring_env(ring: Path, backend: str = CLASS_PATH, **more: str) -> dict[str, str | None]:
    """A CLI process's environment with ``backend`` as its keyring (the tests' file keyring in ``ring``)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {"PYTHON_KEYRING_BACKEND": backend, FILE_VARIABLE: str(ring), "PYTHONPATH": path, **more}


def leaks(path: Path, secrets: VaultSecrets) -> list[str]:
    """Which secrets ``path`` holds in any form crdtsync writes them: the private keys, the vault keys, the
    whole blob raw or in base64."""
    data = path.read_bytes()
    blob = secrets.to_bytes()
    pieces = {"signing key": secrets.device.signing.private_bytes_raw(),
              "key-exchange key": secrets.device.kx.private_bytes_raw(), "blob": blob,
              "blob in base64": base64.b64encode(blob),
              **{f"vault key {epoch}": key for epoch, key in secrets.epochs.items()}}
    return [name for name, piece in pieces.items() if piece in data]


def test_cli_processes_of_the_test_run_see_no_real_keyring(tmp_path: Path) -> None:
    """conftest.py sets keyring's fail backend and the CLI processes inherit it: their vaults keep their keys in
    the file, and the developer's keyring is never asked."""
    assert process_env(tmp_path)["PYTHON_KEYRING_BACKEND"] == "keyring.backends.fail.Keyring"
    home = tmp_path / "v"
    assert run_crdtsync(home, "init", "--device-name", "laptop").returncode == 0
    assert stdout_json(run_crdtsync(home, "status", "--json"))["keys"] == {
        "store": "file", "backend": None, "path": str(home / KEYS_NAME)}


def test_init_with_a_real_keyring_keeps_the_keys_there_and_the_keys_file_holds_none_of_them(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    home = tmp_path / "v"
    env = keyring_env(tmp_path / "keyring.json")
    created = run_crdtsync(home, "init", "--json", "--device-name", "laptop", env=env)
    assert created.returncode == 0, created.stderr
    secrets = load_secrets(home)  # from the keyring item, in this process
    assert secrets.device.device_id == stdout_json(created)["device_id"]
    assert leaks(home / KEYS_NAME, secrets) == []
    assert (home / KEYS_NAME).stat().st_mode & 0o777 == 0o600
    username = f"vault {secrets.vault_id.hex()} device {secrets.device.device_id}"
    assert list(test_keyring.items()) == [f"{SERVICE}\0{username}"]

    status = run_crdtsync(home, "status", "--json", env=env)
    assert stdout_json(status)["keys"] == {"store": "keyring", "backend": CLASS_PATH, "path": str(home / KEYS_NAME)}
    assert f"keys: in the keyring ({CLASS_PATH})" in run_crdtsync(home, "status", env=env).stdout
    (me,) = [d for d in stdout_json(run_crdtsync(home, "devices", "--json", env=env)) if d["this_device"]]
    assert me["keys"]["store"] == "keyring"
    assert "this device's keys: in the keyring" in run_crdtsync(home, "devices", env=env).stdout


def test_keys_store_moves_the_keys_to_the_file_and_back(tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    home = new_vault(tmp_path / "v")  # in the tests' keyring: it is this process's default
    secrets = load_secrets(home)
    env = keyring_env(tmp_path / "keyring.json")

    to_file = run_crdtsync(home, "keys", "store", "file", "--json", env=env)
    assert to_file.returncode == 0, to_file.stderr
    assert stdout_json(to_file) == {"store": "file", "backend": None, "path": str(home / KEYS_NAME), "moved": True,
                                    "removed_leftover": False}
    assert test_keyring.items() == {}
    assert VaultSecrets.from_bytes((home / KEYS_NAME).read_bytes()) == secrets
    assert stdout_json(run_crdtsync(home, "status", "--json", env=env))["keys"]["store"] == "file"
    again = run_crdtsync(home, "keys", "store", "file", env=env)
    assert again.returncode == 0 and "already in the file" in again.stdout

    to_keyring = run_crdtsync(home, "keys", "store", "keyring", env=env)
    assert to_keyring.returncode == 0, to_keyring.stderr
    assert "moved the keys to the keyring" in to_keyring.stdout
    assert leaks(home / KEYS_NAME, secrets) == []
    assert load_secrets(home) == secrets
    assert stdout_json(run_crdtsync(home, "status", "--json", env=env))["keys"]["backend"] == CLASS_PATH


def test_keys_store_keyring_without_a_real_keyring_fails_and_leaves_the_keys_in_the_file(tmp_path: Path) -> None:
    """The test run's keyring is the fail backend, as on a headless Linux."""
    home = new_vault(tmp_path / "v")
    before = (home / KEYS_NAME).read_bytes()
    assert_fails(cli(home, "keys", "store", "keyring", "--json"), 6, "KEYRING_UNAVAILABLE", as_json=True)
    assert (home / KEYS_NAME).read_bytes() == before


def test_a_plaintext_keyring_backend_is_never_used(tmp_path: Path) -> None:
    """A backend from keyrings.alt (here one that says so) is passed over: init keeps the keys in the file and
    keys store keyring is refused."""
    home = tmp_path / "v"
    env = keyring_env(tmp_path / "keyring.json", "tests.keyring_backend.PlaintextKeyring")
    assert run_crdtsync(home, "init", "--device-name", "laptop", env=env).returncode == 0
    assert keys_location(home).store == "file"
    refused = run_crdtsync(home, "keys", "store", "keyring", env=env)
    assert_fails(refused, 6, "KEYRING_UNAVAILABLE")
    assert "keyrings.alt" in refused.stderr
    assert keys_location(home).store == "file"


def test_a_missing_keyring_item_is_key_missing_and_status_still_says_where_the_keys_were(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    home = new_vault(tmp_path / "v")
    test_keyring.delete_password(SERVICE, str(keys_location(home).username))
    env = keyring_env(tmp_path / "keyring.json")
    failed = run_crdtsync(home, "keys", "store", "file", env=env)
    assert_fails(failed, 6, "KEY_MISSING")
    assert "crdtsync join" in " ".join(failed.stderr.split())
    assert stdout_json(run_crdtsync(home, "status", "--json", env=env))["keys"]["store"] == "keyring"


def test_a_locked_keyring_is_keyring_locked_and_reading_commands_still_work(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    home = new_vault(tmp_path / "v")
    env = keyring_env(tmp_path / "keyring.json", TEST_KEYRING_LOCKED="1")
    failed = run_crdtsync(home, "keys", "store", "file", "--json", env=env)
    assert_fails(failed, 6, "KEYRING_LOCKED", as_json=True)
    assert "unlock" in json.loads(failed.stdout)["error"]["message"]
    assert keys_location(home).store == "keyring"
    for command in (["list"], ["search", "anything"], ["status"], ["devices"]):
        result = run_crdtsync(home, *command, env=env)
        assert result.returncode == 0, (command, result.stderr)
