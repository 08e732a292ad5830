"""The blob store itself (crdtsync.mailbox.backend) on real folders: what a folder relay may hold that is not an
object (FIFOs, sockets, device nodes, symlinks), read and listed under a deadline so that a hang fails the test
instead of stopping the run."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crdtsync.errors import MailboxError
from crdtsync.mailbox.backend import BlobStore, open_store
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

T = TypeVar("T")
#: Seconds a store call may take before the test fails as hung (each here takes milliseconds).
DEADLINE = 10.0


def within_deadline(call: Callable[[], T], seconds: float = DEADLINE) -> T:
    """``call()``'s result (or its exception, raised again), in a daemon thread; fails the test when it has not
    returned after ``seconds`` (the hung thread is left blocked, and the process can still exit)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the store call was still running after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["value"]
    return result


def code_of(call: Callable[[], object]) -> str:
    """The MailboxError code ``call()`` raises within the deadline."""
    with pytest.raises(MailboxError) as raised:
        within_deadline(call)
    return raised.value.code


def no_sleep_store(url: str, sleeps: list[float]) -> BlobStore:
    """A store whose backoff sleeps are recorded instead of slept: a retried error shows up in ``sleeps``."""
    return open_store(url, base_delay=0.01, sleep=sleeps.append)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A folder relay holding one regular object, ``d/ok``."""
    folder = tmp_path / "box"
    open_store(folder.as_uri()).put("d/ok", b"a regular object")
    return folder


@contextlib.contextmanager
def unix_socket(path: Path) -> Iterator[None]:
    """A listening unix socket at ``path`` for the ``with`` block. It is bound under a short folder (a socket
    path holds at most 107 bytes) and renamed into place."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="s") as short, socket.socket(socket.AF_UNIX) as sock:
        sock.bind(f"{short}/s")
        sock.listen()
        os.rename(f"{short}/s", path)
        yield


# -- item: only regular files are read from a folder --------------------------------------------------------


def test_a_fifo_where_an_object_should_be_is_refused_at_once_and_never_opened(box: Path) -> None:
    """Before, opening the FIFO blocked for ever (no writer ever came) and `sync` hung."""
    os.mkfifo(box / "d" / "fifo")
    sleeps: list[float] = []
    store = no_sleep_store(box.as_uri(), sleeps)
    assert code_of(lambda: store.get("d/fifo")) == "MAILBOX_NOT_A_FILE"
    with pytest.raises(MailboxError, match=r"d/fifo in the relay folder is a FIFO \(named pipe\)"):
        within_deadline(lambda: store.get("d/fifo"))
    assert sleeps == []
    assert within_deadline(lambda: store.get("d/ok")) == b"a regular object"


def test_a_symlink_to_a_fifo_or_to_dev_zero_is_refused_without_following_it(box: Path, tmp_path: Path) -> None:
    """Before, a symlink to /dev/zero was read up to the size limit (256 MiB of zeros, then MAILBOX_TOO_LARGE)
    and one to a FIFO hung."""
    os.mkfifo(tmp_path / "outside-fifo")
    (box / "d" / "to-fifo").symlink_to(tmp_path / "outside-fifo")
    (box / "d" / "to-zero").symlink_to("/dev/zero")
    (box / "d" / "to-ok").symlink_to(box / "d" / "ok")  # even to a regular object: crdtsync writes no symlink
    store = open_store(box.as_uri())
    for key in ("d/to-fifo", "d/to-zero", "d/to-ok"):
        with pytest.raises(MailboxError, match="is a symbolic link") as raised:
            within_deadline(lambda key=key: store.get(key))
        assert raised.value.code == "MAILBOX_NOT_A_FILE", key


def test_a_unix_socket_and_a_folder_are_refused(box: Path) -> None:
    """Before, a socket failed to open (ENXIO) five times over with backoff sleeps, then MAILBOX_UNAVAILABLE."""
    sleeps: list[float] = []
    store = no_sleep_store(box.as_uri(), sleeps)
    (box / "d" / "folder").mkdir()
    with unix_socket(box / "d" / "sock"):
        assert code_of(lambda: store.get("d/sock")) == "MAILBOX_NOT_A_FILE"
        assert code_of(lambda: store.get("d/folder")) == "MAILBOX_NOT_A_FILE"
    assert sleeps == []


def test_a_device_node_in_the_relay_folder_is_refused_without_being_opened(box: Path) -> None:
    """A character device made with mknod (as /dev/zero is: 1, 5). Opening some devices has effects of its own
    (a watchdog, a tape that rewinds), so the check comes before any open."""
    try:
        os.mknod(box / "d" / "zero", 0o644 | 0o020000, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD (root): not this process")
    store = open_store(box.as_uri())
    with pytest.raises(MailboxError, match="is a character device") as raised:
        within_deadline(lambda: store.get("d/zero"))
    assert raised.value.code == "MAILBOX_NOT_A_FILE"


def test_listing_names_fifos_sockets_and_symlinks_without_opening_them(box: Path, tmp_path: Path) -> None:
    """A listing names whatever is there (a get then reports it); a prefix that is a FIFO, or a symlink to
    /dev/zero, is no folder and lists as empty. Before, fsspec listed a prefix that was not a folder as itself."""
    os.mkfifo(box / "d" / "fifo")
    (box / "d" / "to-zero").symlink_to("/dev/zero")
    os.mkfifo(box / "fifo-prefix")
    (box / "zero-prefix").symlink_to("/dev/zero")
    store = open_store(box.as_uri())
    with unix_socket(box / "d" / "sock"):
        assert within_deadline(lambda: store.list("d")) == ["fifo", "ok", "sock", "to-zero"]
    assert within_deadline(lambda: store.list("fifo-prefix")) == []
    assert within_deadline(lambda: store.list("zero-prefix")) == []
    assert within_deadline(lambda: store.list("d/ok")) == []
    assert within_deadline(lambda: store.get("fifo-prefix/head")) is None


def test_a_read_takes_at_most_one_byte_past_the_size_limit(tmp_path: Path) -> None:
    """A sparse 1 GiB object under a limit of 1000 bytes: the child process reads 1001 bytes of it (its
    ``rchar`` in /proc/self/io counts every byte read) and reports MAILBOX_TOO_LARGE."""
    store = open_store((tmp_path / "box").as_uri())
    store.put("d/big", b"")
    os.truncate(tmp_path / "box" / "d" / "big", 1 << 30)
    script = (
        "import sys\n"
        "import crdtsync.mailbox.backend as backend\n"
        "from crdtsync.errors import MailboxError\n"
        "backend.MAX_OBJECT_BYTES = 1000\n"
        "store = backend.open_store(sys.argv[1])\n"
        "def rchar():\n"
        "    with open('/proc/self/io') as io:\n"
        "        return int(next(line for line in io if line.startswith('rchar:')).split()[1])\n"
        "before = rchar()\n"
        "try:\n"
        "    store.get('d/big')\n"
        "except MailboxError as exc:\n"
        "    print(exc.code, rchar() - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, (tmp_path / "box").as_uri()], capture_output=True,
                          text=True, timeout=60, check=True)
    code, read = done.stdout.split()
    assert code == "MAILBOX_TOO_LARGE"
    assert 1001 <= int(read) <= 1001 + 4096  # and the few hundred bytes of /proc/self/io read in between


def test_a_fifo_as_a_devices_head_is_reported_by_sync_and_the_sync_ends(tmp_path: Path) -> None:
    """The whole path: a FIFO put in place of another device's head. The pull of that device reports
    MAILBOX_NOT_A_FILE (exit 8 in the CLI) and the sync returns; with the head back, it syncs."""
    box = tmp_path / "box"
    Vault.init(tmp_path / "laptop", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.add_relay("box", box.as_uri())
        laptop.add("written on the laptop")
        laptop.sync()
        laptop_id = laptop.device_id
    Vault.join(tmp_path / "phone", box.as_uri(), passphrase=PASSPHRASE, device_name="phone")
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.add("written after the phone joined")
        laptop.sync()
    (head,) = [p for p in box.rglob("head") if p.parent.name == laptop_id]
    kept = head.read_bytes()
    head.unlink()
    os.mkfifo(head)
    with Vault.open(tmp_path / "phone") as phone:
        reports = within_deadline(phone.sync)
        assert [e["code"] for r in reports for e in r.errors] == ["MAILBOX_NOT_A_FILE"]
        head.unlink()
        head.write_bytes(kept)
        assert [e for r in within_deadline(phone.sync) for e in r.errors] == []
        assert sorted(m.content for m in phone.list()) == ["written after the phone joined",
                                                            "written on the laptop"]
