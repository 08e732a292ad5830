"""A device renames itself: the name is committed in its own registry entry and reaches the other devices through
a relay; a blank or oversized name is refused and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync.errors import InvalidInputError
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf


def test_a_rename_reaches_the_other_device_and_survives_reopening(tmp_path: Path) -> None:
    relay = tmp_path / "relay"
    Vault.init(tmp_path / "laptop", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.add_relay("box", str(relay))
        laptop.sync()
    Vault.join(tmp_path / "phone", str(relay), passphrase=PASSPHRASE, device_name="phone")
    with Vault.open(tmp_path / "phone") as phone:
        phone_id = phone.device_id
        phone.rename_device("Pixel 9 ✨")
        assert phone.devices()[phone_id]["name"] == "Pixel 9 ✨"
        phone.sync()
    with Vault.open(tmp_path / "phone") as phone:
        assert phone.status()["device_name"] == "Pixel 9 ✨"
    with Vault.open(tmp_path / "laptop") as laptop:
        laptop.sync()
        assert laptop.devices()[phone_id]["name"] == "Pixel 9 ✨"
        assert laptop.devices()[laptop.device_id]["name"] == "laptop"


@pytest.mark.parametrize("name", ["", "   ", "x" * 1025])
def test_a_blank_or_oversized_name_is_refused(tmp_path: Path, name: str) -> None:
    Vault.init(tmp_path / "laptop", name="v", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "laptop") as laptop:
        with pytest.raises(InvalidInputError):
            laptop.rename_device(name)
        assert laptop.devices()[laptop.device_id]["name"] == "laptop"
