"""Detect a vault store that was restored from a backup or copied, before it writes under a reused Yjs client id.

A Yjs client id may never write two different structs at one clock. A device whose vault folder is restored
from an old backup (or copied to a second place and used there) would do exactly that: its store remembers
clocks that the lost (or the other copy's) writes already used, and other replicas silently ignore whatever it
writes at those clocks again. Leases alone cannot see this, since the restored store looks consistent.

So each store carries a random *incarnation* token (``meta`` key ``incarnation``), and the same token is kept
outside the vault folder, in the user's state directory (``$CRDTSYNC_STATE_DIR``, else platformdirs'
``user_state_dir("crdtsync")``), one file per device id. Whenever a process takes a client-id lease it
compares the two, then writes a fresh token to both places, so a backup or a copy falls behind at the next
lease of the store it came from. A mismatch or a missing outside copy means the store is not the one this
machine last wrote (restored, copied and used beside the original, or the state directory was cleared): every
old client id is retired, the device takes a new one and a ``DEVICE_RESTORED`` alarm is raised. The cost of a
false alarm (also a crash between the two writes) is one more client id in the state vector; the cost of a
miss would be silent divergence. A restore that also brings back the state directory is not detected here;
other devices then see a ``MAILBOX_FORK``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import platformdirs

from crdtsync._fs import atomic_write
from crdtsync.store.db import Store

META_KEY = "incarnation"
ALARM = "DEVICE_RESTORED"


def state_dir() -> Path:
    """Where incarnation tokens live: ``$CRDTSYNC_STATE_DIR`` when set, else the platformdirs state folder."""
    configured = os.environ.get("CRDTSYNC_STATE_DIR")
    return Path(configured) if configured else Path(platformdirs.user_state_dir("crdtsync"))


def _outside_path(device_id: str) -> Path:
    return state_dir() / "incarnations" / device_id


def _read_outside(device_id: str) -> set[str]:
    try:
        return set(_outside_path(device_id).read_text().split())
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _write_outside(device_id: str, *tokens: str) -> None:
    atomic_write(_outside_path(device_id), " ".join(tokens).encode(), mode=0o600)


def check_incarnation(store: Store, device_id: str) -> bool:
    """Compare the store's incarnation token with the copy kept outside the vault folder, then renew both.
    Call inside :meth:`Store.write`, before taking a client-id lease.

    The renewal survives a crash at any point without a false alarm: the outside copy first accepts the old
    and the new token, the store takes the new one in the caller's transaction, and only after that commits
    does the outside copy drop the old one (:meth:`Store.after_commit`).

    Returns True when the store is not the one this machine last wrote: the caller must retire every old
    client id. A store without a token (new, or written by an older crdtsync) just gets one.

    Raises:
        OSError: the state directory cannot be written.
    """
    inside = store.get_meta(META_KEY)
    restored = inside is not None and str(inside) not in _read_outside(device_id)
    token = secrets.token_hex(16)
    if inside is None or restored:
        _write_outside(device_id, token)
    else:
        _write_outside(device_id, str(inside), token)
    store.set_meta(META_KEY, token)

    def settle() -> None:
        if store.get_meta(META_KEY) == token:  # else another process renewed it since: its own settle follows
            _write_outside(device_id, token)

    store.after_commit(settle)
    return restored
