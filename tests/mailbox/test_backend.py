"""The blob store itself (crdtsync.mailbox.backend) on real folders and moto's S3 server on 127.0.0.1: what a
folder relay may hold that is not an object (FIFOs, sockets, device nodes, symlinks), read and listed under a
deadline so that a hang fails the test instead of stopping the run; store errors told apart by type, errno and S3
error code, under paths and names made of the words of error messages; relay folders saved as absolute paths, with
the real ``crdtsync`` command run from two working directories."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
import pytest

import tests.mailbox.test_s3_auth as s3_auth
from crdtsync.errors import InvalidInputError, MailboxError
from crdtsync.mailbox.backend import BlobStore, canonical_url, open_store
from crdtsync.vault import Vault
from tests.cli.test_cli import CRDTSYNC
from tests.conftest import PASSPHRASE, cheap_kdf
from tests.mailbox.test_s3_auth import AuthS3, SetKey

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
    """The whole path: a FIFO put in place of another device's head. The sync reports MAILBOX_NOT_A_FILE (exit 8
    in the CLI) and returns, having put back the head it holds of that device over the FIFO; with the newest
    head back, it syncs."""
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
        assert head.is_file() and not head.is_fifo()  # healed with the head the phone verified at its join
        head.unlink()
        head.write_bytes(kept)
        assert [e for r in within_deadline(phone.sync) for e in r.errors] == []
        assert sorted(m.content for m in phone.list()) == ["written after the phone joined",
                                                            "written on the laptop"]


# -- item: errors are told apart by type, errno and S3 error code, never by the words of a path ----------------

#: Folders named like the words the store's errors were once told apart by.
MISLEADING = ["bucket", "500", "503",
              "the specified bucket does not exist/NoSuchBucket/InvalidAccessKeyId/AccessDenied/EntityTooLarge/"
              "SlowDown/timeout"]


@pytest.mark.parametrize("words", MISLEADING)
def test_a_folder_relay_whose_path_holds_error_words_works_normally(tmp_path: Path, words: str) -> None:
    """Before, a missing object under ``~/Sync/bucket`` (or a stray file where a folder should be) was
    MAILBOX_NO_BUCKET, since "bucket" was in the path the error's message holds."""
    sleeps: list[float] = []
    store = no_sleep_store(str(tmp_path / "home" / words / "relay"), sleeps)
    store.put("d/k", b"object")
    assert store.get("d/k") == b"object" and store.list("d") == ["k"]
    assert store.get("d/missing") is None and store.get("nothing/here") is None
    assert store.list("nothing/here") == [] and store.list("d/k") == []
    store.delete("d/k")
    store.delete("d/k")
    assert store.get("d/k") is None and store.list("d") == []
    store.put("stray", b"a file where a device's folder would be")
    assert store.get("stray/head") is None and store.list("stray") == []
    store.delete("stray/head")
    with pytest.raises(MailboxError, match="cannot write stray/sub/head") as raised:
        store.put("stray/sub/head", b"x")
    assert raised.value.code == "MAILBOX_UNAVAILABLE"
    assert sleeps == []
    assert code_of(lambda: store.put("stray/head", b"x")) == "MAILBOX_UNAVAILABLE"  # the file is in the way


#: Run by root, it drops to nobody after the imports (root reads and writes anything, whatever the modes); run
#: by another user, it stays that user, whom the modes deny as well. Prints each operation's outcome as JSON.
AS_A_USER_WITHOUT_RIGHTS = """
import json, os, sys
from crdtsync.errors import InvalidInputError, MailboxError
from crdtsync.mailbox.backend import open_store
sleeps = []
store = open_store(sys.argv[1], base_delay=0.01, sleep=sleeps.append)
if os.geteuid() == 0:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
def outcome(call):
    try:
        return call()
    except MailboxError as exc:
        return exc.code
print(json.dumps({
    "get": outcome(lambda: store.get("d/secret")),
    "put": outcome(lambda: store.put("d/new", b"x")),
    "delete": outcome(lambda: store.delete("d/secret")),
    "list locked": outcome(lambda: store.list("locked")),
    "get in locked": outcome(lambda: store.get("locked/x")),
    "get missing": outcome(lambda: store.get("d/missing")),
    "list": outcome(lambda: store.list("d")),
    "sleeps": len(sleeps),
}))
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder any user may enter (pytest's tmp_path is the owner's only), removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="crdtsync-perm-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(folder)


def test_a_permission_error_under_a_path_of_error_words_is_mailbox_permission(open_folder: Path) -> None:
    """A real EACCES (a file and a folder with mode 000, a folder without write permission), for a user the
    modes deny, under ``NoSuchBucket/bucket/500/503``: MAILBOX_PERMISSION at once, not MAILBOX_NO_BUCKET and not
    retried as a server error; a missing object is still None."""
    relay = open_folder / "NoSuchBucket" / "bucket" / "500" / "503" / "relay"
    open_store(str(relay)).put("d/secret", b"not for everyone")
    (relay / "d" / "secret").chmod(0o000)
    (relay / "d").chmod(0o555)
    (relay / "locked").mkdir()
    (relay / "locked").chmod(0o000)
    done = subprocess.run([sys.executable, "-c", AS_A_USER_WITHOUT_RIGHTS, str(relay)], capture_output=True,
                          text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == {
        "get": "MAILBOX_PERMISSION", "put": "MAILBOX_PERMISSION", "delete": "MAILBOX_PERMISSION",
        "list locked": "MAILBOX_PERMISSION", "get in locked": "MAILBOX_PERMISSION", "get missing": None,
        "list": ["secret"], "sleeps": 0,
    }


def test_s3_a_bucket_and_prefix_named_with_error_words_work_normally(s3_endpoint: str) -> None:
    """On moto's S3 server: a bucket named ``bucket-500-503-...`` and a prefix of error words. Before, listing
    a prefix that is not there (s3fs raises FileNotFoundError with the path) was MAILBOX_NO_BUCKET."""
    bucket = f"bucket-500-503-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    sleeps: list[float] = []
    store = no_sleep_store(f"s3://{bucket}/NoSuchBucket/InvalidAccessKeyId/AccessDenied/500/503", sleeps)
    store.put("d/k", b"object")
    assert store.get("d/k") == b"object" and store.list("d") == ["k"]
    assert store.get("d/missing") is None and store.get("bucket/missing") is None
    assert store.list("bucket/not/here") == []
    store.delete("d/k")
    store.delete("d/k")
    assert store.get("d/k") is None
    assert sleeps == []


def test_s3_a_missing_bucket_is_mailbox_no_bucket_by_its_code(s3_endpoint: str) -> None:
    """NoSuchBucket (s3fs raises it as FileNotFoundError, with the ClientError as its cause) is MAILBOX_NO_BUCKET
    on every operation, at once, whatever the names: the bucket's name here has no word "bucket" in it."""
    sleeps: list[float] = []
    store = no_sleep_store(f"s3://gone-{uuid.uuid4().hex[:8]}/NoSuchKey/500", sleeps)
    assert every_operation(store) == ["MAILBOX_NO_BUCKET"] * 5
    assert sleeps == []


def every_operation(store: BlobStore) -> list[str]:
    """The codes put, get, list, list of the root and delete raise on ``store``."""
    return [code_of(lambda: store.put("k", b"x")), code_of(lambda: store.get("k")), code_of(lambda: store.list("d")),
            code_of(lambda: store.list("")), code_of(lambda: store.delete("k"))]


#: The IAM-enforcing moto server of test_s3_auth, and its credential switch, as fixtures of this module too.
auth_s3 = s3_auth.auth_s3
as_key = s3_auth.as_key


def test_s3_bad_credentials_are_mailbox_auth_by_code_under_a_prefix_of_error_words(
    auth_s3: AuthS3, as_key: SetKey
) -> None:
    """InvalidAccessKeyId and SignatureDoesNotMatch (s3fs raises them as PermissionError) are MAILBOX_AUTH on every
    operation, under a prefix named NoSuchBucket/AccessDenied/503; the writer's key works under that prefix."""
    prefix = f"s3://{s3_auth.BUCKET}/NoSuchBucket/AccessDenied/bucket/500/503"
    for key in (("AKIAUNKNOWNKEY000000", "whatever"), (auth_s3.writer[0], "not-the-secret")):
        as_key(key)
        sleeps: list[float] = []
        assert every_operation(no_sleep_store(prefix, sleeps)) == ["MAILBOX_AUTH"] * 5, key
        assert sleeps == []
    as_key(auth_s3.writer)
    store = open_store(prefix)
    store.put("d/k", b"object")
    assert store.get("d/k") == b"object" and store.get("d/missing") is None and store.list("gone") == []
    as_key(auth_s3.denied)
    denied = open_store(prefix)
    assert code_of(lambda: denied.get("d/k")) == code_of(lambda: denied.put("d/k", b"x")) == "MAILBOX_PERMISSION"


def test_s3_missing_or_partial_credentials_are_mailbox_auth(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's NoCredentialsError and PartialCredentialsError, told by their type. No credential file, and
    no instance metadata service is asked (that would leave this machine)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sleeps: list[float] = []
    assert code_of(lambda: no_sleep_store(f"s3://{s3_bucket}/p", sleeps).get("k")) == "MAILBOX_AUTH"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "an-id-without-its-secret")
    assert code_of(lambda: no_sleep_store(f"s3://{s3_bucket}/p", sleeps).get("k")) == "MAILBOX_AUTH"
    assert sleeps == []


# -- item: a relay's folder is saved as an absolute path at `relay add` ----------------------------------------


def crdtsync_in(cwd: Path, home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """``crdtsync ARGS --json`` as a subprocess of the installed console script, run in folder ``cwd`` with
    ``CRDTSYNC_HOME=home`` (and ``env`` added); its JSON output, after checking it exited 0."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_")}
    full_env.update({"CRDTSYNC_HOME": str(home), "CRDTSYNC_PASSPHRASE": PASSPHRASE, **(env or {})})
    done = subprocess.run([str(CRDTSYNC), *args, "--json"], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def test_a_relative_relay_path_names_the_same_folder_from_any_working_directory(tmp_path: Path) -> None:
    """``relay add home ../relay`` typed in one folder, ``sync`` run from another: the relay is the folder the
    path named where it was typed. Before, ``../relay`` was saved as typed, and the sync wrote to another
    folder. ``file:`` URLs and ``~`` are saved the same way."""
    home = tmp_path / "vault"
    Vault.init(home, name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    here, elsewhere = tmp_path / "one" / "here", tmp_path / "two" / "deeper" / "elsewhere"
    here.mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    user_home = tmp_path / "user"
    added = crdtsync_in(here, home, "relay", "add", "home", "../relay")
    assert added["name"] == "home" and added["join"].startswith(f"{tmp_path / 'one' / 'relay'}#vault=")
    crdtsync_in(here, home, "relay", "add", "url", "file:../url-relay")
    crdtsync_in(here, home, "relay", "add", "tilde", "~/tilde-relay", env={"HOME": str(user_home)})
    saved = {r["name"]: r["url"] for r in crdtsync_in(elsewhere, home, "relay", "list")}
    assert saved == {"home": str(tmp_path / "one" / "relay"), "url": f"file://{tmp_path}/one/url-relay",
                     "tilde": str(user_home / "tilde-relay")}
    reports = crdtsync_in(elsewhere, home, "sync")
    assert [(r["relay"], r["errors"]) for r in reports] == [("home", []), ("tilde", []), ("url", [])]
    for folder in (tmp_path / "one" / "relay", tmp_path / "one" / "url-relay", user_home / "tilde-relay"):
        assert list(folder.glob("crdtsync-v1/*/vault.json")), folder
    assert sorted(p.name for p in (tmp_path / "two" / "deeper").iterdir()) == ["elsewhere"]
    assert list(elsewhere.iterdir()) == []
    crdtsync_in(here, tmp_path / "phone", "join", "../relay", "--device-name", "phone")  # a join saves it so too
    (joined,) = crdtsync_in(elsewhere, tmp_path / "phone", "relay", "list")
    assert joined["url"] == str(tmp_path / "one" / "relay")


def test_canonical_url_keeps_the_form_and_leaves_other_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain path stays a path, a ``file:`` URL a URL (or a path, for a folder whose name a URL would read
    otherwise: ``#`` starts a fragment); symlinks resolved; S3, memory, unknown schemes and "" as they are."""
    cwd = tmp_path / "C#" / "work"
    cwd.mkdir(parents=True)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert canonical_url("relay") == str(cwd / "relay")
    assert canonical_url("../relay") == str(tmp_path / "C#" / "relay")
    assert canonical_url(str(tmp_path / "link" / "box")) == str(tmp_path / "real" / "box")
    assert canonical_url("~/Sync/bucket") == str(tmp_path / "me" / "Sync" / "bucket")
    assert canonical_url("file:~/Sync") == f"file://{tmp_path}/me/Sync"
    assert canonical_url(f"file://{tmp_path}/link/box") == f"file://{tmp_path}/real/box"
    assert canonical_url("file:box") == str(cwd / "box")  # in file:///.../C#/... all after the '#' would be lost
    for url in ("s3://bucket/prefix", "memory://name", "ftp://host/x", ""):
        assert canonical_url(url) == url


def test_an_empty_relay_url_is_still_refused(make_vault: Callable[..., Vault]) -> None:
    """"" names no folder: it is not made into the working directory's path, and saving the relay refuses it."""
    vault = make_vault()
    with pytest.raises(InvalidInputError, match="a relay URL must be non-empty"):
        vault.add_relay("empty", "")
    assert vault.relays() == []
