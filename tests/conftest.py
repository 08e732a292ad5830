"""Shared fixtures: real vault folders on disk, cheap Argon2id parameters, the shared data folder."""

from __future__ import annotations

import os

# The tests never touch the developer's keyring: keyring's fail backend is "no real keyring", so every vault a
# test creates keeps its keys in the 0600 file, and the CLI subprocesses inherit it. Tests of the keyring pick
# their own backend (tests/keyring_backend.py). Set before anything imports keyring.
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crdtsync.crypto.header import MIN_ITERATIONS, MIN_MEMORY_COST_KIB, KdfParams
from crdtsync.vault import Vault

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PASSPHRASE = "correct horse battery staple"


def cheap_kdf() -> KdfParams:
    """The cheapest Argon2id parameters a vault may have (the floor a join accepts: 19 MiB, 2 passes), for tests;
    the defaults are used once, in the crypto tests."""
    return KdfParams.new(iterations=MIN_ITERATIONS, lanes=1, memory_cost=MIN_MEMORY_COST_KIB)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; fails (never skips) when CI=true and it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI must run with shared/ beside the checkout")
        pytest.skip(f"{path} is not here")
    return path


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Incarnation tokens (crdtsync.store.incarnation) go to a folder of this run, never the user's state dir;
    child processes inherit it through the environment."""
    previous = os.environ.get("CRDTSYNC_STATE_DIR")
    os.environ["CRDTSYNC_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("CRDTSYNC_STATE_DIR", None)
    else:
        os.environ["CRDTSYNC_STATE_DIR"] = previous


@pytest.fixture
def test_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The tests' own keyring backend (tests/keyring_backend.py: items in ``tmp_path/keyring.json``) as this
    process's keyring, through ``keyring.set_keyring``; the previous one is put back afterwards. CLI processes
    share it with ``PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileTestKeyring`` and ``TEST_KEYRING_FILE``."""
    import keyring

    from tests.keyring_backend import FILE_VARIABLE, FileTestKeyring

    monkeypatch.setenv(FILE_VARIABLE, str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    backend = FileTestKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """The folder of a one-device vault (the device named ``laptop``) holding two memories: "prefers oolong" and
    "works on crdtsync" (the pairing tests invite from it)."""
    home = tmp_path / "laptop"
    Vault.init(home, name="memories", device_name="laptop", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(home) as vault:
        vault.add("prefers oolong")
        vault.add("works on crdtsync")
    return home


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


def devices_on_two_relays(root: Path, *, second_on_both: bool) -> tuple[str, str]:
    """Three device folders: ``root/d0`` syncs through folder mailboxes box1 and box2, ``root/d1`` joins
    through box1 (and also syncs box2 when ``second_on_both``), ``root/d2`` joins through box2. Returns the
    two mailbox URLs."""
    box1, box2 = (root / "box1").as_uri(), (root / "box2").as_uri()
    Vault.init(root / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(root / "d0") as first:
        first.add("seed memory")
        first.add_relay("box1", box1)
        first.add_relay("box2", box2)
        first.sync()
    Vault.join(root / "d1", box1, passphrase=PASSPHRASE, device_name="d1", relay_name="box1")
    Vault.join(root / "d2", box2, passphrase=PASSPHRASE, device_name="d2", relay_name="box2")
    if second_on_both:
        with Vault.open(root / "d1") as second:
            second.add_relay("box2", box2)
    return box1, box2


_CRASH_ON_APPLY = """
import os, runpy, sys, time
import pycrdt
marker, flag, stall = bytes.fromhex({marker!r}), {flag!r}, {stall!r}
original = pycrdt.Doc.apply_update
def apply_update(self, update):
    if marker in update and os.path.exists(flag):
        if not stall:
            os._exit(11)  # stands for a segfault, or the OS killing the worker
        time.sleep(stall)  # stands for a slow or busy device
    return original(self, update)
pycrdt.Doc.apply_update = apply_update
runpy.run_module("crdtsync.store.worker", run_name="__main__")
"""


def crash_workers_applying(marker: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                           stall: float = 0.0) -> Path:
    """From here on, every integration worker that applies an update holding ``marker`` (the whole update, or
    a text in it) dies, as a segfault would (or with ``stall`` seconds, first sleeps that long), while the
    returned flag file exists. (The worker starts with a scrubbed environment, so the script carries its
    settings in its text.)"""
    import crdtsync.store.worker as worker_module

    flag = tmp_path / "crash-now"
    script = tmp_path / "crash_on_apply.py"
    script.write_text(_CRASH_ON_APPLY.format(marker=marker.hex(), flag=str(flag), stall=float(stall)))
    monkeypatch.setattr(worker_module, "CHILD_ARGS", (str(script),))
    flag.touch()
    return flag


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server mode on 127.0.0.1 (a real HTTP server, not a mock of boto); sets the AWS variables."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh bucket on the moto server; returns its name."""
    import uuid

    import boto3

    name = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[list[Vault]]:
    """Four devices of one vault that met once through a relay (so each is registered), then went apart."""
    url = f"memory://{uuid.uuid4().hex}"
    Vault.init(tmp_path / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "d0") as first:
        first.add_relay("box", url)
        first.sync()
    for n in range(1, 4):
        Vault.join(tmp_path / f"d{n}", url, passphrase=PASSPHRASE, device_name=f"d{n}")
    vaults = [Vault.open(tmp_path / f"d{n}") for n in range(4)]
    for vault in vaults:
        vault.sync()
    yield vaults
    for vault in vaults:
        vault.close()
