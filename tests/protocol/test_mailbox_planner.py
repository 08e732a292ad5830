"""The mailbox planner of protocol v2 on plain data: no store, no keys."""

from __future__ import annotations

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.protocol.mailbox import (
    Remembered,
    author_key,
    entries_to_fetch,
    entry_key,
    header_action,
    header_confirmation,
    header_key,
    heads_to_read,
    listed_authors,
    listed_parts,
    plan_author,
    token,
)
from crdtsync.protocol.messages import Head

TAG, ME, OTHER = "tag", "a" * 32, "b" * 32


def test_listed_authors_are_the_folders_holding_a_head() -> None:
    listing = {author_key(TAG, ME, "head"): (10, "1"), author_key(TAG, OTHER, "log/0000000000000001"): (5, "1"),
               author_key(TAG, ".DS_Store", "head.sync-conflict"): (1, "1"), header_key(TAG): (3, "1")}
    assert listed_authors(listing, TAG) == {ME}


def test_a_head_is_read_when_it_changed_or_promised_what_was_not_applied() -> None:
    head = author_key(TAG, OTHER, "head")
    listing = {head: (100, "m1"), author_key(TAG, ME, "head"): (90, "m2")}
    read = heads_to_read(listing, TAG, [ME, OTHER], {}, {}, ME)
    assert read == [ME, OTHER]
    remembered = {OTHER: Remembered("100:m1", 3, 1), ME: Remembered("put:90", 7, 2)}
    assert heads_to_read(listing, TAG, [ME, OTHER], remembered, {OTHER: 3, ME: 7}, ME) == []
    assert heads_to_read(listing, TAG, [ME, OTHER], remembered, {OTHER: 2, ME: 7}, ME) == [OTHER]
    changed = {**listing, head: (100, "m9")}
    assert heads_to_read(changed, TAG, [ME, OTHER], remembered, {OTHER: 3, ME: 7}, ME) == [OTHER]
    # "put:<size>" stands in for this device's own head only: another author's head of that size may be new.
    remembered[OTHER] = Remembered("put:100", 3, 1)
    assert heads_to_read(listing, TAG, [OTHER], remembered, {OTHER: 3}, ME) == [OTHER]


def test_entries_to_fetch_take_the_snapshot_only_when_the_logs_needed_are_gone() -> None:
    head = Head(seq=10, snap=8, first=6, digest=b"d" * 32)
    assert entries_to_fetch(10, head) == []
    assert entries_to_fetch(5, head) == [(KIND_UPDATE, s) for s in range(6, 11)]
    assert entries_to_fetch(2, head) == [(KIND_SNAPSHOT, 8), (KIND_UPDATE, 9), (KIND_UPDATE, 10)]


def test_an_author_plan_puts_what_is_missing_or_torn_then_the_head_and_deletes_what_the_head_dropped() -> None:
    head = Head(seq=5, snap=3, first=3, digest=b"d" * 32, n=4)
    held = {(KIND_UPDATE, s): [100] for s in range(3, 6)} | {(KIND_SNAPSHOT, 3): [400, 50]}
    listing = {entry_key(TAG, ME, KIND_UPDATE, 3): (100, "x"), entry_key(TAG, ME, KIND_UPDATE, 4): (60, "x"),
               entry_key(TAG, ME, KIND_UPDATE, 1): (100, "x"), entry_key(TAG, ME, KIND_SNAPSHOT, 1): (10, "x"),
               author_key(TAG, ME, "log/0000000000000001.sync-conflict"): (1, "x")}
    plan = plan_author(TAG, ME, head, held, listing, (4, 2))
    snap = entry_key(TAG, ME, KIND_SNAPSHOT, 3)
    assert [p[0] for p in plan.puts] == [entry_key(TAG, ME, KIND_SNAPSHOT, 3, 1), snap,
                                         entry_key(TAG, ME, KIND_UPDATE, 4), entry_key(TAG, ME, KIND_UPDATE, 5)]
    assert plan.healed == [entry_key(TAG, ME, KIND_SNAPSHOT, 3, 1), snap, entry_key(TAG, ME, KIND_UPDATE, 4)]
    assert plan.put_head
    assert plan.deletes == [entry_key(TAG, ME, KIND_UPDATE, 1), entry_key(TAG, ME, KIND_SNAPSHOT, 1)]
    # A relay whose head is newer than ours keeps what it has: nothing is deleted, the head is not put.
    newer = plan_author(TAG, ME, head, held, listing, (6, 1))
    assert not newer.put_head and newer.deletes == []
    complete = {**listing, **{key: (size, "y") for key, size in (
        (entry_key(TAG, ME, KIND_UPDATE, 4), 100), (entry_key(TAG, ME, KIND_UPDATE, 5), 100),
        (snap, 400), (entry_key(TAG, ME, KIND_SNAPSHOT, 3, 1), 50))}}
    same = plan_author(TAG, ME, head, held, complete, (5, 4))
    assert same.puts == [] and not same.put_head and listed_parts(complete, snap) == 2


def test_the_header_is_put_when_missing_read_when_changed_and_skipped_when_confirmed() -> None:
    listed = (321, "m")
    listing = {header_key(TAG): listed}
    assert header_action({}, TAG, None, "h") == "put"
    assert header_action(listing, TAG, None, "h") == "read"
    assert header_action(listing, TAG, header_confirmation("h", listed), "h") == "skip"
    assert header_action(listing, TAG, header_confirmation("h", listed), "other header") == "read"
    assert header_action({header_key(TAG): (321, "n")}, TAG, header_confirmation("h", listed), "h") == "read"
    assert token(listed) == "321:m"


def test_a_head_is_read_when_the_listing_shows_entries_past_what_was_applied() -> None:
    """A restored device remembers its own head as it put it, at the same size as the newer one in the relay:
    the entries the listing shows past its log make it read the head."""
    listing = {author_key(TAG, ME, "head"): (90, "m"), entry_key(TAG, ME, KIND_UPDATE, 2): (10, "m")}
    remembered = {ME: Remembered("put:90", 1, 1)}
    assert heads_to_read(listing, TAG, [ME], remembered, {ME: 1}, ME) == [ME]
    assert heads_to_read(listing, TAG, [ME], remembered, {ME: 2}, ME) == []


def test_puts_into_a_relay_that_showed_the_entries_before_count_as_healed() -> None:
    """A wiped author folder: the relay's head is gone, but this device saw it (``shown``) at seq 5."""
    head = Head(seq=5, first=4, digest=b"d" * 32, n=3)
    held = {(KIND_UPDATE, 4): [10], (KIND_UPDATE, 5): [10]}
    fresh = plan_author(TAG, OTHER, head, held, {}, None)
    assert fresh.put_head and len(fresh.puts) == 2 and fresh.healed == []  # carried there for the first time
    wiped = plan_author(TAG, OTHER, head, held, {}, None, shown=(5, 3))
    assert wiped.healed == [entry_key(TAG, OTHER, KIND_UPDATE, 4), entry_key(TAG, OTHER, KIND_UPDATE, 5)]
