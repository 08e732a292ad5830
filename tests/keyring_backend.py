"""A keyring backend of the tests' own, registered through ``keyring``'s API (never a patch of crdtsync).

:class:`FileTestKeyring` keeps its items in the JSON file named by ``$TEST_KEYRING_FILE`` (``{"service\\0user":
password}``), so separate CLI processes share one keyring. Select it in a subprocess with
``PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileTestKeyring`` (and ``PYTHONPATH`` naming the checkout, so the
process imports it), or in-process with ``keyring.set_keyring(FileTestKeyring())``. Its priority is 1: a real
backend as crdtsync's policy sees it.

:class:`PlaintextKeyring` stands for ``keyrings.alt.file.PlaintextKeyring`` (its module says ``keyrings.alt.file``):
a viable backend of priority 1 that crdtsync must never use (``PYTHON_KEYRING_BACKEND=
tests.keyring_backend.PlaintextKeyring`` in a subprocess, or ``keyring.set_keyring``). It keeps items in memory.

Two more variables make :class:`FileTestKeyring` misbehave on purpose:

- ``TEST_KEYRING_LOCKED=1``: every operation raises ``keyring.errors.KeyringLocked`` (a dismissed unlock prompt);
- ``TEST_KEYRING_KILL=<op>-<when>``: the process sends itself SIGKILL in operation ``op`` (``set``, ``get``,
  ``delete``), ``before`` or ``after`` it does its work, so a test can kill a move at each of its steps.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import ClassVar

from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked, PasswordDeleteError

FILE_VARIABLE = "TEST_KEYRING_FILE"
CLASS_PATH = "tests.keyring_backend.FileTestKeyring"


class FileTestKeyring(KeyringBackend):
    """Items in a JSON file (``$TEST_KEYRING_FILE``), written whole by a rename."""

    priority = 1

    @property
    def path(self) -> Path:
        name = os.environ.get(FILE_VARIABLE)
        if not name:
            raise RuntimeError(f"{FILE_VARIABLE} names no file")
        return Path(name)

    def items(self) -> dict[str, str]:
        """Every item, keyed ``service\\0username``."""
        try:
            items: dict[str, str] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return items

    def _write(self, items: dict[str, str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(items))
        os.replace(tmp, self.path)

    def _misbehave(self, op: str, when: str) -> None:
        if os.environ.get("TEST_KEYRING_LOCKED") == "1":
            raise KeyringLocked("the test keyring is locked")
        if os.environ.get("TEST_KEYRING_KILL") == f"{op}-{when}":
            os.kill(os.getpid(), signal.SIGKILL)

    def get_password(self, service: str, username: str) -> str | None:
        self._misbehave("get", "before")
        found = self.items().get(f"{service}\0{username}")
        self._misbehave("get", "after")
        return found

    def set_password(self, service: str, username: str, password: str) -> None:
        self._misbehave("set", "before")
        self._write({**self.items(), f"{service}\0{username}": password})
        self._misbehave("set", "after")

    def delete_password(self, service: str, username: str) -> None:
        self._misbehave("delete", "before")
        items = self.items()
        if items.pop(f"{service}\0{username}", None) is None:
            raise PasswordDeleteError(f"no item {service} / {username}")
        self._write(items)
        self._misbehave("delete", "after")


class PlaintextKeyring(KeyringBackend):
    """Stands for ``keyrings.alt.file.PlaintextKeyring``: viable, priority 1, in a ``keyrings.alt`` module."""

    priority = 1
    items: ClassVar[dict[tuple[str, str], str]] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password


PlaintextKeyring.__module__ = "keyrings.alt.file"
