"""Mailbox layout: where a vault's objects live in a blob store. Pure: names only.

Layout under a mailbox URL (README.md "Mailbox layout" is the spec)::

    <prefix>/crdtsync-v1/<vault_tag>/
      vault.json                       public header (crdtsync.crypto.header): KDF params + salt, vault keys
                                       wrapped under the passphrase per epoch
      a/<device_id>/...                protocol v2: the device's author log (crdtsync.mailbox.sync)
      d/<device_id>/...                protocol v1, read only: per-relay logs (crdtsync.mailbox.v1)

A body too large for one object continues in ``<key>.1``, ``<key>.2``... (:func:`part_key`).
"""

from __future__ import annotations

ROOT = "crdtsync-v1"
HEADER_NAME = "vault.json"


def vault_prefix(vault_tag: str) -> str:
    """The folder of one vault inside a mailbox."""
    return f"{ROOT}/{vault_tag}"


def header_key(vault_tag: str) -> str:
    """Where the public vault header lives."""
    return f"{vault_prefix(vault_tag)}/{HEADER_NAME}"


def devices_prefix(vault_tag: str) -> str:
    """The folder of the v1 per-relay logs of every device that pushed with protocol v1."""
    return f"{vault_prefix(vault_tag)}/d"


def head_key(vault_tag: str, device_id: str) -> str:
    """The v1 head object of ``device_id``."""
    return f"{devices_prefix(vault_tag)}/{device_id}/head"


def log_key(vault_tag: str, device_id: str, seq: int) -> str:
    """The v1 log object ``seq`` of ``device_id``."""
    return f"{devices_prefix(vault_tag)}/{device_id}/log/{seq:016x}"


def snap_key(vault_tag: str, device_id: str, seq: int) -> str:
    """The v1 snapshot object of ``device_id`` as of ``seq``."""
    return f"{devices_prefix(vault_tag)}/{device_id}/snap/{seq:016x}"


def part_key(key: str, part: int) -> str:
    """The object holding part ``part`` of the body at ``key``: ``key`` itself for part 0, then ``key.1``..."""
    return key if part == 0 else f"{key}.{part}"


def parse_seq(name: str) -> int | None:
    """The sequence number of a log or snapshot object's name (16 lowercase hex digits, the part of a
    continuation ``<seq>.<part>`` included), or None for anything else."""
    base, dot, part = name.partition(".")
    if len(base) == 16 and all(c in "0123456789abcdef" for c in base) and (not dot or part.isdigit()):
        return int(base, 16)
    return None
