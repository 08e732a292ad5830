"""Scaffolding shared by the benchmark scripts (``bench/local.py``, ``bench/mailbox.py``).

A benchmark script defines its scenarios (``name -> function(work, params) -> result dict``) and its report; this
module gives it the rest:

* the command line: :func:`make_parser` (the flags every script has, and the hidden child-mode flags) and
  :func:`names` (a comma-separated flag as a set);
* one child process per scenario: the parent calls :func:`run_child`, which re-runs the same script with
  ``--scenario NAME --workdir DIR --params JSON``; the child calls :func:`run_scenario_here`, which runs the
  scenario (under cProfile when asked) and writes ``<stem>.json`` (and ``<stem>.prof.txt``) in the work folder;
* measuring in the child: peak RSS (:func:`reset_peak`, :func:`memory_mb`, :func:`children_peak_mb`), wall time
  of a block (:func:`timed`) and of chosen functions (:class:`Stopwatch`, :func:`wrap_any`);
* the parent's chores: the corpus (:func:`prepare_corpus`), the work folder (:func:`work_folder`), load averages
  (:func:`record_load`), where the figures were measured (:func:`machine`);
* rich tables used by both reports (:func:`targets_table`, :func:`breakdown_table`) and the cProfile dumps
  (:func:`print_profiles`).

Nothing here measures by itself; it does not change what the scripts measure.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._corpus import LOCOMO, base_rows, repeated, write_jsonl  # noqa: E402

#: Throwaway vaults in temporary folders keep their keys in their 0600 files, never in the user's OS keyring
#: (keyring's own setting; child processes inherit it).
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")

#: A scenario's result (JSON-ready), a script's parameters, a summary: plain dicts.
Result = dict[str, Any]
#: A scenario: ``(work folder, parameters) -> result``; it runs in a child process of its own.
Scenario = Callable[[Path, Result], Result]


# -- measuring helpers (child side) ---------------------------------------------------------------------------


def memory_mb() -> dict[str, float]:
    """This process's current RSS and peak RSS (high-water mark) in MiB: ``/proc/self/status`` on Linux,
    ``getrusage`` elsewhere (where both are the peak)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
        return {"rss": peak, "peak": peak}


def reset_peak() -> float:
    """Collect garbage, reset the kernel's peak-RSS mark to the current RSS when Linux allows it
    (``/proc/self/clear_refs`` = 5), and return the current RSS in MiB: the baseline of what follows."""
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return memory_mb()["rss"]


def children_peak_mb() -> float:
    """Largest peak RSS of any child process this process waited for (the integration workers), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@contextlib.contextmanager
def timed(out: dict[str, Any], key: str) -> Iterator[None]:
    """Add the wall time of the block to ``out[key]`` (seconds; a key timed once holds that block's time)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        out[key] = out.get(key, 0.0) + time.perf_counter() - start


class Stopwatch:
    """Accumulates wall time spent in chosen functions by wrapping them (in a benchmark child process only:
    crdtsync itself is not changed). Overhead is about a microsecond per call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Replace ``owner.attr`` (a module function or a class's method) with a timed version."""
        original = getattr(owner, attr)
        self.seconds.setdefault(label, 0.0)
        self.calls.setdefault(label, 0)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        setattr(owner, attr, timed_call)

    def reset(self) -> None:
        """Zero every counter."""
        for label in self.seconds:
            self.seconds[label] = 0.0
            self.calls[label] = 0

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{label: {"s": seconds, "calls": n}}``."""
        return {label: {"s": self.seconds[label], "calls": self.calls[label]} for label in self.seconds}


#: Labels :func:`wrap_any` found no target for in this version of crdtsync (its internals move; the benchmark
#: goes on). :func:`run_scenario_here` reports them as the result's ``"unwrapped"`` when there are any.
UNWRAPPED: list[str] = []


def wrap_any(watch: Stopwatch, label: str, *targets: str) -> None:
    """Time ``label`` by wrapping the first of ``targets`` that exists, each ``"module:Owner.attr"`` or
    ``"module:function"`` (crdtsync's internals are refactored now and then: ``Vault`` methods moved to
    ``Replica``). A label none of whose targets exists is recorded in :data:`UNWRAPPED` and skipped."""
    for target in targets:
        module_name, _, path = target.partition(":")
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        *owners, attr = path.split(".")
        for name in owners:
            owner = getattr(owner, name, None)
            if owner is None:
                break
        if owner is not None and hasattr(owner, attr):
            watch.wrap(owner, attr, label)
            return
    UNWRAPPED.append(label)


def folder_mb(path: Path) -> float:
    """Total size of the files under ``path`` in MiB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# -- the command line ------------------------------------------------------------------------------------------


def make_parser(doc: str | None, scenarios: Iterable[str], *, default_timeout: float,
                skip_help: str) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark script has: ``--n``, ``--json``, ``--timeout``, ``--skip``,
    ``--profile-scenarios``, ``--keep``, ``--tmp``, and the hidden child-mode flags ``--scenario``,
    ``--workdir`` and ``--params`` (see :func:`run_child`). The description is the first paragraph of ``doc``;
    the script adds its own flags."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--n", type=int, default=100_000, help="memories in the corpus (default 100000)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout (tables go to stderr)")
    parser.add_argument("--timeout", type=float, default=default_timeout, help="seconds per scenario")
    parser.add_argument("--skip", default="", help=skip_help)
    parser.add_argument("--profile-scenarios", default="",
                        help="comma-separated scenarios to run under cProfile (times inflate); top 40 by cumtime")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed at the end)")
    parser.add_argument("--tmp", type=Path, default=None, help="parent folder of the work folder")
    parser.add_argument("--scenario", choices=sorted(scenarios), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    return parser


def names(text: str) -> set[str]:
    """The non-empty items of a comma-separated flag value."""
    return {p for p in text.split(",") if p}


# -- one child process per scenario ----------------------------------------------------------------------------


def run_scenario_here(scenarios: Mapping[str, Scenario], name: str, work: Path, params: Result, *, profile: bool,
                      stem: str | None = None) -> None:
    """Child-process entry: run one scenario and write ``<work>/<stem>.json`` (``stem`` defaults to ``name``),
    and ``<stem>.prof.txt``, the top 40 of a cProfile by cumulative time, when ``profile``."""
    stem = stem or name
    if profile:
        profiler = cProfile.Profile()
        result = profiler.runcall(scenarios[name], work, params)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        (work / f"{stem}.prof.txt").write_text(text.getvalue())
    else:
        result = scenarios[name](work, params)
    if UNWRAPPED:
        result["unwrapped"] = UNWRAPPED
    (work / f"{stem}.json").write_text(json.dumps(result))


def run_child(script: Path, name: str, work: Path, params: Result, *, timeout: float, profile: bool,
              stem: str | None = None) -> Result:
    """Run scenario ``name`` of ``script`` in a fresh interpreter (``--scenario``); returns its result (with
    ``child_wall_s`` and, when profiled, ``profile``), or ``{"error": ...}``. ``stem`` is the file stem the
    child writes its result under (see :func:`run_scenario_here`)."""
    command = [sys.executable, str(script), "--scenario", name, "--workdir", str(work), "--params", json.dumps(params)]
    if profile:
        command.append("--profile-scenarios=" + name)
    stem = stem or name
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    result_file = work / f"{stem}.json"
    if proc.returncode != 0 or not result_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}
    result: Result = json.loads(result_file.read_text())
    result["child_wall_s"] = wall
    prof = work / f"{stem}.prof.txt"
    if prof.exists():
        result["profile"] = prof.read_text()
    return result


# -- the parent's chores ---------------------------------------------------------------------------------------


def prepare_corpus(work: Path, n: int, extras: Callable[[list[dict[str, Any]]], None] | None = None) -> Result:
    """Write ``<work>/corpus.jsonl`` (LoCoMo repeated to ``n`` memories), then call ``extras`` with the base rows
    to write the script's own inputs; returns the corpus summary (records, base_records, seconds of all of it,
    jsonl_mb). None of it is timed as a result."""
    start = time.perf_counter()
    base = base_rows(LOCOMO)
    count = write_jsonl(work / "corpus.jsonl", repeated(base, n))
    if extras is not None:
        extras(base)
    return {"records": count, "base_records": len(base), "seconds": time.perf_counter() - start,
            "jsonl_mb": (work / "corpus.jsonl").stat().st_size / 2**20}


def make_console(to_stderr: bool, min_width: int) -> Any:
    """A rich console at least ``min_width`` wide, on stderr when the JSON summary takes stdout."""
    from rich.console import Console

    return Console(stderr=to_stderr, width=max(min_width, shutil.get_terminal_size().columns))


@contextlib.contextmanager
def work_folder(prefix: str, parent: Path | None, keep: bool, console: Any) -> Iterator[Path]:
    """A fresh work folder under ``parent`` (the system's temporary folder when None); removed at the end unless
    ``keep``, in which case its path is printed. The throwaway vaults' incarnation tokens go to its ``state``
    folder (``CRDTSYNC_STATE_DIR``, inherited by the scenario processes), not the user's state folder."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.environ["CRDTSYNC_STATE_DIR"] = str(work / "state")
    try:
        yield work
    finally:
        if keep:
            console.print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def record_load(results: Result, when: str) -> None:
    """Store the 1/5/15-minute load averages in ``results["load_average"][when]`` where the system has them."""
    with contextlib.suppress(OSError, AttributeError):
        results["load_average"][when] = os.getloadavg()


def format_loads(results: Result, when: str, missing: str = "?") -> str:
    """The load averages recorded at ``when`` as ``1.0/1.1/1.2``, or ``missing``."""
    values = results.get("load_average", {}).get(when)
    return "/".join(f"{v:.1f}" for v in values) if values else missing


def machine(packages: Iterable[str] = ("pycrdt",)) -> Result:
    """Where the figures were measured: date, crdtsync's commit (and whether ``crdtsync/`` has uncommitted
    changes), CPUs, platform, Python, SQLite, and the installed version of each of ``packages``."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    versions: dict[str, str] = {}
    for name in packages:
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "crdtsync"], cwd=ROOT, capture_output=True,
                               text=True)
        commit = head.stdout.strip() + (" + uncommitted changes to crdtsync/" if dirty.stdout.strip() else "")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        **versions,
    }


# -- rich tables -----------------------------------------------------------------------------------------------


def targets_table(rows: Iterable[Result], fmt: Callable[[Any, str], str]) -> Any:
    """The "Targets (issue)" table: one row per target (target, measured, limit, reference, ratio, verdict),
    values shown with ``fmt(value, unit)``; rows marked ``information`` show their verdict dimmed in brackets."""
    from rich.table import Table

    t = Table(title="Targets (issue)")
    for col in ("target", "measured", "limit", "reference", "ratio", "verdict"):
        t.add_column(col, justify="left" if col in ("target", "limit") else "right")
    for row in rows:
        verdict = row["verdict"] or "-"
        colour = {"PASS": "green", "MISS": "red"}.get(verdict, "white")
        if row.get("information"):
            verdict, colour = f"({verdict})", "dim"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        t.add_row(row["target"], fmt(row["value"], row["unit"]), row["limit"], fmt(row["reference"], row["unit"]),
                  ratio, f"[{colour}]{verdict}[/{colour}]")
    return t


def breakdown_table(title: str, breakdown: Mapping[str, Mapping[str, float]], fmt_s: Callable[[float], str], *,
                    total: tuple[str, float], hide_uncalled: bool = False) -> Any:
    """A :meth:`Stopwatch.snapshot` as a table (part, time, calls), closed by the ``total`` row (label,
    seconds); with ``hide_uncalled`` the parts that were never called are left out."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("part")
    t.add_column("time", justify="right")
    t.add_column("calls", justify="right")
    for label, part in breakdown.items():
        if part["calls"] or not hide_uncalled:
            t.add_row(label, fmt_s(part["s"]), f"{part['calls']:.0f}")
    t.add_row(total[0], fmt_s(total[1]), "")
    return t


def print_profiles(console: Any, profiled: Iterable[tuple[str, Any]]) -> None:
    """Print the cProfile text of every ``(label, result)`` whose result has one."""
    for label, result in profiled:
        if isinstance(result, dict) and "profile" in result:
            console.print(f"--- cProfile of {label} (top 40 by cumulative time) ---")
            console.print(result["profile"], markup=False, highlight=False)
