"""The author-log rules of protocol v2. Pure: no IO, no clock, no randomness.

Every device's writes form one log (seq 1, 2, ...; each body chained to the one before by ``prev``), the same
across every relay and peer. These rules decide, from what a device knows of an author and what it is shown,
what to do: which entries another side lacks (:func:`plan_sends`), whether an opened entry follows the author's
chain (:func:`check_entry`), whether a digest someone else reports contradicts ours (:func:`contradicts`),
and how far an author's log may be compacted (:func:`compaction_floor`).
"""

from __future__ import annotations

from dataclasses import dataclass

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.errors import MailboxError
from crdtsync.protocol.messages import Batch, Summary


@dataclass(frozen=True)
class Send:
    """One entry to send: ``author``, ``kind`` (UPDATE or SNAPSHOT) and ``seq``."""

    author: str
    kind: int
    seq: int


def plan_sends(ours: Summary, theirs: Summary) -> list[Send]:
    """The entries we hold (``ours``) that the other side (``theirs``) lacks, per author in the order they must
    be applied: the logs past its seq when we still hold them, else our snapshot and the logs past it. An
    author we cannot bring it forward on (we hold neither the logs it needs nor a snapshot past its seq) is
    left out."""
    sends: list[Send] = []
    for author, have in sorted(ours.items()):
        held = theirs.get(author)
        start = (held.seq if held is not None else 0) + 1
        if have.seq < start:
            continue
        if have.first <= start:
            sends.extend(Send(author, KIND_UPDATE, seq) for seq in range(start, have.seq + 1))
        elif have.snap >= start - 1 and have.snap and have.first <= have.snap + 1:
            sends.append(Send(author, KIND_SNAPSHOT, have.snap))
            sends.extend(Send(author, KIND_UPDATE, seq) for seq in range(have.snap + 1, have.seq + 1))
    return sends


def fork_error(author: str, seq: int, where: str) -> MailboxError:
    """The error (``MAILBOX_FORK``) for two different signed histories of ``author`` met at ``seq``."""
    return MailboxError(
        f"device {author} has two different signed histories: what {where} shows of its log {seq} differs from "
        "what this device holds. Its later entries are refused; check that device (restored from an old backup, "
        "or compromised?)", code="MAILBOX_FORK")


def check_entry(author: str, applied: int, chain: bytes, kind: int, batch: Batch, where: str) -> None:
    """Check an opened entry of ``author`` against its chain: this device applied its log up to ``applied``,
    whose body digest is ``chain`` (empty at 0). A log entry must be ``applied + 1`` and link to ``chain``; a
    snapshot must be past ``applied`` and, when it is as of ``applied``, link to ``chain`` too (a snapshot
    further on cannot be checked yet: its ``prev`` becomes the chain).

    Raises:
        MailboxError: ``MAILBOX_FORK`` (the entry does not follow the history this device applied),
            ``MAILBOX_OBJECT_CORRUPT`` (an entry out of order: not what was asked for).
    """
    if kind == KIND_UPDATE:
        if batch.seq != applied + 1:
            raise MailboxError(f"{where}: log {batch.seq} of device {author} came where {applied + 1} was due",
                               code="MAILBOX_OBJECT_CORRUPT")
        if batch.prev != chain:
            raise fork_error(author, applied, where)
    elif batch.seq < applied:
        raise MailboxError(f"{where}: a snapshot of device {author} as of {batch.seq} came after its log "
                           f"{applied}", code="MAILBOX_OBJECT_CORRUPT")
    elif batch.seq == applied and applied and batch.prev != chain:
        raise fork_error(author, applied, where)


def contradicts(known: dict[int, bytes], seq: int, digest: bytes) -> bool:
    """Whether a report that ``author``'s log ``seq`` has body digest ``digest`` contradicts ``known`` (seq ->
    digest this device holds of that author). An unknown seq or an empty digest (a v1 ack) contradicts
    nothing."""
    ours = known.get(seq)
    return bool(digest) and ours is not None and ours != digest


def compaction_floor(snap: int, acks: dict[str, int], readers: set[str]) -> int:
    """The highest log seq of an author that may be dropped: covered by its snapshot ``snap`` and applied by
    every device in ``readers`` (``acks``: device -> the seq of the author's log it acknowledged). 0 when
    nothing may be dropped."""
    if not snap:
        return 0
    return min([snap] + [acks.get(device, 0) for device in readers])

