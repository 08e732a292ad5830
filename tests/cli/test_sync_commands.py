"""The README's walk-through of two devices and a folder mailbox, as a user types it: ``relay add``, ``sync``,
``join``, ``push``, ``pull``, ``conflicts``, ``resolve``, ``relay list`` and ``relay rm`` through the CLI (in
process through typer's CliRunner, the join also as the installed console script), on a real folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.test_cli import assert_fails, cli, flat, new_vault, ok, run_crdtsync, stdout_json


def contents(home: Path) -> list[str]:
    return sorted(m["content"] for m in stdout_json(ok(cli(home, "list", "--json"))))


def synced(home: Path, *args: str) -> list[dict[str, Any]]:
    """``crdtsync sync --json ARGS``: one report per relay, each without errors."""
    reports: list[dict[str, Any]] = stdout_json(ok(cli(home, "sync", "--json", *args)))
    assert all(r["errors"] == [] for r in reports), reports
    return reports


def test_two_devices_through_a_folder_as_the_readme_walks_them(tmp_path: Path) -> None:
    laptop, phone, box = new_vault(tmp_path / "laptop", "laptop"), tmp_path / "phone", tmp_path / "box"
    ok(cli(laptop, "add", "Prefers oolong over green tea", "--category", "prefs", "--tag", "drinks"))
    ok(cli(laptop, "add", "Door code of the flat", "--level", "0"))
    added = ok(cli(laptop, "relay", "add", "box", str(box)))
    join_string = added.stdout.split("crdtsync join ", 1)[1].strip().strip("'")
    fingerprint = stdout_json(ok(cli(laptop, "relay", "add", "box2", str(tmp_path / "box2"), "--json")))["join"][-26:]
    ok(cli(laptop, "relay", "rm", "box2"))
    assert join_string == f"{box}#vault={fingerprint}"
    (first,) = synced(laptop)
    assert first["relay"] == "box" and first["up"]["objects"] >= 1 and first["down"]["objects"] == 0

    joined = run_crdtsync(phone, "join", join_string, "--device-name", "phone")
    assert joined.returncode == 0 and "Traceback" not in joined.stderr, joined.stderr
    assert f"joined vault {fingerprint}: 1 memories" in joined.stdout
    assert stdout_json(ok(cli(phone, "status", "--json")))["fingerprint"] == fingerprint
    assert f"(fingerprint {fingerprint})" in ok(cli(laptop, "status")).stdout
    assert contents(phone) == ["Prefers oolong over green tea"]
    assert [r["name"] for r in stdout_json(ok(cli(phone, "relay", "list", "--json")))] == ["default"]

    ok(cli(phone, "add", "Meets Sam on Fridays", "--tag", "people"))
    synced(phone)
    (pulled,) = synced(laptop)
    assert pulled["down"]["objects"] >= 1 and pulled["memories_changed"] >= 1
    assert contents(laptop) == ["Door code of the flat", "Meets Sam on Fridays", "Prefers oolong over green tea"]

    memory_id = next(m["id"] for m in stdout_json(ok(cli(laptop, "list", "--json"))) if "oolong" in m["content"])
    ok(cli(laptop, "edit", memory_id, "--content", "Prefers oolong, hot"))
    ok(cli(phone, "edit", memory_id, "--content", "Prefers oolong, iced"))
    ok(cli(laptop, "push"))
    ok(cli(phone, "push"))
    ok(cli(phone, "pull"))
    (surfaced,) = synced(laptop)
    assert surfaced["conflicts"] == 1  # a sync that surfaced a conflict still exits 0
    conflicts = stdout_json(ok(cli(laptop, "conflicts", "--json")))
    assert [(c["memory_id"], c["field"]) for c in conflicts] == [(memory_id, "content")]
    assert stdout_json(ok(cli(phone, "conflicts", "--json"))) == conflicts
    values = [c["value"] for c in conflicts[0]["candidates"]]
    assert sorted(values) == ["Prefers oolong, hot", "Prefers oolong, iced"]
    ok(cli(laptop, "resolve", memory_id, "--field", "content", "--pick", str(values.index("Prefers oolong, iced") + 1)))
    synced(laptop)
    synced(phone)
    for home in (laptop, phone):
        assert stdout_json(ok(cli(home, "conflicts", "--json"))) == []
        assert stdout_json(ok(cli(home, "show", memory_id, "--json")))["content"] == "Prefers oolong, iced"
    assert "Door code" not in " ".join(contents(phone))

    (relay,) = stdout_json(ok(cli(laptop, "status", "--json")))["relays"]
    assert (relay["name"], relay["pending_push"], relay["pending_pull"]) == ("box", 0, 0)
    ok(cli(laptop, "relay", "rm", "box"))
    assert stdout_json(ok(cli(laptop, "relay", "list", "--json"))) == []
    assert_fails(cli(laptop, "sync"), 4, "NO_RELAY")


def test_join_with_a_wrong_passphrase_or_no_vault_fails_cleanly_and_leaves_no_folder(tmp_path: Path) -> None:
    laptop, box = new_vault(tmp_path / "laptop"), tmp_path / "box"
    ok(cli(laptop, "relay", "add", "box", str(box)))
    intruder = tmp_path / "intruder"
    assert_fails(cli(intruder, "join", str(box), env={"CRDTSYNC_PASSPHRASE": "not it"}), 6, "WRONG_PASSPHRASE")
    assert_fails(cli(intruder, "join", str(tmp_path / "nothing"), "--json"), 8, "MAILBOX_NO_VAULT", as_json=True)
    assert not intruder.exists()
    exists = cli(laptop, "join", str(box))
    assert_fails(exists, 5, "VAULT_EXISTS")
    assert flat("if a join into it was interrupted, `crdtsync sync` there finishes it") in flat(exists.stderr)
