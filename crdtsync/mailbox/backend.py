"""Blob stores a mailbox lives in: whole-object get, put, list and delete, through fsspec.

Backends by URL: ``file:///path`` or a plain path (the embedded default: put it inside Dropbox, Syncthing,
iCloud or on a USB stick), ``memory://name`` (tests), ``s3://bucket/prefix`` (s3fs; the endpoint, region and
credentials come from the usual AWS variables: ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, which serves MinIO, R2 and moto alike).

Only whole-object operations are used; no rename, append, lock or conditional write is assumed of the store,
and a listing may lag. The folder backend writes each object to a temporary name (``.tmp-*``, ignored by
listings) in the same folder, fsyncs it and renames it, so a folder-sync tool never carries a half-written
object under its final name. Transient store errors are retried with exponential backoff and jitter;
everything else becomes a :class:`~crdtsync.errors.MailboxError` with a stable code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
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


def _s3_error_code(exc: BaseException) -> str:
    """The S3 error code (``InvalidAccessKeyId``, ``AccessDenied``...) botocore attached to ``exc`` or to its
    cause, else "": s3fs re-raises a ClientError as a PermissionError or OSError that keeps only the message."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if isinstance(code, str):
                return code
    return ""


#: What a store raises for an object that is not there: on a folder, also a path through a file where a folder
#: was expected (a stray file where a device's folder would be).
_MISSING = (FileNotFoundError, NotADirectoryError)


def _classify(exc: BaseException) -> MailboxError | None:
    """The MailboxError a store exception stands for, or None when it is transient (worth a retry)."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = f"{text} {_s3_error_code(exc)}".lower()
    if isinstance(exc, MailboxError):
        return exc
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or "specified bucket" in lowered:
        return MailboxError(f"the bucket does not exist: {exc}", code="MAILBOX_NO_BUCKET")
    if any(s in lowered for s in ("invalidaccesskeyid", "signaturedoesnotmatch", "nocredentials",
                                  "unable to locate credentials", "expiredtoken", "invalidtoken")):
        return MailboxError(f"the store refused our credentials: {exc}; check AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY", code="MAILBOX_AUTH")
    if isinstance(exc, PermissionError) or "accessdenied" in lowered or "forbidden" in lowered:
        return MailboxError(f"permission denied by the store: {exc}", code="MAILBOX_PERMISSION")
    if "entitytoolarge" in lowered or (isinstance(exc, OSError) and exc.errno in (errno.EFBIG, errno.ENOSPC)):
        return MailboxError(f"the store refused the object's size: {exc}", code="MAILBOX_TOO_LARGE")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or any(
        s in lowered for s in ("timeout", "throttl", "slowdown", "serviceunavailable", "internalerror", "503", "500")
    ):
        return None
    return MailboxError(f"the store failed: {text}", code="MAILBOX_UNAVAILABLE")


@dataclass
class BlobStore:
    """Whole-object access to one prefix of an fsspec filesystem.

    Args:
        url: the mailbox URL as the user gave it (shown in messages and saved as the relay).
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

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _retry(self, op: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return op()
            except _MISSING as exc:
                if "bucket" in str(exc).lower():
                    raise MailboxError(f"the bucket of {self.url} does not exist: create it first",
                                       code="MAILBOX_NO_BUCKET") from None
                raise
            except Exception as exc:
                error = _classify(exc)
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
            MailboxError: ``MAILBOX_TOO_LARGE`` (over :data:`MAX_OBJECT_BYTES`), ``MAILBOX_AUTH``,
                ``MAILBOX_PERMISSION``, ``MAILBOX_NO_BUCKET``, ``MAILBOX_UNAVAILABLE``.
        """
        path = self._path(key)

        def read() -> bytes:
            # One ranged read (one GET on S3) of at most one byte past the limit, instead of a size query first.
            # A local read allocates the whole limit and shrinks it in place, which keeps one memory mapping per
            # object alive (the kernel allows ~65k): copy the result into an allocation of its own size.
            data = bytes(memoryview(self.fs.cat_file(path, start=0, end=MAX_OBJECT_BYTES + 1)))
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
        A missing prefix lists as empty. The listing may lag behind recent puts."""
        path = self._path(prefix).rstrip("/")
        self.stats.lists += 1
        try:
            entries = self._retry(lambda: self.fs.ls(path, detail=False, refresh=True)
                                  if not self.is_local else self.fs.ls(path, detail=False))
        except _MISSING:
            return []
        names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n and not n.startswith(TMP_PREFIX))

    def walk(self, prefix: str) -> dict[str, tuple[int, str]]:
        """Every object under ``prefix``, at any depth: ``{key: (size in bytes, modification mark)}`` where the
        mark (an ETag on S3, a modification time on a folder) changes when the object is rewritten; temporary
        files and anything but regular objects are left out. One listing request (one per 1000 keys on S3). A
        missing prefix walks as empty; the listing may lag behind recent puts."""
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
            if not stripped.startswith(base) or info.get("type") != "file":
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
