"""``crdtsync invite`` and ``crdtsync join CODE`` as a user runs them: two real processes of the installed console
script on 127.0.0.1, the joining one without any passphrase."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import CRDTSYNC, assert_fails, process_env, run_crdtsync, stdout_json

#: Listen on loopback and announce nothing: no mDNS on this machine's interfaces (tests/lan announces in namespaces).
LOOPBACK = ["--interface", "127.0.0.1", "--no-discovery"]


@pytest.fixture
def inviting(laptop: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """``crdtsync invite --json`` running on the laptop, and the first JSON line it printed."""
    process = subprocess.Popen([str(CRDTSYNC), "invite", *LOOPBACK, "--json", "--timeout", "60"],
                               env=process_env(laptop),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        opened = json.loads(process.stdout.readline())
        yield process, opened
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, json.loads(stdout), stderr


def test_invite_in_one_process_and_join_by_code_in_another(inviting: tuple[subprocess.Popen[str], dict[str, Any]],
                                                            laptop: Path, tmp_path: Path) -> None:
    process, opened = inviting
    assert set(opened) == {"code", "addresses", "announced", "expires_in"}
    assert opened["addresses"][0].startswith("127.0.0.1:") and opened["announced"] == []
    joined = run_crdtsync(tmp_path / "phone", "join", opened["code"], "--peer", opened["addresses"][0],
                          "--device-name", "phone", "--json", env={"CRDTSYNC_PASSPHRASE": None})
    assert joined.returncode == 0, joined.stderr
    report = stdout_json(joined)
    assert report["memories"] == 2 and report["peer"] == opened["addresses"][0]
    status, done, _ = _finish(process)
    assert status == 0 and done["joined"]["device"] == report["device_id"]
    assert done["joined"]["device_name"] == "phone"
    listed = stdout_json(run_crdtsync(tmp_path / "phone", "list", "--json"))
    assert {m["content"] for m in listed} == {"prefers oolong", "works on crdtsync"}
    devices = run_crdtsync(laptop, "devices", "--json")
    assert report["device_id"] in devices.stdout


def test_three_wrong_codes_fail_both_processes_and_withdraw_the_code(
        inviting: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path) -> None:
    process, opened = inviting
    number, first, second = opened["code"].split("-")
    wrong = [f"{number}-{first}-{w}" for w in ("hamilton", "hideaway", "holiness", "hurricane") if w != second][:3]
    codes = []
    for code in wrong:
        failed = run_crdtsync(tmp_path / "phone", "join", code, "--peer", opened["addresses"][0],
                              env={"CRDTSYNC_PASSPHRASE": None})
        codes.append(failed.stderr)
        assert failed.returncode == 9 and "Traceback" not in failed.stderr
    assert "error [PAIRING_WRONG_CODE]" in codes[0] and "error [PAIRING_WITHDRAWN]" in codes[2]
    status, done, stderr = _finish(process)
    assert status == 9 and done["error"]["code"] == "PAIRING_WITHDRAWN"
    assert stderr.count("attempt refused [PAIRING_WRONG_CODE]") == 2 and "withdrawn" in stderr
    assert not (tmp_path / "phone").exists()


def test_join_with_a_peer_but_no_code_is_pairing_code_invalid(tmp_path: Path) -> None:
    assert_fails(run_crdtsync(tmp_path / "phone", "join", "not-a-code", "--peer", "127.0.0.1:9", "--json"), 9,
                 "PAIRING_CODE_INVALID", as_json=True)
    assert_fails(run_crdtsync(tmp_path / "phone", "join", "7-cobra-hamburger", "--peer", "localhost"), 9,
                 "LAN_ADDRESS")


def test_invite_either_way_prints_json_lines_and_expires_with_its_code(laptop: Path) -> None:
    for argv in (["--json", "invite", *LOOPBACK, "--timeout", "1"], ["invite", *LOOPBACK, "--timeout", "1", "--json"]):
        finished = run_crdtsync(laptop, *argv)
        assert finished.returncode == 9, finished.stderr
        opened, ended = (json.loads(line) for line in finished.stdout.splitlines())
        assert set(opened) == {"code", "addresses", "announced", "expires_in"} and opened["expires_in"] == 1
        assert ended["error"]["code"] == "PAIRING_EXPIRED"
        assert "error [PAIRING_EXPIRED]" in finished.stderr and "Traceback" not in finished.stderr
