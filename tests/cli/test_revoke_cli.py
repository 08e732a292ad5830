"""``crdtsync devices revoke`` and ``crdtsync passphrase change`` as a user runs them on three devices of one vault,
through a folder relay and an S3 relay (moto's server). The devices are set up through the Python API with cheap
Argon2id parameters, as the other CLI tests make their vaults; everything after is the CLI: the revocations, the
refusals, the syncs and the joins as real ``crdtsync`` processes (stdin not a terminal, passphrases from
CRDTSYNC_PASSPHRASE and CRDTSYNC_NEW_PASSPHRASE); the reads (``list``, ``devices``), ``add``, ``devices rename`` and
the syncs that spread the names in-process through typer's CliRunner (a process costs about a second)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crdtsync.vault import Vault
from tests.cli.test_cli import assert_fails, cli, ok, run_crdtsync, stdout_json
from tests.conftest import PASSPHRASE, cheap_kdf

ROOT = Path(__file__).resolve().parents[2]
NEW_PASSPHRASE = "a new passphrase after the revocation"
BEFORE = {"written by A before", "written by C before"}


@dataclass(frozen=True)
class Trio:
    """Folders of devices A, B and C, in step through relay ``url``, and their device ids."""

    a: Path
    b: Path
    c: Path
    url: str
    ids: dict[str, str]


def crdtsync(home: Path, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``crdtsync ARGS`` in a subprocess on vault ``home`` with this checkout first on its path (the console
    script of the venv otherwise imports the crdtsync it was installed from); ``env`` adds variables (None
    removes one)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return run_crdtsync(home, *args, env={"PYTHONPATH": path, **env})


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON of a command that succeeded without a traceback."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return stdout_json(result)


def synced(home: Path) -> None:
    """``crdtsync sync --json`` on ``home``: exit 0 and no error in any relay's report."""
    reports = ok_json(crdtsync(home, "sync", "--json"))
    assert [e for r in reports for e in r["errors"]] == [], reports


def contents(home: Path) -> set[str]:
    """The contents ``crdtsync list --json`` shows (in-process)."""
    return {m["content"] for m in stdout_json(ok(cli(home, "list", "--json")))}


def devices(home: Path) -> dict[str, dict[str, Any]]:
    """``crdtsync devices --json`` (in-process) by device id."""
    return {d["device_id"]: d for d in stdout_json(ok(cli(home, "devices", "--json")))}


def make_trio(root: Path, url: str) -> Trio:
    Vault.init(root / "a", name="v", device_name="A", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(root / "a") as a:
        a.add("written by A before")
        a.add_relay("box", url)
        assert not any(r.errors for r in a.sync())
    for name in ("b", "c"):
        Vault.join(root / name, url, passphrase=PASSPHRASE, device_name=name.upper())
    with Vault.open(root / "c") as c:
        c.add("written by C before")
    ids = {}
    for name in ("c", "a", "b"):
        with Vault.open(root / name) as vault:
            assert not any(r.errors for r in vault.sync())
            ids[name.upper()] = vault.device_id
    return Trio(root / "a", root / "b", root / "c", url, ids)


@pytest.fixture
def folder_trio(tmp_path: Path) -> Trio:
    return make_trio(tmp_path, str(tmp_path / "box"))


@pytest.fixture(params=["folder", "s3"])
def trio(request: pytest.FixtureRequest, tmp_path: Path) -> Trio:
    """Devices A, B and C through a folder relay, or an S3 relay (``s3://bucket/prefix`` on moto's server: the
    AWS variables the ``s3_endpoint`` fixture sets reach the CLI processes through the environment)."""
    url = f"s3://{request.getfixturevalue('s3_bucket')}/vault" if request.param == "s3" else str(tmp_path / "box")
    return make_trio(tmp_path, url)


def test_a_revoked_device_gets_nothing_new_and_only_the_new_passphrase_admits(trio: Trio, tmp_path: Path) -> None:
    a_id, b_id, c_id = trio.ids["A"], trio.ids["B"], trio.ids["C"]
    before = devices(trio.a)
    assert before[c_id]["state"] == "active" and before[c_id]["revoked"] is None
    point = before[c_id]["entries"]
    assert point >= 1

    done = ok_json(crdtsync(trio.a, "devices", "revoke", "C", "--yes", "--json",
                            CRDTSYNC_NEW_PASSPHRASE=NEW_PASSPHRASE))
    assert done == {"device": c_id, "point": point, "epoch": 1, "recipients": sorted([a_id, b_id])}
    revoked = {"seq": point, "by": a_id, "epoch": 1}
    after = devices(trio.a)
    assert (after[c_id]["state"], after[c_id]["revoked"]) == ("revoked", revoked)
    assert [after[d]["state"] for d in (a_id, b_id)] == ["active", "active"]

    ok(cli(trio.a, "add", "written by A after"))
    synced(trio.a)
    synced(trio.b)
    on_b = devices(trio.b)
    assert (on_b[c_id]["state"], on_b[c_id]["revoked"]) == ("revoked", revoked)
    assert on_b[a_id]["epoch"] == 1  # B holds A's head under the new epoch
    ok(cli(trio.b, "add", "written by B after"))
    synced(trio.b)
    synced(trio.a)
    assert contents(trio.a) == contents(trio.b) == BEFORE | {"written by A after", "written by B after"}

    refused = crdtsync(trio.c, "sync", "--json")
    assert refused.returncode == 8 and "Traceback" not in refused.stderr, (refused.stdout, refused.stderr)
    assert {e["code"] for r in stdout_json(refused) for e in r["errors"]} == {"DEVICE_REVOKED"}
    assert contents(trio.c) == BEFORE

    thief = crdtsync(tmp_path / "thief", "join", trio.url, "--device-name", "thief", "--json")
    assert_fails(thief, 6, "WRONG_PASSPHRASE", as_json=True)
    assert not (tmp_path / "thief").exists()
    joined = ok_json(crdtsync(tmp_path / "new", "join", trio.url, "--device-name", "new", "--json",
                              CRDTSYNC_PASSPHRASE=NEW_PASSPHRASE))
    assert joined["memories"] == 4


def test_passphrase_change_admits_only_the_new_passphrase(folder_trio: Trio, tmp_path: Path) -> None:
    trio = folder_trio
    done = ok_json(crdtsync(trio.a, "passphrase", "change", "--json", CRDTSYNC_NEW_PASSPHRASE=NEW_PASSPHRASE))
    assert done == {"epoch": 1, "recipients": sorted(trio.ids.values())}
    synced(trio.a)
    assert_fails(crdtsync(tmp_path / "late", "join", trio.url, "--json"), 6, "WRONG_PASSPHRASE", as_json=True)
    joined = ok_json(crdtsync(tmp_path / "late", "join", trio.url, "--json", CRDTSYNC_PASSPHRASE=NEW_PASSPHRASE))
    assert joined["memories"] == 2
    assert {d["state"] for d in devices(trio.a).values()} == {"active"}


def test_bad_revocations_fail_with_their_code_and_change_nothing(folder_trio: Trio) -> None:
    trio = folder_trio
    new: dict[str, str | None] = {"CRDTSYNC_NEW_PASSPHRASE": NEW_PASSPHRASE}
    refusals: list[tuple[tuple[str, ...], dict[str, str | None], int, str]] = [
        (("A", "--yes"), new, 3, "DEVICE_SELF_REVOKE"),
        (("nobody", "--yes"), new, 4, "DEVICE_NOT_FOUND"),
        (("C", "--yes"), {**new, "CRDTSYNC_PASSPHRASE": "not the passphrase"}, 6, "WRONG_PASSPHRASE"),
        (("C",), new, 3, "CONFIRMATION_REQUIRED"),
        (("C", "--yes"), {"CRDTSYNC_NEW_PASSPHRASE": None}, 6, "PASSPHRASE_REQUIRED"),
    ]
    before = devices(trio.a)
    for args, env, status, code in refusals:
        assert_fails(crdtsync(trio.a, "devices", "revoke", *args, "--json", **env), status, code, as_json=True)
        assert devices(trio.a) == before, code
    # Without --json the confirmation is refused too: standard input is not a terminal.
    assert_fails(crdtsync(trio.a, "devices", "revoke", "C", **new), 3, "CONFIRMATION_REQUIRED")

    for home in (trio.b, trio.c):
        ok(cli(home, "devices", "rename", "twin"))
    for home in (trio.b, trio.c, trio.a):
        ok(cli(home, "sync"))
    before = devices(trio.a)
    assert sorted(d["name"] for d in before.values()) == ["A", "twin", "twin"]
    ambiguous = crdtsync(trio.a, "devices", "revoke", "twin", "--yes", "--json", **new)
    assert_fails(ambiguous, 3, "DEVICE_AMBIGUOUS", as_json=True)
    message = stdout_json(ambiguous)["error"]["message"]
    assert trio.ids["B"] in message and trio.ids["C"] in message
    assert devices(trio.a) == before
