"""Durable file writes (``crdtsync._fs.atomic_write``) when the disk fills up mid-write or cannot sync a folder."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crdtsync._fs import atomic_write

# A file size limit (RLIMIT_FSIZE) makes the kernel write only what fits and fail the next write (EFBIG), as a
# disk that fills up mid-write does (ENOSPC): a real short write, without root or a small filesystem.
_WRITE_PAST_THE_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from crdtsync._fs import atomic_write
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    target = Path(sys.argv[1])
    try:
        atomic_write(target, b"y" * 10_000)
    except OSError as exc:
        print("refused", exc.errno)
    else:
        print("written")
""")


def test_a_write_the_disk_cannot_hold_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "keys"
    target.write_bytes(b"the old contents")
    done = subprocess.run([sys.executable, "-c", _WRITE_PAST_THE_LIMIT, str(target)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.split()[0] == "refused", done.stdout
    assert target.read_bytes() == b"the old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]


def test_a_write_within_the_limit_is_whole(tmp_path: Path) -> None:
    target = tmp_path / "object"
    script = _WRITE_PAST_THE_LIMIT.replace('b"y" * 10_000', 'b"y" * 4000')
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "written" and target.read_bytes() == b"y" * 4000


@pytest.mark.parametrize(("failure", "fails"), [(errno.EINVAL, False), (errno.ENOTSUP, False), (errno.EIO, True)])
def test_a_folder_without_directory_fsync_still_takes_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: int, fails: bool,
) -> None:
    """An SMB share (a relay folder on a NAS) answers fsync of a directory with EINVAL: the file is synced and
    renamed all the same. A real I/O error of the directory still fails the write."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(failure, os.strerror(failure))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "object"
    if fails:
        with pytest.raises(OSError):
            atomic_write(target, b"whole")
    else:
        atomic_write(target, b"whole")
        assert target.read_bytes() == b"whole"
