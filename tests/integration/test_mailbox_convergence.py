"""Property: replicas that edit concurrently and sync through a mailbox in random interleavings converge.

Three devices (one creates the vault, two join through the mailbox) run a random program of adds, edits,
tag changes, deletes, restores, moves between level 1 and level 0, and partial syncs (push only, pull only,
both) through a ``memory://`` and a ``file://`` mailbox, with a snapshot at every push. After every device has
synced a few rounds, all hold the same shared memories and the same conflicts, every memory any of them added
is shared or kept at level 0 by a device that moved it, and a device that joins then (from the snapshots and
the logs after them) holds the same.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crdtsync.replication as replication_module
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, devices_on_two_relays

DEVICES = 3
WORDS = ["tea", "coffee", "hiking", "piano", "Berlin", "deadline", "sister", "dentist"]
_runs = itertools.count()

op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, DEVICES - 1), st.sampled_from(WORDS)),
    st.tuples(st.just("edit"), st.integers(0, DEVICES - 1), st.integers(0, 50), st.sampled_from(WORDS)),
    st.tuples(st.just("tag"), st.integers(0, DEVICES - 1), st.integers(0, 50), st.sampled_from(WORDS[:3]),
              st.booleans()),
    st.tuples(st.just("delete"), st.integers(0, DEVICES - 1), st.integers(0, 50)),
    st.tuples(st.just("restore"), st.integers(0, DEVICES - 1), st.integers(0, 50)),
    st.tuples(st.just("level"), st.integers(0, DEVICES - 1), st.integers(0, 50), st.sampled_from([0, 1])),
    st.tuples(st.just("sync"), st.integers(0, DEVICES - 1), st.sampled_from(["push", "pull", "both"])),
)


def _settle_and_compare(vaults: list[Vault]) -> list[dict[str, Any]]:
    """Three rounds in which every device syncs every relay; then all must hold the same shared (level 1)
    memories and the same conflicts, with nothing held or quarantined. Returns the shared memories (JSON
    objects, deleted ones included)."""
    for _ in range(3):
        for dev in vaults:
            reports = dev.sync()
            assert all(not r.errors for r in reports), [r.errors for r in reports]
    views = [[m.to_json() for m in v.list(include_deleted=True) if m.level == 1] for v in vaults]
    conflicts = [[c.to_json() for c in v.conflicts()] for v in vaults]
    assert all(view == views[0] for view in views)
    assert all(c == conflicts[0] for c in conflicts)
    assert all(v.store.held_count() == 0 and not v.store.quarantined() for v in vaults)
    return views[0]


def _assert_a_late_joiner_holds(root: Path, url: str, relay: str, memories: list[dict[str, Any]],
                                peer: Vault) -> None:
    """A device that joins now (from the others' snapshots, compaction having run, and the logs after them)
    holds ``memories`` and ``peer``'s conflicts, with nothing held or quarantined."""
    Vault.join(root / "late", url, passphrase=PASSPHRASE, device_name="late", relay_name=relay)
    with Vault.open(root / "late") as late:
        assert [m.to_json() for m in late.list(include_deleted=True)] == memories
        assert [c.to_json() for c in late.conflicts()] == [c.to_json() for c in peer.conflicts()]
        assert late.store.held_count() == 0 and not late.store.quarantined()


def _run_program(root: Path, url: str, program: list[tuple[Any, ...]]) -> None:
    Vault.init(root / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(root / "d0") as first:
        first.add("seed memory")
        first.add_relay("box", url)
        first.sync()
    for n in range(1, DEVICES):
        Vault.join(root / f"d{n}", url, passphrase=PASSPHRASE, device_name=f"d{n}", relay_name="box")
    vaults = [Vault.open(root / f"d{n}") for n in range(DEVICES)]
    added: list[str] = []
    try:
        for step in program:
            kind, dev = step[0], vaults[step[1]]
            known = [m.id for m in dev.list(include_deleted=True)]
            target = known[step[2] % len(known)] if kind != "add" and kind != "sync" and known else None
            if kind == "add":
                added.append(dev.add(f"{step[2]} note {len(added)}", tags=[step[2]]).id)
            elif kind == "sync":
                reports = dev.sync(push=step[2] != "pull", pull=step[2] != "push")
                assert all(not r.errors for r in reports), [r.errors for r in reports]
            elif target is not None:
                current = dev.get(target)
                if kind == "edit" and not current.deleted:
                    dev.update(target, content=f"{step[3]} edited on {step[1]}")
                elif kind == "tag" and not current.deleted:
                    dev.update(target, **{"add_tags" if step[4] else "remove_tags": [step[3]]})
                elif kind == "delete":
                    dev.delete(target)
                elif kind == "restore":
                    dev.restore(target)
                elif kind == "level" and not current.deleted and not (step[3] == 0 and current.conflicts):
                    dev.update(target, level=step[3])  # a conflicted memory is resolved before it goes to 0
        memories = _settle_and_compare(vaults)
        kept_private = {m.id for v in vaults for m in v.list(include_deleted=True) if m.level == 0}
        assert set(added) <= {m["id"] for m in memories} | kept_private
        _assert_a_late_joiner_holds(root, url, "box", memories, vaults[0])
    finally:
        for v in vaults:
            v.close()


@pytest.mark.parametrize("scheme", ["memory", "file"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=st.lists(op, min_size=5, max_size=30))
def test_random_edits_and_sync_interleavings_converge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, program: list[Any],
) -> None:
    monkeypatch.setattr(replication_module, "SNAPSHOT_EVERY", 1)  # a snapshot at every push, and log collection
    root = tmp_path / f"run{next(_runs)}"
    root.mkdir()
    url = f"memory://{uuid.uuid4().hex}" if scheme == "memory" else (root / "box").as_uri()
    _run_program(root, url, program)


def test_devices_on_two_relays_converge_when_every_pair_shares_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """d0 and d1 sync through two mailboxes, d2 through the second only; every pair shares a relay. Random
    programs whose syncs pick one relay or all: each write arrives once per relay that carries it (duplicates
    must change nothing), push cursors and acknowledgements are per relay, and all converge."""
    sync_one = st.tuples(st.just("sync_relay"), st.integers(0, DEVICES - 1), st.sampled_from(["box1", "box2"]))
    programs = st.lists(st.one_of(op, sync_one), min_size=5, max_size=30)
    monkeypatch.setattr(replication_module, "SNAPSHOT_EVERY", 1)

    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(program=programs)
    def run(program: list[Any]) -> None:
        root = tmp_path / f"run{next(_runs)}"
        root.mkdir()
        _, box2 = devices_on_two_relays(root, second_on_both=True)
        vaults = [Vault.open(root / f"d{n}") for n in range(DEVICES)]
        try:
            for step in program:
                dev = vaults[step[1]]
                if step[0] == "sync_relay":
                    if step[2] in {r["name"] for r in dev.relays()}:
                        reports = dev.sync(step[2])
                        assert all(not r.errors for r in reports), [r.errors for r in reports]
                    continue
                if step[0] == "sync":
                    reports = dev.sync(push=step[2] != "pull", pull=step[2] != "push")
                    assert all(not r.errors for r in reports), [r.errors for r in reports]
                    continue
                known = [m.id for m in dev.list(include_deleted=True)]
                if step[0] == "add":
                    dev.add(f"{step[2]} note on d{step[1]}", tags=[step[2]])
                elif known:
                    target = known[step[2] % len(known)]
                    if step[0] == "edit" and not dev.get(target).deleted:
                        dev.update(target, content=f"{step[3]} edited on {step[1]}")
                    elif step[0] == "delete":
                        dev.delete(target)
                    elif step[0] == "restore":
                        dev.restore(target)
            memories = _settle_and_compare(vaults)
            # every device syncs box2: it carries everything
            _assert_a_late_joiner_holds(root, box2, "box2", memories, vaults[0])
        finally:
            for v in vaults:
                v.close()

    run()
