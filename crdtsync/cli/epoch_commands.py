"""CLI commands that move the vault to a new epoch key: ``devices revoke DEVICE`` and ``passphrase change`` (see
:mod:`crdtsync._vault_epochs`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from crdtsync.cli.app import JsonOpt, VaultOpt, _emit_json, _open, _passphrase, _plain, app, devices_app, out
from crdtsync.errors import InvalidInputError

passphrase_app = typer.Typer(help="The vault's passphrase (what admits new devices): `passphrase change`.",
                             no_args_is_help=True)
app.add_typer(passphrase_app, name="passphrase")


def _new_passphrase() -> str:
    """``CRDTSYNC_NEW_PASSPHRASE``, else asked twice on a terminal."""
    return _passphrase(True, variable="CRDTSYNC_NEW_PASSPHRASE", label="New vault passphrase")


@devices_app.command("revoke")
def devices_revoke(
    device: Annotated[str, typer.Argument(help="The device to shut out: its id, a unique prefix of 4 characters or "
                                               "more, or its unique name (`crdtsync devices` lists them).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a lost or stolen device: the other devices get a new vault key it cannot open, what it writes from
    now on is refused everywhere, and the vault gets a new passphrase (the device knew the old one). It can still
    read what it synced before. Asks for the current passphrase and the new one (or CRDTSYNC_PASSPHRASE and
    CRDTSYNC_NEW_PASSPHRASE); sync afterwards to publish it."""
    with _open(vault, as_json) as v:
        if not yes:
            if as_json or not sys.stdin.isatty():
                raise InvalidInputError("revoking a device cannot be undone: pass --yes", code="CONFIRMATION_REQUIRED")
            names = v.device_names()
            typer.confirm(f"Revoke device {_plain(device)}? It cannot be undone: that device would have to join "
                          f"the vault again ({len(names)} devices known)", abort=True)
        done = v.revoke_device(device, passphrase=_passphrase(confirm=False), new_passphrase=_new_passphrase())
        names = v.device_names()
    if as_json:
        _emit_json(done)
        return
    out.print(f"revoked device {done['device']} ({_plain(names.get(done['device'], ''))}) after entry "
              f"{done['point']} of its log; the vault now seals under epoch {done['epoch']}, whose key "
              f"{len(done['recipients'])} devices hold. Only the new passphrase admits new devices. "
              "Run `crdtsync sync` to publish the revocation to the relays.")


@passphrase_app.command("change")
def passphrase_change(
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give the vault a new passphrase and a new vault key for the same devices (the old passphrase may have
    leaked with the store's header). Asks for the current passphrase and the new one (or CRDTSYNC_PASSPHRASE and
    CRDTSYNC_NEW_PASSPHRASE); sync afterwards to publish it to every relay."""
    with _open(vault, as_json) as v:
        done = v.change_passphrase(passphrase=_passphrase(confirm=False), new_passphrase=_new_passphrase())
    if as_json:
        _emit_json(done)
        return
    out.print(f"the passphrase is changed and the vault seals under epoch {done['epoch']} "
              f"({len(done['recipients'])} devices hold its key). Run `crdtsync sync` to publish the new header.")
