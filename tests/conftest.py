"""Shared fixtures: real vault folders on disk, cheap Argon2id parameters, the shared data folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crdtsync.crypto.header import KdfParams
from crdtsync.vault import Vault

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PASSPHRASE = "correct horse battery staple"


def cheap_kdf() -> KdfParams:
    """Argon2id parameters cheap enough for tests (the defaults are used once, in the crypto tests)."""
    return KdfParams.new(iterations=1, lanes=1, memory_cost=8 * 1024)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; fails (never skips) when CI=true and it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI must run with shared/ beside the checkout")
        pytest.skip(f"{path} is not here")
    return path


@pytest.fixture
def make_vault(tmp_path: Path) -> Iterator[Callable[..., Vault]]:
    """Create and open vaults in tmp_path; all are closed at the end of the test."""
    opened: list[Vault] = []

    def make(name: str = "a", **kwargs: object) -> Vault:
        path = tmp_path / name
        if not (path / "vault.db").exists():
            Vault.init(path, name="test", device_name=name, passphrase=PASSPHRASE, kdf=cheap_kdf())
        vault = Vault.open(path, **kwargs)  # type: ignore[arg-type]
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()
