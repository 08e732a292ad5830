"""Devices of one vault as real ``crdtsync`` processes on a LAN of namespaces: vault folders made and registered
in this process (through a folder relay that the LAN tests then leave alone), daemons run with ``crdtsync
serve`` inside each host's namespace, their stderr lines collected by a thread."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crdtsync.vault import Vault
from tests.cli.test_cli import CRDTSYNC, process_env
from tests.conftest import PASSPHRASE, cheap_kdf
from tests.netns import Host

#: Seconds a test waits for something that should take well under one.
PATIENCE = 30.0


def make_devices(root: Path, count: int) -> list[Path]:
    """``count`` vault folders of one vault under ``root``, each registered (they met once through a folder
    relay; its folder is ``root/relay``)."""
    relay = root / "relay"
    first = root / "d0"
    Vault.init(first, name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(first) as vault:
        vault.add_relay("box", str(relay))
        vault.sync()
    for n in range(1, count):
        Vault.join(root / f"d{n}", str(relay), passphrase=PASSPHRASE, device_name=f"d{n}")
    folders = [root / f"d{n}" for n in range(count)]
    for folder in folders:  # every device learns every registration before the relay is left alone
        with Vault.open(folder) as vault:
            vault.sync()
    with Vault.open(first) as vault:
        vault.sync()
    return folders


class Daemon:
    """``crdtsync serve`` of the vault in ``folder``, inside ``host``'s namespace; stderr lines kept in order."""

    def __init__(self, host: Host, folder: Path, *args: str) -> None:
        self.host = host
        self.folder = folder
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        argv = [str(CRDTSYNC), "serve", "--interface", host.ip, "--relay-interval", "0", *args]
        self.proc = host.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=process_env(folder))
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("listening on")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, pattern: str, timeout: float = PATIENCE, *, after: int = 0) -> str:
        """The first line (from line ``after`` on) that matches ``pattern`` (a regular expression), waiting for it.

        Raises:
            AssertionError: none came within ``timeout`` seconds (the lines so far are in the message).
        """
        deadline = time.monotonic() + timeout
        index = after
        while True:
            while index < len(self.lines):
                if re.search(pattern, self.lines[index]):
                    return self.lines[index]
                index += 1
            if self.proc.poll() is not None and index >= len(self.lines):
                time.sleep(0.1)
                if index >= len(self.lines):
                    raise AssertionError(f"serve on {self.host.name} exited ({self.proc.returncode}) before "
                                         f"{pattern!r}:\n" + "\n".join(self.lines))
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} from serve on {self.host.name} within {timeout:g} s:\n"
                                     + "\n".join(self.lines))
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=0.05)

    @property
    def port(self) -> int:
        """The port it listens on."""
        match = re.search(r"listening on [0-9.]+:(\d+)", self.wait_for("listening on"))
        assert match is not None
        return int(match[1])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then its exit status."""
        self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: gone without a word to its peers."""
        self.proc.kill()
        self.proc.wait(timeout=10)


def crdtsync(folder: Path, *args: str, host: Host | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a ``crdtsync`` command on the vault in ``folder`` (inside ``host``'s namespace when given)."""
    argv = [str(CRDTSYNC), *args]
    if host is not None:
        return host.run(argv, env=process_env(folder), capture_output=True, text=True, timeout=timeout)
    return subprocess.run(argv, env=process_env(folder), capture_output=True, text=True, timeout=timeout,
                          check=False)


def contents(folder: Path) -> list[tuple[str, str]]:
    """Every live memory of the vault as (id, content), sorted (read by a CLI process)."""
    listed = crdtsync(folder, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return sorted((m["id"], m["content"]) for m in json.loads(listed.stdout))


def eventually(check: Callable[[], Any], timeout: float = PATIENCE, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something true; that value. Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g} s")
        time.sleep(0.1)


