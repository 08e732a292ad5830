"""Blob stores a mailbox lives in: whole-object get, put, list and delete, through fsspec.

Backends by URL: ``file:///path`` or a plain path (the embedded default: put it inside Dropbox, Syncthing,
iCloud or on a USB stick), ``memory://name`` (tests), ``s3://bucket/prefix`` (s3fs; the endpoint, region and
credentials come from the usual AWS variables: ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, which serves MinIO, R2 and moto alike).

Only whole-object operations are used; no rename, append, lock or conditional write is assumed of the store,
and a listing may lag. The folder backend writes each object to a temporary name (``.tmp-*``, ignored by
listings) in the same folder, fsyncs it and renames it, so a folder-sync tool never carries a half-written
object under its final name. It reads only regular files: a FIFO, socket, device node, folder or symbolic link
where an object should be (which a sync tool or another member can put there) is refused with
``MAILBOX_NOT_A_FILE`` without being opened, and no read takes more than :data:`MAX_OBJECT_BYTES` + 1 bytes.
Transient store errors are retried with exponential backoff and jitter; everything else becomes a
:class:`~crdtsync.errors.MailboxError` with a stable code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import fsspec

from crdtsync._fs import TMP_PREFIX, atomic_write
from crdtsync.errors import InvalidInputError, MailboxError

T = TypeVar("T")
#: Largest object read from a store, in bytes (a log object holds at most a few envelopes of 4 MiB each).
MAX_OBJECT_BYTES = 256 * 1024 * 1024


@dataclass
class StoreStats:
    """Counters of the operations a store performed: ``gets``, ``puts``, ``lists``, ``deletes``, and
    ``bytes_down``/``bytes_up`` of object payloads."""

    gets: int = 0
    puts: int = 0
    lists: int = 0
    deletes: int = 0
    bytes_down: int = 0
    bytes_up: int = 0

    @property
    def operations(self) -> int:
        """Every object operation counted so far."""
        return self.gets + self.puts + self.lists + self.deletes


def _s3_error(exc: BaseException) -> tuple[str, int | None]:
    """(S3 error code, HTTP status) of the response botocore attached to ``exc`` (a ClientError) or to its
    ``__cause__`` (s3fs raises a ClientError again as a FileNotFoundError, PermissionError or OSError whose cause is
    the ClientError): ``("NoSuchBucket", 404)``, ``("InvalidAccessKeyId", 403)``; ``""`` and None for what is
    missing, as for every error of a folder."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return (code if isinstance(code, str) else "", status if isinstance(status, int) else None)
    return "", None


def _is_botocore(exc: BaseException, *names: str) -> bool:
    """True when ``exc`` is one of the classes ``names`` of ``botocore.exceptions``. When botocore was never
    imported (a folder or memory store only), no exception can be one of them, and it is not imported for this."""
    module = sys.modules.get("botocore.exceptions")
    return module is not None and isinstance(exc, tuple(getattr(module, name) for name in names))


#: What a store raises for an object that is not there: on a folder, also a path through a file where a folder
#: was expected (a stray file where a device's folder would be). On S3 the error code tells a missing bucket
#: (``NoSuchBucket``, also raised as a FileNotFoundError) from a missing object.
_MISSING = (FileNotFoundError, NotADirectoryError)
#: S3 error codes for credentials the store does not accept.
_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"})
#: S3 error codes for a request the credentials were accepted for but may not make.
_PERMISSION_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
#: S3 error codes worth a retry, whatever their HTTP status (``RequestTimeout`` comes as 400,
#: ``OperationAborted`` as 409).
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                              "ThrottlingException", "RequestLimitExceeded", "OperationAborted"})
#: HTTP statuses worth a retry besides 5xx: request timeout, too many requests.
_TRANSIENT_STATUSES = frozenset({408, 429})


def _classify(exc: BaseException, url: str) -> MailboxError | None:
    """The MailboxError that exception ``exc`` of the store at ``url`` stands for, or None when it is transient
    (worth a retry). Decided by the exception's type, its errno, and the S3 error code and HTTP status botocore
    gives (see :func:`_s3_error`), never by the words of its message, which hold the path or URL."""
    if isinstance(exc, MailboxError):
        return exc
    code, status = _s3_error(exc)
    if code == "NoSuchBucket":
        return MailboxError(f"the bucket of {url} does not exist: create it first", code="MAILBOX_NO_BUCKET")
    if code in _AUTH_CODES or _is_botocore(exc, "NoCredentialsError", "PartialCredentialsError"):
        return MailboxError(f"the store refused our credentials: {exc}; check AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY", code="MAILBOX_AUTH")
    if code in _PERMISSION_CODES or status == 403 or isinstance(exc, PermissionError):
        return MailboxError(f"permission denied by the store: {exc}", code="MAILBOX_PERMISSION")
    if code == "EntityTooLarge" or status == 413 or (
            isinstance(exc, OSError) and exc.errno in (errno.EFBIG, errno.ENOSPC)):
        return MailboxError(f"the store refused the object's size: {exc}", code="MAILBOX_TOO_LARGE")
    if code in _TRANSIENT_CODES or (status is not None and (status in _TRANSIENT_STATUSES or status >= 500)):
        return None
    if status is not None:  # any other answer of the server: the same request gets the same answer
        return MailboxError(f"the store at {url} refused the request: {exc}", code="MAILBOX_UNAVAILABLE")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):  # botocore's timeouts are OSErrors too
        return None
    return MailboxError(f"the store failed: {type(exc).__name__}: {exc}", code="MAILBOX_UNAVAILABLE")


#: What a folder object that is not a regular file is, for messages (``stat.S_IFMT`` of its mode).
_FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a folder"}
#: Flags a folder object is opened with: never through a symlink, never blocking (a FIFO swapped in after the
#: check), never as a controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Bytes a folder read asks for at a time past the size the file had when it was opened.
_READ_CHUNK = 64 * 1024


def _not_a_file(key: str, mode: int) -> MailboxError:
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return MailboxError(f"{key} in the relay folder is {kind}, not a regular file: crdtsync does not open it; "
                        "remove it from the folder", code="MAILBOX_NOT_A_FILE")


def _read_regular_file(path: str, key: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (object ``key``, for messages), at most ``limit`` + 1 of them.

    The last path component is checked with ``lstat`` before anything is opened, so a FIFO, socket, device node,
    folder or symlink is never opened (opening a device can have effects; reading a FIFO or ``/dev/zero`` would
    never end); it is then opened without following a symlink and without blocking, and checked again with
    ``fstat``, for an object replaced in between.

    Raises:
        MailboxError: ``MAILBOX_NOT_A_FILE``.
        OSError: as the OS reports it (``FileNotFoundError`` and ``NotADirectoryError`` for a missing object).
    """
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_a_file(key, mode)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _not_a_file(key, opened.st_mode)
        os.set_blocking(fd, True)
        # Reads sized to the file (its size and one byte to see the end), not to the limit: a read allocates
        # what it asks for, and a large allocation shrunk in place would keep one memory mapping per object
        # alive (the kernel allows ~65k). A file that grows while it is read is read on in chunks.
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            want = opened.st_size + 1 - total
            chunk = os.read(fd, min(limit + 1 - total, want if want > 0 else _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _list_folder(path: str) -> list[str]:
    """The names in folder ``path``; opens and stats none of them. Raises ``NotADirectoryError`` when ``path`` is
    not a folder (a file, a FIFO: never opened), ``FileNotFoundError`` when it is not there."""
    with os.scandir(path) as entries:
        return [entry.name for entry in entries]


@dataclass
class BlobStore:
    """Whole-object access to one prefix of an fsspec filesystem.

    Args:
        url: the mailbox URL (shown in messages; a relay's as :func:`canonical_url` saved it).
        fs: the fsspec filesystem; root: the prefix inside it (no trailing slash).
        attempts: tries per operation for transient errors; base_delay: first backoff in seconds (doubled
            each try, with full jitter).

    Keys are ``/``-separated paths relative to ``root``.
    """

    url: str
    fs: Any
    root: str
    attempts: int = 5
    base_delay: float = 0.2
    stats: StoreStats = field(default_factory=StoreStats)
    sleep: Callable[[float], None] = time.sleep

    @property
    def is_local(self) -> bool:
        """True for the folder backend (atomic rename is available)."""
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def root_missing(self) -> bool:
        """Whether this folder store's own folder is absent (a stick or drive not mounted, a synced folder
        moved); always False for S3 and memory stores."""
        return self.is_local and not Path(self.root).is_dir()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _retry(self, op: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return op()
            except Exception as exc:
                if isinstance(exc, _MISSING) and _s3_error(exc)[0] != "NoSuchBucket":
                    raise
                error = _classify(exc, self.url)
                if error is not None:
                    raise error from None
                if attempt == self.attempts - 1:
                    raise MailboxError(f"the store at {self.url} is unavailable after {self.attempts} tries: {exc}",
                                       code="MAILBOX_UNAVAILABLE") from None
                self.sleep(random.uniform(0, self.base_delay * 2**attempt))
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes | None:
        """The whole object ``key``, or None when it does not exist (or not yet: listings and reads may lag).

        Raises:
            MailboxError: ``MAILBOX_TOO_LARGE`` (over :data:`MAX_OBJECT_BYTES`), ``MAILBOX_NOT_A_FILE`` (on a
                folder: a FIFO, socket, device node, folder or symlink at that name, which is never opened),
                ``MAILBOX_AUTH``, ``MAILBOX_PERMISSION``, ``MAILBOX_NO_BUCKET``, ``MAILBOX_UNAVAILABLE``.
        """
        path = self._path(key)

        def read() -> bytes:
            if self.is_local:
                data = _read_regular_file(path, key, MAX_OBJECT_BYTES)
            else:
                # One ranged read (one GET on S3) of at most one byte past the limit, instead of a size query.
                data = self.fs.cat_file(path, start=0, end=MAX_OBJECT_BYTES + 1)
            if len(data) > MAX_OBJECT_BYTES:
                raise MailboxError(f"{key} is larger than {MAX_OBJECT_BYTES} bytes", code="MAILBOX_TOO_LARGE")
            return data

        self.stats.gets += 1
        try:
            data = self._retry(read)
        except _MISSING:
            return None
        self.stats.bytes_down += len(data)
        return data

    def put(self, key: str, data: bytes) -> None:
        """Write the whole object ``key``. On a folder: temporary name, fsync, rename, fsync of the folder.

        Raises:
            MailboxError: as :meth:`get`; ``MAILBOX_TOO_LARGE`` before anything is written when ``data`` is over
                :data:`MAX_OBJECT_BYTES`, which no reader would accept.
        """
        if len(data) > MAX_OBJECT_BYTES:
            raise MailboxError(f"{key} would be {len(data)} bytes; a mailbox object holds at most "
                               f"{MAX_OBJECT_BYTES} bytes", code="MAILBOX_TOO_LARGE")
        path = self._path(key)
        self.stats.puts += 1
        self.stats.bytes_up += len(data)
        try:
            if self.is_local:
                self._retry(lambda: atomic_write(Path(path), data))
            else:
                self._retry(lambda: self.fs.pipe_file(path, data))
        except _MISSING as exc:
            raise MailboxError(f"cannot write {key} under {self.url}: {exc}", code="MAILBOX_UNAVAILABLE") from None

    def list(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (files and folders, without the prefix; temporary files left out).
        A missing prefix, or on a folder one that is not a folder, lists as empty; nothing listed is opened. The
        listing may lag behind recent puts."""
        path = self._path(prefix).rstrip("/")
        self.stats.lists += 1
        try:
            entries = self._retry(lambda: _list_folder(path) if self.is_local
                                  else self.fs.ls(path, detail=False, refresh=True))
        except _MISSING:
            return []
        names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n and not n.startswith(TMP_PREFIX))

    def walk(self, prefix: str) -> dict[str, tuple[int, str]]:
        """Every object under ``prefix``, at any depth: ``{key: (size in bytes, modification mark)}`` where the
        mark (an ETag on S3, a modification time on a folder) changes when the object is rewritten; temporary
        files and folders are left out (a FIFO, socket, device or symlink in a folder is listed, never opened:
        :meth:`get` refuses it). One listing request (one per 1000 keys on S3). A missing prefix walks as empty;
        the listing may lag behind recent puts."""
        path = self._path(prefix).rstrip("/")
        self.stats.lists += 1

        def find() -> dict[str, Any]:
            if not self.is_local:
                self.fs.invalidate_cache(path)
            found: dict[str, Any] = self.fs.find(path, detail=True, withdirs=False)
            return found

        try:
            found = self._retry(find)
        except _MISSING:
            return {}
        base = self.fs._strip_protocol(path).rstrip("/") + "/"
        out: dict[str, tuple[int, str]] = {}
        for name, info in found.items():
            stripped = self.fs._strip_protocol(name)
            if not stripped.startswith(base) or info.get("type") == "directory":
                continue
            rel = stripped[len(base):]
            if rel.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                continue
            mark = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created") or ""
            out[f"{prefix.rstrip('/')}/{rel}"] = (int(info.get("size") or 0), str(mark))
        return out

    def delete(self, key: str) -> None:
        """Delete the object ``key``; a missing object is not an error."""
        path = self._path(key)
        self.stats.deletes += 1
        with contextlib.suppress(*_MISSING):
            self._retry(lambda: self.fs.rm_file(path))


def local_folder(url: str) -> Path | None:
    """The folder a ``file://`` URL or a plain path names (``~`` expanded, symlinks resolved), or None for a URL
    of another scheme."""
    parsed = urlparse(url)
    if (parsed.scheme or "file") != "file":
        return None
    return Path(parsed.path if parsed.scheme else url).expanduser().resolve()


def canonical_url(url: str) -> str:
    """``url`` in the form a relay is saved in, so that it names the same mailbox from any working directory.

    A folder relay (a plain path or a ``file:`` URL; relative, or starting with ``~``) becomes the absolute path
    of :func:`local_folder`: ``~`` expanded, made absolute against the current working directory, symlinks
    resolved (the folder :func:`check_apart` checked and the store opens). It keeps its form: a plain path stays
    a path (``../relay`` -> ``/home/me/relay``), a ``file:`` URL becomes ``file://`` and that path
    (``file:relay`` -> ``file:///home/me/relay``), or the plain path when the folder's name holds a character
    (``#``, ``?``, ``;``) a URL would read otherwise. Any other URL (``s3://``, ``memory://``, an unsupported
    scheme, which :func:`open_store` refuses) is returned as it is, and so is ``""``, which names no folder
    (saving a relay refuses it).

    Args:
        url: a mailbox URL or path, as the user typed it.

    Returns:
        The URL to save as the relay's.
    """
    folder = local_folder(url) if url else None
    if folder is None:
        return url
    if urlparse(url).scheme:
        as_url = f"file://{folder}"
        if local_folder(as_url) == folder:
            return as_url
    return str(folder)


def relay_holding(url: str, path: Path) -> Path | None:
    """The folder of folder relay ``url`` when ``path`` (``~`` expanded, symlinks resolved) is that folder or
    lies inside it; None otherwise, and for a URL of another scheme."""
    relay = local_folder(url)
    target = path.expanduser().resolve()
    return relay if relay is not None and (relay == target or relay in target.parents) else None


def check_apart(folder: Path, url: str) -> None:
    """Refuse a folder relay ``url`` that holds the vault folder ``folder`` or lies inside it.

    Whatever carries the relay folder (Dropbox, Syncthing, a USB stick) would carry a vault inside it, its
    memories and private keys in clear; a relay inside the vault folder would put the mailbox where the vault's
    private files are, and a backup or copy of the one would take the other.

    Raises:
        InvalidInputError: ``RELAY_OVERLAPS_VAULT``.
    """
    vault = folder.expanduser().resolve()
    relay = relay_holding(url, vault)
    if relay is not None:
        where = "the relay folder" if vault == relay else "inside the relay folder"
        raise InvalidInputError(
            f"the vault folder {vault} is {where} {relay}: whatever carries the relay would carry your memories "
            "and private keys in clear; keep the vault outside it (--vault or CRDTSYNC_HOME)",
            code="RELAY_OVERLAPS_VAULT")
    relay = local_folder(url)
    if relay is not None and vault in relay.parents:
        raise InvalidInputError(
            f"the relay folder {relay} is inside the vault folder {vault}: give the relay a folder of its own, "
            "outside the vault", code="RELAY_OVERLAPS_VAULT")


def open_store(url: str, **options: Any) -> BlobStore:
    """A :class:`BlobStore` for a mailbox URL: ``file:///path`` or a plain path, ``memory://name``,
    ``s3://bucket/prefix`` (needs the ``s3`` extra; ``AWS_ENDPOINT_URL`` etc. configure it).

    Raises:
        MailboxError: ``MAILBOX_UNSUPPORTED_URL`` for another scheme or a missing backend package.
    """
    folder = local_folder(url)
    if folder is not None:
        return BlobStore(url, fsspec.filesystem("file"), str(folder), **options)
    parsed = urlparse(url)
    scheme = parsed.scheme
    if scheme == "memory":
        return BlobStore(url, fsspec.filesystem("memory"), "/" + (parsed.netloc + parsed.path).strip("/"),
                         **options)
    if scheme == "s3":
        try:
            fs = fsspec.filesystem("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
                                   client_kwargs={"region_name": os.environ.get("AWS_DEFAULT_REGION")}
                                   if os.environ.get("AWS_DEFAULT_REGION") else None, skip_instance_cache=True)
        except ImportError as exc:
            raise MailboxError("S3 needs the s3 extra: pip install 'crdtsync[s3]'",
                               code="MAILBOX_UNSUPPORTED_URL") from exc
        return BlobStore(url, fs, (parsed.netloc + parsed.path).rstrip("/"), **options)
    raise MailboxError(f"unsupported mailbox URL {url!r}: use file:///path, s3://bucket/prefix or memory://name",
                       code="MAILBOX_UNSUPPORTED_URL")
