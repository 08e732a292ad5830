"""The vault's secret file: device private keys and vault keys, in a 0600 file beside the database.

Format: a msgpack map ``{"format": 1, "device": <DeviceKeys.to_bytes()>, "vault_id": bytes(16),
"epochs": {epoch: vault_key(32 bytes)}, "current_epoch": int, "alternates": {epoch: [vault_key, ...]}}``
(``alternates`` only when there are any: the other keys of an epoch number that two statements made at once, see
:mod:`crdtsync.crypto.epochs`). It is written to a temporary name in the same
folder with mode 0600, fsynced, renamed over the old file and the folder fsynced, so a crash leaves either the
old or the new file, never a torn one. Whether a vault's secrets are in this file or in the OS keyring (the file
then holds a reference) is :mod:`crdtsync.store.keystore`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from crdtsync._fs import atomic_write
from crdtsync._hardening import disable_core_dumps
from crdtsync.crypto.keys import DeviceKeys
from crdtsync.errors import CryptoError

SECRETS_FORMAT = 1


@dataclass(frozen=True)
class VaultSecrets:
    """This device's keys and the vault keys it knows: ``device`` keys, ``vault_id`` (16 bytes), ``epochs``
    (epoch -> the 32-byte vault key it seals under in that epoch), ``current_epoch`` (the epoch new envelopes are
    sealed under) and ``alternates`` (epoch -> the other 32-byte keys of that epoch number, made by concurrent
    epoch statements; envelopes of that epoch may be under any of them)."""

    device: DeviceKeys
    vault_id: bytes
    epochs: dict[int, bytes] = field(default_factory=dict)
    current_epoch: int = 0
    alternates: dict[int, list[bytes]] = field(default_factory=dict)

    def holds(self, epoch: int, key: bytes) -> bool:
        """Whether ``key`` (32 bytes) of ``epoch`` is among the keys held."""
        return self.epochs.get(epoch) == key or key in self.alternates.get(epoch, ())

    def to_bytes(self) -> bytes:
        """The msgpack encoding described in the module docstring."""
        packed: bytes = msgpack.packb(
            {
                "format": SECRETS_FORMAT,
                "device": self.device.to_bytes(),
                "vault_id": self.vault_id,
                "epochs": self.epochs,
                "current_epoch": self.current_epoch,
                **({"alternates": self.alternates} if self.alternates else {}),
            },
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> VaultSecrets:
        """Parse :meth:`to_bytes` output. Raises ``CryptoError`` (code ``KEY_CORRUPT``) on anything else."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if raw.get("format") != SECRETS_FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            epochs = {int(k): bytes(v) for k, v in raw["epochs"].items()}
            alternates = {int(k): [bytes(key) for key in v] for k, v in raw.get("alternates", {}).items()}
            return cls(
                device=DeviceKeys.from_bytes(raw["device"]),
                vault_id=bytes(raw["vault_id"]),
                epochs=epochs,
                current_epoch=int(raw["current_epoch"]),
                alternates=alternates,
            )
        except CryptoError:
            raise
        except Exception as exc:
            raise CryptoError(f"the vault's key file is corrupt: {exc}", code="KEY_CORRUPT") from exc


def write_secrets(path: Path, secrets: VaultSecrets) -> None:
    """Write ``secrets`` to ``path`` atomically with mode 0600 (see the module docstring). Turns core dumps off
    in this process first (it holds the keys)."""
    disable_core_dumps()
    atomic_write(path, secrets.to_bytes(), mode=0o600)

