"""The ``crdtsync`` command line (typer + rich).

Every command takes ``--vault PATH`` (else env ``CRDTSYNC_HOME``, else the platformdirs data folder); every
command that prints data takes ``--json`` and then prints pure JSON on stdout, the same whether the flag comes
after the command name or before it (``crdtsync --json list``). Expected failures print
``error [CODE]: message`` on stderr (and ``{"error": {"code", "message"}}`` on stdout with ``--json``) and exit
with the status of :func:`crdtsync.errors.exit_status`; no traceback reaches the user.
"""

from __future__ import annotations

import io
import json
import os
import select
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, NoReturn

import platformdirs
import typer
from rich import box, filesize
from rich.cells import cell_len
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from crdtsync._fs import atomic_write
from crdtsync.crypto.envelope import VERSION as ENVELOPE_VERSION
from crdtsync.errors import (
    CrdtsyncError,
    CryptoError,
    ImportFormatError,
    InvalidInputError,
    VaultError,
    exit_status,
)
from crdtsync.model.records import Conflict, Memory
from crdtsync.protocol.mailbox import ROOT as MAILBOX_ROOT
from crdtsync.protocol.messages import PROTOCOL_VERSION
from crdtsync.store.db import STORE_FORMAT
from crdtsync.store.keystore import BACKEND_NAMES, KEYS_NAME, keys_location
from crdtsync.vault import Vault

#: Exit status when whoever reads stdout closed it early (``crdtsync export | head``): 128 + SIGPIPE, what a shell
#: reports for ``cat`` in the same place. Nothing is printed: the reader chose to stop.
EXIT_STDOUT_CLOSED = 141


class _Commands(TyperGroup):
    """The command group; a command whose stdout was closed under it exits :data:`EXIT_STDOUT_CLOSED` quietly
    (click would exit 1, the status of an internal error here). SIGPIPE keeps Python's default (ignored), so
    a closed socket to the integration worker or a store stays an error the code handles."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            raise typer.Exit(EXIT_STDOUT_CLOSED) from None


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error or a hang-up on it)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


app = typer.Typer(
    cls=_Commands,
    name="crdtsync",
    help="Keep your AI-assistant memories in sync across your devices, end-to-end encrypted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # help paragraphs reflow to the terminal's width
)
# markup=False: memory text, paths and messages are printed literally, whatever brackets they hold; styles
# are applied with rich.text.Text instead.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

VaultOpt = Annotated[
    Path | None,
    typer.Option("--vault", help="Vault folder (default: $CRDTSYNC_HOME, else the user data folder).",
                 show_default=False),
]


def _json_flag(ctx: typer.Context, value: bool) -> bool:
    """A command's ``--json``: on when given after the command name or before it (``crdtsync --json list``, the
    root's :data:`GlobalJsonOpt`), so both spellings print the same. Click parses the root's options before it
    makes the command's context, so the root's value is known here."""
    return value or bool(ctx.find_root().params.get("as_json"))


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.", callback=_json_flag)]
#: The root's ``--json`` (before the command name): every command's :data:`JsonOpt` takes it, and errors of a
#: command without one (``export``) print the JSON error object.
GlobalJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, as every command's --json does.")]
_ID_HELP = "A memory id, or its first characters (at least 4) when they start no other id."
IdArg = Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP, show_default=False)]
#: ``list`` and ``search`` filters.
CategoryFilter = Annotated[str | None, typer.Option("--category", "-c", help="Only this category.")]
TagFilter = Annotated[list[str] | None, typer.Option("--tag", "-t", help="Only memories with this tag "
                                                     "(repeatable: all of them).")]
_state: dict[str, Any] = {"vault": None, "json": False, "agent": None}


def default_vault_path() -> Path:
    """``$CRDTSYNC_HOME`` when set, else ``<user data dir>/crdtsync/vault`` (platformdirs)."""
    home = os.environ.get("CRDTSYNC_HOME")
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir("crdtsync")) / "vault"


def _vault_path(vault: Path | None) -> Path:
    return vault or _state["vault"] or default_vault_path()


def _fail(error: CrdtsyncError, as_json: bool) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": error.code, "message": error.message}}) + "\n")
    err.print(Text.assemble(("error", "bold red"), f" [{error.code}]: {error.message}"))
    raise typer.Exit(exit_status(error))


@contextmanager
def _guard(as_json: bool = False) -> Iterator[None]:
    try:
        yield
    except CrdtsyncError as exc:
        _fail(exc, as_json or _state["json"])
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            raise  # our reader stopped (see _Commands): not a fault of the vault or its files
        _fail(VaultError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), code="IO_ERROR"),
              as_json or _state["json"])
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


@contextmanager
def _open(vault: Path | None, as_json: bool = False) -> Iterator[Vault]:
    with _guard(as_json), Vault.open(_vault_path(vault), agent=_state["agent"]) as opened:
        yield opened


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=None) + "\n")


def _when(stamp: str | None, *, seconds: bool = True) -> str:
    """An ISO-8601 UTC time stamp as this machine's local time (``2026-11-22 09:32:43``, or to the minute), for
    tables; anything that does not parse is shown as it is."""
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))
    except ValueError:
        return stamp


def sync_summary(report: Mapping[str, Any]) -> str:
    """One line of what a sync moved, from :meth:`crdtsync.mailbox.relay.SyncReport.to_json` (also the detail of
    a sync's audit row)."""
    up, down = report.get("up", {}), report.get("down", {})
    return (f"up {_count(up.get('objects', 0), 'object')} ({filesize.decimal(up.get('bytes', 0))}), "
            f"down {_count(down.get('objects', 0), 'object')} ({filesize.decimal(down.get('bytes', 0))}), "
            f"{_count(report.get('memories_changed', 0), 'memory', 'memories')} changed, "
            f"{_count(report.get('conflicts', 0), 'conflict')}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


#: Characters a terminal may act on, shown escaped in text output: C0 controls but tab and newline, DEL, C1
#: controls, and the bidirectional overrides and isolates that can make text read other than it is ("Trojan
#: Source", CVE-2021-42574). Memories, tags, device names and agents come from other devices and imports: an
#: ``ESC`` in them would otherwise reach the terminal (clear the screen, set the title, fake output).
_UNSAFE = {c: f"\\x{c:02x}" for c in [*range(0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]} | {
    c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def _plain(value: object) -> str:
    """``value`` as text safe to print to a terminal (see :data:`_UNSAFE`); JSON output needs none of this."""
    return str(value).translate(_UNSAFE)


#: Terminal columns from which ``list`` and ``search`` add a column: (width, column). Below the first only the
#: id and the content are shown (a phone in portrait).
_WIDE_COLUMNS = ((90, "category"), (110, "tags"), (130, "updated"))


def _memory_table(memories: list[Memory]) -> Table:
    """One line per memory, however narrow the terminal (a phone's): the id whole (to copy into ``show``,
    ``edit``, ``rm``), the start of the content (a conflict or level 0 marked before it), then, as the width
    allows (:data:`_WIDE_COLUMNS`), category, tags and the update time, cut with an ellipsis (``show`` has every
    field whole)."""
    extra = [column for width, column in _WIDE_COLUMNS if out.width >= width]
    contents: list[Text] = []
    cells: list[list[str]] = []  # id, then the extra columns
    for m in memories:
        content = Text()
        if m.conflicts:
            content.append("(conflict) ", style="red")
        if m.level == 0:
            content.append("(level 0) ", style="dim")
        content.append(_plain(" ".join(m.content[:300].split())))
        contents.append(content)
        by_column = {"category": _plain(m.category or ""), "tags": _plain(", ".join(sorted(m.tags))),
                     "updated": _when(m.updated, seconds=False)}
        cells.append([_plain(m.id), *(by_column[column] for column in extra)])
    # Cells that may not wrap count whole toward a column's minimum width: fix each column's width so that the
    # content column takes what is left and cuts its text.
    widths = [max(len(column), *(cell_len(row[i]) for row in cells)) for i, column in enumerate(extra, 1)]
    widths = [min(width, 16) if column != "updated" else width for width, column in zip(widths, extra, strict=True)]
    id_width = max(cell_len(row[0]) for row in cells)
    gaps = 2 * (1 + len(widths))  # between two columns: the left one's right padding and the box's divider
    content_width = max(10, out.width - id_width - sum(widths) - gaps)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("id", overflow="fold", width=id_width)  # whole even when longer than a UUID (a peer's)
    table.add_column("content", no_wrap=True, overflow="ellipsis", max_width=content_width)
    for column, width in zip(extra, widths, strict=True):
        table.add_column(column, no_wrap=True, overflow="ellipsis", width=width)
    for row, content in zip(cells, contents, strict=True):
        table.add_row(row[0], content, *row[1:])
    return table


def _print_memories(memories: list[Memory], as_json: bool) -> None:
    if as_json:
        _emit_json([m.to_json() for m in memories])
    elif not memories:
        err.print("no memories")
    else:
        out.print(_memory_table(memories))


#: How many characters of a device id a table shows beside a name that two devices share (48 bits, as a short
#: git hash tells commits apart).
SHORT_ID_CHARS = 12


def _device(device: str, names: Mapping[str, str], *, short: bool = False) -> str:
    """A device as text output shows it: ``name (id)`` when its name is known, else its id; ``short`` (a table
    cell): the name alone when no other known device has it, else the name and the id's first
    :data:`SHORT_ID_CHARS` characters."""
    name = names.get(device)
    if not name:
        return device[:SHORT_ID_CHARS] if short else device
    if short and sum(1 for other in names.values() if other == name) == 1:
        return name
    return f"{name} ({device[:SHORT_ID_CHARS] if short else device})"


def _print_memory(memory: Memory, as_json: bool, v: Vault | None = None) -> None:
    """Print ``memory``: its JSON object, or one ``field: value`` line per field with devices named, and, when
    ``v`` (the open vault) is given and the memory has conflicts, their candidates as ``conflicts`` shows them."""
    if as_json:
        _emit_json(memory.to_json())
        return
    names = v.device_names() if v is not None else {}
    for key, value in memory.to_json().items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        elif key in ("created_by", "updated_by") and value:
            value = _device(value, names)
        out.print(Text.assemble((key, "bold"), f": {_plain(value) if value is not None else ''}"))
    found = v.conflicts(memory.id) if v is not None and memory.conflicts else []
    if found:
        field = found[0].field if len(found) == 1 else "F"
        out.print(Text(f"\nconflicting values (keep one: crdtsync resolve {memory.id} --field {field} --pick N)",
                       style="yellow"))
        out.print(_conflict_rows(found, names))


def _passphrase(confirm: bool, *, variable: str = "CRDTSYNC_PASSPHRASE", label: str = "Vault passphrase") -> str:
    """The passphrase from the environment ``variable``, else asked on the terminal (twice with ``confirm``).
    ``PASSPHRASE_REQUIRED`` when neither is possible."""
    env = os.environ.get(variable)
    if env:
        return env
    if not sys.stdin.isatty():
        raise CryptoError(f"no {label.lower()}: set {variable} or run in a terminal", code="PASSPHRASE_REQUIRED")
    return str(typer.prompt(label, hide_input=True, confirmation_prompt=confirm))


def _print_version(asked: bool) -> None:
    """``--version``: this crdtsync, the pycrdt it runs on and the formats it writes, for bug reports."""
    if not asked:
        return
    out.print(f"crdtsync {_installed('crdtsync')} (pycrdt {_installed('pycrdt')}, envelope v{ENVELOPE_VERSION}, "
              f"mailbox {MAILBOX_ROOT} protocol v{PROTOCOL_VERSION}, store format {STORE_FORMAT})")
    raise typer.Exit()


def _installed(package: str) -> str:
    """The installed version of ``package``, or "(not installed)" (run from a source tree)."""
    try:
        return package_version(package)
    except PackageNotFoundError:
        return "(not installed)"


@app.callback()
def _root(
    vault: VaultOpt = None,
    as_json: GlobalJsonOpt = False,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="Label writes with the agent making them, e.g. claude-code "
                     "(default: $CRDTSYNC_AGENT); shown with conflict candidates."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Keep your AI-assistant memories in sync across your devices, end-to-end encrypted."""
    _state["vault"] = vault
    _state["json"] = as_json
    _state["agent"] = agent


@app.command()
def init(
    vault: VaultOpt = None,
    name: Annotated[str, typer.Option(help="Name of the vault (stays encrypted).")] = "memories",
    device_name: Annotated[str | None, typer.Option(help="Name of this device (default: host name).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a vault on this device.

    Asks for the passphrase that admits your other devices (or reads CRDTSYNC_PASSPHRASE)."""
    path = _vault_path(vault)
    with _guard(as_json):
        folder = Vault.init(path, name=name, device_name=device_name, passphrase=_passphrase(confirm=True))
        with Vault.open(folder) as opened:
            device = opened.device_id
    if as_json:
        _emit_json({"vault": str(folder), "device_id": device})
    else:
        out.print(f"created vault in {folder} (device {device})")


@app.command()
def add(
    text: Annotated[str, typer.Argument(help="The memory's content; - reads it from standard input.")],
    category: Annotated[str | None, typer.Option("--category", "-c")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A tag (repeatable).")] = None,
    level: Annotated[int, typer.Option(help="1: all devices; 0: this device only.")] = 1,
    source: Annotated[str | None, typer.Option()] = None,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a memory."""
    with _open(vault, as_json) as v:
        memory = v.add(_text_or_stdin(text), category=category, tags=tag or (), level=level, source=source)
    if as_json:
        _print_memory(memory, True)
    else:
        out.print(memory.id)


@app.command()
def edit(
    memory_id: IdArg,
    content: Annotated[str | None, typer.Option(help="New content; - reads it from standard input.")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Add a tag (repeatable).")] = None,
    untag: Annotated[list[str] | None, typer.Option("--untag", help="Remove a tag (repeatable).")] = None,
    level: Annotated[int | None, typer.Option(help="Move to level 0 (this device only) or 1.")] = None,
    source: Annotated[str | None, typer.Option()] = None,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Edit a memory's content, category, tags, level or source."""
    fields: dict[str, Any] = {}
    with _open(vault, as_json) as v:
        for key, value in (("content", None if content is None else _text_or_stdin(content)),
                           ("category", category), ("source", source), ("level", level)):
            if value is not None:
                fields[key] = value
        if tag:
            fields["add_tags"] = tag
        if untag:
            fields["remove_tags"] = untag
        if not fields:
            raise_invalid("nothing to change: give --content, --category, --tag, --untag, --level or --source")
        memory_id = v.match_id(memory_id)
        before = v.get(memory_id)
        memory = v.update(memory_id, **fields)
        if level == 0 and before.level == 1:
            err.print(Text("moved to level 0: your other devices drop it at their next sync (what they already "
                           "received stays in their history until it is compacted)", style="yellow"))
        settled = [f for f in before.conflicts if f in fields or f == "deleted"]  # every edit rewrites `deleted`
        if settled:
            err.print(Text(f"this edit settled the conflict on {', '.join(settled)}: its value replaces every "
                           "candidate (`crdtsync conflicts` showed them)", style="yellow"))
        _print_memory(memory, as_json, v)


def _text_or_stdin(text: str) -> str:
    """``text``, or for ``-`` all of standard input (UTF-8; one trailing newline dropped, as ``echo`` and a
    heredoc add one). Raises InvalidInputError when standard input is not UTF-8."""
    if text != "-":
        return text
    try:
        data = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"standard input is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return data[:-1] if data.endswith("\n") else data


def raise_invalid(message: str) -> NoReturn:
    """Raise :class:`InvalidInputError` (used inside a guarded block so it is rendered like any error)."""
    raise InvalidInputError(message)


@app.command()
def rm(memory_id: IdArg, vault: VaultOpt = None,
       as_json: JsonOpt = False) -> None:
    """Delete a memory (restore undoes it)."""
    with _open(vault, as_json) as v:
        memory = v.delete(v.match_id(memory_id))
    _print_memory(memory, True) if as_json else out.print(f"deleted {memory.id}")


@app.command()
def restore(memory_id: IdArg, vault: VaultOpt = None,
            as_json: JsonOpt = False) -> None:
    """Undo the delete of a memory."""
    with _open(vault, as_json) as v:
        memory = v.restore(v.match_id(memory_id))
    _print_memory(memory, True) if as_json else out.print(f"restored {memory.id}")


@app.command()
def show(memory_id: IdArg, vault: VaultOpt = None,
         as_json: JsonOpt = False) -> None:
    """Show one memory."""
    with _open(vault, as_json) as v:
        _print_memory(v.get(v.match_id(memory_id)), as_json, v)


@app.command("list")
def list_(
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many (newest first).")] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include deleted memories.")] = False,
    category: CategoryFilter = None,
    tag: TagFilter = None,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List memories, newest first (every live memory unless --limit, --category or --tag)."""
    with _open(vault, as_json) as v:
        memories = v.list(limit=limit, include_deleted=deleted, category=category, tags=tag or ())
    _print_memories(memories, as_json)


@app.command()
def search(
    query: str,
    limit: Annotated[int, typer.Option(min=1, help="At most this many results.")] = 50,
    category: CategoryFilter = None,
    tag: TagFilter = None,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Full-text search over content, category and tags.

    Every word must match, the last also as a prefix; emoji and symbols match as literal text. The candidates
    of a content or category conflict are searched too."""
    with _open(vault, as_json) as v:
        memories = v.search(query, limit=limit, category=category, tags=tag or ())
    _print_memories(memories, as_json)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


@contextmanager
def _spooled(path: Path) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for a file or a folder (or a path that does not exist, which the importer reports); for
    ``-`` (standard input) or a pipe or device (``<(command)``, a FIFO, ``/dev/zero``), ``(a copy of it, the name
    to show for it)``: the importer reads its input twice (once to tell the format), which a stream cannot give.
    The copy lives in a private temporary folder, is removed afterwards and keeps the input's file name, whose
    suffix (``.jsonl``) helps tell the format. Raises ImportFormatError ``IMPORT_TOO_LARGE`` from
    :func:`crdtsync.imports.spool` (more than 1 GiB, or a line longer than 64 MiB)."""
    from crdtsync.imports import spool

    stdin = str(path) == "-"
    if not stdin and (path.is_file() or path.is_dir() or not path.exists()):
        yield path, None
        return
    with tempfile.TemporaryDirectory(prefix="crdtsync-import-") as folder:  # mode 0700
        spooled = Path(folder) / ("stdin" if stdin else path.name or "input")
        with spooled.open("wb") as copy:
            if stdin:
                spool(sys.stdin.buffer, copy, "standard input")
            else:
                try:
                    source = path.open("rb")
                except OSError as exc:
                    raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}",
                                            code="IMPORT_UNREADABLE") from exc
                with source:
                    spool(source, copy, str(path))
        yield spooled, str(path)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(metavar="FILE_OR_DIR", help="What to import; - reads standard input.")],
    format: Annotated[str | None, typer.Option(help="jsonl, json-array, mem0, openmemory, memory-files, locomo "
                                                     "(default: detected).")] = None,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import memories (JSONL, JSON, mem0, OpenMemory, a folder of memory files, LoCoMo). Idempotent.

    A memory is never changed by an import: a record whose id is taken by other values is a problem. Exits 3
    (IMPORT_ALL_FAILED) when no record could be imported."""
    from crdtsync.imports import count_hint

    with _open(vault, as_json) as v, _progress() as bar, _spooled(path) as (source, name):
        task = bar.add_task("importing", total=count_hint(source))
        report = v.import_path(source, format=format, progress=lambda n: bar.update(task, completed=n), name=name)
    if as_json and not report.all_failed:
        _emit_json({"added": report.added, "skipped": report.skipped,
                    "problems": [{"location": p[0], "code": p[1], "message": p[2]} for p in report.problems]})
        return
    for location, code, message in report.problems:
        err.print(Text.assemble(("skipped", "yellow"), f" {_plain(location)} [{code}]: {_plain(message)}"))
    if report.all_failed:
        location, code, message = report.problems[0]
        _fail(ImportFormatError(f"no record of {name or path} could be imported ("
                                f"{_count(len(report.problems), 'problem')}, on stderr; the first: {location} "
                                f"[{code}]: {message})", code="IMPORT_ALL_FAILED"), as_json)
    out.print(f"imported {report.added} memories ({report.skipped} already present, "
              f"{len(report.problems)} problems)")


@app.command()
def export(
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    vault: VaultOpt = None,
) -> None:
    """Export every live memory as JSONL (import reads it back).

    --out writes the file whole or not at all, readable by its owner only: it holds every memory in clear."""
    with _open(vault) as v:
        if out_file is None:
            v.export_jsonl(sys.stdout)
            return
        if not out_file.parent.is_dir():
            raise VaultError(f"cannot write {out_file}: there is no folder {out_file.parent}", code="IO_ERROR")
        _refuse_relay_folder(v, out_file)
        text = io.StringIO()
        count = v.export_jsonl(text)
        atomic_write(out_file, text.getvalue().encode("utf-8"), mode=0o600)
    err.print(f"exported {count} memories to {out_file}")


def _refuse_relay_folder(v: Vault, path: Path) -> None:
    """Refuse an export file inside the folder of one of ``v``'s relays, which a sync tool carries: it holds
    every memory in clear (InvalidInputError ``EXPORT_INTO_RELAY``)."""
    from crdtsync.mailbox.backend import relay_holding  # the storage backends load on first use

    for relay in v.relays():
        folder = relay_holding(relay["url"], path)
        if folder is not None:
            raise InvalidInputError(
                f"{path} is inside the folder of relay {relay['name']} ({folder}): whatever carries that folder "
                "would carry every memory in clear; export somewhere else", code="EXPORT_INTO_RELAY")


#: How ``conflicts`` shows the candidates of a conflict on ``deleted`` (a delete, or a move to level 0, against an
#: edit).
_DELETED_TEXT = {True: "deleted (or moved to level 0)", False: "kept (edited)"}


def _conflict_rows(conflicts: list[Conflict], names: Mapping[str, str]) -> Group:
    """Each conflict as a line ``<memory id>  <field>`` and a table of its candidates, numbered as ``resolve
    --pick`` takes them, with their devices named (``names``: device id to name)."""
    parts: list[Any] = []
    for c in conflicts:
        parts.append(Text.assemble((_plain(c.memory_id), "bold"), "  ", (c.field, "yellow")))
        table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0))
        table.add_column("#", justify="right")
        table.add_column("value", overflow="fold", ratio=1, min_width=12)
        for column in ("device", "agent", "at"):
            table.add_column(column, overflow="fold")
        for n, cand in enumerate(c.candidates, 1):
            shown = (_DELETED_TEXT[bool(cand.value)] if c.field == "deleted"
                     else json.dumps(cand.value, ensure_ascii=False)[:200])
            table.add_row(str(n), _plain(shown), _plain(_device(cand.device, names, short=True)),
                          _plain(cand.agent or ""), _when(cand.at))
        parts.extend([table, Text("")])
    return Group(*parts[:-1])


@app.command()
def conflicts(vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """Show fields edited concurrently to different values (resolve picks one)."""
    with _open(vault, as_json) as v:
        found = v.conflicts()
        if as_json:
            _emit_json([c.to_json() for c in found])
        elif not found:
            err.print("no conflicts")
        else:
            out.print(_conflict_rows(found, v.device_names()))
            err.print("device: the device that signed the write; agent and at: what that device says of it")


@app.command()
def resolve(
    memory_id: Annotated[str, typer.Argument(metavar="MEMORY_ID", help=_ID_HELP, show_default=False)],
    field: Annotated[str, typer.Option("--field", "-f", help="content, category, source, metadata or deleted.")],
    value: Annotated[str | None, typer.Option("--value", help="The value to keep.")] = None,
    pick: Annotated[
        int | None, typer.Option("--pick", help="Keep candidate N (1-based, as `conflicts` shows).")
    ] = None,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Settle a conflict with a value of your own (--value) or one of the candidates (--pick N)."""
    with _open(vault, as_json) as v:
        if (value is None) == (pick is None):
            raise_invalid("give exactly one of --value or --pick")
        memory_id = v.match_id(memory_id)
        chosen: Any = value
        if pick is not None:
            matching = [c for c in v.conflicts(memory_id) if c.field == field]
            if not matching:
                raise_invalid(f"memory {memory_id} has no conflict on {field}")
            if not 1 <= pick <= len(matching[0].candidates):
                raise_invalid(f"--pick must be between 1 and {len(matching[0].candidates)}")
            chosen = matching[0].candidates[pick - 1].value
        elif field == "metadata":
            chosen = _parse_json_value(value or "")
        elif field == "deleted":
            chosen = _parse_deleted(value or "")
        _print_memory(v.resolve(memory_id, field, chosen), as_json, v)


_DELETED_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_deleted(text: str) -> bool:
    """``--value`` of ``resolve --field deleted``: true/yes/1 keeps the delete, false/no/0 keeps the memory."""
    if text.lower() not in _DELETED_WORDS:
        raise_invalid("--value for deleted must be true (keep the delete) or false (keep the memory)")
    return _DELETED_WORDS[text.lower()]


def _parse_json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise_invalid("--value for metadata must be a JSON object")


devices_app = typer.Typer(help="The devices of the vault (from the replicated registry); `devices rename`.",
                          invoke_without_command=True)
app.add_typer(devices_app, name="devices")


@devices_app.callback()
def devices(ctx: typer.Context, vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """List the devices of the vault (from the replicated registry): name, state (active, or revoked after which
    entry of its log and by whom), the key epoch of its newest head, where and when each was last reached directly,
    and where this device's keys live (`--json` adds when each was added and how many of its entries are here)."""
    if ctx.invoked_subcommand is not None:
        return
    with _open(vault, as_json) as v:
        registry = v.devices()
        me = v.device_id
        met = {p["device"]: p for p in v.status()["lan"]["peers"]}
        keys = _keys_json(v.path)
        states = v.device_states()
    if as_json:
        _emit_json([{"device_id": k, **{f: x for f, x in info.items() if f != "statements"}, "this_device": k == me,
                     **states[k],
                     "reached": {"address": met[k]["address"], "at": met[k]["last_seen"]} if k in met else None,
                     "keys": keys if k == me else None}
                    for k, info in sorted(registry.items())])
        return
    table = Table()
    for column in ("device", "name", "state", "epoch", "last reached directly"):
        table.add_column(column)
    for device_id, info in sorted(registry.items()):
        mark = " (this device)" if device_id == me else ""
        reached = f"{met[device_id]['address']}, {_epoch(met[device_id]['last_seen'])}" if device_id in met else ""
        state = states[device_id]
        revoked = state["revoked"]
        shown = "active" if revoked is None else f"revoked after entry {revoked['seq']} by {revoked['by'][:8]}"
        table.add_row(device_id + mark, _plain(info.get("name", "")), shown,
                      "" if state["epoch"] is None else str(state["epoch"]), reached)
    out.print(table)
    out.print(f"this device's keys: {_keys_text(keys)}")


@devices_app.command("rename")
def devices_rename(
    name: Annotated[str, typer.Argument(help="The new name of this device (shown on every device after a sync).")],
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename this device in the replicated registry."""
    with _open(vault, as_json) as v:
        v.rename_device(name)
        device = v.device_id
    if as_json:
        _emit_json({"device_id": device, "name": name})
    else:
        out.print(f"this device ({device}) is now named {_plain(name)}")


def _keys_json(folder: Path) -> dict[str, Any]:
    """Where this device's keys live, for ``status`` and ``devices``: :meth:`KeysLocation.to_json`, or when the
    keys file cannot be read ``{"store": None, "backend": None, "path", "error": {"code", "message"}}`` (the
    command still shows the rest)."""
    try:
        return keys_location(folder).to_json()
    except CrdtsyncError as exc:
        return {"store": None, "backend": None, "path": str(folder / KEYS_NAME),
                "error": {"code": exc.code, "message": exc.message}}


def _keys_text(keys: Mapping[str, Any]) -> str:
    """``in the file PATH (0600)``, ``in the keyring (macOS Keychain)``, or the error of :func:`_keys_json`."""
    if keys["store"] is None:
        return f"unreadable [{keys['error']['code']}]: {_plain(keys['error']['message'])}"
    if keys["store"] == "file":
        return f"in the file {_plain(keys['path'])} (0600)"
    return f"in the keyring ({_plain(BACKEND_NAMES.get(keys['backend'], keys['backend']))}); {_plain(keys['path'])} " \
           "holds a reference to them"


@app.command()
def status(
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
    clear_alarms: Annotated[bool, typer.Option(
        "--clear-alarms", help="Acknowledge the alarms shown (a cause that persists raises its alarm again).")] = False,
) -> None:
    """Show the local store, relays, pending work, conflicts, alarms and devices."""
    with _open(vault, as_json) as v:
        info = v.status()
        info["keys"] = _keys_json(v.path)
        if clear_alarms:
            info["alarms_cleared"] = v.clear_alarms()
    if as_json:
        _emit_json(info)
        return
    counts = info["memories"]
    out.print(f"vault {_plain(info['vault'])} (fingerprint {info['fingerprint']}) — device "
              f"{_plain(info['device_name'])} ({info['device_id']})")
    out.print(f"memories: {counts['live']} live ({counts['local_only']} level 0), {counts['deleted']} deleted, "
              f"{counts['conflicted']} with conflicts")
    out.print(f"received updates waiting for others: {info['held_updates']}; "
              f"refused: {info['quarantined_updates']}; conflicts: {info['conflicts']}")
    for refused in info["refused"]:
        out.print(f"refused {_when(refused['at'])} from {_plain(refused['origin'])} [{refused['code']}], "
                  f"tried {refused['tries']}x: {_plain(refused['message'])}")
    waited = _waited_for(info)
    if waited:
        out.print("they wait for writes of " + "; ".join(waited) + ". Any device that holds them brings them to "
                  "the relays it syncs with: if they still wait, sync that device, or add a relay it uses")
    for wait in info["waiting"]:
        out.print(f"waiting: {_plain(wait['message'])}")
    for r in info["relays"]:
        out.print(f"relay {r['name']} ({r['url']}): last sync {r['last_sync'] or 'never'}, "
                  f"pending push {r['pending_push']}, pending pull {r['pending_pull']}"
                  + (f", last error {r['last_error']}" if r["last_error"] else ""))
    for alarm in info["alarms"]:
        err.print(Text.assemble(("ALARM", "bold red"), f" [{alarm['code']}] {alarm['at']}: {_plain(alarm['message'])}"))
    if clear_alarms:
        out.print(f"alarms cleared: {info['alarms_cleared']}")
    lan = info["lan"]
    daemon = lan["daemon"]
    out.print(f"serve: running (pid {daemon['pid']}, {len(daemon.get('sessions', []))} peers connected)"
              if daemon.get("running") else "serve: not running")
    for p in lan["peers"]:
        out.print(f"peer {_plain(p['name'])} ({p['device'][:12]}) at {p['address']}: {p['state']}, last seen "
                  f"{_epoch(p['last_seen'])}" + (f", last error {p['last_error']['code']}" if p["last_error"] else ""))
    for device_id, entry in sorted(info["devices"].items()):
        mark = " (this device)" if device_id == info["device_id"] else ""
        out.print(f"device {device_id}{mark}: {_plain(entry.get('name', ''))}")
    out.print(f"keys: {_keys_text(info['keys'])}")


def _epoch(seconds: float | None) -> str:
    """A Unix time as this machine's local time to the second, or ``never``."""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "never"


def _waited_for(info: Mapping[str, Any]) -> list[str]:
    """The writers that held updates wait for, from :meth:`Vault.status`: ``device <id> (<name>)``, or the Yjs
    client id when no registration of its device reached this one. A device whose own updates are held is left
    out: its later updates wait for its earlier ones, which wait for the writer named."""
    devices = info["devices"]
    senders = {held["origin"] for held in info["held"]}
    named: dict[str, None] = {}
    for held in info["held"]:
        for wait in held["waits_for"]:
            device = wait["device"]
            if device in senders:
                continue
            label = (f"device {device} ({_plain(devices.get(device, {}).get('name', ''))})" if device
                     else f"Yjs client {wait['client']} of a device not known here")
            named[label] = None
    return list(named)


@app.command()
def log(
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 50,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit trail (imports and syncs: what moved, errors)."""
    with _open(vault, as_json) as v:
        rows = v.log(limit=limit)
    if as_json:
        _emit_json([{"at": r.at, "op": r.op, "peer": r.peer, "code": r.code, **r.detail} for r in rows])
        return
    table = Table()
    table.add_column("at", no_wrap=True)
    for column in ("op", "peer", "detail", "code"):
        table.add_column(column, overflow="fold")
    for r in rows:
        detail = sync_summary(r.detail) if r.op == "sync" else ", ".join(
            f"{key} {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}"
            for key, value in r.detail.items())
        table.add_row(_when(r.at), r.op, _plain(r.peer or ""), _plain(detail), r.code or "")
    out.print(table)
