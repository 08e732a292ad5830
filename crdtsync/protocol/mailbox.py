"""The mailbox layout of protocol v2 and its planner. Pure: names, listings and plans; the driver
(:mod:`crdtsync.mailbox.sync`) does the gets, puts and deletes.

Layout under a mailbox URL (README.md "Mailbox layout" is the spec)::

    <prefix>/crdtsync-v1/<vault_tag>/
      vault.json                           public header (crdtsync.crypto.header)
      a/<author>/log/<seq:016x>[.<part>]   the author's log entry seq; parts .1, .2... continue it
      a/<author>/snap/<seq:016x>[.<part>]  the author's snapshot as of seq
      a/<author>/head                      the author's newest head (crdtsync.protocol.messages.Head)
      d/<device_id>/...                    protocol v1, read only (crdtsync.mailbox.v1)

Every object under ``a/<author>/`` is the author's own, sealed and signed by it; any device writes it there byte
for byte as it holds it (carrying it from elsewhere, healing), so whoever writes an object writes the same bytes.

The planner answers, from a relay's **listing** (key -> (size in bytes, modification mark)) and what this
device holds, the questions of one sync: which heads to read (:func:`heads_to_read`), which entries to fetch
for an author and in which order (:func:`entries_to_fetch`), what to put and delete so the relay holds what
the author's newest head says it should (:func:`plan_author`), and whether to read or put ``vault.json``
(:func:`header_action`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from crdtsync.crypto.envelope import KIND_SNAPSHOT, KIND_UPDATE
from crdtsync.protocol.messages import Head

ROOT = "crdtsync-v1"
HEADER_NAME = "vault.json"
#: The folder of the author logs inside a vault's folder.
AUTHORS = "a"
#: A relay's listing: key -> (size in bytes, modification mark: an ETag or a time, changed by every write).
Listing = Mapping[str, tuple[int, str]]


def vault_prefix(tag: str) -> str:
    """The folder of one vault (``tag``: :func:`crdtsync.crypto.keys.vault_tag`) inside a mailbox."""
    return f"{ROOT}/{tag}"


def header_key(tag: str) -> str:
    """Where the public vault header lives."""
    return f"{vault_prefix(tag)}/{HEADER_NAME}"


def author_key(tag: str, author: str, name: str) -> str:
    """The key of object ``name`` (``head``, ``log/<seq>``...) of ``author`` in the vault ``tag``."""
    return f"{vault_prefix(tag)}/{AUTHORS}/{author}/{name}"


def part_key(key: str, part: int) -> str:
    """The object holding part ``part`` of the body at ``key``: ``key`` itself for part 0, then ``key.1``..."""
    return key if part == 0 else f"{key}.{part}"


def entry_key(tag: str, author: str, kind: int, seq: int, part: int = 0) -> str:
    """The key of part ``part`` of ``author``'s log (kind UPDATE) or snapshot (kind SNAPSHOT) entry ``seq``."""
    folder = "snap" if kind == KIND_SNAPSHOT else "log"
    return part_key(author_key(tag, author, f"{folder}/{seq:016x}"), part)


def parse_seq(name: str) -> int | None:
    """The sequence number of a log or snapshot object's name (16 lowercase hex digits, the part of a
    continuation ``<seq>.<part>`` included), or None for anything else."""
    base, dot, part = name.partition(".")
    if len(base) == 16 and all(c in "0123456789abcdef" for c in base) and (not dot or part.isdigit()):
        return int(base, 16)
    return None


def token(listed: tuple[int, str]) -> str:
    """A listed object's identity between syncs: its size and modification mark."""
    return f"{listed[0]}:{listed[1]}"


def listed_authors(listing: Listing, tag: str) -> set[str]:
    """The names of the author folders that hold a head in ``listing`` (not yet checked to be device ids)."""
    prefix = f"{vault_prefix(tag)}/{AUTHORS}/"
    return {key[len(prefix):-len("/head")] for key in listing
            if key.startswith(prefix) and key.endswith("/head") and key.count("/", len(prefix)) == 1}


@dataclass(frozen=True)
class Remembered:
    """What this device remembers of one author's head in one relay: the listing ``token`` it had when it was
    read (``put:<size>`` after this device put its own head there), and its ``(seq, n)``."""

    token: str
    seq: int
    n: int


def newest_listed(listing: Listing, tag: str, author: str) -> int:
    """The highest seq of a log or snapshot entry of ``author`` that ``listing`` shows (0: none)."""
    prefix = author_key(tag, author, "")
    newest = 0
    for key in listing:
        if key.startswith(prefix):
            folder, _, name = key[len(prefix):].partition("/")
            number = parse_seq(name) if folder in ("log", "snap") else None
            newest = max(newest, number or 0)
    return newest


def heads_to_read(listing: Listing, tag: str, authors: Iterable[str], remembered: Mapping[str, Remembered],
                  applied: Mapping[str, int], me: str) -> list[str]:
    """Which of ``authors``' heads in the relay to fetch: those that changed since this device read them (another
    token), and those of authors whose entries past what this device applied the head or the listing shows (a
    newer head of this device's own means it was restored from a backup). A head this device put itself and that
    is listed at the size it put is taken as unchanged (its mark is unknown until listed)."""
    out = []
    for author in sorted(authors):
        listed = listing.get(author_key(tag, author, "head"))
        if listed is None:
            continue
        known = remembered.get(author)
        unchanged = known is not None and (
            known.token == token(listed) or (author == me and known.token == f"put:{listed[0]}"))
        done = applied.get(author, 0)
        if not unchanged or known is None or known.seq > done or newest_listed(listing, tag, author) > done:
            out.append(author)
    return out


def entries_to_fetch(applied: int, head: Head) -> list[tuple[int, int]]:
    """The entries ``(kind, seq)`` to fetch, in order, to bring an author applied up to ``applied`` to ``head``:
    the logs past ``applied`` when the head still keeps them, else its snapshot and the logs past it."""
    if applied >= head.seq:
        return []
    if applied + 1 < head.first and head.snap:
        return [(KIND_SNAPSHOT, head.snap)] + [(KIND_UPDATE, seq) for seq in range(head.snap + 1, head.seq + 1)]
    return [(KIND_UPDATE, seq) for seq in range(applied + 1, head.seq + 1)]


def listed_parts(listing: Listing, key: str) -> int:
    """How many parts of the entry at ``key`` the listing shows in a row from part 0 (0: not even the first)."""
    count = 0
    while part_key(key, count) in listing:
        count += 1
    return count


@dataclass
class AuthorPlan:
    """What to do in one relay for one author: ``puts`` (key, kind, seq, part index) of entries this device holds
    and the relay lacks (or holds at another size), then the head when ``put_head``; ``deletes``: keys the
    author's head no longer keeps; ``healed``: the puts of objects the relay's own head said it held."""

    puts: list[tuple[str, int, int, int]] = field(default_factory=list)
    put_head: bool = False
    deletes: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)


def plan_author(tag: str, author: str, head: Head, held: Mapping[tuple[int, int], list[int]], listing: Listing,
                theirs: tuple[int, int] | None, shown: tuple[int, int] | None = None) -> AuthorPlan:
    """What relay ``listing`` needs of ``author`` so that it holds what ``head`` (the newest head of the author
    this device verified) says: its logs from ``head.first`` and its snapshot, where this device ``held`` them
    (``(kind, seq) -> [size of each part]``), and the head itself unless the relay's (``theirs``: its ``(seq,
    n)``, None when it has none) is as new. Continuations are put before the part at the key, so that a reader
    who finds part 0 finds the rest. When the relay's head is not newer than ``head``, logs below ``head.first``
    and snapshots other than ``head.snap`` are deleted. A put is counted as healed when the relay's head, now
    or as it was ``shown`` at an earlier sync, says the relay held that entry."""
    plan = AuthorPlan()
    wanted = [(KIND_UPDATE, seq) for seq in range(head.first, head.seq + 1)]
    if head.snap:
        wanted.insert(0, (KIND_SNAPSHOT, head.snap))
    for kind, seq in wanted:
        sizes = held.get((kind, seq))
        if sizes is None:
            continue
        keys = [entry_key(tag, author, kind, seq, part) for part in range(len(sizes))]
        if all(listing.get(key, (-1, ""))[0] == size for key, size in zip(keys, sizes, strict=True)):
            continue
        for part in reversed(range(len(sizes))):
            plan.puts.append((keys[part], kind, seq, part))
            if max(theirs or (0, 0), shown or (0, 0))[0] >= seq:
                plan.healed.append(keys[part])
    ours = (head.seq, head.n)
    plan.put_head = theirs is None or theirs < ours
    if theirs is not None and theirs > ours:
        return plan  # the relay holds a newer head than this device: what it keeps is not ours to judge
    prefix = author_key(tag, author, "")
    for key in sorted(listing):
        if not key.startswith(prefix):
            continue
        folder, _, name = key[len(prefix):].partition("/")
        number = parse_seq(name)
        if number is None or "/" in name:
            continue
        if (folder == "log" and number < head.first) or (folder == "snap" and number != head.snap):
            plan.deletes.append(key)
    return plan


def header_action(listing: Listing, tag: str, confirmed: str | None, header_digest: str) -> str:
    """What to do with ``vault.json``: ``"put"`` when the relay lacks it, ``"skip"`` when this device confirmed
    this header (``header_digest``) at the same listing token (``confirmed``: what :func:`header_confirmation`
    gave), else ``"read"`` (then put this vault's back unless the one read is it)."""
    listed = listing.get(header_key(tag))
    if listed is None:
        return "put"
    return "skip" if confirmed == header_confirmation(header_digest, listed) else "read"


def header_confirmation(header_digest: str, listed: tuple[int, str]) -> str:
    """The record that this device checked header ``header_digest`` as listed at ``listed``."""
    return f"{header_digest}/{token(listed)}"
