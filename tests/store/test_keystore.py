"""Where a vault's keys live (crdtsync.store.keystore): the 0600 keys file or the OS keyring, through a keyring
backend of the tests' own (tests/keyring_backend.py) registered with ``keyring.set_keyring``; never the
developer's keyring (tests/conftest.py sets keyring's fail backend for the whole run)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import msgpack
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null

from crdtsync.crypto.keys import DeviceKeys
from crdtsync.errors import CryptoError
from crdtsync.store.keystore import (
    KEYS_NAME,
    SERVICE,
    acceptable,
    create_secrets,
    default_store,
    discard_secrets,
    keys_location,
    load_secrets,
    move_secrets,
    real_backend,
    save_secrets,
)
from crdtsync.store.secrets_file import VaultSecrets
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf
from tests.keyring_backend import CLASS_PATH, FILE_VARIABLE, FileTestKeyring, PlaintextKeyring

ROOT = Path(__file__).resolve().parents[2]


class Unviable(FileTestKeyring):
    """A backend that says it is not fit here (priority 0)."""

    priority = 0


class Chained(chainer.ChainerBackend):
    """A chainer over the backends a test gives it (keyring's own lists every viable one of the machine)."""

    backends: list[KeyringBackend] = []  # noqa: RUF012


class WindowsLike(FileTestKeyring):
    """Named as the Windows Credential Locker backend, whose items hold at most 2560 bytes (UTF-16 text)."""


WindowsLike.__module__ = "keyring.backends.Windows"
WindowsLike.__qualname__ = WindowsLike.__name__ = "WinVaultKeyring"


def use(backend: KeyringBackend) -> None:
    keyring.set_keyring(backend)


@pytest.fixture
def plaintext_keyring() -> Iterator[PlaintextKeyring]:
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)
    PlaintextKeyring.items.clear()


def new_vault(folder: Path) -> Path:
    return Vault.init(folder, name="keys", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())


def secret_pieces(secrets: VaultSecrets) -> list[bytes]:
    """What must never be in a reference: the private keys, each vault key, the whole blob (raw and base64)."""
    blob = secrets.to_bytes()
    return [secrets.device.signing.private_bytes_raw(), secrets.device.kx.private_bytes_raw(),
            *secrets.epochs.values(), blob, base64.b64encode(blob)]


def holds_no_secret(path: Path, secrets: VaultSecrets) -> bool:
    data = path.read_bytes()
    return not any(piece in data for piece in secret_pieces(secrets))


# -- where new vaults put their keys ------------------------------------------------------------------------


def test_without_a_real_keyring_a_new_vault_keeps_its_keys_in_the_file(tmp_path: Path) -> None:
    """The test run's keyring is keyring's fail backend, as on a headless Linux: the file, as before."""
    assert real_backend() is None
    assert default_store() == "file"
    folder = new_vault(tmp_path / "v")
    location = keys_location(folder)
    assert (location.store, location.backend, location.path) == ("file", None, folder / KEYS_NAME)
    assert VaultSecrets.from_bytes((folder / KEYS_NAME).read_bytes()) == load_secrets(folder)


def test_a_keys_file_others_may_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    folder = new_vault(tmp_path / "v")
    (folder / KEYS_NAME).chmod(0o644)
    with pytest.raises(CryptoError) as caught:
        load_secrets(folder)
    assert caught.value.code == "KEY_PERMISSIONS" and "chmod 600" in caught.value.message


def test_with_a_real_keyring_a_new_vault_keeps_its_keys_there_and_the_file_only_names_them(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    folder = new_vault(tmp_path / "v")
    location = keys_location(folder)
    assert (location.store, location.backend) == ("keyring", CLASS_PATH)
    secrets = load_secrets(folder)
    assert location.username == f"vault {secrets.vault_id.hex()} device {secrets.device.device_id}"
    assert test_keyring.get_password(SERVICE, location.username) == base64.b64encode(secrets.to_bytes()).decode()
    assert holds_no_secret(folder / KEYS_NAME, secrets)
    assert (folder / KEYS_NAME).stat().st_mode & 0o777 == 0o600
    with Vault.open(folder) as vault:
        assert vault.secrets == secrets
        assert vault.secrets.device.device_id == vault.device_id
        vault.add("written with keys from the keyring")


# -- moves ---------------------------------------------------------------------------------------------------


def test_keys_move_to_the_keyring_and_back_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = new_vault(tmp_path / "v")  # in the file: the run's fail backend
    original = load_secrets(folder)
    file_bytes = (folder / KEYS_NAME).read_bytes()
    monkeypatch.setenv(FILE_VARIABLE, str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    backend = FileTestKeyring()
    use(backend)
    try:
        to_keyring = move_secrets(folder, "keyring")
        assert to_keyring.moved and to_keyring.before.store == "file" and to_keyring.after.store == "keyring"
        assert holds_no_secret(folder / KEYS_NAME, original)
        assert load_secrets(folder) == original
        assert len(backend.items()) == 1

        to_file = move_secrets(folder, "file")
        assert to_file.moved and to_file.after.store == "file"
        assert backend.items() == {}
        assert load_secrets(folder) == original
        assert (folder / KEYS_NAME).read_bytes() == file_bytes
        assert (folder / KEYS_NAME).stat().st_mode & 0o777 == 0o600
    finally:
        use(previous)


def test_a_move_to_where_the_keys_are_changes_nothing(tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    folder = new_vault(tmp_path / "v")
    before = (folder / KEYS_NAME).read_bytes()
    again = move_secrets(folder, "keyring")
    assert not again.moved and again.after.store == "keyring"
    assert (folder / KEYS_NAME).read_bytes() == before


def test_save_secrets_writes_a_new_epoch_where_the_keys_live(tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    folder = new_vault(tmp_path / "v")
    reference = (folder / KEYS_NAME).read_bytes()
    secrets = load_secrets(folder)
    newer = VaultSecrets(secrets.device, secrets.vault_id, {**secrets.epochs, 1: os.urandom(32)}, current_epoch=1)
    assert save_secrets(folder, newer).store == "keyring"
    assert load_secrets(folder) == newer
    assert (folder / KEYS_NAME).read_bytes() == reference

    move_secrets(folder, "file")
    newest = VaultSecrets(newer.device, newer.vault_id, {**newer.epochs, 2: os.urandom(32)}, current_epoch=2)
    assert save_secrets(folder, newest).store == "file"
    assert VaultSecrets.from_bytes((folder / KEYS_NAME).read_bytes()) == newest
    assert test_keyring.items() == {}


@pytest.mark.parametrize("store", ["keyring", "file"])
def test_save_secrets_refuses_another_devices_secrets(tmp_path: Path, test_keyring: FileTestKeyring,
                                                      store: str) -> None:
    folder = new_vault(tmp_path / "v")
    move_secrets(folder, "keyring" if store == "keyring" else "file")
    secrets = load_secrets(folder)
    with pytest.raises(CryptoError) as caught:
        save_secrets(folder, VaultSecrets(DeviceKeys.generate(), secrets.vault_id, secrets.epochs))
    assert caught.value.code == "KEY_INVALID"
    assert load_secrets(folder) == secrets


# -- the backend policy ----------------------------------------------------------------------------------------


def test_plaintext_fail_null_and_unviable_backends_are_not_a_real_keyring() -> None:
    assert acceptable(FileTestKeyring())
    for refused in (PlaintextKeyring(), fail.Keyring(), null.Keyring(), Unviable()):
        assert not acceptable(refused), refused
        assert real_backend(refused) is None, refused


def test_a_chainer_counts_only_through_an_acceptable_backend_it_chains() -> None:
    real = FileTestKeyring()
    Chained.backends = [PlaintextKeyring(), fail.Keyring()]
    assert real_backend(Chained()) is None
    Chained.backends = [PlaintextKeyring(), real]
    assert real_backend(Chained()) is real
    Chained.backends = []
    assert real_backend(Chained()) is None


def test_a_plaintext_keyring_is_never_chosen(tmp_path: Path, plaintext_keyring: PlaintextKeyring) -> None:
    """With only a plaintext backend, new vaults keep their keys in the file, and a move to the keyring is refused
    with the keys left where they were."""
    assert default_store() == "file"
    folder = new_vault(tmp_path / "v")
    assert keys_location(folder).store == "file"
    before = (folder / KEYS_NAME).read_bytes()
    with pytest.raises(CryptoError) as caught:
        move_secrets(folder, "keyring")
    assert caught.value.code == "KEYRING_UNAVAILABLE"
    assert "keyrings.alt" in caught.value.message
    assert (folder / KEYS_NAME).read_bytes() == before
    assert plaintext_keyring.items == {}


def test_an_item_too_large_for_the_windows_credential_locker_is_refused_before_it_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2560 bytes of UTF-16 text: the secrets with 22 epochs fit, with 23 they do not (the keys stay in the
    file)."""
    monkeypatch.setenv(FILE_VARIABLE, str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    windows = WindowsLike()
    use(windows)
    try:
        device = DeviceKeys.generate()
        fits = VaultSecrets(device, os.urandom(16), {n: os.urandom(32) for n in range(22)}, current_epoch=21)
        assert create_secrets(tmp_path / "small", fits, "keyring").store == "keyring"
        assert load_secrets(tmp_path / "small") == fits
        too_many = VaultSecrets(device, os.urandom(16), {n: os.urandom(32) for n in range(23)}, current_epoch=22)
        create_secrets(tmp_path / "large", too_many, "file")
        with pytest.raises(CryptoError) as caught:
            move_secrets(tmp_path / "large", "keyring")
        assert caught.value.code == "KEYRING_UNAVAILABLE"
        assert "2560" in caught.value.message
        assert keys_location(tmp_path / "large").store == "file"
        assert len(windows.items()) == 1
    finally:
        use(previous)


# -- failures ------------------------------------------------------------------------------------------------


def test_a_missing_keyring_item_is_key_missing_and_says_what_to_do(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    folder = new_vault(tmp_path / "v")
    test_keyring.delete_password(SERVICE, str(keys_location(folder).username))
    with pytest.raises(CryptoError) as caught:
        load_secrets(folder)
    assert caught.value.code == "KEY_MISSING"
    assert "crdtsync join" in caught.value.message and "backup" in caught.value.message
    with Vault.open(folder) as vault, pytest.raises(CryptoError) as by_vault:
        _ = vault.secrets
    assert by_vault.value.code == "KEY_MISSING"
    assert keys_location(folder).store == "keyring"  # status still says where they should be


def test_a_locked_keyring_is_keyring_locked(tmp_path: Path, test_keyring: FileTestKeyring,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = new_vault(tmp_path / "v")
    monkeypatch.setenv("TEST_KEYRING_LOCKED", "1")
    for attempt in (lambda: load_secrets(folder), lambda: move_secrets(folder, "file")):
        with pytest.raises(CryptoError) as caught:
            attempt()
        assert caught.value.code == "KEYRING_LOCKED"
        assert "unlock" in caught.value.message
    monkeypatch.delenv("TEST_KEYRING_LOCKED")
    assert keys_location(folder).store == "keyring"
    load_secrets(folder)


def test_an_item_holding_another_vaults_keys_is_refused(tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    first, second = new_vault(tmp_path / "a"), new_vault(tmp_path / "b")
    other = test_keyring.get_password(SERVICE, str(keys_location(second).username))
    assert other is not None
    test_keyring.set_password(SERVICE, str(keys_location(first).username), other)
    with pytest.raises(CryptoError) as caught:
        load_secrets(first)
    assert caught.value.code == "KEY_CORRUPT"


def test_a_reference_to_a_backend_not_here_is_keyring_unavailable(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    folder = new_vault(tmp_path / "v")
    reference = msgpack.unpackb((folder / KEYS_NAME).read_bytes())
    reference["backend"] = "keyring.backends.macOS.Keyring"
    (folder / KEYS_NAME).write_bytes(msgpack.packb(reference))
    with pytest.raises(CryptoError) as caught:
        load_secrets(folder)
    assert caught.value.code == "KEYRING_UNAVAILABLE"
    assert "macOS Keychain" in caught.value.message


def test_a_failed_creation_leaves_no_item_behind(tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    """The next creation in a folder deletes the item an interrupted one left (it names a device never created),
    and a failed join's cleanup (discard_secrets) deletes the item with the file."""
    device, vault_id = DeviceKeys.generate(), os.urandom(16)
    folder = tmp_path / "v"
    folder.mkdir()
    create_secrets(folder, VaultSecrets(device, vault_id, {0: os.urandom(32)}))
    create_secrets(folder, VaultSecrets(DeviceKeys.generate(), vault_id, {0: os.urandom(32)}))
    assert len(test_keyring.items()) == 1
    discard_secrets(folder)
    assert test_keyring.items() == {}
    assert not (folder / KEYS_NAME).exists()


# -- a move killed at each step ----------------------------------------------------------------------------

MOVE = "import sys; from pathlib import Path; from crdtsync.store.keystore import move_secrets; " \
       "move_secrets(Path(sys.argv[1]), sys.argv[2])"

#: Where a SIGKILL lands, per direction: in the test backend's operations (the move's steps are its calls to it).
KILLS = [
    ("keyring", "set-before"),   # nothing written yet
    ("keyring", "set-after"),    # the item written, not read back
    ("keyring", "get-after"),    # read back, the file not yet replaced by the reference
    ("file", "get-after"),       # the item read, the file not yet replaced by the secrets
    ("file", "delete-before"),   # the file holds the secrets, the item not deleted
    ("file", "delete-after"),    # the item deleted, the command not finished
]


@pytest.mark.parametrize(("to", "kill"), KILLS, ids=[f"to-{to}-{kill}" for to, kill in KILLS])
def test_a_move_killed_at_any_step_leaves_a_working_vault_and_running_it_again_finishes(
        tmp_path: Path, test_keyring: FileTestKeyring, to: str, kill: str) -> None:
    folder = new_vault(tmp_path / "v")
    if to == "keyring":
        move_secrets(folder, "file")
    original = load_secrets(folder)
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": CLASS_PATH, "TEST_KEYRING_KILL": kill,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    killed = subprocess.run([sys.executable, "-c", MOVE, str(folder), to], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert killed.returncode == -9, killed.stderr

    assert load_secrets(folder) == original
    with Vault.open(folder) as vault:
        assert vault.secrets == original
        vault.add(f"written after a move killed at {kill}")

    finished = move_secrets(folder, "keyring" if to == "keyring" else "file")
    assert finished.after.store == to
    assert load_secrets(folder) == original
    username = f"vault {original.vault_id.hex()} device {original.device.device_id}"
    assert (test_keyring.get_password(SERVICE, username) is not None) == (to == "keyring")
    if to == "file":
        assert finished.removed_leftover == (kill == "delete-before")
    else:
        assert holds_no_secret(folder / KEYS_NAME, original)


def test_a_device_joined_through_a_relay_keeps_its_keys_in_a_real_keyring(
        tmp_path: Path, test_keyring: FileTestKeyring) -> None:
    laptop = new_vault(tmp_path / "laptop")
    with Vault.open(laptop) as vault:
        vault.add("prefers oolong")
        vault.add_relay("box", (tmp_path / "box").as_uri())
        vault.sync()
    phone = Vault.join(tmp_path / "phone", (tmp_path / "box").as_uri(), passphrase=PASSPHRASE, device_name="phone")
    assert keys_location(phone).store == "keyring"
    assert len(test_keyring.items()) == 2
    with Vault.open(phone) as vault:
        assert [m.content for m in vault.list()] == ["prefers oolong"]
        assert vault.secrets.epochs == load_secrets(laptop).epochs
