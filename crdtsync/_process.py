"""Telling whether a process that left its mark in the store still runs (pure IO on ``/proc`` and signals).

A mark is ``"pid:start:token"``: the process id, its start time as ``/proc/<pid>/stat`` gives it (empty where
there is no ``/proc``), and a random token. The start time keeps a recycled pid from passing for the process.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def process_token() -> str:
    """The mark of this process: ``"pid:start:token"``."""
    return f"{os.getpid()}:{_process_start(os.getpid())}:{secrets.token_hex(4)}"


def _process_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def process_alive(holder: str) -> bool:
    """Whether the process that holds a lease (``"pid:start:token"``) may still run. Outside POSIX it is taken
    as alive: Windows has no signal 0, and ``os.kill`` there terminates the process it is given. A lease of a
    process that died is then never taken over, and the next process writes under a fresh client id."""
    pid_text, start, _token = holder.split(":", 2)
    pid = int(pid_text)
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _process_start(pid) == start
