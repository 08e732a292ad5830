"""Pairing by code on a LAN of namespaces with nothing but the code: ``crdtsync invite`` announces the invitation by
mDNS on its LAN interface (the default choice: the namespace's ``eth0``), ``crdtsync join CODE`` in another
namespace finds it without any address and joins; a wrong code found that way is refused, an invitation of another
number is never dialled, and an impostor announcing the same number is passed over."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from crdtsync.crypto.pairing import parse_code
from crdtsync.vault import Vault
from tests.cli.test_cli import CRDTSYNC, process_env
from tests.lan.test_discovery import HERE, ROOT
from tests.netns import Host, Lan

NO_PASSPHRASE = {"CRDTSYNC_PASSPHRASE": None}


class Invitation:
    """``crdtsync invite --json`` (no ``--interface``: the default choice) on ``host``; :attr:`opened` is its first
    JSON line, its stderr is collected by a thread."""

    def __init__(self, host: Host, home: Path, *args: str) -> None:
        self.proc = host.popen([str(CRDTSYNC), "invite", "--json", "--timeout", "60", *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=process_env(home))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stderr: list[bytes] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or ()), daemon=True).start()
        line = self.proc.stdout.readline()
        assert line, f"invite printed nothing: {b''.join(self.stderr)!r}"
        self.opened: dict[str, Any] = json.loads(line)

    @property
    def code(self) -> str:
        return str(self.opened["code"])

    def finish(self) -> tuple[int, dict[str, Any]]:
        stdout, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, json.loads(stdout)

    def refusals(self) -> str:
        return b"".join(self.stderr).decode()


def join(host: Host, home: Path, code: str, *args: str) -> subprocess.CompletedProcess[Any]:
    """``crdtsync join CODE --json`` on ``host``: no passphrase, no --peer unless in ``args``."""
    return host.run([str(CRDTSYNC), "join", code, "--device-name", "phone", "--json", *args], timeout=90,
                    capture_output=True, text=True, env=process_env(home, NO_PASSPHRASE))


def test_join_finds_the_inviting_device_by_its_code_alone_and_pulls_the_vault(lan: Lan, laptop: Path,
                                                                               tmp_path: Path) -> None:
    a, b = lan.host("a"), lan.host("b")
    invitation = Invitation(a, laptop)
    assert invitation.opened["announced"] == [a.ip]
    assert invitation.opened["addresses"][0].startswith(f"{a.ip}:")
    joined = join(b, tmp_path / "phone", invitation.code)
    assert joined.returncode == 0, joined.stderr
    report = json.loads(joined.stdout)
    assert report["memories"] == 2 and report["peer"] == invitation.opened["addresses"][0]
    status, done = invitation.finish()
    assert status == 0 and done["joined"]["device"] == report["device_id"]
    with Vault.open(tmp_path / "phone") as phone:
        assert {m.content for m in phone.list()} == {"prefers oolong", "works on crdtsync"}
    with Vault.open(laptop) as inviter:
        assert report["device_id"] in inviter.devices()


def test_a_wrong_code_found_by_discovery_is_refused_on_both_sides_and_costs_one_attempt(
        lan: Lan, laptop: Path, tmp_path: Path) -> None:
    a, b = lan.host("a"), lan.host("b")
    invitation = Invitation(a, laptop)
    code = parse_code(invitation.code)
    wrong = f"{code.number}-{code.first}-{'hamilton' if code.second != 'hamilton' else 'hideaway'}"
    refused = join(b, tmp_path / "phone", wrong)
    assert refused.returncode == 9 and "PAIRING_WRONG_CODE" in refused.stdout, refused.stderr
    assert not (tmp_path / "phone").exists()
    joined = join(b, tmp_path / "phone", invitation.code)  # two attempts are left: the right code still works
    assert joined.returncode == 0, joined.stderr
    status, done = invitation.finish()
    assert status == 0 and done["joined"]["failures"] == ["PAIRING_WRONG_CODE"]


def test_an_invitation_of_another_number_is_never_dialled(lan: Lan, laptop: Path, tmp_path: Path) -> None:
    a, b = lan.host("a"), lan.host("b")
    invitation = Invitation(a, laptop)
    code = parse_code(invitation.code)
    other = f"{code.number % 999 + 1}-{code.first}-{code.second}"
    missed = join(b, tmp_path / "phone", other, "--timeout", "3")
    assert missed.returncode == 9 and "LAN_NO_PEER" in missed.stdout, missed.stderr
    assert f"no announcement of invitation {code.number % 999 + 1}" in json.loads(missed.stdout)["error"]["message"]
    invitation.proc.terminate()
    invitation.proc.wait(timeout=30)
    assert "attempt refused" not in invitation.refusals()  # the other invitation cost this one nothing


#: A stranger's TCP listener that accepts, says ``accepted`` on stdout and never answers.
STALLING_LISTENER = """
import socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
held = []
while True:
    held.append(server.accept()[0])
    print("accepted", flush=True)
"""


def test_an_impostor_announcing_the_same_number_that_stalls_is_passed_over(lan: Lan, laptop: Path,
                                                                           tmp_path: Path) -> None:
    """Anyone can announce any invitation number (its tag key is public). The joiner finds only the impostor at
    first (the inviter's mDNS replies are held back), dials it, is stalled by it until the handshake deadline,
    passes it over, and joins the real inviter once that one's announcement gets through."""
    a, b, c = lan.host("a"), lan.host("b"), lan.host("c")
    held_back = ("OUTPUT", "-p", "udp", "--sport", "5353", "-j", "DROP")
    a.iptables("-A", *held_back)
    invitation = Invitation(a, laptop)
    key = parse_code(invitation.code).discovery_key
    stalling = c.popen([sys.executable, "-c", STALLING_LISTENER, c.ip, "7000"], stdout=subprocess.PIPE)
    impostor = c.popen([sys.executable, str(HERE / "discovery_node.py"), key.hex(), c.ip, "7000", "asyncio",
                        "--lifetime", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       env={**process_env(tmp_path), "PYTHONPATH": str(ROOT)})
    assert impostor.stdout is not None and json.loads(impostor.stdout.readline())["event"] == "ready"
    joining = b.popen([str(CRDTSYNC), "join", invitation.code, "--json", "--timeout", "30"], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, env=process_env(tmp_path / "phone", NO_PASSPHRASE))
    assert stalling.stdout is not None and stalling.stdout.readline() == b"accepted\n"
    a.iptables("-D", *held_back)
    stdout, stderr = joining.communicate(timeout=90)
    assert joining.returncode == 0, stderr
    assert json.loads(stdout)["peer"] == invitation.opened["addresses"][0]
    assert invitation.finish()[0] == 0


def test_invite_without_discovery_announces_nothing_and_join_needs_the_address(lan: Lan, laptop: Path,
                                                                                tmp_path: Path) -> None:
    a, b = lan.host("a"), lan.host("b")
    invitation = Invitation(a, laptop, "--no-discovery")
    assert invitation.opened["announced"] == []
    missed = join(b, tmp_path / "phone", invitation.code, "--timeout", "3")
    assert missed.returncode == 9 and "LAN_NO_PEER" in missed.stdout
    joined = join(b, tmp_path / "phone", invitation.code, "--peer", invitation.opened["addresses"][0])
    assert joined.returncode == 0, joined.stderr
    assert invitation.finish()[0] == 0
