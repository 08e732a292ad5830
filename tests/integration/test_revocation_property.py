"""Property: whatever the order of revocations, writes and syncs among four devices, the devices that remain
converge on one epoch view, one key and one set of memories, and the revoked ones say they are revoked.

Four devices d0..d3 of one vault (d0 creates it, the others join) on two ``memory://`` relays run a random program
of writes (a new memory), syncs (with one relay or both) and revocations (device i revokes device j, with the
passphrase its header holds: each revocation changes the passphrase). A revocation that must be refused, as the
revoking device knows the vault, is refused with the right code: ``DEVICE_REVOKED`` (i is revoked),
``DEVICE_SELF_REVOKE`` (j is i), ``DEVICE_ALREADY_REVOKED`` (j is). Then every device syncs a few rounds, and:

- the devices not revoked in the view they converge on hold that same view (current epoch, revocations with
  their points and authors, counted statements) and seal under its current epoch, and the view is clean;
- they hold the same memories, among them every memory any of them wrote;
- their last sync reports no error;
- every device that view revokes, and only those, reports ``DEVICE_REVOKED`` and nothing else.

Two programs: in one, a revocation comes whenever the program says, so revocations made before their authors
sync are concurrent and devices may revoke each other (the rules of :mod:`crdtsync.crypto.epochs` decide which
count); in the other, every device syncs and then the revoking device once more before each revocation, so it
revokes knowing all the others pushed, and it syncs right after, so the revocation reaches the relays before the
revoked device pushes anything more. The second holds. The first does not yet: it finds the bugs that the
strict xfail tests at the end of the file pin down, each as a plain sequence (their reasons say what goes wrong
and where), and it is marked xfail until they are fixed.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from crdtsync.crypto.epochs import EpochStatement
from crdtsync.crypto.header import open_header
from crdtsync.errors import CrdtsyncError
from crdtsync.model.authorship import epoch_view
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

DEVICES = 4
RELAYS = ("a", "b")
#: Rounds in which every device syncs both relays before the checked one (a rekey made in one round reaches
#: everyone in the next).
SETTLE_ROUNDS = 3

device = st.integers(0, DEVICES - 1)
op = st.one_of(
    st.tuples(st.just("write"), device),
    st.tuples(st.just("sync"), device, st.sampled_from([None, *RELAYS])),
    st.tuples(st.just("revoke"), device, device),
)
programs = st.lists(op, min_size=4, max_size=14)
#: Each example creates four vaults (Argon2id, joins) and runs dozens of syncs: few examples. No shrinking: an
#: outcome depends on the order of statements by digest, which random keys decide, so a replay may differ.
property_settings = settings(max_examples=15, deadline=None, report_multiple_bugs=False,
                             phases=[Phase.explicit, Phase.reuse, Phase.generate])


def codes(vault: Vault, relay: str | None = None) -> list[str]:
    return [e["code"] for report in vault.sync(relay) for e in report.errors]


def contents(vault: Vault) -> set[str]:
    return {m.content for m in vault.list()}


def view_of(vault: Vault) -> tuple[int, dict[str, tuple[int, str, int]], list[str]]:
    """What two devices must agree on: the current epoch, each revocation (point, author, epoch) and the digests
    of the counted statements in order."""
    view = vault.epochs()
    return (view.current, {d: (r.seq, r.by, r.epoch) for d, r in sorted(view.revoked.items())},
            [s.digest.hex() for s in view.counted])


def four_devices(root: Path) -> list[Vault]:
    """d0 creates the vault on relays ``a`` and ``b`` (``memory://`` stores of this call), d1..d3 join through
    ``a`` and add ``b``; each has synced once after all joined, so every device knows every registration."""
    urls = {name: f"memory://{uuid.uuid4().hex}" for name in RELAYS}
    Vault.init(root / "d0", name="v", device_name="d0", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(root / "d0") as first:
        for name, url in urls.items():
            first.add_relay(name, url)
        assert codes(first) == []
    for n in range(1, DEVICES):
        Vault.join(root / f"d{n}", urls["a"], passphrase=PASSPHRASE, device_name=f"d{n}", relay_name="a")
    vaults = [Vault.open(root / f"d{n}") for n in range(DEVICES)]
    for vault in vaults[1:]:
        vault.add_relay("b", urls["b"])
    for vault in (*vaults, vaults[0]):
        assert codes(vault) == []
    return vaults


def passphrase_of(vault: Vault, made: list[str]) -> str:
    """The newest of the passphrases ``made`` so far that opens ``vault``'s header."""
    for passphrase in reversed(made):
        try:
            open_header(vault.header, passphrase)
        except CrdtsyncError as exc:
            assert exc.code == "WRONG_PASSPHRASE", exc
            continue
        return passphrase
    raise AssertionError(f"no passphrase made so far opens the header of {vault.device_id}")


def expected_refusal(vault: Vault, target: str) -> str | None:
    """The code ``vault.revoke_device(target)`` must fail with, as ``vault`` knows the vault (None: it succeeds)."""
    revoked = vault.epochs().revoked
    if vault.device_id in revoked:
        return "DEVICE_REVOKED"
    if target == vault.device_id:
        return "DEVICE_SELF_REVOKE"
    if target in revoked:
        return "DEVICE_ALREADY_REVOKED"
    return None


def settle_rounds(vaults: list[Vault], trace: list[str]) -> dict[int, list[str]]:
    """:data:`SETTLE_ROUNDS` rounds in which every device syncs both relays, then one more; returns the codes of
    that last one per device."""
    for _ in range(SETTLE_ROUNDS):
        for n, vault in enumerate(vaults):
            trace.append(f"d{n} syncs both: {codes(vault)}")
    return {n: codes(vault) for n, vault in enumerate(vaults)}


def run_program(vaults: list[Vault], program: list[tuple[Any, ...]], *, synced_revocations: bool) -> None:
    """Run ``program`` (see the module docstring; ``synced_revocations``: every device syncs, then the revoking one
    again, before each revocation, and the revoking one right after it), settle, and check the property."""
    ids = [vault.device_id for vault in vaults]
    made = [PASSPHRASE]
    written: list[tuple[int, str]] = []
    trace: list[str] = []

    def told() -> str:
        return "\n".join(trace)

    for step in program:
        kind, i = step[0], step[1]
        vault = vaults[i]
        if kind == "write":
            content = f"memory {len(written)} written by d{i}"
            vault.add(content)
            written.append((i, content))
            trace.append(f"d{i} writes")
        elif kind == "sync":
            trace.append(f"d{i} syncs {step[2] or 'both'}: {codes(vault, step[2])}")
        else:
            j = step[2]
            if synced_revocations:
                for n, member in (*enumerate(vaults), (i, vault)):
                    trace.append(f"d{n} syncs both: {codes(member)}")
            refusal = expected_refusal(vault, ids[j])
            new = f"passphrase {len(made)}"
            try:
                done = vault.revoke_device(ids[j], passphrase=passphrase_of(vault, made), new_passphrase=new)
            except CrdtsyncError as exc:
                assert exc.code == refusal, f"{told()}\nd{i} revokes d{j}: {exc.code} ({exc}), {refusal} expected"
                trace.append(f"d{i} revokes d{j}: {exc.code}")
                continue
            assert refusal is None, f"{told()}\nd{i} revokes d{j}: done, {refusal} expected"
            assert done["device"] == ids[j] and ids[j] not in done["recipients"]
            made.append(new)
            trace.append(f"d{i} revokes d{j}: epoch {done['epoch']}")
            if synced_revocations:
                trace.append(f"d{i} syncs both: {codes(vault)}")

    final = settle_rounds(vaults, trace)
    trace.append(f"last round: {final}")
    shut_out = {n for n, found in final.items() if "DEVICE_REVOKED" in found}
    active = [n for n in range(DEVICES) if n not in shut_out]
    assert active, told()
    views = {n: view_of(vaults[n]) for n in active}
    view = views[active[0]]
    names = {device: f"d{n}" for n, device in enumerate(ids)}
    assert all(v == view for v in views.values()), f"{told()}\nviews {views}\nids {names}"
    current, revoked, _ = view
    assert shut_out == {n for n in range(DEVICES) if ids[n] in revoked}, f"{told()}\nview {view}\nids {names}"
    assert all(set(final[n]) == {"DEVICE_REVOKED"} for n in shut_out), told()
    assert all(final[n] == [] for n in active), told()
    assert vaults[active[0]].epochs().clean, f"{told()}\nview {view}"
    assert all(vaults[n].secrets.current_epoch == current for n in active), f"{told()}\nview {view}"
    held = {n: contents(vaults[n]) for n in active}
    assert all(h == held[active[0]] for h in held.values()), f"{told()}\nmemories {held}"
    missing = {content for n, content in written if n in active} - held[active[0]]
    assert not missing, f"{told()}\nmissing {missing}"


def run_example(program: list[tuple[Any, ...]], *, synced_revocations: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        vaults = four_devices(Path(folder))
        try:
            run_program(vaults, program, synced_revocations=synced_revocations)
        finally:
            for vault in vaults:
                vault.close()


@property_settings
@given(program=programs)
def test_revocations_made_and_published_in_step_with_every_device_converge(program: list[tuple[Any, ...]]) -> None:
    run_example(program, synced_revocations=True)


@pytest.mark.xfail(strict=False, raises=(AssertionError, Flaky), reason=(
    "revocations made out of step (before the revoking device pulled, or reaching the relays late) diverge: "
    "the bugs of the strict xfail tests below"))
@property_settings
@given(program=programs)
def test_revocations_writes_and_syncs_in_any_order_converge(program: list[tuple[Any, ...]]) -> None:
    run_example(program, synced_revocations=False)


# -- the bugs the property finds, each as a plain sequence ------------------------------------------------


def first_in_order(*statements: EpochStatement) -> EpochStatement:
    return min(statements, key=lambda s: (s.prev, s.epoch, s.digest))


def revoke_each_other(vaults: list[Vault]) -> tuple[Vault, Vault, EpochStatement]:
    """d0 revokes d1 and d1 revokes d0, neither having synced: returns the device whose statement comes first by
    (prev, epoch, digest) (the rules count it and void the other, whose author it revokes), the other one, and
    that first statement."""
    d0, d1 = vaults[:2]
    d0.revoke_device(d1.device_id, passphrase=PASSPHRASE, new_passphrase="passphrase of d0")
    d1.revoke_device(d0.device_id, passphrase=PASSPHRASE, new_passphrase="passphrase of d1")
    (made_by_d0,) = d0.epochs().counted
    (made_by_d1,) = d1.epochs().counted
    first = first_in_order(made_by_d0, made_by_d1)
    return (d0, d1, first) if first is made_by_d0 else (d1, d0, first)


@pytest.mark.xfail(strict=True, reason=(
    "the device whose statement comes second never learns it was revoked and goes on syncing (no error, or "
    "ENVELOPE_REVOKED_SENDER / ENVELOPE_DECRYPT_FAILED) instead of stopping with DEVICE_REVOKED: it revoked the "
    "other device at the last entry of it that it had applied, so it refuses (replication.refuse_revoked) the "
    "later entry that carries the other's statement, and resolves only its own"))
def test_two_devices_revoking_each_other_at_once_resolve_to_the_first_statement(tmp_path: Path) -> None:
    vaults = four_devices(tmp_path)
    try:
        _, loser, first = revoke_each_other(vaults)
        final = settle_rounds(vaults, [])
        assert set(final[vaults.index(loser)]) == {"DEVICE_REVOKED"}
        members = [v for v in vaults if v is not loser]
        for member in members:
            assert final[vaults.index(member)] == []
            view = member.epochs()
            assert set(view.revoked) == {loser.device_id}
            assert first in view.counted and view.clean
        assert view_of(members[0]) == view_of(members[1]) == view_of(members[2])
    finally:
        for vault in vaults:
            vault.close()


@pytest.mark.xfail(strict=False, reason=(
    "a bystander that pulls the second statement first counts it, and then refuses the entry that carries the "
    "first one as past the revocation point the second set (replication.refuse_revoked): it ends revoking the "
    "wrong device. Whether it pulls the second one first depends on the device ids, so this passes in some runs. "
    "(The other half, the two revoking devices putting their older copy of each other's head back over the one they "
    "cannot open, is fixed: test_revocation.test_a_head_a_device_cannot_open_is_never_rolled_back_by_it)"))
def test_the_other_devices_take_up_the_statement_that_counts(tmp_path: Path) -> None:
    vaults = four_devices(tmp_path)
    try:
        winner, loser, _ = revoke_each_other(vaults)
        assert codes(winner) == []  # the statement that counts reaches the relays first
        codes(loser)
        settle_rounds(vaults, [])
        for bystander in vaults[2:]:
            assert set(bystander.epochs().revoked) == {loser.device_id}
    finally:
        for vault in vaults:
            vault.close()


def test_a_device_revoked_by_a_statement_that_turns_out_void_keeps_syncing(tmp_path: Path) -> None:
    vaults = four_devices(tmp_path)
    try:
        d0, d1, d2, _ = vaults
        d0.change_passphrase(passphrase=PASSPHRASE, new_passphrase="second passphrase of d0")  # epoch 1, prev 0
        d0.revoke_device(d2.device_id, passphrase="second passphrase of d0",
                         new_passphrase="third passphrase of d0")  # epoch 2, prev 1
        # Made before d1 saw either: prev 0 orders it before d0's revocation of d2, which is then void (its author
        # is revoked), whatever the digests.
        d1.revoke_device(d0.device_id, passphrase=PASSPHRASE, new_passphrase="passphrase of d1")
        d2.add("written by d2")
        assert codes(d0) == []  # d0's statements reach the relays before d1's
        codes(d2)
        final = settle_rounds(vaults, [])
        assert d2.device_id not in d1.epochs().revoked
        assert final[2] == []
        assert "written by d2" in contents(d1)
    finally:
        for vault in vaults:
            vault.close()


@pytest.mark.parametrize("when", ["written before the revocation, not pulled by the revoking device",
                                  "written after the revocation, pushed before it reached the relays"])
def test_members_hold_the_same_memories_when_one_applied_past_the_revocation_point(tmp_path: Path,
                                                                                   when: str) -> None:
    vaults = four_devices(tmp_path)
    try:
        d0, d1, d2, d3 = vaults
        if when.startswith("written before"):
            d0.add("written by d0")
            assert codes(d0) == []
            assert codes(d1) == []  # d1 applies it
            d2.revoke_device(d0.device_id, passphrase=PASSPHRASE, new_passphrase="new passphrase")  # d2 has not
        else:
            d2.revoke_device(d0.device_id, passphrase=PASSPHRASE, new_passphrase="new passphrase")
            d0.add("written by d0")
            assert codes(d0) == []  # d2 has not synced: nothing tells d0 yet
            assert codes(d1) == []  # d1 applies it
        final = settle_rounds(vaults, [])
        assert set(final[0]) == {"DEVICE_REVOKED"} and final[1] == final[2] == final[3] == []
        assert contents(d1) == contents(d2) == contents(d3)
    finally:
        for vault in vaults:
            vault.close()


def test_a_revocation_is_not_voided_by_a_concurrent_statement_its_author_never_saw(tmp_path: Path) -> None:
    vaults = four_devices(tmp_path)
    try:
        d0, d1, d2, d3 = vaults
        d0.revoke_device(d3.device_id, passphrase=PASSPHRASE, new_passphrase="first of d0")  # epoch 1, prev 0
        d1.revoke_device(d2.device_id, passphrase=PASSPHRASE, new_passphrase="of d1")  # epoch 1, prev 0
        d0.revoke_device(d1.device_id, passphrase="first of d0", new_passphrase="second of d0")  # epoch 2, prev 1
        # What a device that holds the three statements resolves (their travel is the other tests' business).
        registry = d0.devices()
        registry[d1.device_id] = d1.devices()[d1.device_id]
        view = epoch_view(registry, d0.secrets.vault_id)
        assert len(view.counted) + len(view.void) == 3
        assert view.void == {}
        assert set(view.revoked) == {d1.device_id, d2.device_id, d3.device_id}
    finally:
        for vault in vaults:
            vault.close()
