"""Epochs of the vault key as one device lives them: taking up the keys that signed epoch statements give it
(:func:`settle`), revoking a device and changing the passphrase (:func:`new_epoch`). The rules are
:mod:`crdtsync.crypto.epochs`'; the statements travel in their authors' registry entries
(:mod:`crdtsync.model.schema`), so they reach every device by every path the Doc takes.

**Settling** (after every pull, and before a new statement): every counted statement that wraps a key for this
device is opened and its key kept (an epoch number two statements share keeps both keys, the winner's first);
when this device holds the key of the winning statement it seals under that epoch from then on. A device that
made a statement itself first commits its log under the old epoch, so the entry that carries the statement opens
for every device that still holds only the old key (the revoked one included: it learns it was revoked). A
device that a counted statement revoked records it (``meta`` ``revoked``, an alarm) and sends nothing more:
every sync fails with ``DEVICE_REVOKED``. It still pulls what it can open, so that when the statement that
revoked it turns out void (its author was revoked first, by a statement that arrives later) the record and the
alarm go and it syncs again.

**Crash safety of a new epoch.** The statement, which wraps the new key for its author too, and the header of
the new passphrase (``meta`` ``vault_header_next``) are written in one transaction; everything after that (the
commit under the old epoch, the switch, the header's promotion) is what :func:`settle` does from the registry
alone, so a process killed anywhere in between finishes the epoch at its next sync, and one killed before it
leaves the old epoch current with nothing published.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from crdtsync.crypto.epochs import EpochStatement, EpochView, Revocation, make_statement, open_statement
from crdtsync.crypto.header import KdfParams, VaultHeader, key_commitment, open_header, rotate_header
from crdtsync.crypto.keys import new_vault_key
from crdtsync.errors import CryptoError, InvalidInputError, NotFoundError, VaultError
from crdtsync.mailbox.ports import VaultReplica
from crdtsync.model.authorship import epoch_view, registered_key
from crdtsync.model.schema import statement_bytes
from crdtsync.store.secrets_file import VaultSecrets


class Vault(VaultReplica, Protocol):
    """What this module needs of a vault (:class:`crdtsync.vault.Vault` is one): a replica, and these."""

    def save_secrets(self, secrets: VaultSecrets) -> None:
        """Replace this device's secrets wherever they live."""

    def publish_statement(self, statement: EpochStatement, header: VaultHeader | None) -> None:
        """Write this device's statement into its registry entry, and keep ``header`` beside it."""


#: ``meta`` key: this device's own revocation, JSON ``{seq, by, epoch}`` (absent while it is a member).
REVOKED_META = "revoked"
#: ``meta`` key: the header of a new epoch this device made, until that epoch is current here.
HEADER_NEXT_META = "vault_header_next"


def revoked_error(revocation: Mapping[str, Any]) -> VaultError:
    """``DEVICE_REVOKED`` for this device, revoked as ``revocation`` (``{seq, by, epoch}``) says."""
    return VaultError(
        f"this device was revoked by device {revocation['by']} (epoch {revocation['epoch']}, after entry "
        f"{revocation['seq']} of its log): it no longer syncs, and nothing it writes reaches the other devices. "
        "What it synced before stays readable here. To use the vault here again, join it anew from another "
        "device (`crdtsync invite` there, `crdtsync join` in a new folder here)", code="DEVICE_REVOKED")


def own_revocation(vault: Vault) -> dict[str, Any] | None:
    """This device's recorded revocation (``{seq, by, epoch}``), or None."""
    raw = vault.store.get_meta(REVOKED_META)
    return None if raw is None else dict(json.loads(raw))


def settle(vault: Vault, commit: Callable[[], object]) -> bool:
    """Take up what the epoch statements in ``vault``'s registry give this device (module docstring): keys,
    the current epoch, a new header of its own. ``commit`` commits this device's log under the epoch it seals
    under now. Returns whether the keys or the current epoch changed (then envelopes that did not open may open).

    Raises:
        VaultError: ``DEVICE_REVOKED`` when a counted statement revoked this device.
    """
    secrets = vault.secrets
    me = secrets.device.device_id
    view = epoch_view(vault.devices(), secrets.vault_id)
    mine = view.revoked.get(me)
    if mine is not None:
        raise _record_revoked(vault, mine)
    if own_revocation(vault) is not None:  # the statement that revoked it turned out void
        with vault.store.write():
            vault.store.delete_meta(REVOKED_META)
        vault.store.clear_alarms("DEVICE_REVOKED")
    _alarm_forged(vault, view)
    epochs = dict(secrets.epochs)
    alternates = {epoch: list(keys) for epoch, keys in secrets.alternates.items()}

    def held(statement: EpochStatement) -> bytes | None:
        keys: list[bytes] = [*([epochs[statement.epoch]] if statement.epoch in epochs else []),
                             *alternates.get(statement.epoch, ())]
        return next((k for k in keys if key_commitment(secrets.vault_id, statement.epoch, k) == statement.commit),
                    None)

    for statement in view.counted:
        if me not in statement.wraps or held(statement) is not None:
            continue
        try:
            key = open_statement(statement, secrets.device)
        except CryptoError as exc:
            _alarm(vault, exc.code, f"{exc.message}: envelopes of that key do not open here", statement.author)
            continue
        if statement.epoch in epochs:
            alternates.setdefault(statement.epoch, []).append(key)
        else:
            epochs[statement.epoch] = key
    current = secrets.current_epoch
    winner = view.winner
    winner_key = None if winner is None else held(winner)
    if winner is not None and winner_key is not None:
        if epochs[winner.epoch] != winner_key:  # this device seals under the winner's key of a shared number
            alternates[winner.epoch] = [k for k in alternates[winner.epoch] if k != winner_key] + [epochs[winner.epoch]]
            epochs[winner.epoch] = winner_key
        if winner.epoch != current:
            if any(s.author == me and s.epoch > current for s in view.counted):
                commit()  # the entry that carries this device's statement, under the epoch everyone holds
            current = winner.epoch
    elif winner is None and current != view.current and view.current in epochs:
        current = view.current  # no statement made the epoch a joined header wrapped: the founding one is
    updated = dataclasses.replace(secrets, epochs=epochs, alternates={e: k for e, k in alternates.items() if k},
                                  current_epoch=current)
    changed = updated != secrets
    if changed:
        vault.save_secrets(updated)
    _promote_header(vault)  # also after a process killed between saving the keys and storing the header
    if winner is not None and not view.clean and current == winner.epoch:
        _rekey(vault, view, commit)
        return True
    return changed


def _rekey(vault: Vault, view: EpochView, commit: Callable[[], object]) -> None:
    """After crossed revocations the current key may have gone to a device another statement revoked: give the
    active devices a fresh key in a ``rekey`` statement (it counts after both, and is clean)."""
    secrets = vault.secrets
    registry = vault.devices()
    recipients = _recipients(registry, view, set())
    statement = make_statement(secrets.device, vault_id=secrets.vault_id, prev=secrets.current_epoch,
                               epoch=secrets.current_epoch + 1, vault_key=new_vault_key(), reason="rekey",
                               recipients=recipients)
    vault.publish_statement(statement, None)
    settle(vault, commit)


def _recipients(registry: Mapping[str, Mapping[str, Any]], view: EpochView, revoking: set[str]) -> dict[str, bytes]:
    """Device id -> registered X25519 key of every registered device neither revoked nor being revoked."""
    return {device: bytes.fromhex(entry["kx_pk"]) for device, entry in sorted(registry.items())
            if device not in view.revoked and device not in revoking and registered_key(registry, device) is not None}


#: Why a statement counts nowhere when no honest device would have made it (the other void codes are what two
#: statements made at once can leave: a revocation of a device that was revoked meanwhile).
FORGED_CODES = frozenset({"EPOCH_OTHER_VAULT", "EPOCH_BAD_SIGNATURE", "EPOCH_SELF_REVOKE", "EPOCH_UNKNOWN_DEVICE"})


def _alarm_forged(vault: Vault, view: EpochView) -> None:
    """An alarm naming the author of each statement in the registry that counts nowhere for a reason no honest
    device gives (:data:`FORGED_CODES`): a modified client at work."""
    for device, entry in vault.devices().items():
        for key, value in entry.get("statements", {}).items():
            data = statement_bytes(value)
            code = None if data is None else view.void.get(hashlib.sha256(data).digest())
            if code in FORGED_CODES:
                _alarm(vault, str(code), f"device {device} published an epoch statement ({key}) that no device "
                       f"counts ({code}): a modified client, or a damaged one", device)


def _alarm(vault: Vault, code: str, message: str, device: str) -> None:
    """Raise the alarm ``code`` about ``device`` unless it is already raised (an alarm is one audit row)."""
    if not any(a.get("code") == code and a.get("device") == device for a in vault.store.alarms()):
        vault.store.raise_alarm(code, message, device=device)


def _record_revoked(vault: Vault, revocation: Revocation) -> VaultError:
    record = {"seq": revocation.seq, "by": revocation.by, "epoch": revocation.epoch}
    if own_revocation(vault) is None:
        with vault.store.write():
            vault.store.set_meta(REVOKED_META, json.dumps(record, sort_keys=True))
        vault.store.raise_alarm("DEVICE_REVOKED", revoked_error(record).message)
    return revoked_error(record)


def _promote_header(vault: Vault) -> None:
    """Make the header this device prepared for a new epoch its header once that epoch is current here."""
    raw = vault.store.get_meta(HEADER_NEXT_META)
    if raw is None:
        return
    adopt_header(vault, VaultHeader.from_json(bytes(raw)))


def adopt_header(vault: Vault, header: VaultHeader) -> bool:
    """Take ``header`` (one a relay holds, or this device's own of a new epoch) as this vault's header when it
    wraps the epoch this device seals under, commits to the keys this device seals under in every epoch it
    names, and the stored header does not already wrap that epoch's key. Returns whether it was taken.

    The header is not signed; this only ever replaces it with one that commits to this device's own current key,
    which a device outside the current epoch cannot make. After two members made one epoch at once, the header of
    the statement that won is the one every device keeps (the other one's new passphrase is dropped)."""
    secrets = vault.secrets
    ours = vault.header
    current = secrets.current_epoch

    def committed(candidate: VaultHeader, epoch: int) -> bool:
        return candidate.commits.get(epoch) == key_commitment(secrets.vault_id, epoch, secrets.epochs[epoch])

    if header.vault_id != ours.vault_id or header == ours or current not in header.epochs:
        return False
    if not all(committed(header, epoch) for epoch in header.commits if epoch in secrets.epochs):
        return False
    if current in ours.epochs and committed(ours, current):
        return False
    with vault.store.write():
        vault.store.set_meta("vault_header", header.to_json())
        if vault.store.get_meta(HEADER_NEXT_META) is not None:
            vault.store.delete_meta(HEADER_NEXT_META)
    return True


def find_device(registry: Mapping[str, Mapping[str, Any]], given: str) -> str:
    """The registered device ``given`` names: its id, a unique prefix of it (4 characters or more), or its unique
    name.

    Raises:
        NotFoundError: ``DEVICE_NOT_FOUND``.
        InvalidInputError: ``DEVICE_AMBIGUOUS`` (a prefix or name that fits several).
    """
    text = given.strip()
    if text in registry:
        return text
    named = sorted(d for d, entry in registry.items() if entry.get("name") == text)
    prefixed = sorted(d for d in registry if len(text) >= 4 and d.startswith(text.lower()))
    found = named or prefixed
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFoundError(f"no device of this vault is named or numbered {given!r}: `crdtsync devices` lists them",
                            code="DEVICE_NOT_FOUND")
    raise InvalidInputError(f"{given!r} fits several devices ({', '.join(found)}): give more of the id",
                            code="DEVICE_AMBIGUOUS")


def new_epoch(vault: Vault, *, reason: str, passphrase: str, new_passphrase: str,
              commit: Callable[[], object], revoke: str | None = None,
              kdf: KdfParams | None = None) -> tuple[EpochStatement, EpochView]:
    """Move ``vault`` to a new epoch key (module docstring): ``reason`` ``"revoke"`` (device ``revoke``: an id, a
    prefix or a name) or ``"passphrase"``; the header is rewritten for ``new_passphrase``. ``passphrase`` is the
    current one (checked against the header: whoever holds this device alone cannot shut the others out).
    Returns the statement and the view once it is current.

    Raises:
        CryptoError: ``PASSPHRASE_REQUIRED`` (an empty new passphrase), ``WRONG_PASSPHRASE``, ``KDF_TOO_WEAK``.
        VaultError: ``DEVICE_REVOKED`` (this device is), ``DEVICE_ALREADY_REVOKED``, ``DEVICE_NOT_REGISTERED``
            (this device has not announced itself yet: sync once).
        InvalidInputError: ``DEVICE_SELF_REVOKE``, ``DEVICE_AMBIGUOUS``.
        NotFoundError: ``DEVICE_NOT_FOUND``.
    """
    if not new_passphrase:
        raise CryptoError("the new passphrase is empty", code="PASSPHRASE_REQUIRED")
    recorded = own_revocation(vault)
    if recorded is not None:
        raise revoked_error(recorded)
    settle(vault, commit)
    secrets = vault.secrets
    me = secrets.device.device_id
    registry = vault.devices()
    view = epoch_view(registry, secrets.vault_id)
    if me not in registry:
        raise VaultError("this device is not in the vault's registry yet: sync once, then try again",
                         code="DEVICE_NOT_REGISTERED")
    revoked: dict[str, int] = {}
    if revoke is not None:
        target = find_device(registry, revoke)
        if target == me:
            raise InvalidInputError("a device cannot revoke itself: revoke it from another device of the vault",
                                    code="DEVICE_SELF_REVOKE")
        if target in view.revoked:
            by = view.revoked[target]
            raise VaultError(f"device {target} is already revoked (by {by.by}, epoch {by.epoch})",
                             code="DEVICE_ALREADY_REVOKED")
        revoked[target] = vault.store.author(target).applied
    header = vault.header
    open_header(header, passphrase)  # WRONG_PASSPHRASE
    commit()  # what this device wrote before goes in an entry of its own, before the statement's
    recipients = _recipients(registry, view, set(revoked))
    key = new_vault_key()
    epoch = max(secrets.current_epoch, view.current) + 1
    statement = make_statement(secrets.device, vault_id=secrets.vault_id, prev=secrets.current_epoch, epoch=epoch,
                               vault_key=key, reason=reason, recipients=recipients, revoke=revoked)
    held = {e: [k, *secrets.alternates.get(e, ())] for e, k in secrets.epochs.items()}
    kdf = kdf or KdfParams.new(iterations=header.kdf.iterations, lanes=header.kdf.lanes,
                               memory_cost=header.kdf.memory_cost)
    rotated = rotate_header(header, keys=held, epoch=epoch, vault_key=key, passphrase=new_passphrase, kdf=kdf)
    vault.publish_statement(statement, rotated)
    settle(vault, commit)
    return statement, epoch_view(vault.devices(), secrets.vault_id)
