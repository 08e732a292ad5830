"""Process hygiene for processes that hold keys or plaintext, and for the integration worker.

- :func:`disable_core_dumps`: a crash of a process that holds the vault key, a device's private keys, a
  passphrase or decrypted memories must not write them to a core file (``RLIMIT_CORE`` 0; a piped
  ``core_pattern`` such as systemd-coredump honours the limit too).
- :func:`worker_environment`: the integration worker parses hostile bytes, so it starts with only the
  variables a Python interpreter needs to start (an allowlist), never ``CRDTSYNC_PASSPHRASE``, cloud
  credentials (``AWS_*``) or anything else the parent happens to hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

#: Environment variables the integration worker keeps: what locates and starts the interpreter and its
#: packages (a venv, a ``pip --user`` install under HOME, Termux's PREFIX and loader variables), locale and time
#: zone. Everything else is dropped.
WORKER_ENVIRONMENT = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE",
    "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONSAFEPATH", "PYTHONUTF8", "PYTHONIOENCODING",
    "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LD_PRELOAD", "PREFIX", "ANDROID_ROOT", "ANDROID_DATA", "SYSTEMROOT",
    "COVERAGE_PROCESS_START",
})


def disable_core_dumps() -> None:
    """Set this process's soft ``RLIMIT_CORE`` to 0 (no core file on a crash). Idempotent; a no-op where the
    platform has no ``resource`` module. The hard limit is left alone, so a host application may raise it
    again on purpose."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the integration worker starts with: the entries of ``environ`` named in
    :data:`WORKER_ENVIRONMENT` or starting with ``LC_`` (locale), nothing else."""
    return {k: v for k, v in environ.items() if k in WORKER_ENVIRONMENT or k.startswith("LC_")}
