"""The ``crdtsync`` command as a user runs it: a few real subprocesses of the installed console script (exit
statuses, pure JSON on stdout, no traceback on stderr) and the bulk in-process through typer's CliRunner.

Most tests share one vault created by ``crdtsync init`` with the default Argon2id parameters (module scope) and
only add memories of their own; tests that need to know every memory of a vault make a fresh one with cheap
Argon2id parameters through the Python API.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner, Result

from crdtsync.cli.app import app
from crdtsync.errors import NotFoundError
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

CRDTSYNC = Path(sys.executable).parent / "crdtsync"
MEMORY_KEYS = {"id", "content", "category", "tags", "level", "source", "metadata", "created", "updated"}
runner = CliRunner()


# -- helpers ---------------------------------------------------------------------------------------------


def cli(home: Path, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """Run ``crdtsync ARGS`` in-process with ``CRDTSYNC_HOME=home`` and the test passphrase. Exceptions are
    not caught: an error that escapes the CLI's handler fails the test with its traceback."""
    full_env: dict[str, str | None] = {
        "CRDTSYNC_HOME": str(home),
        "CRDTSYNC_PASSPHRASE": PASSPHRASE,
        "CRDTSYNC_AGENT": None,
    }
    full_env.update(env or {})
    return runner.invoke(app, list(args), env=full_env, catch_exceptions=False)


def process_env(home: Path, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a ``crdtsync`` subprocess: this one's without ``CRDTSYNC_*`` settings but for
    ``CRDTSYNC_STATE_DIR`` (the test session's folder for incarnation tokens, never the user's), then
    ``CRDTSYNC_HOME=home``, the test passphrase and ``env`` (a ``None`` value removes the variable)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_") or k == "CRDTSYNC_STATE_DIR"}
    full_env.update({"CRDTSYNC_HOME": str(home), "CRDTSYNC_PASSPHRASE": PASSPHRASE})
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return full_env


def run_crdtsync(home: Path, *args: str, env: Mapping[str, str | None] | None = None,
                 stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """Run the installed ``crdtsync`` console script in a subprocess (stdin is not a terminal)."""
    return subprocess.run([str(CRDTSYNC), *args], env=process_env(home, env), stdin=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def ok(result: Result) -> Result:
    """Assert the command succeeded without a traceback."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def stdout_json(result: Result | subprocess.CompletedProcess[str]) -> Any:
    """The whole of stdout parsed as one JSON document (fails when anything else is printed there)."""
    return json.loads(result.stdout)


def flat(text: str) -> str:
    """``text`` without whitespace: stderr is wrapped at the console width, which may split a long word."""
    return re.sub(r"\s+", "", text)


def assert_fails(result: Result | subprocess.CompletedProcess[str], status: int, code: str,
                 *, as_json: bool = False) -> None:
    """Assert an expected failure: exit ``status``, ``error [CODE]`` on stderr, no traceback; with ``as_json``,
    stdout is exactly ``{"error": {"code": CODE, "message": ...}}``, else stdout is empty."""
    exit_code = result.exit_code if isinstance(result, Result) else result.returncode
    assert exit_code == status, (exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert f"error [{code}]" in result.stderr
    if as_json:
        payload = stdout_json(result)
        assert set(payload) == {"error"}
        assert set(payload["error"]) == {"code", "message"}
        assert payload["error"]["code"] == code
        assert payload["error"]["message"]
    else:
        assert result.stdout == ""


def add_json(home: Path, *args: str) -> dict[str, Any]:
    """``crdtsync add ARGS --json`` and its memory object."""
    memory: dict[str, Any] = stdout_json(ok(cli(home, "add", *args, "--json")))
    return memory


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def new_vault(path: Path, name: str = "cli-test") -> Path:
    """A fresh vault folder made through the Python API with cheap Argon2id parameters."""
    return Vault.init(path, name="cli-test", device_name=name, passphrase=PASSPHRASE, kdf=cheap_kdf())


@dataclass(frozen=True)
class InitRun:
    home: Path
    process: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def init_run(tmp_path_factory: pytest.TempPathFactory) -> InitRun:
    """The module's vault, made by the real ``crdtsync init --json`` (default Argon2id parameters)."""
    home = tmp_path_factory.mktemp("cli") / "vault"
    return InitRun(home, run_crdtsync(home, "init", "--json", "--device-name", "laptop"))


@pytest.fixture
def home(init_run: InitRun) -> Path:
    """The module's shared vault (tests add memories of their own and never rely on its full contents)."""
    assert init_run.process.returncode == 0, init_run.process.stderr
    return init_run.home


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """An empty vault of this test alone."""
    return new_vault(tmp_path / "fresh")


@dataclass(frozen=True)
class ConflictVault:
    path: Path
    memory_id: str
    devices: tuple[str, str]


def build_conflict(root: Path) -> ConflictVault:
    """Vault ``root/a`` holding a real conflict on ``content``: ``a`` and ``b`` edited one memory concurrently
    and ``a`` received ``b``'s update through ``Vault.encode_update``/``apply_update``."""
    with Vault.open(new_vault(root / "a", "a")) as a, Vault.open(new_vault(root / "b", "b")) as b:
        memory = a.add("Standup at 9:30")
        assert b.apply_update(a.encode_update(), "a").status == "integrated"
        a_state = a.state_vector()
        a.update(memory.id, content="Standup at 10:00")
        b.update(memory.id, content="Standup at 9:45 🕤")
        assert a.apply_update(b.encode_update(a_state), "b").status == "integrated"
        assert [c.field for c in a.conflicts()] == ["content"]
        return ConflictVault(a.path, memory.id, (a.device_id, b.device_id))


@pytest.fixture(scope="module")
def shared_conflict(tmp_path_factory: pytest.TempPathFactory) -> ConflictVault:
    """A conflict for tests that only read it or fail to resolve it."""
    return build_conflict(tmp_path_factory.mktemp("conflict"))


@pytest.fixture
def conflict_vault(tmp_path: Path) -> ConflictVault:
    """A conflict of this test alone (for tests that resolve it)."""
    return build_conflict(tmp_path)


# -- real subprocesses -----------------------------------------------------------------------------------


def test_init_creates_a_vault_and_prints_pure_json(init_run: InitRun) -> None:
    process = init_run.process
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    payload = stdout_json(process)
    assert payload == {"vault": str(init_run.home), "device_id": payload["device_id"]}
    assert re.fullmatch(r"[0-9a-f]{32}", payload["device_id"])
    assert (init_run.home / "vault.db").is_file()
    assert (init_run.home / "keys").stat().st_mode & 0o777 == 0o600


def test_subprocess_add_then_show_print_the_same_memory_as_pure_json(home: Path) -> None:
    added = run_crdtsync(home, "add", "Prefers oolong 🍵 over green tea", "--tag", "drinks", "--json")
    assert added.returncode == 0, added.stderr
    assert "Traceback" not in added.stderr
    memory = stdout_json(added)
    shown = run_crdtsync(home, "show", memory["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert stdout_json(shown) == memory
    assert memory["content"] == "Prefers oolong 🍵 over green tea"


def test_subprocess_unknown_id_exits_4_with_only_the_error_object_on_stdout(home: Path) -> None:
    process = run_crdtsync(home, "show", "no-such-id", "--json")
    assert_fails(process, 4, "NOT_FOUND", as_json=True)


def test_subprocess_missing_vault_exits_5_vault_not_found(tmp_path: Path) -> None:
    process = run_crdtsync(tmp_path / "nowhere", "list", "--json")
    assert_fails(process, 5, "VAULT_NOT_FOUND", as_json=True)


def test_subprocess_init_without_passphrase_and_no_tty_exits_6(tmp_path: Path) -> None:
    process = run_crdtsync(tmp_path / "v", "init", "--json", env={"CRDTSYNC_PASSPHRASE": None})
    assert_fails(process, 6, "PASSPHRASE_REQUIRED", as_json=True)
    assert not (tmp_path / "v" / "vault.db").exists()


def test_subprocess_export_to_stdout_prints_only_jsonl(home: Path) -> None:
    memory = stdout_json(run_crdtsync(home, "add", "Exported through a pipe", "--json"))
    process = run_crdtsync(home, "export")
    assert process.returncode == 0, process.stderr
    rows = [json.loads(line) for line in process.stdout.splitlines()]
    assert memory["id"] in {row["id"] for row in rows}


def test_subprocess_export_whose_reader_stops_early_exits_141_quietly(fresh: Path, tmp_path: Path) -> None:
    """``crdtsync export | head -1``: the reader closes the pipe while the export still writes (1.5 MB here,
    far more than a pipe holds). It stops with 128 + SIGPIPE, as ``cat`` would, and prints nothing."""
    path = write_jsonl(tmp_path / "many.jsonl", [{"content": f"pipe {i} " + "x" * 1000} for i in range(1500)])
    ok(cli(fresh, "import", str(path)))
    with subprocess.Popen([str(CRDTSYNC), "export"], env=process_env(fresh), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.read(10)
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 141, stderr
    assert stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_an_io_error(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a closed stdout ends a command quietly; a pipe or socket of the command's own that breaks is an
    error it reports."""
    def broken(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(Vault, "list", broken)
    assert_fails(cli(fresh, "list"), 5, "IO_ERROR")


def test_subprocess_import_json_prints_only_the_report(home: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "piped.jsonl", [{"content": "Piped import, line 1"}, {"content": ""}])
    process = run_crdtsync(home, "import", str(path), "--json")
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    report = stdout_json(process)
    assert (report["added"], report["skipped"]) == (1, 0)
    assert [(p["location"], p["code"]) for p in report["problems"]] == [(f"{path}:2", "IMPORT_INVALID_RECORD")]


def test_subprocess_usage_error_exits_2_without_traceback(home: Path) -> None:
    process = run_crdtsync(home, "no-such-command")
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert process.stdout == ""


# -- init ------------------------------------------------------------------------------------------------


def test_init_twice_exits_5_vault_exists(home: Path) -> None:
    assert_fails(cli(home, "init"), 5, "VAULT_EXISTS")


def test_init_twice_with_json_prints_the_error_object(home: Path) -> None:
    assert_fails(cli(home, "init", "--json"), 5, "VAULT_EXISTS", as_json=True)


def test_init_without_passphrase_in_process_exits_6(tmp_path: Path) -> None:
    result = cli(tmp_path / "v", "init", env={"CRDTSYNC_PASSPHRASE": None})
    assert_fails(result, 6, "PASSPHRASE_REQUIRED")


def test_init_where_a_file_blocks_the_folder_reports_an_error_without_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli(blocker / "vault", "init", "--json")
    assert result.exit_code not in (0, 1), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    assert set(stdout_json(result)) == {"error"}


# -- add -------------------------------------------------------------------------------------------------


def test_add_prints_the_new_memory_id(home: Path) -> None:
    result = ok(cli(home, "add", "Takes the 8:12 train"))
    memory_id = result.stdout.strip()
    shown = stdout_json(ok(cli(home, "show", memory_id, "--json")))
    assert shown["content"] == "Takes the 8:12 train"


def test_add_json_prints_one_memory_object(home: Path) -> None:
    memory = add_json(home, "Allergic to peanuts ⚠️", "--category", "health", "--tag", "food", "-t", "allergy",
                      "--source", "chat")
    assert set(memory) >= MEMORY_KEYS
    assert memory["content"] == "Allergic to peanuts ⚠️"
    assert memory["category"] == "health"
    assert memory["tags"] == ["allergy", "food"]
    assert memory["level"] == 1
    assert memory["source"] == "chat"
    assert memory["metadata"] is None
    assert memory["created"] == memory["updated"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", memory["id"])


def test_add_level_0_keeps_the_memory_out_of_the_shared_doc(home: Path) -> None:
    memory = add_json(home, "Bank PIN hint: grandma's street (cli level 0)", "--level", "0")
    assert memory["level"] == 0
    with Vault.open(home) as vault:
        assert vault.get(memory["id"]).level == 0
        assert b"grandma's street (cli level 0)" not in vault.encode_update()


@pytest.mark.parametrize("content", ["", "   "])
def test_add_empty_content_exits_3(home: Path, content: str) -> None:
    assert_fails(cli(home, "add", content), 3, "INVALID_INPUT")


def test_add_empty_content_with_json_prints_the_error_object(home: Path) -> None:
    assert_fails(cli(home, "add", "", "--json"), 3, "INVALID_INPUT", as_json=True)


def test_add_level_2_exits_3(home: Path) -> None:
    assert_fails(cli(home, "add", "Level two does not exist", "--level", "2"), 3, "INVALID_INPUT")


# -- edit, rm, restore, show -----------------------------------------------------------------------------


def test_edit_content_and_category(home: Path) -> None:
    memory = add_json(home, "Prefers green tea", "--category", "prefs")
    edited = stdout_json(ok(cli(home, "edit", memory["id"], "--content", "Prefers oolong, no sugar",
                                "--category", "drinks", "--json")))
    assert (edited["id"], edited["content"], edited["category"]) == (memory["id"], "Prefers oolong, no sugar",
                                                                     "drinks")
    assert edited["updated"] >= memory["updated"]
    assert stdout_json(ok(cli(home, "show", memory["id"], "--json"))) == edited


def test_edit_tag_and_untag(home: Path) -> None:
    memory = add_json(home, "Drinks oolong", "--tag", "drinks", "--tag", "morning")
    edited = stdout_json(ok(cli(home, "edit", memory["id"], "--tag", "tea", "--tag", "茶", "--untag", "drinks",
                                "--json")))
    assert edited["tags"] == sorted(["morning", "tea", "茶"])


def test_edit_level_0_moves_the_memory_to_this_device_only(home: Path) -> None:
    memory = add_json(home, "Moves to level 0 from the cli")
    result = ok(cli(home, "edit", memory["id"], "--level", "0", "--json"))
    assert stdout_json(result)["level"] == 0
    assert "level 0" in result.stderr
    with Vault.open(home) as vault:
        assert b"Moves to level 0 from the cli" not in vault.encode_update()


def test_edit_level_1_moves_a_level_0_memory_back_to_every_device(home: Path) -> None:
    memory = add_json(home, "Back to level 1 from the cli", "--level", "0")
    edited = stdout_json(ok(cli(home, "edit", memory["id"], "--level", "1", "--json")))
    assert edited["level"] == 1
    with Vault.open(home) as vault:
        assert b"Back to level 1 from the cli" in vault.encode_update()


def test_edit_level_round_trip_never_moves_updated_backwards(home: Path) -> None:
    memory = add_json(home, "Level round trip keeps updated moving forward")
    at_level_0 = stdout_json(ok(cli(home, "edit", memory["id"], "--level", "0", "--json")))
    at_level_1 = stdout_json(ok(cli(home, "edit", memory["id"], "--level", "1", "--json")))
    assert at_level_0["updated"] >= memory["updated"]
    assert at_level_1["updated"] >= at_level_0["updated"]


def test_edit_without_changes_exits_3(home: Path) -> None:
    memory = add_json(home, "Nothing to change here")
    assert_fails(cli(home, "edit", memory["id"]), 3, "INVALID_INPUT")


def test_edit_of_a_deleted_memory_exits_3_memory_deleted(home: Path) -> None:
    memory = add_json(home, "Deleted before the edit")
    ok(cli(home, "rm", memory["id"]))
    assert_fails(cli(home, "edit", memory["id"], "--content", "too late", "--json"), 3, "MEMORY_DELETED",
                 as_json=True)


def test_rm_deletes_and_list_hides_the_memory(home: Path) -> None:
    memory = add_json(home, "To be removed")
    result = ok(cli(home, "rm", memory["id"]))
    assert result.stdout.strip() == f"deleted {memory['id']}"
    assert memory["id"] not in {m["id"] for m in stdout_json(ok(cli(home, "list", "--json")))}
    with_deleted = {m["id"]: m for m in stdout_json(ok(cli(home, "list", "--deleted", "--json")))}
    assert with_deleted[memory["id"]]["deleted"] is True


def test_rm_json_prints_the_deleted_memory(home: Path) -> None:
    memory = add_json(home, "Removed with json output")
    removed = stdout_json(ok(cli(home, "rm", memory["id"], "--json")))
    assert (removed["id"], removed["deleted"]) == (memory["id"], True)


def test_restore_brings_a_deleted_memory_back(home: Path) -> None:
    memory = add_json(home, "Removed then restored")
    ok(cli(home, "rm", memory["id"]))
    restored = stdout_json(ok(cli(home, "restore", memory["id"], "--json")))
    assert (restored["deleted"], restored["content"]) == (False, "Removed then restored")
    assert memory["id"] in {m["id"] for m in stdout_json(ok(cli(home, "list", "--json")))}


def test_show_json_prints_the_memory_object(home: Path) -> None:
    memory = add_json(home, "Shown as json", "--category", "c", "--tag", "t")
    shown = stdout_json(ok(cli(home, "show", memory["id"], "--json")))
    assert shown == memory


def test_show_prints_the_fields_as_text(home: Path) -> None:
    memory = add_json(home, "Shown as text", "--category", "notes")
    result = ok(cli(home, "show", memory["id"]))
    assert f"id: {memory['id']}" in result.stdout
    assert "content: Shown as text" in result.stdout
    assert "category: notes" in result.stdout


@pytest.mark.parametrize("command", ["show", "edit", "search", "list"])
def test_text_output_shows_bracketed_text_literally(tmp_path: Path, command: str) -> None:
    """Memory text is data, not rich markup: ``[/x]`` or ``[bold]`` must be printed as typed."""
    vault = new_vault(tmp_path / "v")
    memory = add_json(vault, "a [/x] closing tag and [bold]markup[/bold]")
    args = {
        "show": ["show", memory["id"]],
        "edit": ["edit", memory["id"], "--tag", "brackets"],
        "search": ["search", "closing"],
        "list": ["list"],
    }[command]
    result = ok(cli(vault, *args, env={"COLUMNS": "400"}))
    assert "a [/x] closing tag and [bold]markup[/bold]" in result.stdout


# -- unknown ids and missing vaults -----------------------------------------------------------------------


UNKNOWN_ID_COMMANDS = {
    "show": ["show", "0190f1c2-0000-7000-8000-000000000000"],
    "edit": ["edit", "0190f1c2-0000-7000-8000-000000000000", "--content", "x"],
    "rm": ["rm", "0190f1c2-0000-7000-8000-000000000000"],
    "restore": ["restore", "0190f1c2-0000-7000-8000-000000000000"],
    "resolve-value": ["resolve", "0190f1c2-0000-7000-8000-000000000000", "--field", "content", "--value", "x"],
    "resolve-pick": ["resolve", "0190f1c2-0000-7000-8000-000000000000", "--field", "content", "--pick", "1"],
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_ID_COMMANDS))
def test_unknown_id_exits_4_not_found(home: Path, name: str) -> None:
    assert_fails(cli(home, *UNKNOWN_ID_COMMANDS[name]), 4, "NOT_FOUND")


@pytest.mark.parametrize("name", sorted(UNKNOWN_ID_COMMANDS))
def test_unknown_id_with_json_prints_only_the_error_object(home: Path, name: str) -> None:
    assert_fails(cli(home, *UNKNOWN_ID_COMMANDS[name], "--json"), 4, "NOT_FOUND", as_json=True)


def test_json_before_the_command_name_also_prints_the_error_object(home: Path) -> None:
    assert_fails(cli(home, "--json", "show", "no-such-id"), 4, "NOT_FOUND", as_json=True)


@pytest.mark.parametrize("args", [["list"], ["add", "x"], ["status"], ["conflicts"], ["export"], ["log"]])
def test_missing_vault_exits_5_vault_not_found(tmp_path: Path, args: list[str]) -> None:
    assert_fails(cli(tmp_path / "nowhere", *args), 5, "VAULT_NOT_FOUND")


def test_error_message_with_brackets_in_a_path_is_printed_without_traceback(tmp_path: Path) -> None:
    """Error messages carry user text (paths, ids): it must not be read as rich markup."""
    missing = tmp_path / "memories[/old]"
    result = cli(missing, "list")
    assert_fails(result, 5, "VAULT_NOT_FOUND")
    assert "memories[/old]" in flat(result.stderr)


# -- list, search -------------------------------------------------------------------------------------------


def test_list_shows_every_live_memory_by_default(fresh: Path) -> None:
    rows = [{"content": f"Bulk memory number {i}", "created": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}
            for i in range(120)]
    ok(cli(fresh, "import", str(write_jsonl(fresh.parent / "bulk.jsonl", rows))))
    listed = stdout_json(ok(cli(fresh, "list", "--json")))
    assert len(listed) == 120


def test_list_limit_returns_the_newest_first(fresh: Path) -> None:
    rows = [{"content": f"Dated memory {i}", "created": f"2024-05-0{i}T12:00:00Z"} for i in range(1, 8)]
    ok(cli(fresh, "import", str(write_jsonl(fresh.parent / "dated.jsonl", rows))))
    listed = stdout_json(ok(cli(fresh, "list", "--limit", "3", "--json")))
    assert [m["content"] for m in listed] == ["Dated memory 7", "Dated memory 6", "Dated memory 5"]


@pytest.mark.parametrize("args", [["list", "--limit", "0"], ["list", "--limit", "-1"], ["search", "x", "--limit", "0"],
                                  ["log", "--limit", "-5"]])
def test_a_limit_below_1_is_a_usage_error(fresh: Path, args: list[str]) -> None:
    result = cli(fresh, *args)
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_list_json_is_an_array_of_memory_objects(fresh: Path) -> None:
    first = add_json(fresh, "First of two")
    second = add_json(fresh, "Second of two", "--level", "0")
    listed = stdout_json(ok(cli(fresh, "list", "--json")))
    assert isinstance(listed, list)
    assert {m["id"] for m in listed} == {first["id"], second["id"]}
    assert all(set(m) >= MEMORY_KEYS for m in listed)


def test_list_of_an_empty_vault_prints_an_empty_array(fresh: Path) -> None:
    assert stdout_json(ok(cli(fresh, "list", "--json"))) == []


def test_list_of_an_empty_vault_says_so_on_stderr(fresh: Path) -> None:
    result = ok(cli(fresh, "list"))
    assert (result.stdout, result.stderr.strip()) == ("", "no memories")


def test_search_json_finds_memories_by_word_tag_and_category(home: Path) -> None:
    memory = add_json(home, "Rides a Brompton bicycle to work", "--tag", "cyclingcli", "--category",
                      "commutecli")
    for query in ("brompton", "Bicycle work", "cyclingcli", "commutecli", "bromp"):
        found = stdout_json(ok(cli(home, "search", query, "--json")))
        assert memory["id"] in {m["id"] for m in found}, query


def test_search_json_skips_deleted_memories(home: Path) -> None:
    memory = add_json(home, "Zanzibar holiday plans")
    ok(cli(home, "rm", memory["id"]))
    assert stdout_json(ok(cli(home, "search", "zanzibar", "--json"))) == []


def test_search_json_with_no_match_prints_an_empty_array(home: Path) -> None:
    assert stdout_json(ok(cli(home, "search", "xylophoneabsent", "--json"))) == []


@pytest.mark.parametrize("query", ['"unterminated', "NEAR(", "a:b", "*", "AND OR NOT", "-"])
def test_search_treats_fts_syntax_as_plain_words(home: Path, query: str) -> None:
    assert isinstance(stdout_json(ok(cli(home, "search", "--json", "--", query))), list)


# -- import, export, log -------------------------------------------------------------------------------------


def test_import_twice_adds_nothing_the_second_time(home: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "twice.jsonl", [
        {"content": "Imported twice: likes jazz", "tags": ["music"]},
        {"content": "Imported twice: owns a cat named Miso", "category": "pets"},
        {"text": "Imported twice: speaks Portuguese", "source": "notes:languages"},
    ])
    first = stdout_json(ok(cli(home, "import", str(path), "--json")))
    second = stdout_json(ok(cli(home, "import", str(path), "--json")))
    assert first == {"added": 3, "skipped": 0, "problems": []}
    assert second == {"added": 0, "skipped": 3, "problems": []}


def test_import_reports_a_corrupt_line_with_its_number_and_imports_the_rest(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.jsonl"
    path.write_text(
        json.dumps({"content": "Corrupt file, line 1: fine"}) + "\n"
        + '{"content": "Corrupt file, line 2: cut off mid-wr\n'
        + json.dumps({"content": "Corrupt file, line 3: fine"}) + "\n",
        encoding="utf-8",
    )
    report = stdout_json(ok(cli(home, "import", str(path), "--json")))
    assert report["added"] == 2
    assert [(p["location"], p["code"]) for p in report["problems"]] == [(f"{path}:2", "IMPORT_MALFORMED")]
    found = stdout_json(ok(cli(home, "search", "Corrupt file fine", "--json")))
    assert sorted(m["content"] for m in found) == ["Corrupt file, line 1: fine", "Corrupt file, line 3: fine"]


def test_import_text_output_names_the_corrupt_line_on_stderr(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"content": "Text report, good line"}) + "\n{not json\n", encoding="utf-8")
    result = ok(cli(home, "import", str(path)))
    assert "bad.jsonl:2" in flat(result.stderr)
    assert "IMPORT_MALFORMED" in result.stderr
    assert result.stdout.strip() == "imported 1 memories (0 already present, 1 problems)"


def test_import_of_a_missing_file_exits_3(home: Path, tmp_path: Path) -> None:
    assert_fails(cli(home, "import", str(tmp_path / "absent.jsonl"), "--json"), 3, "IMPORT_UNREADABLE",
                 as_json=True)


def test_import_of_an_unknown_format_exits_3(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some prose, not memories\n")
    assert_fails(cli(home, "import", str(path)), 3, "IMPORT_UNKNOWN_FORMAT")


def test_export_out_writes_every_live_memory_as_jsonl(fresh: Path) -> None:
    kept = add_json(fresh, "Kept in the export", "--tag", "x")
    local = add_json(fresh, "Level 0, still exported locally", "--level", "0")
    gone = add_json(fresh, "Deleted before the export")
    ok(cli(fresh, "rm", gone["id"]))
    out_file = fresh.parent / "export.jsonl"
    out_file.write_text("an older export\n")
    result = ok(cli(fresh, "export", "--out", str(out_file)))
    rows = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert {r["id"] for r in rows} == {kept["id"], local["id"]}
    assert result.stdout == ""
    assert "exported 2 memories" in result.stderr
    assert out_file.stat().st_mode & 0o777 == 0o600  # every memory in clear: for its owner only
    assert sorted(p.name for p in out_file.parent.iterdir() if p.is_file()) == ["export.jsonl"]  # no temporary left


def test_export_to_stdout_prints_the_same_lines_as_export_out(fresh: Path) -> None:
    add_json(fresh, "Same either way 🙂")
    out_file = fresh.parent / "export.jsonl"
    ok(cli(fresh, "export", "--out", str(out_file)))
    assert ok(cli(fresh, "export")).stdout == out_file.read_text(encoding="utf-8")


def test_export_into_a_missing_folder_reports_an_error_without_traceback(fresh: Path) -> None:
    add_json(fresh, "Nowhere to go")
    missing = fresh.parent / "no-such-dir"
    result = cli(fresh, "export", "--out", str(missing / "out.jsonl"))
    assert_fails(result, 5, "IO_ERROR")
    assert flat(f"there is no folder {missing}") in flat(result.stderr)
    assert not missing.exists()


def test_export_into_a_relay_folder_is_refused(fresh: Path, tmp_path: Path) -> None:
    """A sync tool carries the relay folder: an export there would put every memory in clear beside the
    ciphertext."""
    add_json(fresh, "Kept out of the shared folder")
    box = tmp_path / "box"
    ok(cli(fresh, "relay", "add", "box", str(box)))
    (box / "backups").mkdir()
    for inside in (box / "export.jsonl", box / "backups" / "export.jsonl"):
        assert_fails(cli(fresh, "export", "--out", str(inside)), 3, "EXPORT_INTO_RELAY")
        assert not inside.exists()
    ok(cli(fresh, "export", "--out", str(tmp_path / "export.jsonl")))
    assert "Kept out of the shared folder" in (tmp_path / "export.jsonl").read_text(encoding="utf-8")


def test_export_then_import_into_a_fresh_vault_round_trips_ids_and_content(fresh: Path, tmp_path: Path) -> None:
    source_rows = [
        {"content": "Round trip: prefers oolong 🍵", "category": "prefs", "tags": ["drinks", "茶"],
         "metadata": {"n": 3, "nested": {"ok": True}}, "created": "2024-03-01T09:30:00Z"},
        {"content": "Round trip: lives in Lyon — près de la Saône", "source": "notes:home"},
        {"content": "Round trip: level 0", "level": 0},
    ]
    ok(cli(fresh, "import", str(write_jsonl(tmp_path / "source.jsonl", source_rows))))
    added = add_json(fresh, "Round trip: added by hand", "--tag", "manual")
    exported = tmp_path / "export.jsonl"
    ok(cli(fresh, "export", "--out", str(exported)))
    other = new_vault(tmp_path / "other")
    report = stdout_json(ok(cli(other, "import", str(exported), "--json")))
    assert report == {"added": 4, "skipped": 0, "problems": []}
    fields = ("id", "content", "category", "tags", "level", "source", "metadata", "created")

    def projection(home: Path) -> list[tuple[Any, ...]]:
        return sorted(tuple(json.dumps(m[f], sort_keys=True) for f in fields)
                      for m in stdout_json(ok(cli(home, "list", "--json"))))

    assert projection(other) == projection(fresh)
    assert added["id"] in {m["id"] for m in stdout_json(ok(cli(other, "list", "--json")))}


def test_reimporting_an_export_into_its_own_vault_adds_nothing(fresh: Path) -> None:
    add_json(fresh, "Exported and imported back", "--tag", "loop")
    exported = fresh.parent / "self.jsonl"
    ok(cli(fresh, "export", "--out", str(exported)))
    assert stdout_json(ok(cli(fresh, "import", str(exported), "--json"))) == {"added": 0, "skipped": 1,
                                                                                  "problems": []}


def test_log_json_shows_the_import(home: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "logged.jsonl", [{"content": "Logged import, one line"}, {"nope": 1}])
    ok(cli(home, "import", str(path)))
    rows = stdout_json(ok(cli(home, "log", "--json")))
    newest = rows[0]
    assert (newest["op"], newest["path"], newest["added"], newest["skipped"], newest["problems"]) == (
        "import", str(path), 1, 0, 1)
    assert {"at", "op", "peer", "code"} <= set(newest)


def test_log_limit_caps_the_rows(home: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "limit.jsonl", [{"content": "Log limit import"}])
    ok(cli(home, "import", str(path)))
    ok(cli(home, "import", str(path)))
    assert len(stdout_json(ok(cli(home, "log", "--limit", "1", "--json")))) == 1


# -- conflicts and resolve -----------------------------------------------------------------------------------


def test_conflicts_json_lists_the_concurrent_values(shared_conflict: ConflictVault) -> None:
    found = stdout_json(ok(cli(shared_conflict.path, "conflicts", "--json")))
    assert len(found) == 1
    (conflict,) = found
    assert set(conflict) == {"memory_id", "field", "candidates"}
    assert (conflict["memory_id"], conflict["field"]) == (shared_conflict.memory_id, "content")
    assert all(set(c) == {"value", "device", "at"} for c in conflict["candidates"])
    assert sorted(c["value"] for c in conflict["candidates"]) == ["Standup at 10:00", "Standup at 9:45 🕤"]
    assert sorted(c["device"] for c in conflict["candidates"]) == sorted(shared_conflict.devices)


def test_conflicts_json_matches_the_python_api(shared_conflict: ConflictVault) -> None:
    with Vault.open(shared_conflict.path) as vault:
        expected = [c.to_json() for c in vault.conflicts()]
    assert stdout_json(ok(cli(shared_conflict.path, "conflicts", "--json"))) == expected


def test_conflicts_json_of_a_vault_without_conflicts_is_an_empty_array(fresh: Path) -> None:
    add_json(fresh, "Nothing concurrent here")
    assert stdout_json(ok(cli(fresh, "conflicts", "--json"))) == []


def test_conflicted_memory_shows_the_field_in_conflict(shared_conflict: ConflictVault) -> None:
    shown = stdout_json(ok(cli(shared_conflict.path, "show", shared_conflict.memory_id, "--json")))
    assert shown["conflicts"] == ["content"]


def test_conflicts_text_numbers_the_candidates_as_resolve_pick_takes_them(tmp_path: Path) -> None:
    """The table a person reads before ``resolve --pick N``: each conflict's memory id (whole, on one line at 80
    columns, to copy) and field, then its candidates numbered with value, device and writing agent."""
    with Vault.open(new_vault(tmp_path / "a", "a")) as a, \
            Vault.open(new_vault(tmp_path / "b", "b"), agent="claude-code") as b:
        memory = a.add("Dentist on Tuesday")
        b.apply_update(a.encode_update(), "a")
        state = a.state_vector()
        a.update(memory.id, category="health")
        b.update(memory.id, category="appointments")
        a.apply_update(b.encode_update(state), "b")
        (conflict,) = a.conflicts()
        devices = {"health": a.device_id, "appointments": b.device_id}
    listed = ok(cli(tmp_path / "a", "conflicts"))
    assert "the device that signed the write; agent and at: what that device says" in listed.stderr
    lines = [line.strip() for line in listed.stdout.splitlines()]
    assert lines[0].split() == [memory.id, "category"]
    rows = {line.split()[0]: line for line in lines[1:] if line[:1].isdigit()}
    assert sorted(rows) == ["1", "2"]
    names = {"health": "a", "appointments": "b"}
    for n, candidate in enumerate(conflict.candidates, 1):
        assert f'"{candidate.value}"' in rows[str(n)]
        assert rows[str(n)].split('"')[2].split()[0] == names[candidate.value]  # the device, by name
        assert ("claude-code" in rows[str(n)]) == (candidate.value == "appointments")
    shown_text = ok(cli(tmp_path / "a", "show", memory.id)).stdout
    assert f"created_by: a ({devices['health']})" in shown_text
    assert flat(f"crdtsync resolve {memory.id} --field category --pick N") in flat(shown_text)
    shown_rows = {line.split()[0]: line for line in shown_text.splitlines() if line.split()[:1] in (["1"], ["2"])}
    assert sorted(shown_rows) == ["1", "2"] and all(rows[n] in shown_rows[n] for n in rows)
    ok(cli(tmp_path / "a", "resolve", memory.id, "--field", "category", "--pick", "2"))
    shown = stdout_json(ok(cli(tmp_path / "a", "show", memory.id, "--json")))
    assert shown["category"] == conflict.candidates[1].value
    assert "conflicting values" not in ok(cli(tmp_path / "a", "show", memory.id)).stdout


def conflict_between(tmp_path: Path, first: str, second: str, *, delete: bool = False) -> tuple[Path, str, str]:
    """Vault ``a`` (device named ``first``) holding a conflict with a device named ``second``: concurrent
    categories, or with ``delete`` an edit on ``a`` against a delete on the other. Returns a's folder, the memory
    id and the other device's id."""
    with Vault.open(new_vault(tmp_path / "a", first)) as a, Vault.open(new_vault(tmp_path / "b", second)) as b:
        memory = a.add("Dentist on Tuesday")
        b.apply_update(a.encode_update(), "a")
        state = a.state_vector()
        a.update(memory.id, category="health")
        if delete:
            b.delete(memory.id)
        else:
            b.update(memory.id, category="appointments")
        a.apply_update(b.encode_update(state), "b")
        assert len(a.conflicts()) == 1
        return tmp_path / "a", memory.id, b.device_id


def test_conflicts_text_tells_two_devices_of_one_name_apart_by_id(tmp_path: Path) -> None:
    path, _, other = conflict_between(tmp_path, "laptop", "laptop")
    assert flat(f"laptop ({other[:12]})") in flat(ok(cli(path, "conflicts")).stdout)


def test_resolve_deleted_takes_yes_or_no_and_refuses_anything_else(tmp_path: Path) -> None:
    path, memory_id, _ = conflict_between(tmp_path, "a", "b", delete=True)
    assert stdout_json(ok(cli(path, "conflicts", "--json")))[0]["field"] == "deleted"
    assert_fails(cli(path, "resolve", memory_id, "--field", "deleted", "--value", "ture"), 3, "INVALID_INPUT")
    assert len(stdout_json(ok(cli(path, "conflicts", "--json")))) == 1
    kept = stdout_json(ok(cli(path, "resolve", memory_id, "--field", "deleted", "--value", "No", "--json")))
    assert (kept["deleted"], kept["conflicts"]) == (False, [])


def test_list_text_keeps_each_id_whole_on_one_line(fresh: Path) -> None:
    memory = add_json(fresh, "A memory with a long text " * 8, "--category", "a category", "--tag", "a tag")
    lines = ok(cli(fresh, "list")).stdout.splitlines()
    assert any(line.split()[:1] == [memory["id"]] for line in lines)
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize(("columns", "headers"), [(50, ["id", "content"]), (100, ["id", "content", "category"]),
                                                  (160, ["id", "content", "category", "tags", "updated"])])
def test_list_and_search_show_one_line_per_memory_at_any_terminal_width(
    fresh: Path, columns: int, headers: list[str],
) -> None:
    """A phone's terminal is 50 columns wide: each memory stays on one line with its id whole and its text cut
    (``show`` has it whole), and wider terminals add category, tags and the update time."""
    long_one = add_json(fresh, "Multi-line\nnotes about the garden, with far more text than fits " * 4,
                        "--category", "a category longer than sixteen", "--tag", "garden", "--tag", "notes")
    short = add_json(fresh, "Tea 🍵 garden", "--level", "0")
    env = {"COLUMNS": str(columns)}
    for command in (["list"], ["search", "garden"]):
        lines = run_crdtsync(fresh, *command, env=env).stdout.splitlines()
        assert lines[0].split() == headers
        assert max(cell_len(line) for line in lines) <= columns
        rows = {line.split()[0]: line for line in lines[2:]}
        assert sorted(rows) == sorted([long_one["id"], short["id"]]), lines
        assert rows[long_one["id"]].split()[1] == "Multi-line" and "…" in rows[long_one["id"]]
        assert "(level 0) Tea 🍵 garden" in rows[short["id"]] if columns > 50 else "(level 0)" in rows[short["id"]]


@pytest.mark.parametrize("pick", [1, 2])
def test_resolve_pick_keeps_that_candidate(conflict_vault: ConflictVault, pick: int) -> None:
    candidates = stdout_json(ok(cli(conflict_vault.path, "conflicts", "--json")))[0]["candidates"]
    resolved = stdout_json(ok(cli(conflict_vault.path, "resolve", conflict_vault.memory_id, "--field", "content",
                                  "--pick", str(pick), "--json")))
    assert resolved["content"] == candidates[pick - 1]["value"]
    assert resolved["conflicts"] == []
    assert stdout_json(ok(cli(conflict_vault.path, "conflicts", "--json"))) == []


def test_resolve_value_keeps_the_given_text(conflict_vault: ConflictVault) -> None:
    resolved = stdout_json(ok(cli(conflict_vault.path, "resolve", conflict_vault.memory_id, "-f", "content",
                                  "--value", "Standup at 9:50, agreed", "--json")))
    assert (resolved["content"], resolved["conflicts"]) == ("Standup at 9:50, agreed", [])
    assert stdout_json(ok(cli(conflict_vault.path, "conflicts", "--json"))) == []


@pytest.mark.parametrize("options", [[], ["--pick", "1", "--value", "both"]], ids=["neither", "both"])
def test_resolve_needs_exactly_one_of_pick_or_value(shared_conflict: ConflictVault, options: list[str]) -> None:
    result = cli(shared_conflict.path, "resolve", shared_conflict.memory_id, "--field", "content", *options, "--json")
    assert_fails(result, 3, "INVALID_INPUT", as_json=True)
    assert len(stdout_json(ok(cli(shared_conflict.path, "conflicts", "--json")))) == 1


def test_resolve_pick_out_of_range_exits_3(shared_conflict: ConflictVault) -> None:
    result = cli(shared_conflict.path, "resolve", shared_conflict.memory_id, "--field", "content", "--pick", "3")
    assert_fails(result, 3, "INVALID_INPUT")


def test_an_edit_of_a_field_in_conflict_says_that_it_settled_it(conflict_vault: ConflictVault) -> None:
    edited = ok(cli(conflict_vault.path, "edit", conflict_vault.memory_id, "--content", "Standup at 9:50"))
    assert "settled the conflict on content" in edited.stderr
    assert stdout_json(ok(cli(conflict_vault.path, "conflicts", "--json"))) == []
    again = ok(cli(conflict_vault.path, "edit", conflict_vault.memory_id, "--category", "work"))
    assert "settled" not in again.stderr


def test_moving_a_conflicted_memory_to_level_0_is_refused_until_resolved(conflict_vault: ConflictVault) -> None:
    """The move withdraws every entry from the shared Doc: the candidates not shown would be gone for good."""
    path, memory_id = conflict_vault.path, conflict_vault.memory_id
    assert_fails(cli(path, "edit", memory_id, "--level", "0"), 3, "MEMORY_CONFLICTED")
    shown = stdout_json(ok(cli(path, "show", memory_id, "--json")))
    assert (shown["level"], shown["conflicts"]) == (1, ["content"])
    ok(cli(path, "resolve", memory_id, "--field", "content", "--pick", "1"))
    assert stdout_json(ok(cli(path, "edit", memory_id, "--level", "0", "--json")))["level"] == 0


def test_resolve_unknown_field_exits_3_invalid_field(shared_conflict: ConflictVault) -> None:
    result = cli(shared_conflict.path, "resolve", shared_conflict.memory_id, "--field", "colour", "--value", "x")
    assert_fails(result, 3, "INVALID_FIELD")


# -- status, devices, --vault -----------------------------------------------------------------------------


def test_status_json_counts_the_memories(fresh: Path) -> None:
    add_json(fresh, "Live one")
    add_json(fresh, "Live and local", "--level", "0")
    gone = add_json(fresh, "Deleted one")
    ok(cli(fresh, "rm", gone["id"]))
    status = stdout_json(ok(cli(fresh, "status", "--json")))
    assert status["memories"] == {"live": 2, "deleted": 1, "local_only": 1, "conflicted": 0}
    assert (status["vault"], status["device_name"]) == (str(fresh), "cli-test")
    assert (status["held_updates"], status["quarantined_updates"]) == (0, 0)
    assert set(status["log"]) == {"updates_since_snapshot", "bytes_since_snapshot"}


def test_status_json_counts_a_conflicted_memory(shared_conflict: ConflictVault) -> None:
    assert stdout_json(ok(cli(shared_conflict.path, "status", "--json")))["memories"]["conflicted"] == 1


def test_status_shows_alarms_until_they_are_cleared(fresh: Path) -> None:
    with Vault.open(fresh) as vault:
        vault.store.raise_alarm("MAILBOX_FORK", "device x has two histories", device="x", relay="box")
    shown = ok(cli(fresh, "status"))
    assert "[MAILBOX_FORK]" in shown.stderr and "two histories" in shown.stderr
    assert [a["code"] for a in stdout_json(ok(cli(fresh, "status", "--json")))["alarms"]] == ["MAILBOX_FORK"]
    cleared = stdout_json(ok(cli(fresh, "status", "--json", "--clear-alarms")))
    assert cleared["alarms_cleared"] == 1
    assert stdout_json(ok(cli(fresh, "status", "--json")))["alarms"] == []
    assert "alarms cleared" in [row["op"] for row in stdout_json(ok(cli(fresh, "log", "--json")))]


def test_status_text_names_the_device(home: Path, init_run: InitRun) -> None:
    device_id = stdout_json(init_run.process)["device_id"]
    result = ok(cli(home, "status"))
    assert device_id in result.stdout
    assert "laptop" in result.stdout


def test_devices_json_lists_this_device(home: Path, init_run: InitRun) -> None:
    add_json(home, "A write, so the device has written with a client id")
    devices = stdout_json(ok(cli(home, "devices", "--json")))
    (device,) = devices
    assert device["device_id"] == stdout_json(init_run.process)["device_id"]
    assert (device["name"], device["this_device"]) == ("laptop", True)
    assert device["clients"] and all(isinstance(c, int) for c in device["clients"])
    assert re.fullmatch(r"[0-9a-f]{64}", device["sign_pk"])
    assert re.fullmatch(r"[0-9a-f]{64}", device["kx_pk"])


def test_devices_json_right_after_init_lists_this_device(fresh: Path) -> None:
    devices = stdout_json(ok(cli(fresh, "devices", "--json")))
    assert [(d["name"], d["this_device"]) for d in devices] == [("cli-test", True)]


def test_devices_json_of_a_synced_vault_lists_both_devices(shared_conflict: ConflictVault) -> None:
    devices = stdout_json(ok(cli(shared_conflict.path, "devices", "--json")))
    assert sorted(d["device_id"] for d in devices) == sorted(shared_conflict.devices)
    assert {d["device_id"]: d["this_device"] for d in devices} == {shared_conflict.devices[0]: True,
                                                                  shared_conflict.devices[1]: False}


@pytest.mark.parametrize("where", ["before", "after"])
def test_vault_option_before_or_after_the_command_name(tmp_path: Path, where: str) -> None:
    vault = new_vault(tmp_path / "elsewhere")
    nowhere = tmp_path / "not-the-vault"  # CRDTSYNC_HOME points here; --vault must win
    command = ["add", "Written through --vault", "--json"]
    args = ["--vault", str(vault), *command] if where == "before" else [*command, "--vault", str(vault)]
    memory = stdout_json(ok(cli(nowhere, *args)))
    with Vault.open(vault) as opened:
        assert opened.get(memory["id"]).content == "Written through --vault"
    assert not nowhere.exists()


def test_vault_option_overrides_crdtsync_home_for_reads(home: Path, fresh: Path) -> None:
    memory = add_json(fresh, "Only in the fresh vault")
    assert [m["id"] for m in stdout_json(ok(cli(home, "--vault", str(fresh), "list", "--json")))] == [memory["id"]]


def test_commands_leave_no_json_mode_behind(fresh: Path) -> None:
    """``--json`` given before one command must not turn the next in-process invocation into JSON mode."""
    ok(cli(fresh, "--json", "list"))
    assert_fails(cli(fresh, "show", "no-such-id"), 4, "NOT_FOUND")



# -- terminal safety --------------------------------------------------------------------------------------

_HOSTILE = "evil \x1b]0;pwned\x07 \x1b[2J \x9b31m \u202egnp.exe"
_RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def test_text_output_never_hands_control_characters_to_the_terminal(tmp_path: Path) -> None:
    """Memories, tags, device names and agents come from other devices and imports: an ESC, a C1 control or a
    bidirectional override in them is shown escaped in text output (and kept as it is in JSON)."""
    with Vault.open(new_vault(tmp_path / "a", _HOSTILE), agent=_HOSTILE) as a, \
            Vault.open(new_vault(tmp_path / "b", "b")) as b:
        memory = a.add(_HOSTILE, category=_HOSTILE, tags=["\u202egnp.exe \x9b31m"])
        b.apply_update(a.encode_update(), "a")
        state = a.state_vector()
        a.update(memory.id, content=_HOSTILE + " one")
        b.update(memory.id, content=_HOSTILE + " two")
        a.apply_update(b.encode_update(state), "b")
        assert [c.field for c in a.conflicts()] == ["content"]
    home = tmp_path / "a"
    for args in (["list"], ["show", memory.id], ["search", "evil"], ["conflicts"], ["status"], ["devices"],
                 ["log"]):
        result = ok(cli(home, *args))
        shown = result.stdout + result.stderr
        assert not any(raw in shown for raw in _RAW), args
    assert "\\x1b]0;pwned\\x07" in ok(cli(home, "show", memory.id)).stdout
    assert "\\u202egnp.exe" in ok(cli(home, "devices")).stdout
    assert stdout_json(ok(cli(home, "show", memory.id, "--json")))["category"] == _HOSTILE


# -- ids by their first characters -------------------------------------------------------------------------


def test_commands_take_a_memory_id_by_its_first_characters(fresh: Path) -> None:
    """A person on a phone types the start of an id, as with git: show, edit, rm, restore and resolve take any
    prefix of at least 4 characters that starts one id only; a prefix that starts several names them."""
    first, second = add_json(fresh, "Walks the dog at seven"), add_json(fresh, "Feeds the cat at eight")
    shared = first["id"][: next(i for i, (a, b) in enumerate(zip(first["id"], second["id"], strict=True)) if a != b)]
    assert len(shared) >= 4  # UUIDv7 ids made a moment apart share their leading time bits
    own = first["id"][: len(shared) + 1]
    assert stdout_json(ok(cli(fresh, "show", own, "--json")))["id"] == first["id"]
    edited = stdout_json(ok(cli(fresh, "edit", own, "--content", "Walks the dog at six", "--json")))
    assert (edited["id"], edited["content"]) == (first["id"], "Walks the dog at six")
    ok(cli(fresh, "rm", own))
    assert stdout_json(ok(cli(fresh, "show", first["id"], "--json")))["deleted"] is True
    assert stdout_json(ok(cli(fresh, "restore", own, "--json")))["deleted"] is False
    ambiguous = cli(fresh, "show", shared, "--json")
    assert_fails(ambiguous, 3, "AMBIGUOUS_ID", as_json=True)
    message = stdout_json(ambiguous)["error"]["message"]
    assert first["id"] in message and second["id"] in message
    assert_fails(cli(fresh, "rm", shared), 3, "AMBIGUOUS_ID")
    assert stdout_json(ok(cli(fresh, "show", second["id"], "--json")))["deleted"] is False
    short = cli(fresh, "show", first["id"][:3])
    assert_fails(short, 4, "NOT_FOUND")
    assert flat("at least 4 characters") in flat(short.stderr)


def test_resolve_takes_an_id_by_its_first_characters(conflict_vault: ConflictVault) -> None:
    prefix = conflict_vault.memory_id[:13]
    resolved = stdout_json(ok(cli(conflict_vault.path, "resolve", prefix, "--field", "content", "--pick", "1",
                                  "--json")))
    assert (resolved["id"], resolved["conflicts"]) == (conflict_vault.memory_id, [])


def test_a_whole_id_wins_over_the_longer_ids_it_starts(fresh: Path) -> None:
    """Ids from other devices can be any printable text: one may be the start of another."""
    with Vault.open(fresh) as vault:
        memory = vault.add("template")
        with vault.store.write():
            vault.store.put_memories([(replace(memory, id="abcd", content="short id"), []),
                                      (replace(memory, id="abcdef", content="longer id"), [])])
        assert vault.match_id("abcd") == "abcd" and vault.match_id("abcde") == "abcdef"
        for unprintable in ("abcd\udcff", "abc\x00d"):  # an argument that was not UTF-8; a control character
            with pytest.raises(NotFoundError):
                vault.match_id(unprintable)
    assert stdout_json(ok(cli(fresh, "show", "abcd", "--json")))["content"] == "short id"


def test_version_names_crdtsync_pycrdt_and_the_formats(tmp_path: Path) -> None:
    result = ok(cli(tmp_path / "no-vault-needed", "--version"))
    assert result.stdout.split()[:2] == ["crdtsync", importlib.metadata.version("crdtsync")]
    assert f"pycrdt {importlib.metadata.version('pycrdt')}" in result.stdout and "store format 3" in result.stdout
    assert not (tmp_path / "no-vault-needed").exists()


def test_add_and_edit_read_the_content_from_standard_input_for_a_dash(fresh: Path) -> None:
    """What an agent or a script pipes in needs no shell quoting: ``add -`` and ``edit --content -``."""
    env = {"CRDTSYNC_HOME": str(fresh), "CRDTSYNC_PASSPHRASE": PASSPHRASE, "CRDTSYNC_AGENT": None}
    text = 'Line one with "quotes" and $HOME\nline two 🍵\n'
    added = runner.invoke(app, ["add", "-", "--json"], input=text, env=env, catch_exceptions=False)
    memory = stdout_json(ok(added))
    assert memory["content"] == text[:-1]  # the newline echo or a heredoc adds is dropped, one only
    edited = runner.invoke(app, ["edit", memory["id"], "--content", "-", "--json"], input="replaced\n\n",
                           env=env, catch_exceptions=False)
    assert stdout_json(ok(edited))["content"] == "replaced\n"
    binary = runner.invoke(app, ["add", "-"], input=b"\xff\xfe not text", env=env, catch_exceptions=False)
    assert_fails(binary, 3, "INVALID_INPUT")
    assert [m["content"] for m in stdout_json(ok(cli(fresh, "list", "--json")))] == ["replaced\n"]


@pytest.mark.parametrize("args", [
    ["search", "tea \udcff"],
    ["relay", "add", "box\udcff", "/tmp/somewhere"],
    ["relay", "add", "box", "/tmp/some\udcffwhere"],
    ["relay", "rm", "box\udcff"],
    ["add", "tea \udcff"],
    ["join", "/tmp/some\udcffwhere"],
], ids=["search", "relay-name", "relay-url", "relay-rm", "add", "join-url"])
def test_an_argument_that_is_not_utf8_is_invalid_input_without_traceback(fresh: Path, args: list[str]) -> None:
    """A shell passes arguments as bytes; Python hands bytes that are not UTF-8 over as lone surrogates, which
    SQLite and pycrdt cannot take: each command says so with INVALID_INPUT (exit 3) and stores nothing."""
    home = fresh if args[0] != "join" else fresh.parent / "joining"
    result = run_crdtsync(home, *args)
    assert_fails(result, 3, "INVALID_INPUT")
    assert "not valid Unicode" in result.stderr
    assert not (fresh.parent / "joining").exists()
    assert stdout_json(ok(cli(fresh, "list", "--json"))) == []


def test_import_dash_reads_standard_input_in_any_format(fresh: Path) -> None:
    """``mem0 ... | crdtsync import -``: the input is told apart by its content as a file is, problems and the
    log name it ``-``, and importing the same input again adds nothing."""
    env = {"CRDTSYNC_HOME": str(fresh), "CRDTSYNC_PASSPHRASE": PASSPHRASE, "CRDTSYNC_AGENT": None}
    mem0 = json.dumps({"results": [{"id": "m-1", "memory": "Likes hiking on Sundays", "hash": "h1",
                                    "metadata": None, "created_at": "2024-05-01T10:00:00Z", "updated_at": None}]})
    jsonl = '{"content": "Piped in as JSONL"}\nnot json\n'
    reports = [stdout_json(ok(runner.invoke(app, ["import", "-", "--json"], input=text, env=env,
                                            catch_exceptions=False))) for text in (mem0, jsonl, mem0)]
    assert [(r["added"], r["skipped"]) for r in reports] == [(1, 0), (1, 0), (0, 1)]
    assert reports[1]["problems"] == [{"location": "-:2", "code": "IMPORT_MALFORMED",
                                       "message": reports[1]["problems"][0]["message"]}]
    assert sorted(m["content"] for m in stdout_json(ok(cli(fresh, "list", "--json")))) == [
        "Likes hiking on Sundays", "Piped in as JSONL"]
    assert {row["path"] for row in stdout_json(ok(cli(fresh, "log", "--json"))) if row["op"] == "import"} == {"-"}


def test_list_filters_by_category_and_by_every_tag_given(fresh: Path) -> None:
    tea = add_json(fresh, "Oolong in the morning", "--category", "prefs", "--tag", "drinks", "--tag", "tea")
    coffee = add_json(fresh, "No coffee after noon", "--category", "prefs", "--tag", "drinks")
    trip = add_json(fresh, "Lisbon trip in May", "--category", "travel", "--tag", "tea")
    add_json(fresh, "Tea-less memory", "--category", "Prefs")  # categories match exactly, case included

    def listed(*args: str) -> list[str]:
        return [m["id"] for m in stdout_json(ok(cli(fresh, "list", *args, "--json")))]

    assert listed("--category", "prefs") == [coffee["id"], tea["id"]]
    assert listed("--tag", "tea") == [trip["id"], tea["id"]]
    assert listed("--tag", "tea", "--tag", "drinks") == [tea["id"]]
    assert listed("--category", "travel", "--tag", "drinks") == []
    assert listed("-c", "prefs", "--limit", "1") == [coffee["id"]]
    ok(cli(fresh, "rm", coffee["id"]))
    assert listed("--category", "prefs", "--deleted") == [coffee["id"], tea["id"]]
    assert_fails(cli(fresh, "list", "--tag", "bad\ttag"), 3, "INVALID_INPUT")


def test_search_narrows_by_category_and_tags_like_list(fresh: Path) -> None:
    tea = add_json(fresh, "Oolong tea 🍵 in the morning", "--category", "prefs", "--tag", "drinks")
    add_json(fresh, "Tea 🍵 ceremony in Kyoto", "--category", "travel", "--tag", "drinks")
    add_json(fresh, "Green tea 🍵 gift", "--category", "prefs")

    def found(*args: str) -> list[str]:
        return sorted(m["id"] for m in stdout_json(ok(cli(fresh, "search", *args, "--json"))))

    assert len(found("tea")) == 3
    for query in ("tea", "🍵"):  # through FTS5, and through the symbol path
        assert found(query, "--category", "prefs", "--tag", "drinks") == [tea["id"]]
        assert found(query, "-c", "travel", "-t", "gifts") == []
