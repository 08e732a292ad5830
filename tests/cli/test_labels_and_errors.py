"""`--agent` and CRDTSYNC_AGENT label writes (shown with conflict candidates); errors stay on one line when piped."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from crdtsync.cli import app
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf


def test_agent_labels_travel_with_conflicting_writes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        Vault.init(tmp_path / name, passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "a") as a, Vault.open(tmp_path / "b") as b:
        memory = a.add("shared fact")
        b.apply_update(a.encode_update(), "a")
    runner = CliRunner()
    first = runner.invoke(app, ["--vault", str(tmp_path / "a"), "--agent", "claude-code", "edit", memory.id,
                                "--content", "from claude"])
    second = runner.invoke(app, ["--vault", str(tmp_path / "b"), "edit", memory.id, "--content", "from cursor"],
                           env={"CRDTSYNC_AGENT": "cursor"})
    assert first.exit_code == 0 and second.exit_code == 0
    with Vault.open(tmp_path / "a") as a, Vault.open(tmp_path / "b") as b:
        a.apply_update(b.encode_update(), "b")
    shown = runner.invoke(app, ["--vault", str(tmp_path / "a"), "conflicts", "--json"])
    (conflict,) = json.loads(shown.stdout)
    assert sorted(c["agent"] for c in conflict["candidates"]) == ["claude-code", "cursor"]


def test_long_error_messages_stay_on_one_line_when_piped(tmp_path: Path) -> None:
    missing = tmp_path / ("a-rather-long-folder-name-" * 4)
    done = CliRunner().invoke(app, ["--vault", str(missing), "show", "some-id"])
    assert done.exit_code == 5
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("error [VAULT_NOT_FOUND]") and str(missing) in line
