"""CLI commands that pair a new device by a short code: ``invite`` and the code form of ``join`` (``crdtsync join
7-cobra-hamburger``, which finds the inviting device by mDNS, or ``--peer HOST:PORT``; routed here by
:mod:`crdtsync.cli.sync_commands`). See :mod:`crdtsync.pairing`.

``invite --json`` prints JSON lines: first ``{"code", "addresses", "announced", "expires_in"}`` (``announced``:
the interface addresses the invitation is announced on) as soon as the invitation is open (so a script can pass
the code on), then either ``{"joined": {...}}`` or ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.text import Text

from crdtsync.cli.app import JsonOpt, VaultOpt, _emit_json, _guard, _open, _plain, _vault_path, app, err, out
from crdtsync.cli.lan_commands import lan_interfaces
from crdtsync.crypto.pairing import INVITATION_SECONDS
from crdtsync.errors import InvalidInputError, LanError
from crdtsync.node import parse_address, show_address
from crdtsync.pairing import JoinReport, join_by_code, open_invitation
from crdtsync.vault import Vault


@app.command()
def invite(
    interface: Annotated[list[str] | None, typer.Option(
        "--interface", metavar="IP", help="An IPv4 address of this host to listen and announce the invitation on "
        "(repeatable; default: the host's private LAN interfaces, never container or VPN links).")] = None,
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on (0: any free port).")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds the code stays valid.")] = INVITATION_SECONDS,
    no_discovery: Annotated[bool, typer.Option(
        "--no-discovery", help="Do not announce the invitation by mDNS: the new device then needs --peer.")] = False,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Invite a new device: print a short code, announce the invitation on the LAN, wait until a device joins
    with it (`crdtsync join CODE` there, or `crdtsync join CODE --peer ADDRESS` where discovery finds nothing),
    then exit.

    The code works once, for `--timeout` seconds (10 minutes), and three wrong attempts withdraw it. No
    passphrase is needed. Exits 0 when a device joined, 9 when the code expired, was withdrawn or the join broke."""
    with _guard(as_json):
        if not 0 <= port < 65536 or not 0 < timeout <= 24 * 3600:
            raise InvalidInputError("--port is 0 to 65535 and --timeout 1 s to 24 h")
        interfaces = lan_interfaces(interface, required=True)

    def failed(error: LanError) -> None:
        err.print(Text.assemble(("attempt refused", "yellow"), f" [{error.code}]: {_plain(error.message)}"))

    async def run(v: Vault) -> None:
        async with open_invitation(v, interfaces=interfaces, port=port, announce=not no_discovery, seconds=timeout,
                                   on_failure=failed) as inviter:
            addresses = [show_address(a) for a in inviter.addresses]
            if as_json:
                _emit_json({"code": str(inviter.code), "addresses": addresses, "announced": inviter.announced,
                            "expires_in": timeout})
                sys.stdout.flush()
            else:
                out.print(f"code: {inviter.code}")
                if inviter.announced:
                    out.print(f"on the new device run: crdtsync join {inviter.code}")
                    out.print(f"(if it finds nothing there: crdtsync join {inviter.code} --peer {addresses[0]})")
                else:
                    out.print(f"on the new device run: crdtsync join {inviter.code} --peer {addresses[0]}")
                if inviter.announce_error is not None:
                    err.print(f"not announced on the LAN [{inviter.announce_error.code}]: "
                              f"{_plain(inviter.announce_error.message)}")
                out.print(f"(valid {timeout:g} s, one device, three attempts; waiting on {', '.join(addresses)})")
            report = await inviter.wait()
        if as_json:
            _emit_json({"joined": report.to_json()})
        else:
            out.print(f"device {_plain(report.device_name or '')} ({report.device}) joined: "
                      f"{report.live.entries_sent if report.live else 0} entries sent")

    with _open(vault, as_json) as v:
        anyio.run(run, v)


def join_code(code: str, vault: Path | None, device_name: str | None, peers: list[str], interface: list[str],
              timeout: float, as_json: bool) -> None:
    """``crdtsync join CODE [--peer HOST:PORT]... [--interface IP]... [--timeout S]``: join by a pairing code (no
    passphrase). The inviting device is looked for on the LAN interfaces (the named ones, else the default choice)
    unless --peer addresses are given without --interface."""
    path = _vault_path(vault)
    with _guard(as_json):
        if not 0 < timeout <= 3600:
            raise InvalidInputError("--timeout is 1 s to 1 h")
        addresses = [parse_address(p) for p in peers]
        interfaces = lan_interfaces(interface, required=True) if interface or not peers else ()
        report: JoinReport = anyio.run(lambda: join_by_code(path, code, addresses=addresses, interfaces=interfaces,
                                                            find_seconds=timeout, device_name=device_name))
    if as_json:
        _emit_json(report.to_json())
    else:
        out.print(f"joined vault {report.fingerprint}: {report.memories} memories in {report.vault} "
                  f"(device {report.device_id})")
        for skipped in report.skipped_relays:
            err.print(f"relay left out: {_plain(skipped)}")
