"""Who may write what: the device registry's rules, checked on every update whose author is authenticated.

An update received from outside this process has one authenticated author: the device whose signed envelope
carried it (its Ed25519 key hashes to the device id). The registry is a Map in the shared Doc, so without these
rules any member could rewrite another device's entry (its keys, name, client ids) or claim its Yjs client ids
and write under them. After the integration worker applied an update, the replica compares each registry entry
the update changed with the entry as it was before, and refuses the update (it is quarantined, nothing of it
applied, and an alarm raised) when:

- it changed the entry of a device other than its author (``UPDATE_REGISTRY_FORGED``);
- the author's own entry has a ``sign_pk`` that does not hash to its device id, a ``kx_pk`` that is not a
  32-byte key, changes or removes a field that is written once (``sign_pk``, ``kx_pk``, ``added_by``,
  ``added_at``), sets ``revoked_at`` (reserved for the revocation rules, which will say who may mark whom), or
  drops a client id it announced (``UPDATE_REGISTRY_FORGED``);
- the author's entry gains an epoch statement (:mod:`crdtsync.crypto.epochs`) that does not parse, is not the
  author's, is not signed by the entry's signing key or sits under another key than its own, or an epoch
  statement already there changes or goes (``UPDATE_REGISTRY_FORGED``): a statement is written once, by its
  author; whether it counts is for :func:`crdtsync.crypto.epochs.resolve`;
- the author announces a Yjs client id that another device already announced: each client id has exactly one
  owner, the device whose announcement this replica integrated first (``UPDATE_CLIENT_CLAIMED``);
- its author is not registered and the update does not register it (``UPDATE_UNREGISTERED_SENDER``): knowing
  the vault key (any past member, anyone who once knew the passphrase) does not make a device a member until
  it announces itself in the registry, which every device then shows.

Pure: no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from crdtsync.crypto.epochs import EpochStatement, EpochView, resolve
from crdtsync.crypto.keys import KEY_BYTES, id_matches
from crdtsync.errors import CryptoError, UpdateRejectedError
from crdtsync.model.records import REGISTER_FIELDS, is_stored_time
from crdtsync.model.schema import EntryAudit, check_record, statement_bytes, statement_key

#: Registry fields a device writes once, when it registers; they never change afterwards.
WRITE_ONCE_FIELDS = ("sign_pk", "kx_pk", "added_by", "added_at")
#: Codes of refusals that mean a member (or a holder of the vault key) tried to write what it may not.
FORGERY_CODES = frozenset({"UPDATE_REGISTRY_FORGED", "UPDATE_CLIENT_CLAIMED", "UPDATE_UNREGISTERED_SENDER",
                           "UPDATE_FOREIGN_CLIENT", "UPDATE_AUTHOR_FORGED"})

Registry = Mapping[str, Mapping[str, Any]]


def _forged(message: str) -> UpdateRejectedError:
    return UpdateRejectedError(message, code="UPDATE_REGISTRY_FORGED")


def _raw_key(value: object) -> bytes | None:
    """The 32 bytes of a key written as lowercase hex, or None when ``value`` is not exactly that."""
    if not isinstance(value, str) or len(value) != 2 * KEY_BYTES or value != value.lower():
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def registered_key(registry: Registry, device_id: str) -> bytes | None:
    """The raw 32-byte Ed25519 key ``registry`` (``{device_id: entry}`` as
    :meth:`crdtsync.model.schema.MemoryDoc.registry` returns it) holds for ``device_id``, or None when the device
    is not registered or its entry's ``sign_pk`` does not hash to its id (an entry written before these rules
    were enforced: the envelope is then checked against the key it carries, which must hash to the id)."""
    key = _raw_key(registry.get(device_id, {}).get("sign_pk"))
    return key if key is not None and id_matches(device_id, key) else None


def epoch_view(registry: Registry, vault_id: bytes) -> EpochView:
    """What the epoch statements in ``registry`` mean (:func:`crdtsync.crypto.epochs.resolve` over every statement
    its entries hold, each device's registered key as the key its statements must be signed with): the current
    epoch, who is revoked and at which point. Statements that do not parse are left out (an update that wrote
    one was refused, see the module docstring)."""
    statements = []
    for entry in registry.values():
        for value in entry.get("statements", {}).values():
            data = statement_bytes(value)
            if data is None:
                continue
            try:
                statements.append(EpochStatement.from_bytes(data))
            except CryptoError:
                continue
    keys = {device: key for device in registry if (key := registered_key(registry, device)) is not None}
    return resolve(statements, vault_id=vault_id, registry=keys)


def owners(registry: Registry) -> dict[int, str]:
    """Each announced Yjs client id's owner in ``registry``: the device that announced it (when two did, as a
    vault written before these rules allowed, the one with the smaller device id, which is the same on every
    replica)."""
    owner: dict[int, str] = {}
    for device_id in sorted(registry, reverse=True):
        for client in registry[device_id].get("clients", ()):
            owner[client] = device_id
    return owner


def check_registry_change(author: str, before: Registry, after: Registry) -> dict[str, dict[str, Any]]:
    """Check the registry entries an update by ``author`` (a device id) left behind against the rules in the
    module docstring.

    Args:
        author: the authenticated author's device id.
        before: the whole registry before the update, ``{device_id: entry}`` with ``clients`` as a sorted list
            (the shape of :func:`crdtsync.model.schema.registry_entry`).
        after: the entries the update touched, in the same shape, as they are after it.

    Returns:
        The whole registry after the update.

    Raises:
        UpdateRejectedError: ``UPDATE_REGISTRY_FORGED``, ``UPDATE_CLIENT_CLAIMED`` or
            ``UPDATE_UNREGISTERED_SENDER``.
    """
    registry = {device_id: dict(entry) for device_id, entry in before.items()}
    for device_id, entry in sorted(after.items()):
        old = before.get(device_id)
        if old == entry:
            continue
        if device_id != author:
            raise _forged(f"device {author} changed the registry entry of device {device_id}: a device's entry is "
                          "written by that device only")
        _check_own_entry(author, old or {}, entry, registry)
        registry[device_id] = dict(entry)
    if registered_key(registry, author) is None:
        raise UpdateRejectedError(
            f"device {author} is not in the device registry and its update does not register it: whoever holds "
            "the vault key without being a registered device (a removed device, anyone who once knew the "
            "passphrase) cannot write", code="UPDATE_UNREGISTERED_SENDER")
    return registry


def _check_own_entry(author: str, old: Mapping[str, Any], new: Mapping[str, Any], registry: Registry) -> None:
    key = _raw_key(new.get("sign_pk"))
    if key is None or not id_matches(author, key):
        raise _forged(f"device {author}'s registry entry holds a signing key that is not its own (a device id is the "
                      "hash of its signing key)")
    if _raw_key(new.get("kx_pk")) is None:
        raise _forged(f"device {author}'s registry entry holds no valid key-exchange key")
    for field in WRITE_ONCE_FIELDS:
        if field in old and old[field] != new.get(field):
            raise _forged(f"device {author} changed its registry field {field}, which is written once")
    if new.get("revoked_at") != old.get("revoked_at"):
        raise _forged(f"device {author} changed its own revocation mark")
    _check_statements(author, key, old.get("statements", {}), new.get("statements", {}))
    clients = set(new.get("clients", ()))
    dropped = set(old.get("clients", ())) - clients
    if dropped:
        raise _forged(f"device {author} withdrew Yjs client ids {sorted(dropped)} it announced; an announced "
                      "client id stays its own")
    owner = owners(registry)
    taken = sorted(c for c in clients if owner.get(c, author) != author)
    if taken:
        raise UpdateRejectedError(
            f"device {author} claims Yjs client ids {taken}, which device {owner[taken[0]]} announced first: a "
            "client id has one owner, and writing under another device's would pass off its writes as that "
            "device's", code="UPDATE_CLIENT_CLAIMED")


def _check_statements(author: str, sign_pk: bytes, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    changed = sorted(k for k, v in old.items() if new.get(k) != v)
    if changed:
        raise _forged(f"device {author} changed or removed its epoch statement {changed[0]}, which is written once")
    for key in sorted(set(new) - set(old)):
        data = statement_bytes(new[key])
        try:
            statement = EpochStatement.from_bytes(data if data is not None else b"")
        except CryptoError as exc:
            raise _forged(f"device {author} published an epoch statement that does not parse: {exc.message}"
                          ) from None
        if statement.author != author or not statement.signed_by(sign_pk):
            raise _forged(f"device {author} published an epoch statement it did not sign")
        if key != statement_key(statement.epoch, statement.digest):
            raise _forged(f"device {author} published an epoch statement under a key that is not its own")


def check_attribution(authors: frozenset[str], memory_id: str, record: Mapping[str, Any],
                      written: Iterable[str] | None, bound: str, audit: EntryAudit | None = None) -> bool:
    """Check the register entries an update wrote into one record against who wrote it: the writer of an entry is
    the authenticated author of the update that carried it (the owner of its Yjs client id), so the device an
    entry names (``by``, and ``created``'s device for a new record) must be that author, and its claimed time a
    stored time (:func:`crdtsync.model.records.is_stored_time`). Entries without ``by`` (a new record's creating
    entries, attributed to its creator) may only be written together with the record's ``created`` stamp.

    Args:
        authors: the update's author (a group of updates integrated together: each of their authors).
        memory_id: the record's id; ``record`` the record as plain values after the update.
        written: the keys of the record the update inserted, or None when the update created (or replaced) the
            whole record.
        bound: the latest claimed time believed here (:func:`crdtsync.model.records.believable_until`).
        audit: for a record created whole (``written`` None), what :func:`crdtsync.model.schema.check_record`
            collected of its entries in its own pass over them (100k records on a first sync), so that they are
            not read again; when None, that pass is made here.

    Returns:
        Whether an entry claims a time past ``bound`` (it is kept, shown as the memory's creation time and never
        settles a conflict; the caller raises an alarm).

    Raises:
        UpdateRejectedError: ``UPDATE_AUTHOR_FORGED`` (an entry naming another device, or a creating entry
            slipped into an existing record), ``UPDATE_SCHEMA_VIOLATION`` (a claimed time that is not a time, or
            a record created whole that is not a valid v1 record).
    """
    if written is None:
        if audit is None:
            audit = EntryAudit()
            try:
                check_record(memory_id, record, None, audit)
            except ValueError as exc:
                raise UpdateRejectedError(f"memory {memory_id[:40]!r} is not a valid v1 record: {exc}",
                                          code="UPDATE_SCHEMA_VIOLATION") from None
        stamp = record.get("created")
        creator, created = (stamp[1], stamp[0]) if isinstance(stamp, list) and len(stamp) == 2 else (None, None)
        strangers = sorted(map(str, (audit.writers | {creator}) - authors))
        if strangers:
            raise UpdateRejectedError(
                f"an update of {_named(authors)} wrote memory {memory_id[:40]!r} in the name of device "
                f"{strangers[0][:40]!r}: a device writes only in its own name", code="UPDATE_AUTHOR_FORGED")
        if audit.bad_time or not is_stored_time(created):
            raise UpdateRejectedError(
                f"an update of {_named(authors)} wrote memory {memory_id[:40]!r} with a time that is not an ISO-8601 "
                "UTC time as crdtsync writes it", code="UPDATE_SCHEMA_VIOLATION")
        return max(audit.latest, str(created)) > bound
    keys = [key for key in written if key in record]
    created_here = "created" in keys
    ahead = False
    for key in keys:
        raw = record[key]
        if key == "created":
            by, at = (raw[1], raw[0]) if isinstance(raw, list) and len(raw) == 2 else (None, None)
        elif key.partition("@")[0] in REGISTER_FIELDS and "@" in key:
            if not isinstance(raw, list) or len(raw) == 1:
                if created_here and key.endswith("@"):
                    continue
                raise UpdateRejectedError(
                    f"an update of {_named(authors)} slipped an entry credited to the creator into memory "
                    f"{memory_id[:40]!r}", code="UPDATE_AUTHOR_FORGED")
            by, at = (raw[1], raw[2]) if len(raw) in (3, 4) else (None, None)
        else:
            continue
        if by not in authors:
            raise UpdateRejectedError(
                f"an update of {_named(authors)} wrote an entry of memory {memory_id[:40]!r} in the name of device "
                f"{str(by)[:40]!r}: a device writes only in its own name", code="UPDATE_AUTHOR_FORGED")
        if not is_stored_time(at):
            raise UpdateRejectedError(
                f"an update of {_named(authors)} wrote an entry of memory {memory_id[:40]!r} whose time is not an "
                "ISO-8601 UTC time as crdtsync writes it", code="UPDATE_SCHEMA_VIOLATION")
        ahead = ahead or str(at) > bound
    return ahead


def _named(authors: frozenset[str]) -> str:
    return "device " + " and ".join(sorted(authors))
