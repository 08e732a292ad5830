"""After a revocation, on a LAN of network namespaces: members that took the new epoch through the relay sync
directly with a daemon started on it, and the revoked device, which still holds the old keys, gets nothing."""

from __future__ import annotations

import json
from pathlib import Path

from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE
from tests.lan.devices import Daemon, contents, crdtsync, make_devices
from tests.netns import Lan


def test_members_sync_on_the_lan_after_a_revocation_and_the_revoked_device_gets_nothing(
        lan: Lan, tmp_path: Path) -> None:
    d0, d1, d2 = make_devices(tmp_path, 3)
    with Vault.open(d0) as vault:
        vault.revoke_device("d2", passphrase=PASSPHRASE, new_passphrase="the passphrase after d2")
        assert all(not r.errors for r in vault.sync())
    with Vault.open(d1) as vault:
        assert all(not r.errors for r in vault.sync())
        assert vault.secrets.current_epoch == 1
    a, b, c = lan.host("a"), lan.host("b"), lan.host("c")
    Daemon(a, d0)
    assert crdtsync(d0, "add", "written after the revocation").returncode == 0
    member = crdtsync(d1, "sync", "--lan", "--interface", b.ip, "--peer", f"{a.ip}:47354", "--timeout", "3",
                      "--json", host=b)
    assert member.returncode == 0, member.stderr
    assert json.loads(member.stdout)["sessions"][0]["error"] is None
    assert "written after the revocation" in {text for _, text in contents(d1)}

    revoked = crdtsync(d2, "sync", "--lan", "--interface", c.ip, "--peer", f"{a.ip}:47354", "--timeout", "3",
                       host=c)
    assert revoked.returncode == 9, revoked.stderr
    assert "written after the revocation" not in {text for _, text in contents(d2)}
