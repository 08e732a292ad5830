"""CLI commands about where this device's keys live: ``keys store keyring|file`` (see
:mod:`crdtsync.store.keystore`); ``status`` and ``devices`` show where they are."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from crdtsync.cli.app import JsonOpt, VaultOpt, _emit_json, _open, app, out
from crdtsync.store.keystore import KeysMove, move_secrets

keys_app = typer.Typer(help="Where this device's private keys and the vault keys live: the OS keyring or the "
                       "vault's 0600 keys file.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


class KeysStore(StrEnum):
    """Where ``keys store`` puts the keys."""

    keyring = "keyring"
    file = "file"


@keys_app.command("store")
def keys_store(
    where: Annotated[KeysStore, typer.Argument(
        help="keyring: the OS keyring (macOS Keychain, Windows Credential Locker, Secret Service or KWallet of a "
             "Linux desktop; never a plaintext backend), the keys file then holding only a reference to it; "
             "file: the vault's 0600 keys file.", metavar="keyring|file", show_default=False)],
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move this device's keys to the OS keyring or to the keys file. Safe to interrupt: a vault stopped at any
    point keeps working, and running the command again finishes the move."""
    with _open(vault, as_json) as v:
        move = move_secrets(v.path, where.value)
    if as_json:
        _emit_json({**move.after.to_json(), "moved": move.moved, "removed_leftover": move.removed_leftover})
    else:
        out.print(_moved_text(move))


def _moved_text(move: KeysMove) -> str:
    after = move.after
    if not move.moved:
        text = f"the keys are already in {after.place()}"
        return text + ("; removed an unused copy of them from the keyring" if move.removed_leftover else "")
    if after.store == "keyring":
        return f"moved the keys to {after.place()}; {after.path} now holds only a reference to it"
    return f"moved the keys to {after.place()} and removed them from the keyring ({move.before.backend_name})"
