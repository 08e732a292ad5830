"""The node: what connects a vault to the world. The relays a vault syncs through (the mailbox URLs), their sync
state, syncing with them, and finding a vault's header and keys under a URL to join it. Every function takes
the vault as a :class:`~crdtsync.mailbox.ports.VaultReplica` (or, to sync, a :class:`Syncing` vault), so this
module does not import :mod:`crdtsync.vault`: the vault's methods (``add_relay``, ``sync``, ``join``...) call
here, never the other way round.

The mailbox modules (:mod:`crdtsync.mailbox`) are imported on first use, so opening a vault loads no storage
backend.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from crdtsync._process import process_alive
from crdtsync.crypto.header import FINGERPRINT_CHARS, HeaderKeys, VaultHeader, check_join_kdf, fingerprint, open_header
from crdtsync.crypto.keys import vault_tag
from crdtsync.errors import CryptoError, InvalidInputError, LanError, MailboxError, NotFoundError
from crdtsync.model.records import check_label
from crdtsync.store.db import Store

if TYPE_CHECKING:
    from crdtsync.mailbox.ports import VaultReplica
    from crdtsync.mailbox.relay import SyncReport
    from crdtsync.mailbox.sync import Progress


class Syncing(Protocol):
    """A vault that syncs: :meth:`crdtsync.vault.Vault.sync`."""

    def sync(self, relay: str | None = None, *, push: bool = True, pull: bool = True,
             progress: Callable[[int, int], None] | None = None) -> list[SyncReport]:
        """Sync with ``relay`` (every relay when None)."""


def add_relay(vault: VaultReplica, name: str, url: str) -> None:
    """Save ``url`` as relay ``name`` of ``vault`` (a folder's path made absolute, see
    :func:`crdtsync.mailbox.backend.canonical_url`) and publish the vault header there; on failure the relay
    is forgotten again (see :meth:`crdtsync.vault.Vault.add_relay`)."""
    from crdtsync.mailbox.backend import canonical_url, check_apart, open_store
    from crdtsync.mailbox.sync import publish_header

    url = canonical_url(url)
    check_apart(vault.path, url)
    store = open_store(url)
    vault.store.add_relay(name, url)
    try:
        publish_header(store, vault.header)
    except BaseException:
        vault.store.remove_relay(name)
        raise


def relay_states(store: Store) -> list[dict[str, Any]]:
    """Every relay saved in ``store`` with its sync state (see :meth:`crdtsync.vault.Vault.relays`):
    ``pending_push`` counts this device's writes not yet in its log, or in its log past what the relay's head
    of this device showed at the last sync; ``pending_pull`` the entries the relay's heads showed past what
    this device applied."""
    logged = int(store.get_cursor("push", "") or b"0")
    unlogged = store.count_local_updates_after(logged)
    authors = store.authors()
    me = store.get_meta("device_id")
    out = []
    for relay in store.relays():
        shown = {author: store.relay_head(relay["name"], author) for author in authors}
        behind = sum(max(0, seen[1] - authors[a].applied) for a, seen in shown.items() if seen and a != me)
        own = authors.get(me) if isinstance(me, str) else None
        relayed = shown.get(me) if isinstance(me, str) else None
        ahead = max(0, own.applied - (relayed[1] if relayed else 0)) if own else 0
        out.append({**relay, "pending_push": unlogged + ahead, "pending_pull": behind})
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
    vault: VaultReplica, relays: Sequence[dict[str, Any]], *, push: bool, pull: bool,
    progress: Callable[[int, int], None] | None,
) -> list[Any]:
    """Sync ``vault`` with ``relays`` together (every author's log carried across them); one
    :class:`~crdtsync.mailbox.relay.SyncReport` each."""
    from crdtsync.mailbox.backend import open_store
    from crdtsync.mailbox.sync import sync_relays as sync_all

    return sync_all(vault, [(r["name"], open_store(r["url"])) for r in relays], push=push, pull=pull,
                    progress=progress)


#: What ``relay add`` appends to a mailbox URL to make a join string: ``URL#vault=<fingerprint>``.
JOIN_FRAGMENT = "#vault="
#: Most vault folders a join looks at under one URL (each costs one small GET, no Argon2id); it stops at the
#: vault of its join string, or at the second vault found without one.
MAX_VAULTS_LISTED = 4096


def join_string(url: str, header: VaultHeader) -> str:
    """The join string of the vault ``header`` describes at mailbox ``url``: ``url#vault=<fingerprint>``."""
    return f"{url}{JOIN_FRAGMENT}{fingerprint(header)}"


def split_join_string(text: str) -> tuple[str, str | None]:
    """(mailbox URL, expected vault fingerprint or None) of a join string or a plain mailbox URL.

    Raises:
        InvalidInputError: ``INVALID_FINGERPRINT`` when the part after ``#vault=`` is not a fingerprint.
    """
    url, found, expected = text.partition(JOIN_FRAGMENT)
    if not found:
        return text, None
    expected = expected.strip().lower()
    if len(expected) != FINGERPRINT_CHARS or not set(expected) <= set("abcdefghijklmnopqrstuvwxyz234567"):
        raise InvalidInputError(f"{expected[:40]!r} after {JOIN_FRAGMENT} is not a vault fingerprint (26 letters "
                                "and digits, as `crdtsync relay add` prints it)", code="INVALID_FINGERPRINT")
    return url, expected


def find_vault(url: str, passphrase: str, expected: str | None = None) -> tuple[VaultHeader, HeaderKeys]:
    """The header of the vault published under mailbox ``url`` and the vault keys ``passphrase`` opens from it
    (:func:`crdtsync.crypto.header.open_header`: the current epoch, the primary keys, the alternates). Exactly one
    header is tried, and Argon2id runs once at most: the one vault under the URL, or the one whose fingerprint is
    ``expected``. Headers that are damaged, or that sit in a folder other than their own vault's tag (copied there
    as decoys), are passed over. The header must be v2 or v3 (key-committing), ask for KDF parameters within
    :func:`crdtsync.crypto.header.check_join_kdf`'s limits, and the keys it opens must match its commitments.

    Raises:
        CryptoError: ``WRONG_PASSPHRASE``, ``KDF_TOO_WEAK``, ``KDF_TOO_COSTLY``, ``HEADER_OUTDATED`` (a v1
            header: a device of the vault must sync once with this version first), ``HEADER_MALFORMED`` (a v3
            history that does not open with its current key or lacks a committed key).
        MailboxError: ``MAILBOX_NO_VAULT`` (no usable vault under that URL, or none with the expected
            fingerprint), ``MAILBOX_SEVERAL_VAULTS`` (several, and no fingerprint to choose), store errors.
    """
    from crdtsync.mailbox.backend import open_store
    from crdtsync.protocol.mailbox import ROOT, header_key

    store = open_store(url)
    found: list[VaultHeader] = []
    passed_over: list[str] = []
    for tag in sorted(store.list(ROOT))[:MAX_VAULTS_LISTED]:
        data = store.get(header_key(tag))
        if data is None:
            continue
        try:
            header = VaultHeader.from_json(data)
        except CryptoError as exc:
            passed_over.append(f"{tag}: {exc.code}")
            continue
        if vault_tag(header.vault_id) != tag:
            passed_over.append(f"{tag}: the header of another vault")
            continue
        if expected is None or (header.commits and fingerprint(header) == expected):
            found.append(header)
            if expected is not None or len(found) > 1:
                break
    if not found:
        why = f" (passed over: {'; '.join(passed_over[:5])})" if passed_over else ""
        if expected is not None:
            raise MailboxError(f"no vault with fingerprint {expected} under {url}{why}: check the join string "
                               "that `crdtsync relay add` printed", code="MAILBOX_NO_VAULT")
        raise MailboxError(f"no crdtsync vault under {url}{why}; on a device of the vault run "
                           "`crdtsync relay add NAME URL` first", code="MAILBOX_NO_VAULT")
    if len(found) > 1:
        names = ", ".join(fingerprint(h) if h.commits else f"{vault_tag(h.vault_id)} (v1)" for h in found)
        raise MailboxError(f"several vaults are published under {url} ({names}, ...): join with the join string "
                           "that `crdtsync relay add` printed on a device of yours (URL#vault=<fingerprint>)",
                           code="MAILBOX_SEVERAL_VAULTS")
    (header,) = found
    if not header.commits:
        raise CryptoError("the vault at that URL still has a v1 header, which a join cannot trust: run `crdtsync "
                          "sync` once on a device of the vault with this crdtsync (it upgrades the header), then "
                          "join again", code="HEADER_OUTDATED")
    check_join_kdf(header.kdf)
    return header, open_header(header, passphrase)


def first_sync(vault: Syncing, relay_name: str, progress: Progress | None = None) -> None:
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


# -- peers met directly (the LAN daemon's bookkeeping, read by `peers`, `status` and `devices`) -------------

#: Cursor scope of what is known of each peer device (key: device id; value: JSON).
PEER_SCOPE: Final = "lan-peer"
#: Cursor scope of the addresses kept with ``peer add`` (key: name; value: ``HOST:PORT``).
MANUAL_SCOPE: Final = "lan-manual"
#: Cursor scope of the running daemon's state (key ``""``; value: JSON with its pid and the time it wrote it).
DAEMON_SCOPE: Final = "lan-daemon"
#: Seconds between the daemon's notes that it is alive (``peers`` calls a daemon silent for 3 of them gone).
ALIVE_EVERY: Final = 5.0

Address = tuple[str, int]
_ADDRESS_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s\[\]]+)):(?P<port>\d{1,5})$")


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) as a (host, port) pair.

    Raises:
        LanError: ``LAN_ADDRESS`` when it is not one (the port must be 1 to 65535).
    """
    match = _ADDRESS_RE.match(text.strip())
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise LanError(f"{text!r} is not HOST:PORT (a port from 1 to 65535)", code="LAN_ADDRESS")
    return (match["v6"] or match["host"], port)


def show_address(address: Address) -> str:
    """``HOST:PORT`` for an address (IPv6 hosts in brackets)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_rows(store: Store, names: dict[str, str]) -> dict[str, Any]:
    """What ``crdtsync peers`` shows: the daemon (running or not, its pid, ports and interfaces) and each peer
    device this vault has met directly (name, id, address, state, last seen, entries each way, last error), and
    the addresses kept with ``peer add``; ``names`` maps device ids to their registered names."""
    raw = store.get_cursor(DAEMON_SCOPE, "")
    daemon: dict[str, Any] = json.loads(raw) if raw else {"running": False}
    if daemon.get("running") and (time.time() - float(daemon.get("updated", 0)) > 3 * ALIVE_EVERY
                                  or not process_alive(str(daemon.get("holder", "0::")))):
        daemon["running"] = False
    live = set(daemon.get("sessions", ())) if daemon["running"] else set()
    peers = []
    for device, value in sorted(store.cursors(PEER_SCOPE).items()):
        known = json.loads(value)
        peers.append({"device": device, "name": names.get(device, ""), "address": known.get("address"),
                      "state": "connected" if device in live else "disconnected",
                      "last_seen": known.get("last_seen"), "entries_sent": known.get("entries_sent", 0),
                      "entries_received": known.get("entries_received", 0), "last_error": known.get("last_error")})
    kept = [{"name": name, "address": value.decode()} for name, value in sorted(store.cursors(MANUAL_SCOPE).items())]
    return {"daemon": daemon, "peers": peers, "kept": kept}


def keep_peer(store: Store, name: str, address: str) -> Address:
    """Keep ``address`` (``HOST:PORT``) under ``name`` for ``serve`` and ``sync --lan`` to dial.

    Raises:
        LanError: ``LAN_ADDRESS``.
        InvalidInputError: an empty or overlong name.
    """
    check_label("peer name", name)
    parsed = parse_address(address)
    with store.write():
        store.set_cursor(MANUAL_SCOPE, name, show_address(parsed).encode())
    return parsed


def forget_peer(store: Store, name: str) -> None:
    """Forget the address kept under ``name``.

    Raises:
        NotFoundError: no address is kept under that name.
    """
    if store.get_cursor(MANUAL_SCOPE, name) is None:
        raise NotFoundError(f"no peer address is kept under the name {name!r} (see `crdtsync peers`)")
    with store.write():
        store.delete_cursor(MANUAL_SCOPE, name)
