"""Live sessions between real vaults (no sockets: two sessions wired together in memory): each side sends what
the other lacks of every author, live writes flow both ways, a device carries a third device's entries to a
fourth, and an entry a peer altered ends the session with its code while nothing of it is kept."""

from __future__ import annotations

import pytest
from pycrdt import merge_updates

from crdtsync.live import LiveSync
from crdtsync.replication import AuthorLogReplica
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE
from tests.mailbox.forge import push_raw


def _memories(vault: Vault) -> list[dict[str, object]]:
    return [m.to_json() for m in vault.list(include_deleted=True) if m.level == 1]


def _wire(a: LiveSync, b: LiveSync, first: bytes = b"", second: bytes = b"", *, chunk: int = 7919) -> None:
    """Shuttle bytes between two live sessions, in pieces of ``chunk`` bytes, until neither has more to say."""
    to_b, to_a = first, second
    for _ in range(10_000):
        if not to_a and not to_b:
            return
        if to_b:
            piece, to_b = to_b[:chunk], to_b[chunk:]
            to_a += b.receive(piece)
        if to_a:
            piece, to_a = to_a[:chunk], to_a[chunk:]
            to_b += a.receive(piece)
    raise AssertionError("the sessions never went quiet")


@pytest.mark.parametrize("a_first", [True, False])
def test_two_devices_exchange_every_authors_entries_and_then_live_writes(devices: list[Vault], a_first: bool) -> None:
    d0, d1, d2, d3 = devices
    d0.add("written on d0")
    d2.add("written on d2")
    assert all(not r.errors for r in d2.sync())  # d2's entry reaches d0 through the relay, not d1
    assert all(not r.errors for r in d0.sync())
    d1.add("written on d1")
    a, b = LiveSync(AuthorLogReplica(d0)), LiveSync(AuthorLogReplica(d1))
    if a_first:
        _wire(a, b, a.start())  # b answers with its own hello and what a lacks
    else:
        _wire(a, b, b"", b.start())
    assert _memories(d0) == _memories(d1)
    assert {m.content for m in d1.list()} >= {"written on d0", "written on d2", "written on d1"}
    assert a.report.entries_received >= 1 and b.report.entries_received >= 2  # d1 got d2's entry from d0

    live = d0.add("written on d0 while the session runs")
    _wire(a, b, a.local_changes())
    assert d1.get(live.id).content == "written on d0 while the session runs"
    edit = d1.update(live.id, content="edited on d1 while the session runs")
    _wire(a, b, b"", b.local_changes())
    assert d0.get(live.id).content == edit.content
    assert _memories(d0) == _memories(d1)
    _wire(a, b, a.close(), b.close())
    assert a.receive(b"") == b"" and b.receive(b"") == b""  # the streams end
    assert a.closed and b.closed and a.report.error is None and b.report.error is None
    assert d0.store.quarantined() == [] and d1.store.quarantined() == []
    assert d3.store.author(d1.device_id).applied < d1.store.author(d1.device_id).applied  # d3 not yet


def test_a_device_carries_a_third_devices_entries_to_a_fourth_with_their_proof(devices: list[Vault]) -> None:
    d0, d1, d2, _ = devices
    memory = d0.add("written on d0, which never meets d2")
    a, b = LiveSync(AuthorLogReplica(d0)), LiveSync(AuthorLogReplica(d1))
    _wire(a, b, a.start(), b.start())
    c, d = LiveSync(AuthorLogReplica(d1)), LiveSync(AuthorLogReplica(d2))
    _wire(c, d, c.start(), d.start())
    assert d2.get(memory.id).content == "written on d0, which never meets d2"
    seq = d0.store.author(d0.device_id).applied
    assert d2.store.entry_parts(d0.device_id, 1, seq) == d0.store.entry_parts(d0.device_id, 1, seq)


def test_an_entry_a_peer_altered_ends_the_session_with_its_code_and_nothing_of_it_is_kept(
    devices: list[Vault],
) -> None:
    d0, d1, _, _ = devices
    d0.add("written on d0")
    a, b = LiveSync(AuthorLogReplica(d0)), LiveSync(AuthorLogReplica(d1))
    a.logs.commit()
    seq = d0.store.author(d0.device_id).applied
    parts = d0.store.entry_parts(d0.device_id, 1, seq)
    assert parts is not None
    tampered = bytearray(parts[0])
    tampered[len(tampered) // 2] ^= 1
    with d0.store.write():  # what a hostile d0 serves: its store holds altered bytes
        d0.store.put_entry(d0.device_id, 1, seq, b"\0" * 32, [bytes(tampered)])
    before = d1.store.author(d0.device_id).applied
    _wire(a, b, a.start(), b.start())
    assert b.report.error is not None and b.report.error["code"] == "ENVELOPE_BAD_SIGNATURE"
    assert a.report.error is not None and a.report.error["code"] == "ENVELOPE_BAD_SIGNATURE"  # told by d1
    assert d1.store.author(d0.device_id).applied == before
    assert "written on d0" not in {m.content for m in d1.list()}


def test_two_devices_shown_two_histories_of_one_author_both_raise_the_fork_alarm_in_a_session(
    devices: list[Vault],
) -> None:
    """d0 rewrites its own entry at one seq after d1 applied it; d2 applies the other version. When d1 and d2
    meet in a session, the digests in their summaries disagree: both raise MAILBOX_FORK and the session ends."""
    d0, d1, d2, _ = devices
    memory = d0.add("meet at 10:00")
    assert all(not r.errors for r in d0.sync())
    assert all(not r.errors for r in d1.sync())
    seq = d0.store.author(d0.device_id).applied
    d0.update(memory.id, content="meet at 14:00")
    rewritten = merge_updates(*[data for _, data in d0.store.local_updates_after(0)[-2:]])  # the add and edit
    push_raw(d0, d0.secrets.device, rewritten, tuple(d0.devices()[d0.device_id]["clients"]), seq=seq,
             prev=d0.store.known_digests(d0.device_id)[seq - 1])
    assert all(not r.errors for r in d2.sync())
    assert d2.get(memory.id).content == "meet at 14:00" and d1.get(memory.id).content == "meet at 10:00"
    a, b = LiveSync(AuthorLogReplica(d1)), LiveSync(AuthorLogReplica(d2))
    _wire(a, b, a.start(), b.start())
    assert a.report.error is not None and a.report.error["code"] == "MAILBOX_FORK"
    assert b.report.error is not None and b.report.error["code"] == "MAILBOX_FORK"
    for vault in (d1, d2):
        assert any(alarm["code"] == "MAILBOX_FORK" for alarm in vault.store.alarms())


def test_a_revocation_travels_in_a_live_session_and_the_revoked_device_is_refused(devices: list[Vault]) -> None:
    """d0 revokes d3; d1 learns it from d0 in a live session (the statement's entry, then entries under the new
    epoch, in one session); then d3 meets d1: what d3 wrote after its revocation never gets in."""
    d0, d1, _, d3 = devices
    d0.revoke_device("d3", passphrase=PASSPHRASE, new_passphrase="the new passphrase")
    d0.add("d0 after the revocation")
    a, b = LiveSync(AuthorLogReplica(d0)), LiveSync(AuthorLogReplica(d1))
    _wire(a, b, a.start())
    assert a.report.error is None and b.report.error is None
    assert d1.secrets.current_epoch == 1
    assert "d0 after the revocation" in {m.content for m in d1.list()}

    d3.add("d3 after its revocation")
    c, d = LiveSync(AuthorLogReplica(d1)), LiveSync(AuthorLogReplica(d3))
    _wire(c, d, c.start())
    codes = {r.error["code"] for r in (c.report, d.report) if r.error is not None}
    assert codes & {"ENVELOPE_REVOKED_SENDER", "DEVICE_REVOKED"}
    assert "d3 after its revocation" not in {m.content for m in d1.list()}
    assert d1.store.author(d3.device_id).applied == d0.epochs().revoked[d3.device_id].seq
