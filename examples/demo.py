"""The main job, shared by the folder and S3 examples: two devices, real memories, one mailbox.

Device A (a laptop) creates a vault and imports the LoCoMo corpus (``../shared/data/locomo``: 5,882 turns of
real conversation, each one memory). It publishes the vault to a mailbox; device B (a phone) joins with the
passphrase and pulls everything. Both then edit concurrently: the same memory's content on both sides (a
conflict), different fields of one memory (merged), a delete on A against an edit on B (a conflict), new
memories on both, a level-0 memory on A (stays home). After syncing, the conflicts surface identically on both
devices; A resolves them, and both converge. A report gives counts, bytes moved and times, and checks that
nothing readable reached the mailbox.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from crdtsync import Vault
from crdtsync.mailbox.relay import SyncReport

#: Throwaway vaults in temporary folders keep their keys in their 0600 files, never in the user's OS keyring
#: (keyring's own setting; child processes inherit it).
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")

console = Console(highlight=False)
PASSPHRASE = os.environ.get("CRDTSYNC_PASSPHRASE", "demo: correct horse battery staple")
LOCOMO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo"


class Tally:
    """Bytes and objects moved, summed over syncs, per device."""

    def __init__(self) -> None:
        self.up = {"A": 0, "B": 0}
        self.down = {"A": 0, "B": 0}
        self.ops = {"A": 0, "B": 0}

    def add(self, device: str, reports: list[SyncReport]) -> list[SyncReport]:
        for r in reports:
            self.up[device] += r.bytes_up
            self.down[device] += r.bytes_down
            self.ops[device] += r.operations
            for e in r.errors:
                console.print(f"[red]{device} sync error[/] [{e['code']}] {e['message']}")
        return reports


def _timed(label: str, times: dict[str, float]) -> Callable[[Callable[[], Any]], Any]:
    def run(fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = fn()
        times[label] = time.perf_counter() - started
        return result

    return run


def _tail(text: str, width: int) -> str:
    """The end of ``text``, where edits to these memories go, marked with ``...`` when it is cut."""
    return text if len(text) <= width else "..." + text[-width:]


def _conflict_table(title: str, vault: Vault) -> Table:
    names = {device_id: entry.get("name", device_id) for device_id, entry in vault.devices().items()}
    table = Table(title=title)
    for column in ("memory", "field", "candidates (device: value)"):
        table.add_column(column, overflow="fold")
    for c in vault.conflicts():
        shown = "\n".join(f"{names.get(cand.device, cand.device)}: {_tail(str(cand.value), 60)}"
                           for cand in c.candidates)
        table.add_row(c.memory_id[:13] + "...", c.field, shown)
    return table


def _mailbox_files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def run_demo(workdir: Path, relay_url: str, *, mailbox_folder: Path | None = None,
             locomo: Path = LOCOMO) -> dict[str, Any]:
    """Run the two-device scenario with the mailbox at ``relay_url``; vault folders go under ``workdir``.
    ``mailbox_folder`` (for a folder mailbox) is scanned for plaintext at the end. Returns the report."""
    os.environ.setdefault("CRDTSYNC_STATE_DIR", str(workdir / "state"))  # the demo devices' incarnation tokens
    times: dict[str, float] = {}
    tally = Tally()
    laptop, phone = workdir / "laptop", workdir / "phone"
    if not locomo.exists():
        raise SystemExit(f"the LoCoMo corpus is not at {locomo}; run from the project checkout beside shared/")

    console.rule("1. device A creates a vault and imports LoCoMo")
    Vault.init(laptop, name="my memories", device_name="laptop", passphrase=PASSPHRASE)
    with Vault.open(laptop, agent="demo-A") as a:
        report = _timed("import", times)(lambda: a.import_path(locomo))
        console.print(f"imported {report.added} memories in {times['import']:.2f} s "
                      f"({len(report.problems)} problems)")
        private = a.add("A level-0 note: the spare key is under the blue pot", level=0, tags=["private"])
        a.add_relay("shared", relay_url)
        tally.add("A", _timed("first push", times)(lambda: a.sync()))
        console.print(f"published to {relay_url}: {tally.up['A']:,} bytes in {times['first push']:.2f} s")

    console.rule("2. device B joins with the passphrase")
    _timed("join", times)(lambda: Vault.join(phone, relay_url, passphrase=PASSPHRASE, device_name="phone"))
    with Vault.open(phone) as b:
        console.print(f"B holds {len(b.list())} memories after joining in {times['join']:.2f} s")

    console.rule("3. concurrent edits on both devices")
    with Vault.open(laptop, agent="demo-A") as a, Vault.open(phone, agent="demo-B") as b:
        picks = [m.id for m in a.list() if m.level == 1][:5]
        both, fields, deleted = picks[0], picks[1], picks[2]
        a.update(both, content=a.get(both).content + " (A: checked, it was in May)")
        b.update(both, content=b.get(both).content + " (B: no, it was in June)")
        a.update(fields, category="family")
        b.update(fields, add_tags=["important"])
        a.delete(deleted)
        b.update(deleted, content=b.get(deleted).content + " (B still needs this)")
        new_a = a.add("Caroline starts a pottery class on Tuesdays", category="Caroline")
        new_b = b.add("Melanie prefers hiking over camping", category="Melanie")

        console.rule("4. sync: the edits merge, the real disagreements surface")
        tally.add("A", a.sync())
        tally.add("B", _timed("sync B", times)(lambda: b.sync()))
        tally.add("A", _timed("sync A", times)(lambda: a.sync()))
        console.print(_conflict_table("conflicts on A", a))
        console.print(_conflict_table("conflicts on B", b))
        surfaced = len(a.conflicts())
        same_conflicts = [c.to_json() for c in a.conflicts()] == [c.to_json() for c in b.conflicts()]
        merged = b.get(fields)
        console.print(f"merged without conflict on B: category={merged.category!r}, tags={sorted(merged.tags)}")

        console.rule("5. A resolves, both converge")
        for c in a.conflicts():
            keep = c.candidates[-1].value if c.field == "content" else False
            a.resolve(c.memory_id, c.field, keep)
        tally.add("A", a.sync())
        tally.add("B", b.sync())
        snapshot_a = [m.to_json() for m in a.list(include_deleted=True) if m.level == 1]
        snapshot_b = [m.to_json() for m in b.list(include_deleted=True)]
        converged = snapshot_a == snapshot_b and not a.conflicts() and not b.conflicts()
        result = {
            "memories_A": len(a.list()),
            "memories_B": len(b.list()),
            "conflicts_surfaced": surfaced,
            "same_conflicts_on_both": same_conflicts,
            "converged": converged,
            "new_memories_crossed": b.get(new_a.id).content == new_a.content and a.get(new_b.id).id == new_b.id,
            "level0_stayed_home": not any(m.id == private.id for m in b.list(include_deleted=True)),
            "bytes_up": dict(tally.up),
            "bytes_down": dict(tally.down),
            "object_operations": dict(tally.ops),
            "seconds": {k: round(v, 3) for k, v in times.items()},
        }
    if mailbox_folder is not None:
        needles = [b"spare key", b"pottery class", b"Caroline", b"important", b"laptop", b"phone"]
        result["plaintext_in_mailbox"] = sorted(
            {n.decode() for f in _mailbox_files(mailbox_folder) for n in needles if n in f.read_bytes()}
        )
    return result


def print_report(result: dict[str, Any]) -> None:
    """Print the demo's report as a table."""
    table = Table(title="report")
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)
