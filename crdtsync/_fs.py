"""Durable file writes shared by the store (key file) and the folder mailbox backend."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

#: Prefix of the temporary names files are written under before the rename (listings skip them).
TMP_PREFIX = ".tmp-"
#: What a filesystem without fsync for directories answers (Linux: EINVAL; some others ENOTSUP, EOPNOTSUPP).
_DIRECTORY_SYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never a torn one:
    a temporary name in the same folder (created with ``mode``), every byte written (``os.write`` may write
    part of them, as on a disk that fills up), fsync, rename over ``path``, fsync of the folder. Creates missing
    parent folders. On failure the temporary file is removed and ``path`` is as it was. A filesystem that cannot
    fsync a directory (an SMB share) skips that last step. Raises ``OSError`` as the OS reports it (``ENOSPC``
    for a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            left = memoryview(data)
            while left:
                left = left[os.write(fd, left):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        # Some filesystems have no fsync for a directory (SMB/CIFS shares, some FUSE and network mounts: a relay
        # folder on a NAS) and say EINVAL or ENOTSUP; the file itself is synced and renamed. Other errors stand.
        if exc.errno not in _DIRECTORY_SYNC_UNSUPPORTED:
            raise
    finally:
        os.close(dir_fd)
