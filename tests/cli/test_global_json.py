"""``crdtsync --json COMMAND`` (the flag before the command name) prints what ``crdtsync COMMAND --json`` prints,
for every command that takes ``--json``: each pair runs as two real processes of the installed console script
on one vault, and stdout must be one JSON document either way.

Commands that only read must print the very same JSON. Commands that write run twice, once per spelling, on
states where both runs do the same thing; the fields a second run cannot repeat (a new id, a new time stamp, a
path of its own) are compared in shape only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from crdtsync.cli import app
from crdtsync.vault import Vault
from tests.cli.test_cli import assert_fails, build_conflict, new_vault, run_crdtsync, stdout_json, write_jsonl
from tests.conftest import PASSPHRASE

#: Fields a repeated write cannot reproduce: they are checked in shape and then set aside.
VOLATILE = ("id", "created", "updated", "seconds", "device_id", "vault")


def both(home: Path, args: list[str], second: list[str] | None = None) -> tuple[Any, Any]:
    """Run ``crdtsync --json ARGS``, then ``crdtsync SECOND --json`` (``SECOND`` defaults to ``ARGS``), as real
    processes with ``CRDTSYNC_HOME=home``; each must exit 0 with nothing but one JSON document on stdout.
    Returns both documents."""
    results = []
    for argv in (["--json", *args], [*(args if second is None else second), "--json"]):
        process = run_crdtsync(home, *argv)
        assert process.returncode == 0, (argv, process.returncode, process.stderr)
        assert "Traceback" not in process.stderr
        try:
            results.append(json.loads(process.stdout))
        except ValueError:
            pytest.fail(f"crdtsync {' '.join(argv)} printed something other than JSON: {process.stdout[:400]!r}")
    return results[0], results[1]


def steady(value: Any) -> Any:
    """``value`` with the :data:`VOLATILE` fields of every object in it replaced by their type's name."""
    if isinstance(value, dict):
        return {k: type(v).__name__ if k in VOLATILE else steady(v) for k, v in value.items()}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def json_commands() -> set[str]:
    """Every command of the CLI with a ``--json`` option, as typed (``"list"``, ``"relay add"``)."""
    found: set[str] = set()

    def walk(group: Any, prefix: str) -> None:  # typer's own copy of click's Group: no public class to name
        for name, command in group.commands.items():
            if any("--json" in getattr(param, "opts", ()) for param in command.params):
                found.add(prefix + name)  # a command, or a group that does something alone (`devices`)
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")

    walk(typer.main.get_command(app), "")
    return found


# -- commands that only read: the same JSON either way ------------------------------------------------------


@dataclass(frozen=True)
class World:
    """A vault that the read-only tests never change: a conflict on one memory's content (two devices), a
    memory of its own, an import and a sync in its log, and a folder relay holding it all."""

    home: Path
    memory_id: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("global-json")
    conflict = build_conflict(root)
    with Vault.open(conflict.path) as vault:
        vault.add("Takes the 8:12 train", category="commute", tags=["train"])
        vault.import_path(write_jsonl(root / "in.jsonl", [{"content": "Imported: likes jazz"}, {"nope": 1}]))
        vault.add_relay("box", str(root / "box"))
        vault.sync()
    return World(conflict.path, conflict.memory_id)


READ_ONLY: dict[str, Callable[[World], list[str]]] = {
    "list": lambda w: ["list", "--deleted"],
    "search": lambda w: ["search", "train"],
    "show": lambda w: ["show", w.memory_id],
    "conflicts": lambda w: ["conflicts"],
    "devices": lambda w: ["devices"],
    "status": lambda w: ["status"],
    "log": lambda w: ["log"],
    "relay list": lambda w: ["relay", "list"],
    "peers": lambda w: ["peers"],
}


@pytest.mark.parametrize("command", sorted(READ_ONLY))
def test_a_reading_command_prints_the_same_json_with_the_flag_before_or_after_it(world: World, command: str) -> None:
    before, after = both(world.home, READ_ONLY[command](world))
    assert before == after
    assert before  # not an empty answer: the world holds something for every one of them


# -- commands that write: the same JSON but for what a second write cannot repeat ----------------------------


def test_add_either_way(tmp_path: Path) -> None:
    home = new_vault(tmp_path / "v")
    before, after = both(home, ["add", "Likes jazz", "--tag", "music", "-c", "prefs"])
    assert steady(before) == steady(after)
    assert (before["content"], before["tags"], before["category"]) == ("Likes jazz", ["music"], "prefs")
    assert before["id"] != after["id"]


def test_edit_either_way(tmp_path: Path) -> None:
    home = new_vault(tmp_path / "v")
    with Vault.open(home) as vault:
        memory = vault.add("Likes jazz")
    before, after = both(home, ["edit", memory.id, "--content", "Likes free jazz", "--tag", "music"])
    assert steady(before) == steady(after)
    assert (before["id"], before["content"], before["tags"]) == (memory.id, "Likes free jazz", ["music"])


def test_rm_and_restore_either_way(tmp_path: Path) -> None:
    home = new_vault(tmp_path / "v")
    with Vault.open(home) as vault:
        memory = vault.add("Likes jazz")
    removed = [run_crdtsync(home, "--json", "rm", memory.id)]
    restored = [run_crdtsync(home, "restore", memory.id, "--json")]
    removed.append(run_crdtsync(home, "rm", memory.id, "--json"))
    restored.append(run_crdtsync(home, "--json", "restore", memory.id))
    for pair, deleted in ((removed, True), (restored, False)):
        assert [p.returncode for p in pair] == [0, 0], [p.stderr for p in pair]
        first, second = (json.loads(p.stdout) for p in pair)
        assert steady(first) == steady(second)
        assert (first["id"], first["deleted"]) == (memory.id, deleted)


def test_resolve_either_way(tmp_path: Path) -> None:
    conflict = build_conflict(tmp_path)
    before, after = both(conflict.path, ["resolve", conflict.memory_id, "--field", "content", "--value", "9:40"])
    assert steady(before) == steady(after)
    assert (before["content"], before["conflicts"]) == ("9:40", [])


def test_import_either_way(tmp_path: Path) -> None:
    """Two files of the same shape (one good record, one bad line each): the same report either way."""
    home = new_vault(tmp_path / "v")
    files = [write_jsonl(tmp_path / name, [{"content": f"From {name}"}, {"content": ""}]) for name in ("a", "b")]
    before, after = both(home, ["import", str(files[0])], ["import", str(files[1])])
    for report, path in ((before, files[0]), (after, files[1])):
        for problem in report["problems"]:
            assert problem["location"] == f"{path}:2"
            problem["location"] = "FILE:2"
    assert before == after
    assert (before["added"], len(before["problems"])) == (1, 1)


def test_relay_add_and_rm_either_way(tmp_path: Path) -> None:
    home = new_vault(tmp_path / "v")
    added = both(home, ["relay", "add", "one", str(tmp_path / "one")], ["relay", "add", "two", str(tmp_path / "two")])
    removed = both(home, ["relay", "rm", "one"], ["relay", "rm", "two"])
    for name, report in zip(("one", "two"), added, strict=True):
        url = str(tmp_path / name)
        assert report == {"name": name, "url": url, "join": report["join"]}
        assert re.fullmatch(re.escape(url) + r"#vault=[a-z2-7]{26}", report["join"])
    assert added[0]["join"][-26:] == added[1]["join"][-26:]
    assert removed == ({"removed": "one"}, {"removed": "two"})


def test_peer_add_and_rm_either_way(tmp_path: Path) -> None:
    home = new_vault(tmp_path / "v")
    added = both(home, ["peer", "add", "one", "192.168.1.7:47354"], ["peer", "add", "two", "[fe80::1]:47354"])
    removed = both(home, ["peer", "rm", "one"], ["peer", "rm", "two"])
    assert added == ({"name": "one", "address": "192.168.1.7:47354"}, {"name": "two", "address": "[fe80::1]:47354"})
    assert removed == ({"removed": "one"}, {"removed": "two"})


@pytest.fixture
def synced_home(tmp_path: Path) -> Path:
    """A vault with one relay, synced: a further push, pull or sync moves nothing."""
    home = new_vault(tmp_path / "v")
    with Vault.open(home) as vault:
        vault.add("Likes jazz")
        vault.add_relay("box", str(tmp_path / "box"))
        vault.sync()
    return home


@pytest.mark.parametrize("command", ["push", "pull", "sync"])
def test_push_pull_and_sync_either_way(synced_home: Path, command: str) -> None:
    before, after = both(synced_home, [command])
    assert steady(before) == steady(after)
    assert [(r["relay"], r["errors"], r["memories_changed"]) for r in before] == [("box", [], 0)]


def test_init_either_way(tmp_path: Path) -> None:
    """``init`` with the default Argon2id parameters: two vaults, one per spelling."""
    before, after = (run_crdtsync(tmp_path / name, *argv) for name, argv in (
        ("one", ["--json", "init"]), ("two", ["init", "--json"])))
    for process, name in ((before, "one"), (after, "two")):
        assert process.returncode == 0, process.stderr
        report = json.loads(process.stdout)
        assert report == {"vault": str(tmp_path / name), "device_id": report["device_id"]}
        assert re.fullmatch(r"[0-9a-f]{32}", report["device_id"])


def test_join_either_way(synced_home: Path, tmp_path: Path) -> None:
    box = str(tmp_path / "box")
    before, after = (run_crdtsync(tmp_path / name, *argv) for name, argv in (
        ("one", ["--json", "join", box]), ("two", ["join", box, "--json"])))
    reports = []
    for process, name in ((before, "one"), (after, "two")):
        assert process.returncode == 0, process.stderr
        report = json.loads(process.stdout)
        assert report["vault"] == str(tmp_path / name)
        reports.append(report)
    assert steady(reports[0]) == steady(reports[1])
    assert reports[0]["memories"] == 1


def test_keys_store_either_way(tmp_path: Path) -> None:
    """Keys already in the file (the test run has no real keyring): the same report either way."""
    home = new_vault(tmp_path / "v")
    before, after = both(home, ["keys", "store", "file"])
    assert before == after == {"store": "file", "backend": None, "path": str(home / "keys"), "moved": False,
                               "removed_leftover": False}


def test_devices_rename_either_way(tmp_path: Path) -> None:
    home = new_vault(tmp_path / "v")
    before, after = both(home, ["devices", "rename", "pixel"])
    assert before == after and before["name"] == "pixel"
    listed = stdout_json(run_crdtsync(home, "devices", "--json"))
    assert [d["name"] for d in listed if d["this_device"]] == ["pixel"] and "statements" not in listed[0]
    assert_fails(run_crdtsync(home, "devices", "rename", "  "), 3, "INVALID_INPUT")
    shown = run_crdtsync(home, "devices")
    assert shown.returncode == 0 and "pixel" in shown.stdout


def test_passphrase_change_and_devices_revoke_either_way(tmp_path: Path) -> None:
    """Each moves the vault to a new epoch: the second run of each spelling takes the passphrase the first set."""
    box = str(tmp_path / "box")
    home = new_vault(tmp_path / "v")
    with Vault.open(home) as vault:
        vault.add_relay("box", box)
        vault.sync()
    for name in ("c", "d"):
        Vault.join(tmp_path / name, box, passphrase=PASSPHRASE, device_name=name)
    with Vault.open(home) as vault:
        vault.sync()
    runs = [(["--json", "passphrase", "change"], PASSPHRASE, "first new"),
            (["passphrase", "change", "--json"], "first new", "second new"),
            (["--json", "devices", "revoke", "c", "--yes"], "second new", "third new"),
            (["devices", "revoke", "d", "--yes", "--json"], "third new", "fourth new")]
    reports = []
    for argv, current, new in runs:
        process = run_crdtsync(home, *argv, env={"CRDTSYNC_PASSPHRASE": current, "CRDTSYNC_NEW_PASSPHRASE": new})
        assert process.returncode == 0, (argv, process.stderr)
        reports.append(stdout_json(process))
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert len(reports[0]["recipients"]) == len(reports[1]["recipients"]) == 3
    assert [(r["device"], len(r["recipients"])) for r in reports[2:]] == [
        (reports[2]["device"], 2), (reports[3]["device"], 1)]
    states = {d["name"]: d["state"] for d in stdout_json(run_crdtsync(home, "devices", "--json"))}
    assert states == {"cli-test": "active", "c": "revoked", "d": "revoked"}


def test_every_command_with_json_is_tested_with_the_global_flag() -> None:
    """A command that gains ``--json`` must join the tests above."""
    tested = set(READ_ONLY) | {"add", "edit", "rm", "restore", "resolve", "import", "relay add", "relay rm", "push",
                               "pull", "sync", "init", "join", "peer add", "peer rm", "keys store", "devices rename",
                               "devices revoke", "passphrase change", "invite"}  # invite: tests/pairing
    assert json_commands() == tested
