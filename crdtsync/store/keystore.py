"""Where a vault's secrets live: the 0600 ``keys`` file, or the OS keyring with a reference in that file.

A vault folder always holds ``keys`` (mode 0600, written atomically by :func:`crdtsync._fs.atomic_write`), so a
folder always says where its keys are. It holds either

- the secrets themselves (``store: file``): :meth:`VaultSecrets.to_bytes`, as
  :mod:`crdtsync.store.secrets_file` describes; or
- a reference (``store: keyring``): a msgpack map ``{"format": 1, "store": "keyring", "service": "crdtsync",
  "username": "vault <vault id hex> device <device id>", "backend": "<module.Class of the keyring backend>",
  "vault_id": bytes(16), "device_id": str}``, while the keyring item ``(service, username)`` of that backend
  holds the whole secrets blob as base64 of :meth:`VaultSecrets.to_bytes`. The reference holds no secret.

The keyring is used only through a *real* backend (:func:`real_backend`): the macOS Keychain, the Windows
Credential Locker, the Secret Service or KWallet of a Linux desktop. Never ``keyrings.alt``'s plaintext or file
backends, ``keyring``'s fail and null backends, a backend of priority 0 or less, or a ``ChainerBackend`` with none
of the others. :func:`default_store` is ``keyring`` when a real backend exists, else ``file`` (headless Linux,
Termux). ``PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring`` makes it ``file`` for one command.

Moving (:func:`move_secrets`), and why a kill -9 at any point leaves a working vault:

- to the keyring: write the item, read it back and compare, then atomically replace the file with the
  reference. Killed before the replace, the file still holds the secrets (an unused copy may sit in the keyring:
  the next ``keys store keyring`` overwrites it, ``keys store file`` removes it). Killed after, the reference
  names an item that was read back whole.
- to the file: read the item, atomically replace the reference with the secrets, then delete the item. Killed
  before the replace, the reference and its item are untouched. Killed after, the file holds the secrets and
  the item is an unused copy: running ``keys store file`` again removes it.

The username is derived from the vault id and the device id only, so copies of one vault folder (a backup)
share an item: moving one copy's keys to the file removes the item the other copy names (that copy then says
``KEY_MISSING``; moving the first back to the keyring writes the same item again).

Keyring failures become :class:`CryptoError`: ``KEYRING_UNAVAILABLE`` (no real backend, the named backend is not
usable here, a backend failure, an item too large for it), ``KEYRING_LOCKED`` (locked and not unlocked),
``KEY_MISSING`` (the item the reference names is gone), ``KEY_CORRUPT`` (not the secrets the reference names).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgpack
from filelock import FileLock, Timeout

from crdtsync._fs import atomic_write
from crdtsync._hardening import disable_core_dumps
from crdtsync.errors import CryptoError, VaultError
from crdtsync.store import secrets_file
from crdtsync.store.secrets_file import VaultSecrets

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

log = logging.getLogger(__name__)

#: The file in a vault folder that holds the secrets or the reference to them.
KEYS_NAME = "keys"
#: The keyring service every crdtsync item is stored under.
SERVICE = "crdtsync"
REFERENCE_FORMAT = 1
#: How long a move or save waits for another one in the same folder before ``VAULT_LOCKED``.
LOCK_SECONDS = 120.0
#: What a keyring item of a backend holds at most, in bytes as the backend stores the text (the Windows Credential
#: Locker: ``CRED_MAX_CREDENTIAL_BLOB_SIZE``, 2560 bytes, and pywin32 stores the text as UTF-16).
ITEM_LIMITS: dict[str, int] = {"keyring.backends.Windows.WinVaultKeyring": 2560}
#: Names for people of the real backends ``keyring`` ships; others are shown by their class path.
BACKEND_NAMES: dict[str, str] = {
    "keyring.backends.macOS.Keyring": "macOS Keychain",
    "keyring.backends.Windows.WinVaultKeyring": "Windows Credential Locker",
    "keyring.backends.SecretService.Keyring": "Secret Service",
    "keyring.backends.libsecret.Keyring": "Secret Service (libsecret)",
    "keyring.backends.kwallet.DBusKeyring": "KWallet",
    "keyring.backends.kwallet.DBusKeyringKWallet4": "KWallet 4",
}
_FILE_ADVICE = ("to keep this device's keys in the 0600 file instead, run the command with "
                "PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring")

StoreKind = Literal["file", "keyring"]
T = TypeVar("T")


@dataclass(frozen=True)
class KeysLocation:
    """Where a vault folder's secrets are: ``store`` ``"file"`` (in ``path``) or ``"keyring"`` (the item
    ``(SERVICE, username)`` of the backend whose class path is ``backend``; ``path`` holds the reference)."""

    store: StoreKind
    path: Path
    backend: str | None = None
    username: str | None = None

    @property
    def backend_name(self) -> str | None:
        """The backend's name for people (``macOS Keychain``), else its class path; ``None`` for the file."""
        return None if self.backend is None else BACKEND_NAMES.get(self.backend, self.backend)

    def to_json(self) -> dict[str, Any]:
        """``{"store": "file"|"keyring", "backend": class path or None, "path": the keys file}``."""
        return {"store": self.store, "backend": self.backend, "path": str(self.path)}

    def place(self) -> str:
        """The place for people: ``the file PATH (0600)`` or ``the keyring (NAME), item crdtsync / USER``."""
        if self.store == "file":
            return f"the file {self.path} (0600)"
        return f"the keyring ({self.backend_name}), item {SERVICE} / {self.username}"


@dataclass(frozen=True)
class KeysMove:
    """What :func:`move_secrets` did: where the keys were (``before``) and are (``after``), and whether it removed
    an unused copy of them from the keyring (``removed_leftover``: left by a move to the file that was stopped
    before it deleted the item, or one to the keyring stopped before it wrote the reference)."""

    before: KeysLocation
    after: KeysLocation
    removed_leftover: bool = False

    @property
    def moved(self) -> bool:
        """Whether the keys changed store."""
        return self.before.store != self.after.store


@dataclass(frozen=True)
class _Reference:
    username: str
    backend: str
    vault_id: bytes
    device_id: str
    service: str = SERVICE

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb(
            {"format": REFERENCE_FORMAT, "store": "keyring", "service": self.service, "username": self.username,
             "backend": self.backend, "vault_id": self.vault_id, "device_id": self.device_id},
            use_bin_type=True)
        return packed


# -- the backend policy -------------------------------------------------------------------------------------


def class_path(backend: KeyringBackend) -> str:
    """``module.QualName`` of ``backend``'s class: how a reference names the backend."""
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def acceptable(backend: KeyringBackend) -> bool:
    """Whether ``backend`` keeps secrets as a real keyring does. Refused: a class from ``keyrings.alt`` (its
    plaintext and file backends), ``keyring``'s fail and null backends, any ``ChainerBackend`` (judge its chained
    backends instead: :func:`real_backend`), and a backend whose priority is 0 or less or cannot be read (it says
    it is not viable here). Never raises."""
    from keyring.backends import chainer, fail, null

    module = type(backend).__module__
    if module == "keyrings.alt" or module.startswith("keyrings.alt."):
        return False
    if isinstance(backend, fail.Keyring | null.Keyring | chainer.ChainerBackend):
        return False
    try:
        return float(type(backend).priority) > 0
    except Exception:
        return False


def real_backend(candidate: KeyringBackend | None = None) -> KeyringBackend | None:
    """The backend secrets would be stored in: ``candidate`` (default: ``keyring.get_keyring()``, which honours
    ``PYTHON_KEYRING_BACKEND``, ``keyringrc.cfg`` and :func:`keyring.set_keyring`) when :func:`acceptable`; for a
    ``ChainerBackend``, its highest-priority acceptable chained backend; else ``None``. A ``keyring`` that fails to
    load (a ``PYTHON_KEYRING_BACKEND`` naming nothing importable) counts as none. Never raises."""
    if candidate is None:
        try:
            import keyring

            candidate = keyring.get_keyring()
        except Exception as exc:
            log.warning("no keyring backend: %s", exc)
            return None
    from keyring.backends.chainer import ChainerBackend

    if isinstance(candidate, ChainerBackend):
        try:
            chained = list(candidate.backends)
        except Exception as exc:
            log.warning("the keyring chainer lists no backend: %s", exc)
            return None
        return next((backend for backend in chained if acceptable(backend)), None)
    return candidate if acceptable(candidate) else None


def default_store() -> StoreKind:
    """Where a new vault keeps its keys: ``"keyring"`` when :func:`real_backend` finds one, else ``"file"``."""
    return "keyring" if real_backend() is not None else "file"


def _backend_named(name: str, username: str) -> KeyringBackend:
    """The acceptable backend whose class path is ``name``: the current one, else one that ``keyring`` finds
    viable here (when ``PYTHON_KEYRING_BACKEND`` or ``keyringrc.cfg`` now names another). ``KEYRING_UNAVAILABLE``
    when there is none."""
    current = real_backend()
    if current is not None and class_path(current) == name:
        return current
    try:
        from keyring.backend import get_all_keyring

        for backend in get_all_keyring():
            if class_path(backend) == name and acceptable(backend):
                return backend
    except Exception as exc:
        log.warning("cannot list the keyring backends: %s", exc)
    label = BACKEND_NAMES.get(name, name)
    raise CryptoError(
        f"this vault's keys are in the keyring ({label}, item {SERVICE} / {username}), which this process cannot "
        f"use: run crdtsync where that keyring is reachable (the desktop session that stored them), or check "
        f"PYTHON_KEYRING_BACKEND and keyringrc.cfg if they name another backend", code="KEYRING_UNAVAILABLE")


def _call(backend: KeyringBackend, doing: str, action: Callable[[], T]) -> T:
    """``action()`` (one keyring operation), its failures converted: ``KEYRING_LOCKED``, ``KEYRING_UNAVAILABLE``."""
    from keyring.errors import KeyringLocked

    label = BACKEND_NAMES.get(class_path(backend), class_path(backend))
    try:
        return action()
    except KeyringLocked as exc:
        raise CryptoError(f"the keyring ({label}) is locked and was not unlocked while trying to {doing}: unlock "
                          f"it (log in to the desktop session, unlock the keychain or wallet) and run the command "
                          f"again ({exc})", code="KEYRING_LOCKED") from None
    except Exception as exc:  # the backend's own errors (D-Bus, Security framework, pywin32...), at the edge
        raise CryptoError(f"the keyring ({label}) failed to {doing}: {type(exc).__name__}: {exc}",
                          code="KEYRING_UNAVAILABLE") from None


# -- the keys file ------------------------------------------------------------------------------------------


def _username(vault_id: bytes, device_id: str) -> str:
    return f"vault {vault_id.hex()} device {device_id}"


def _read_file(path: Path) -> tuple[bytes, os.stat_result]:
    try:
        info = path.stat()
        return path.read_bytes(), info
    except FileNotFoundError:
        raise CryptoError(f"the vault's key file {path} is missing", code="KEY_MISSING") from None


def _reference(data: bytes, path: Path) -> _Reference | None:
    """The reference ``data`` holds, or ``None`` when it holds the secrets themselves (``KEY_CORRUPT`` for a
    reference that does not parse)."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise CryptoError(f"the vault's key file {path} is corrupt: {exc}", code="KEY_CORRUPT") from None
    if not isinstance(raw, dict) or raw.get("store") != "keyring":
        return None
    try:
        if raw["format"] != REFERENCE_FORMAT:
            raise ValueError(f"unknown format {raw['format']!r}")
        fields = (raw["service"], raw["username"], raw["backend"], raw["device_id"])
        if not all(isinstance(value, str) and value for value in fields) or not isinstance(raw["vault_id"], bytes):
            raise ValueError("a field is missing or of the wrong type")
        if raw["service"] != SERVICE:
            raise ValueError(f"service {raw['service']!r}")
        return _Reference(username=raw["username"], backend=raw["backend"], vault_id=raw["vault_id"],
                          device_id=raw["device_id"])
    except (KeyError, ValueError) as exc:
        raise CryptoError(f"the vault's key file {path} holds a keyring reference that cannot be read: {exc}",
                          code="KEY_CORRUPT") from None


def _file_secrets(data: bytes, info: os.stat_result, path: Path) -> VaultSecrets:
    if os.name == "posix" and info.st_mode & 0o077:
        raise CryptoError(f"{path} is readable by other users; run: chmod 600 {path}", code="KEY_PERMISSIONS")
    return VaultSecrets.from_bytes(data)


def _location(path: Path, reference: _Reference | None) -> KeysLocation:
    if reference is None:
        return KeysLocation("file", path)
    return KeysLocation("keyring", path, backend=reference.backend, username=reference.username)


def keys_location(folder: Path) -> KeysLocation:
    """Where the secrets of the vault in ``folder`` are, from its ``keys`` file alone (no keyring call, so no
    unlock prompt).

    Raises:
        CryptoError: ``KEY_MISSING`` (no ``keys`` file), ``KEY_CORRUPT``.
    """
    path = folder / KEYS_NAME
    data, _ = _read_file(path)
    return _location(path, _reference(data, path))


# -- reading and writing ------------------------------------------------------------------------------------


def _get_item(reference: _Reference) -> str | None:
    backend = _backend_named(reference.backend, reference.username)
    return _call(backend, "read this vault's keys",
                 lambda: backend.get_password(reference.service, reference.username))


def _item_secrets(text: str, reference: _Reference) -> VaultSecrets:
    try:
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CryptoError(f"the keyring item {SERVICE} / {reference.username} is not crdtsync's keys (not base64)",
                          code="KEY_CORRUPT") from None
    try:
        secrets = VaultSecrets.from_bytes(blob)
    except CryptoError as exc:
        raise CryptoError(f"the keyring item {SERVICE} / {reference.username} is not crdtsync's keys: {exc.message}",
                          code=exc.code) from None
    if secrets.vault_id != reference.vault_id or secrets.device.device_id != reference.device_id:
        raise CryptoError(f"the keyring item {SERVICE} / {reference.username} holds the keys of another vault or "
                          f"device (vault {secrets.vault_id.hex()}, device {secrets.device.device_id})",
                          code="KEY_CORRUPT")
    return secrets


def _missing(reference: _Reference, path: Path) -> CryptoError:
    label = BACKEND_NAMES.get(reference.backend, reference.backend)
    return CryptoError(
        f"the keyring ({label}) has no item {SERVICE} / {reference.username}, where {path} says this device's keys "
        f"are: it was deleted, or the keyring was reset or is another user's. Restore the keyring from a backup, or "
        f"join the vault again as a new device in a new folder (`crdtsync join`)", code="KEY_MISSING")


def load_secrets(folder: Path) -> VaultSecrets:
    """The secrets of the vault in ``folder``, from its ``keys`` file or the keyring item it names. Turns core
    dumps off in this process first (it holds the keys). When the item is missing, the file is read once more: a
    move to the file in another process may have just replaced the reference and deleted the item.

    Raises:
        CryptoError: ``KEY_MISSING`` (no ``keys`` file, or no keyring item), ``KEY_PERMISSIONS`` (the file holds
            the secrets and is readable by group or others: fix with ``chmod 600``), ``KEY_CORRUPT`` (also an
            item that is not base64 of secrets, or holds another vault's or device's), ``KEYRING_UNAVAILABLE``,
            ``KEYRING_LOCKED``.
    """
    disable_core_dumps()
    path = folder / KEYS_NAME
    for attempt in range(2):
        data, info = _read_file(path)
        reference = _reference(data, path)
        if reference is None:
            return _file_secrets(data, info, path)
        text = _get_item(reference)
        if text is not None:
            return _item_secrets(text, reference)
        if attempt:
            raise _missing(reference, path)
    raise AssertionError("unreachable")


def _put_item(backend: KeyringBackend, reference: _Reference, secrets: VaultSecrets) -> None:
    """Store ``secrets`` in ``backend`` under ``reference``'s item, then read it back and compare."""
    text = base64.b64encode(secrets.to_bytes()).decode("ascii")
    limit = ITEM_LIMITS.get(class_path(backend))
    size = len(text.encode("utf-16-le"))
    if limit is not None and size > limit:
        raise CryptoError(
            f"this vault's keys take {size} bytes in the keyring ({BACKEND_NAMES.get(class_path(backend))}), past "
            f"the {limit} bytes one item holds: keep them in the 0600 file (`crdtsync keys store file`)",
            code="KEYRING_UNAVAILABLE")
    _call(backend, "store this vault's keys",
          lambda: backend.set_password(reference.service, reference.username, text))
    back = _call(backend, "read back the keys just stored",
                 lambda: backend.get_password(reference.service, reference.username))
    if back != text:
        raise CryptoError(f"the keyring ({BACKEND_NAMES.get(class_path(backend), class_path(backend))}) did not "
                          f"return the keys just stored in item {SERVICE} / {reference.username}",
                          code="KEYRING_UNAVAILABLE")


def _new_reference(backend: KeyringBackend, secrets: VaultSecrets) -> _Reference:
    device_id = secrets.device.device_id
    return _Reference(username=_username(secrets.vault_id, device_id), backend=class_path(backend),
                      vault_id=secrets.vault_id, device_id=device_id)


def _no_real_backend() -> CryptoError:
    try:
        import keyring

        found = str(keyring.get_keyring())
    except Exception as exc:
        found = f"none ({exc})"
    return CryptoError(
        f"no keyring backend here keeps secrets safe (found: {found}; plaintext and file backends such as "
        f"keyrings.alt's are never used), so the keys stay in the 0600 file. On a Linux desktop, start a Secret "
        f"Service (GNOME Keyring, KeePassXC) or KWallet and run the command in that session",
        code="KEYRING_UNAVAILABLE")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Moves and saves of one folder's keys take turns (an OS file lock, ``.keys.lock``, released when its process
    dies); ``VAULT_LOCKED`` after :data:`LOCK_SECONDS`."""
    try:
        with FileLock(str(folder / ".keys.lock"), timeout=LOCK_SECONDS):
            yield
    except Timeout:
        raise VaultError(f"another crdtsync process has been moving or saving the keys of {folder} for "
                         f"{LOCK_SECONDS:.0f} s: wait for it and run the command again", code="VAULT_LOCKED") from None


def save_secrets(folder: Path, secrets: VaultSecrets) -> KeysLocation:
    """Replace the secrets of the vault in ``folder`` with ``secrets`` (the same vault and device, for instance with
    a new epoch key), wherever they live now: the file (written atomically, 0600), or the keyring item its
    reference names (written, then read back and compared; the reference is unchanged). Returns where they are.
    On any error nothing was written, except a keyring that failed the read-back (its item then holds what the
    backend made of the new secrets).

    Raises:
        CryptoError: ``KEY_MISSING`` (no ``keys`` file), ``KEY_CORRUPT``, ``KEY_PERMISSIONS``, ``KEY_INVALID``
            (``secrets`` are of another vault or device than the folder's), ``KEYRING_UNAVAILABLE`` (also: past
            what one item of the backend holds, such as the Windows Credential Locker's 2560 bytes),
            ``KEYRING_LOCKED``.
        VaultError: ``VAULT_LOCKED`` (another process is moving or saving them).
        OSError: the file could not be written (it is as it was).
    """
    disable_core_dumps()
    path = folder / KEYS_NAME
    with _locked(folder):
        data, info = _read_file(path)
        reference = _reference(data, path)
        if reference is None:
            current = _file_secrets(data, info, path)
            _check_same(secrets, current.vault_id, current.device.device_id, path)
            secrets_file.write_secrets(path, secrets)
            return _location(path, None)
        _check_same(secrets, reference.vault_id, reference.device_id, path)
        _put_item(_backend_named(reference.backend, reference.username), reference, secrets)
        return _location(path, reference)


def _check_same(secrets: VaultSecrets, vault_id: bytes, device_id: str, path: Path) -> None:
    if secrets.vault_id != vault_id or secrets.device.device_id != device_id:
        raise CryptoError(f"these secrets are of vault {secrets.vault_id.hex()}, device {secrets.device.device_id}; "
                          f"{path} is of vault {vault_id.hex()}, device {device_id}: nothing was written",
                          code="KEY_INVALID")


def create_secrets(folder: Path, secrets: VaultSecrets, store: StoreKind | None = None) -> KeysLocation:
    """Write the secrets of a new device in ``folder`` to ``store`` (default :func:`default_store`), whatever a
    ``keys`` file left there said (an interrupted ``init`` or ``join``: the keyring item it names is deleted, best
    effort). In the keyring: the item is written and read back before the reference is. Returns where they are.

    Raises:
        CryptoError: ``KEYRING_UNAVAILABLE`` (``store`` is ``"keyring"`` and no real backend exists, or the backend
            failed), ``KEYRING_LOCKED``; the messages say how to keep the keys in the file instead.
        OSError: the file could not be written.
    """
    disable_core_dumps()
    path = folder / KEYS_NAME
    _remove_item_of(path)
    chosen = store or default_store()
    if chosen == "file":
        secrets_file.write_secrets(path, secrets)
        return _location(path, None)
    backend = real_backend()
    if backend is None:
        raise _no_real_backend()
    reference = _new_reference(backend, secrets)
    try:
        _put_item(backend, reference, secrets)
    except CryptoError as exc:
        raise CryptoError(f"{exc.message}; {_FILE_ADVICE}", code=exc.code) from None
    atomic_write(path, reference.to_bytes(), mode=0o600)
    return _location(path, reference)


def move_secrets(folder: Path, to: StoreKind) -> KeysMove:
    """Move the secrets of the vault in ``folder`` to ``to``: ``"keyring"`` (the current :func:`real_backend`) or
    ``"file"``. Crash-safe at every point (see the module docstring). Keys already in ``to`` stay as they are: for
    the keyring their item is read to check it; for the file an unused copy in the current real backend (left by
    an interrupted move) is removed.

    Raises:
        CryptoError: ``KEYRING_UNAVAILABLE`` (to the keyring with no real backend: the keys stay in the file;
            a backend failure), ``KEYRING_LOCKED``, ``KEY_MISSING``, ``KEY_PERMISSIONS``, ``KEY_CORRUPT``. A
            failure to delete the item after the move to the file says so: the keys are then in the file, and
            running the move again removes the item.
        VaultError: ``VAULT_LOCKED`` (another process is moving or saving them).
        OSError: the file could not be written (the keys are where they were).
    """
    disable_core_dumps()
    path = folder / KEYS_NAME
    with _locked(folder):
        data, info = _read_file(path)
        reference = _reference(data, path)
        before = _location(path, reference)
        if to == "keyring":
            if reference is not None:
                load_secrets(folder)  # the item is there and whole
                return KeysMove(before, before)
            secrets = _file_secrets(data, info, path)
            backend = real_backend()
            if backend is None:
                raise _no_real_backend()
            reference = _new_reference(backend, secrets)
            _put_item(backend, reference, secrets)
            atomic_write(path, reference.to_bytes(), mode=0o600)
            return KeysMove(before, _location(path, reference))
        if reference is None:
            secrets = _file_secrets(data, info, path)
            return KeysMove(before, before, removed_leftover=_remove_leftover(secrets))
        text = _get_item(reference)
        if text is None:
            raise _missing(reference, path)
        secrets = _item_secrets(text, reference)
        secrets_file.write_secrets(path, secrets)
        backend = _backend_named(reference.backend, reference.username)
        try:
            _delete_item(backend, reference.username)
        except CryptoError as exc:
            raise CryptoError(f"the keys are now in {path}, but their copy in the keyring could not be removed: "
                              f"{exc.message}; run `crdtsync keys store file` again to remove it",
                              code=exc.code) from None
        return KeysMove(before, _location(path, None))


def _delete_item(backend: KeyringBackend, username: str) -> None:
    """Delete the item; one already gone is no error."""
    from keyring.errors import PasswordDeleteError

    def delete() -> None:
        try:
            backend.delete_password(SERVICE, username)
        except PasswordDeleteError:
            if backend.get_password(SERVICE, username) is not None:
                raise

    _call(backend, "delete the keys' item", delete)


def _remove_leftover(secrets: VaultSecrets) -> bool:
    """Delete the item of this vault and device from the current real backend, if it holds one (a copy left by an
    interrupted move). A keyring that cannot be asked is passed over (logged); one that holds the item and fails
    to delete it raises."""
    backend = real_backend()
    if backend is None:
        return False
    username = _username(secrets.vault_id, secrets.device.device_id)
    try:
        found = _call(backend, "look for a copy of the keys", lambda: backend.get_password(SERVICE, username))
    except CryptoError as exc:
        log.warning("not checked for a copy of the keys in the keyring: %s", exc)
        return False
    if found is None:
        return False
    _delete_item(backend, username)
    return True


def _remove_item_of(path: Path) -> None:
    """Best effort: delete the keyring item that the ``keys`` file at ``path`` names, if it is a reference."""
    try:
        data, _ = _read_file(path)
        reference = _reference(data, path)
        if reference is not None:
            _delete_item(_backend_named(reference.backend, reference.username), reference.username)
    except CryptoError as exc:
        if exc.code != "KEY_MISSING":
            log.warning("the keyring item of %s was not removed: %s", path, exc)
    except OSError as exc:
        log.warning("%s was not read: %s", path, exc)


def discard_secrets(folder: Path) -> None:
    """Remove the secrets of a vault that was never created whole (a failed join): the keyring item the ``keys``
    file names (best effort: logged when it fails), then the file. Never raises for a missing file."""
    path = folder / KEYS_NAME
    _remove_item_of(path)
    path.unlink(missing_ok=True)
