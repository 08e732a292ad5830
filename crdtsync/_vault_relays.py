"""Relays for :class:`crdtsync.vault.Vault`: the mailbox URLs a vault syncs through, their sync state, syncing
with them, and finding a vault's header and keys under a URL to join it.

The mailbox modules (:mod:`crdtsync.mailbox`) are imported on first use, so opening a vault loads no storage
backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from crdtsync.crypto.header import VaultHeader, unwrap_vault_keys
from crdtsync.errors import CryptoError, MailboxError, NotFoundError
from crdtsync.store.db import Store

if TYPE_CHECKING:
    from crdtsync.mailbox.sync import Progress
    from crdtsync.vault import Vault


def add_relay(vault: Vault, name: str, url: str) -> None:
    """Save ``url`` as relay ``name`` of ``vault`` and publish the vault header there; on failure the relay
    is forgotten again (see :meth:`crdtsync.vault.Vault.add_relay`)."""
    from crdtsync.mailbox.backend import check_apart, open_store
    from crdtsync.mailbox.sync import Mailbox

    check_apart(vault.path, url)
    store = open_store(url)
    vault.store.add_relay(name, url)
    try:
        Mailbox(vault, store, name).publish_header()
    except BaseException:
        vault.store.remove_relay(name)
        raise


def relay_states(store: Store) -> list[dict[str, Any]]:
    """Every relay saved in ``store`` with its sync state (see :meth:`crdtsync.vault.Vault.relays`)."""
    out = []
    for relay in store.relays():
        pushed = int(store.get_cursor("push", relay["name"]) or 0)
        seen = store.cursors(f"seen:{relay['name']}")
        applied = store.cursors(f"pull:{relay['name']}")
        behind = sum(max(0, int(v) - int(applied.get(k, b"0"))) for k, v in seen.items())
        out.append({**relay, "pending_push": store.count_local_updates_after(pushed),
                    "pending_pull": behind})
    return out


def pick_relays(store: Store, relay: str | None) -> list[dict[str, Any]]:
    """The relay named ``relay`` in ``store`` (every relay when None).

    Raises:
        NotFoundError: no relay of that name, or no relay at all (``NO_RELAY``).
    """
    relays = [r for r in store.relays() if relay is None or r["name"] == relay]
    if not relays:
        raise NotFoundError("no relay to sync with: add one with `crdtsync relay add NAME URL`"
                            if relay is None else f"no relay named {relay!r}", code="NO_RELAY")
    return relays


def sync_relays(
    vault: Vault, relays: Sequence[dict[str, Any]], *, push: bool, pull: bool,
    progress: Callable[[int, int], None] | None,
) -> list[Any]:
    """Sync ``vault`` with each of ``relays`` in turn; one :class:`~crdtsync.mailbox.sync.SyncReport` each."""
    from crdtsync.mailbox.backend import open_store
    from crdtsync.mailbox.sync import sync_relay

    return [sync_relay(vault, open_store(r["url"]), r["name"], push=push, pull=pull, progress=progress)
            for r in relays]


def find_vault(url: str, passphrase: str) -> tuple[VaultHeader, dict[int, bytes]]:
    """The header of the vault published under mailbox ``url`` that ``passphrase`` opens, and the vault keys
    it unwraps (epoch to key).

    Raises:
        CryptoError: ``WRONG_PASSPHRASE`` (a vault is there but the passphrase opens none).
        MailboxError: ``MAILBOX_NO_VAULT`` (no vault under that URL) and store errors.
    """
    from crdtsync.mailbox.backend import open_store
    from crdtsync.mailbox.format import ROOT, header_key

    store = open_store(url)
    wrong = False
    for tag in store.list(ROOT):
        data = store.get(header_key(tag))
        if data is None:
            continue
        header = VaultHeader.from_json(data)
        try:
            return header, unwrap_vault_keys(header, passphrase)
        except CryptoError as exc:
            if exc.code != "WRONG_PASSPHRASE":
                raise
            wrong = True
    if wrong:
        raise CryptoError("the passphrase does not open the vault at that URL", code="WRONG_PASSPHRASE")
    raise MailboxError(f"no crdtsync vault under {url}; on a device of the vault run "
                       "`crdtsync relay add NAME URL` first", code="MAILBOX_NO_VAULT")


def first_sync(vault: Vault, relay_name: str, progress: Progress | None = None) -> None:
    """A joining device's first sync through the relay it was created with: pull everything (``progress(done,
    total)`` follows the objects fetched), then push the device's registration.

    Raises:
        MailboxError: the sync reported an error (its code; running ``crdtsync sync`` again retries).
    """
    reports = vault.sync(relay_name, push=False, progress=progress)
    reports += vault.sync(relay_name, pull=False)
    errors = [e for r in reports for e in r.errors]
    if errors:
        raise MailboxError(f"joined, but the first sync reported: [{errors[0]['code']}] "
                           f"{errors[0]['message']}; run `crdtsync sync` again", code=errors[0]["code"])
