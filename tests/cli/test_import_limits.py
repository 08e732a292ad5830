"""``crdtsync import`` of endless, huge or hopeless input, as real processes under a deadline: ``/dev/zero`` as a
path and as standard input, FIFOs fed forever or with a few lines, a giant single line, documents and a zip
member past the limit, an input in which every record fails, and records whose id is taken.

Each process is killed at :data:`DEADLINE` (the test then fails instead of hanging), and its peak resident
memory, read from ``wait4``, must stay under :data:`MEMORY_BOUND`, where the unbounded reader grew to gigabytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from crdtsync.imports import MAX_DOCUMENT_BYTES, MAX_LINE_BYTES
from crdtsync.vault import Vault
from tests.cli.test_cli import CRDTSYNC, assert_fails, flat, new_vault, process_env, write_jsonl

#: Seconds a bounded import may take, at most (each takes about a second here).
DEADLINE = 60.0
#: Peak resident memory a bounded import may reach: the largest read is one 64 MiB document (or line), held
#: twice while it is read, beside the interpreter and its libraries (about 50 MB).
MEMORY_BOUND = 400 * 1024 * 1024


#: Runs ``argv[2:]`` as a child of this small process and writes that child's peak resident memory (KiB) to
#: the file ``argv[1]``; exits with the child's status. The kernel carries a process's peak across ``exec``, so
#: a direct child of the test process would report the test process's own peak (hundreds of MB after the tests
#: that build large files) as its own.
PEAK_OF_CHILD = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_bounded(home: Path, *args: str, stdin: IO[bytes] | int = subprocess.DEVNULL
                ) -> subprocess.CompletedProcess[str]:
    """Run ``crdtsync ARGS`` with ``CRDTSYNC_HOME=home``; kill it and fail the test at :data:`DEADLINE`, and
    fail it when its peak resident memory passes :data:`MEMORY_BOUND`."""
    peak = home.parent / "peak"
    started = time.monotonic()
    with subprocess.Popen([sys.executable, "-c", PEAK_OF_CHILD, str(peak), str(CRDTSYNC), *args],
                          env=process_env(home), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the measuring process and crdtsync under it
            process.communicate()
            pytest.fail(f"crdtsync {' '.join(args)} was still running after {DEADLINE} s")
    seconds = time.monotonic() - started
    peak_bytes = int(peak.read_text()) * 1024
    assert peak_bytes < MEMORY_BOUND, (args, f"peak {peak_bytes >> 20} MiB after {seconds:.1f} s")
    return subprocess.CompletedProcess(args, process.returncode, stdout.decode(), stderr.decode())


@contextmanager
def fed_fifo(path: Path, chunks: Iterator[bytes]) -> Iterator[Path]:
    """A FIFO at ``path`` that a thread fills with ``chunks`` once a reader opens it, until they run out or
    the reader goes away."""
    os.mkfifo(path)
    done: list[int] = []

    def feed() -> None:
        written = 0
        try:
            with path.open("wb") as fifo:
                for chunk in chunks:
                    fifo.write(chunk)
                    written += len(chunk)
        except BrokenPipeError:
            pass  # the reader stopped: what an endless input should see
        done.append(written)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    yield path
    writer.join(timeout=DEADLINE)
    assert done, "the FIFO's writer never finished"


def zeros() -> Iterator[bytes]:
    """Zero bytes without end, a MiB at a time."""
    chunk = bytes(1 << 20)
    while True:
        yield chunk


def fails_too_large(finished: subprocess.CompletedProcess[str], where: str, *, as_json: bool = False) -> None:
    """Assert exit 3 with ``IMPORT_TOO_LARGE`` naming ``where`` and a limit."""
    assert_fails(finished, 3, "IMPORT_TOO_LARGE", as_json=as_json)
    assert flat(f"{where}:") in flat(finished.stderr) and "MiB" in finished.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return new_vault(tmp_path / "vault")


def contents(home: Path) -> list[str]:
    with Vault.open(home) as vault:
        return sorted(m.content for m in vault.list())


# -- endless input ------------------------------------------------------------------------------------------


def test_dev_zero_as_a_path_stops_at_the_line_limit(home: Path) -> None:
    fails_too_large(run_bounded(home, "import", "/dev/zero"), "/dev/zero")


def test_dev_zero_on_standard_input_stops_at_the_line_limit(home: Path) -> None:
    with Path("/dev/zero").open("rb") as endless:
        finished = run_bounded(home, "import", "-", stdin=endless)
    fails_too_large(finished, "standard input")


def test_an_endless_fifo_stops_at_the_line_limit(home: Path, tmp_path: Path) -> None:
    with fed_fifo(tmp_path / "endless.jsonl", zeros()) as fifo:
        finished = run_bounded(home, "import", str(fifo), "--json")
    fails_too_large(finished, str(fifo), as_json=True)


def test_a_fifo_of_a_few_lines_imports_every_line(home: Path, tmp_path: Path) -> None:
    """A pipe (``crdtsync import <(command)``) is copied before it is read twice: no line is lost to the
    detection of its format."""
    lines = [json.dumps({"content": f"Piped line {n}"}).encode() + b"\n" for n in range(3)]
    with fed_fifo(tmp_path / "few.jsonl", iter(lines)) as fifo:
        finished = run_bounded(home, "import", str(fifo), "--json")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout) == {"added": 3, "skipped": 0, "problems": []}
    assert contents(home) == ["Piped line 0", "Piped line 1", "Piped line 2"]


# -- huge input -------------------------------------------------------------------------------------------------


def write_big(path: Path, size: int, *, before: bytes = b"", after: bytes = b"") -> Path:
    """``before``, one JSON object holding ``size`` bytes of content on a single line, then ``after``."""
    with path.open("wb") as fh:
        fh.write(before + b'{"content": "')
        for start in range(0, size, 1 << 20):
            fh.write(b"x" * min(1 << 20, size - start))
        fh.write(b'"}\n' + after)
    return path


def test_a_giant_single_line_file_is_refused_whole(home: Path, tmp_path: Path) -> None:
    path = write_big(tmp_path / "giant.json", MAX_DOCUMENT_BYTES + 1)
    finished = run_bounded(home, "import", str(path))
    fails_too_large(finished, str(path))
    assert "64 MiB" in finished.stderr


def test_a_jsonl_line_past_the_limit_ends_the_file_and_the_lines_before_it_import(home: Path, tmp_path: Path) -> None:
    path = write_big(tmp_path / "long.jsonl", MAX_LINE_BYTES + 1, before=b'{"content": "Before the long line"}\n',
                     after=b'{"content": "After the long line"}\n')
    finished = run_bounded(home, "import", str(path), "--json")
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert (report["added"], [(p["location"], p["code"]) for p in report["problems"]]) == (
        1, [(f"{path}:2", "IMPORT_TOO_LARGE")])
    assert contents(home) == ["Before the long line"]


def test_a_zip_member_that_inflates_past_the_limit_is_refused(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "openmemory-backup.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("memories.json", "w") as member:
        member.write(b'{"memories": [')
        for _ in range(4 * MAX_DOCUMENT_BYTES >> 20):
            member.write(b" " * (1 << 20))
        member.write(b"]}")
    fails_too_large(run_bounded(home, "import", str(path)), f"{path}!memories.json")


# -- every record failed ------------------------------------------------------------------------------------------


def test_an_import_in_which_every_record_failed_exits_3(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "hopeless.jsonl"
    path.write_text('{"content": ""}\nnot json\n{"text": 42}\n', encoding="utf-8")
    text = run_bounded(home, "import", str(path))
    assert_fails(text, 3, "IMPORT_ALL_FAILED")
    stderr = flat(text.stderr)
    for line in (1, 2, 3):
        assert flat(f"skipped {path}:{line} [") in stderr
    assert flat(f"no record of {path} could be imported (3 problems") in stderr
    as_json = run_bounded(home, "import", str(path), "--json")
    assert_fails(as_json, 3, "IMPORT_ALL_FAILED", as_json=True)
    with Vault.open(home) as vault:
        assert [(r.op, r.code, r.detail["problems"]) for r in vault.log(limit=2)] == [
            ("import", "IMPORT_ALL_FAILED", 3)] * 2
        assert vault.list() == []


def test_an_input_with_no_record_at_all_is_no_failure(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]", encoding="utf-8")
    finished = run_bounded(home, "import", str(path), "--json")
    assert (finished.returncode, json.loads(finished.stdout)) == (0, {"added": 0, "skipped": 0, "problems": []})


# -- ids taken -------------------------------------------------------------------------------------------------------


def test_a_record_whose_id_is_taken_is_reported_with_its_line_not_as_already_present(home: Path,
                                                                                        tmp_path: Path) -> None:
    """Two records of one source that disagree: the first is imported, the second is a problem naming both
    lines; importing a newer version of the record later is a problem too, and the memory stays as it was."""
    path = write_jsonl(tmp_path / "notes.jsonl", [{"content": "Lives in Lyon", "source": "notes:home"},
                                                  {"content": "Lives in Paris", "source": "notes:home"}])
    finished = run_bounded(home, "import", str(path))
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "imported 1 memories (0 already present, 1 problems)"
    assert flat(f"skipped {path}:2 [IMPORT_DUPLICATE_ID]: the record at {path}:1 has the same id") in flat(
        finished.stderr)
    newer = write_jsonl(tmp_path / "newer.jsonl", [{"content": "Lives in Paris", "source": "notes:home"}])
    again = run_bounded(home, "import", str(newer), "--json")
    assert_fails(again, 3, "IMPORT_ALL_FAILED", as_json=True)
    assert "IMPORT_ID_TAKEN" in json.loads(again.stdout)["error"]["message"]
    assert contents(home) == ["Lives in Lyon"]


def test_reports_keep_their_shape_for_json_readers(home: Path, tmp_path: Path) -> None:
    """The JSON report's keys stay ``added``, ``skipped`` and ``problems`` (location, code, message)."""
    path = write_jsonl(tmp_path / "one.jsonl", [{"content": "Fine"}, {"content": "Fine"}, {"nope": 1}])
    finished = run_bounded(home, "import", str(path), "--json")
    report: dict[str, Any] = json.loads(finished.stdout)
    assert (report["added"], report["skipped"]) == (1, 1)
    assert [set(p) for p in report["problems"]] == [{"location", "code", "message"}]
