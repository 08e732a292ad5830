"""Fuzz of the defended apply path: mutated real updates through Vault.apply_updates, in this very process.

The strict reader and the integration worker stand between the mutants and the live pycrdt Doc, so this
process must survive every mutant: no crash, no hang, no poisoned clock, no loss of the honest memories, and
afterwards the honest updates still integrate and the vault reopens in a fresh process. The budget is
bounded in time and count: ``CRDTSYNC_FUZZ_SECONDS`` (default 150 s under CI=true, 20 s otherwise).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc

from crdtsync.model.records import believable_until
from crdtsync.model.schema import MemoryDoc
from crdtsync.model.ystate import decode_state_vector
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf, shared_data

BUDGET = float(os.environ.get("CRDTSYNC_FUZZ_SECONDS", "150" if os.environ.get("CI") == "true" else "20"))
MAX_MUTANTS = 150_000
#: Mutants per fresh target vault (held mutants accumulate in its inbox).
PER_VAULT = 400
POISON = 1 << 31


def honest_updates(tmp_path: Path) -> list[bytes]:
    """Real updates from a source vault: LoCoMo text, tags, edits, deletes, a conflict-free history."""
    import json

    Vault.init(tmp_path / "source", name="src", passphrase=PASSPHRASE, kdf=cheap_kdf())
    turns = json.loads(shared_data("locomo", "26.json").read_text())["session_1"]
    with Vault.open(tmp_path / "source") as source:
        ids = [source.add(t["text"], category=t["speaker"], tags=["locomo", t["dia_id"]]).id for t in turns[:12]]
        source.update(ids[0], content="edited " + turns[0]["text"], remove_tags=["locomo"])
        source.delete(ids[1])
        source.update(ids[2], metadata={"n": 1, "nested": [1, 2, {"x": "y"}]})
        updates = [data for _, data in source.local_updates_after(0)]
        updates.append(source.encode_update())
    # A second device that saw all of it writes on top: its updates name the first device's structs (origins,
    # parents, delete sets), so mutants also exercise cross-client references.
    Vault.init(tmp_path / "peer", name="src", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "peer") as peer:
        peer.apply_updates([(u, "source") for u in updates])
        before = peer.store.local_updates_after(0)[-1][0]
        peer.update(ids[0], content="the peer's " + turns[0]["text"], add_tags=["peer"])
        peer.update(ids[3], remove_tags=["locomo"], category="peer")
        peer.delete(ids[4])
        peer.restore(ids[1])
        updates.extend(data for _, data in peer.local_updates_after(before))
        updates.append(peer.encode_update())
    return updates


def assert_store_matches_doc(vault: Vault) -> None:
    """The materialized SQLite rows are exactly what the shared Doc holds (read by a fresh pycrdt Doc, believing
    the claimed times this device believes, as the store does)."""
    doc: Doc[Any] = Doc()
    doc.apply_update(vault.encode_update())
    mdoc = MemoryDoc(doc)
    from_doc = {}
    for memory_id in mdoc.memory_ids():
        read = mdoc.read(memory_id, believable_until())
        if read is not None:
            from_doc[memory_id] = read[0].to_json()
    from_store = {m.id: m.to_json() for m in vault.list(include_deleted=True) if m.level == 1}
    assert from_store == from_doc


def mutate(rng: random.Random, pool: list[bytes]) -> bytes:
    data = bytearray(rng.choice(pool))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(6)
        if not data:
            break
        at = rng.randrange(len(data))
        if op == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            data.insert(at, rng.randrange(256))
        elif op == 3:
            del data[at]
        elif op == 4:
            del data[at:]
        else:
            other = rng.choice(pool)
            cut = rng.randrange(len(other))
            data[at:] = other[cut:]
    return bytes(data)


def fresh_target(tmp_path: Path, n: int) -> Vault:
    Vault.init(tmp_path / f"target{n}", name="t", passphrase=PASSPHRASE, kdf=cheap_kdf())
    vault = Vault.open(tmp_path / f"target{n}", deadline=5.0)
    vault.add("an honest local memory that must survive")
    return vault


def test_mutated_updates_never_crash_hang_poison_or_lose_data(tmp_path: Path) -> None:
    updates = honest_updates(tmp_path)
    pool = updates + [bytes.fromhex(u) for u in ("010107ede4b495ff072801016d016b0177017d00",)]
    rng = random.Random(int(os.environ.get("CRDTSYNC_FUZZ_SEED", "20261122")))
    deadline = time.monotonic() + BUDGET
    statuses: dict[str, int] = {}
    n = 0
    vaults = 0
    while n < MAX_MUTANTS and time.monotonic() < deadline:
        vault = fresh_target(tmp_path, vaults)
        vaults += 1
        local = vault.list()[0]
        for _ in range(PER_VAULT):
            if time.monotonic() >= deadline:
                break
            batch = [(mutate(rng, pool), "fuzz") for _ in range(rng.choice((1, 1, 4)))]
            for result in vault.apply_updates(batch):
                statuses[result.code or result.status] = statuses.get(result.code or result.status, 0) + 1
            n += len(batch)
        state = decode_state_vector(vault.state_vector())
        assert all(clock < POISON for clock in state.values()), state
        assert vault.get(local.id).content == local.content
        honest = vault.apply_updates([(u, "honest") for u in updates])
        assert all(r.status in ("integrated", "refused", "pending") for r in honest)
        assert_store_matches_doc(vault)
        vault.close()
    assert n > 0 and statuses
    print(f"\nfuzz: {n} mutants into {vaults} vaults in {BUDGET:.0f} s budget: {dict(sorted(statuses.items()))}")
    script = textwrap.dedent(
        f"""
        from crdtsync.vault import Vault
        for i in range({vaults}):
            with Vault.open({str(tmp_path)!r} + f"/target{{i}}") as v:
                v.state_vector()
                v.add("still writable")
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
