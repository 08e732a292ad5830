"""Property: devices that share no relay with one another converge through those that do, whatever the relays
lose, roll back or collect in between.

Four devices over three relays (two folders and a ``memory://`` store), as a chain (d0 -box1- d1 -box2- d2
-box3- d3) or a star (d0 on every relay, each other device on one): no device shares a relay with every other.
A random program of adds, edits, deletes and syncs runs, with relay faults between any two steps: an object
deleted, the whole relay put back to an older copy, the vault folder wiped, junk added. Then each device syncs a
few rounds, with nothing but ``sync``: all hold the same memories and conflicts, nothing held or quarantined,
and nothing was accepted that its author did not sign (every entry any device holds opens under its author's
key).
"""

from __future__ import annotations

import itertools
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crdtsync.replication as replication_module
from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.protocol.messages import Entry
from crdtsync.protocol.sealing import Keyring, open_entry
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

DEVICES = 4
WORDS = ["tea", "coffee", "hiking", "piano", "Berlin", "deadline"]
#: Which relays each device syncs with, per topology (relay 2 is the memory:// store).
TOPOLOGIES = {"chain": [[0], [0, 1], [1, 2], [2]], "star": [[0, 1, 2], [0], [1], [2]]}
_runs = itertools.count()

step = st.one_of(
    st.tuples(st.just("add"), st.integers(0, DEVICES - 1), st.sampled_from(WORDS)),
    st.tuples(st.just("edit"), st.integers(0, DEVICES - 1), st.integers(0, 50), st.sampled_from(WORDS)),
    st.tuples(st.just("delete"), st.integers(0, DEVICES - 1), st.integers(0, 50)),
    st.tuples(st.just("sync"), st.integers(0, DEVICES - 1)),
    st.tuples(st.just("fault"), st.integers(0, 1), st.sampled_from(["lose", "rollback", "wipe", "junk", "save"]),
              st.integers(0, 1000)),
)


def _build(root: Path, layout: list[list[int]]) -> tuple[list[Vault], list[str]]:
    urls = [(root / "box0").as_uri(), (root / "box1").as_uri(), f"memory://{uuid.uuid4().hex}"]
    Vault.init(root / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(root / "d0") as first:
        for relay in layout[0]:
            first.add_relay(f"box{relay}", urls[relay])
        assert all(not r.errors for r in first.sync())
    for n in range(1, DEVICES):
        # A device joins through a relay some earlier device already publishes on, then adds its others.
        joined_through = next(r for r in layout[n] if any(r in layout[m] for m in range(n)))
        Vault.join(root / f"d{n}", urls[joined_through], passphrase=PASSPHRASE, device_name=f"d{n}",
                   relay_name=f"box{joined_through}")
        with Vault.open(root / f"d{n}") as dev:
            for relay in layout[n]:
                if relay != joined_through:
                    dev.add_relay(f"box{relay}", urls[relay])
            assert all(not r.errors for r in dev.sync())
    return [Vault.open(root / f"d{n}") for n in range(DEVICES)], urls


def _fault(root: Path, saved: dict[int, Path], relay: int, kind: str, pick: int) -> None:
    box = root / f"box{relay}"
    vault_folder = next(box.glob("crdtsync-v1/*"), None)
    if vault_folder is None:
        return
    objects = sorted(p for p in vault_folder.rglob("*") if p.is_file())
    if kind == "save":
        copy = root / f"saved{relay}-{pick}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(box, copy)
        saved[relay] = copy
    elif kind == "lose" and objects:
        objects[pick % len(objects)].unlink()
    elif kind == "rollback" and relay in saved:
        shutil.rmtree(box)
        shutil.copytree(saved[relay], box)
    elif kind == "wipe":
        shutil.rmtree(vault_folder)
    elif kind == "junk":
        authors = vault_folder / "a"
        (authors / "ffffffffffffffffffffffffffffffff").mkdir(parents=True, exist_ok=True)
        (authors / "ffffffffffffffffffffffffffffffff" / "head").write_bytes(random.Random(pick).randbytes(64))
        (authors / ".DS_Store").write_bytes(b"junk")


def _signed_by_their_authors(vault: Vault) -> None:
    """Every entry the device holds opens under its author's registered key (or the key it carries, for the
    author's first entries)."""
    secrets = vault.secrets
    keyring = Keyring(secrets.vault_id, secrets.epochs, secrets.current_epoch, secrets.device)
    for author in vault.store.authors():
        for (kind, seq) in vault.store.entry_sizes(author):
            parts = vault.store.entry_parts(author, kind, seq) or []
            opened = open_entry(keyring, lambda _device, _epoch: None, Entry(author, kind, seq, tuple(parts)),
                                f"{author}/{seq}")
            assert kind in (KIND_UPDATE, KIND_SNAPSHOT) and opened.batch.seq == seq


def _run(root: Path, layout: list[list[int]], program: list[Any]) -> None:
    vaults, _ = _build(root, layout)
    saved: dict[int, Path] = {}
    try:
        for item in program:
            if item[0] == "fault":
                _fault(root, saved, *item[1:])
                continue
            dev = vaults[item[1]]
            if item[0] == "sync":
                dev.sync()  # a fault may make a relay report errors here; the settling below must clear them
                continue
            known = [m.id for m in dev.list(include_deleted=True)]
            if item[0] == "add":
                dev.add(f"{item[2]} note on d{item[1]}")
            elif known:
                target = known[item[2] % len(known)]
                if item[0] == "edit" and not dev.get(target).deleted:
                    dev.update(target, content=f"{item[3]} edited on d{item[1]}")
                elif item[0] == "delete":
                    dev.delete(target)
        # Settle: every device syncs, along the chain and back, a few rounds.
        order = list(range(DEVICES)) + list(reversed(range(DEVICES)))
        for _ in range(2):
            for n in order:
                vaults[n].sync()
        for n in order:
            reports = vaults[n].sync()
            assert all(not r.errors for r in reports), (n, [r.errors for r in reports])
        views = [[m.to_json() for m in v.list(include_deleted=True)] for v in vaults]
        conflicts = [[c.to_json() for c in v.conflicts()] for v in vaults]
        assert all(view == views[0] for view in views)
        assert all(c == conflicts[0] for c in conflicts)
        assert all(v.store.held_count() == 0 and not v.store.quarantined() for v in vaults)
        for v in vaults:
            _signed_by_their_authors(v)
    finally:
        for v in vaults:
            v.close()


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_chains_and_stars_converge_through_relay_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topology: str,
) -> None:
    monkeypatch.setattr(replication_module, "SNAPSHOT_EVERY", 3)  # snapshots and log collection within a program

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(program=st.lists(step, min_size=4, max_size=14))
    def run(program: list[Any]) -> None:
        root = tmp_path / f"run{next(_runs)}"
        root.mkdir()
        _run(root, TOPOLOGIES[topology], program)

    run()
