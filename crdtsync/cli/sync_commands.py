"""CLI commands that talk to mailboxes: ``relay add|list|rm``, ``push``, ``pull``, ``sync`` and ``join``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from crdtsync.cli.app import (
    JsonOpt,
    VaultOpt,
    _emit_json,
    _guard,
    _open,
    _passphrase,
    _plain,
    _progress,
    _vault_path,
    app,
    err,
    out,
    sync_summary,
)
from crdtsync.cli.lan_commands import InterfaceOpt, PeerOpt, sync_lan
from crdtsync.cli.pairing_commands import join_code
from crdtsync.crypto.pairing import looks_like_code
from crdtsync.errors import InvalidInputError
from crdtsync.node import join_string
from crdtsync.pairing import FIND_SECONDS
from crdtsync.vault import Vault

relay_app = typer.Typer(help="Mailboxes (a shared folder, an S3 bucket) this vault syncs through.",
                        no_args_is_help=True)
app.add_typer(relay_app, name="relay")


@relay_app.command("add")
def relay_add(
    name: Annotated[str, typer.Argument(help="A short name for this mailbox.")],
    url: Annotated[str, typer.Argument(help="file:///path/to/shared/folder, s3://bucket/prefix or a path.")],
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a mailbox and publish the vault's (encrypted) header there; prints the join string (the URL and the
    vault's fingerprint) that other devices join with."""
    with _open(vault, as_json) as v:
        v.add_relay(name, url)
        url = next(r["url"] for r in v.relays() if r["name"] == name)  # a folder's path made absolute
        joining = join_string(url, v.header)
    if as_json:
        _emit_json({"name": name, "url": url, "join": joining})
    else:
        out.print(f"added relay {name} -> {url}; other devices can now run: crdtsync join '{joining}'")


@relay_app.command("list")
def relay_list(vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """List mailboxes with their last sync, last error and pending work."""
    with _open(vault, as_json) as v:
        relays = v.relays()
    if as_json:
        _emit_json(relays)
        return
    table = Table()
    for column in ("name", "url", "last sync", "pending push", "pending pull", "last error"):
        table.add_column(column, overflow="fold")
    for r in relays:
        table.add_row(r["name"], r["url"], r["last_sync"] or "never", str(r["pending_push"]), str(r["pending_pull"]),
                      r["last_error"] or "")
    out.print(table)


@relay_app.command("rm")
def relay_rm(name: str, vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """Forget a mailbox (its contents are left as they are)."""
    with _open(vault, as_json) as v:
        v.remove_relay(name)
    if as_json:
        _emit_json({"removed": name})
    else:
        out.print(f"removed relay {name}")


def _run_sync(vault: Path | None, relay: str | None, as_json: bool, *, push: bool, pull: bool) -> None:
    with _open(vault, as_json) as v, _progress() as bar:
        task = bar.add_task("pulling", total=None)
        before = v.store.alarms()
        reports = v.sync(relay, push=push, pull=pull, progress=lambda done, total: bar.update(
            task, completed=done, total=total))
        held = v.store.held_count()
        raised = [alarm for alarm in v.store.alarms() if alarm not in before]
    data: list[dict[str, Any]] = [r.to_json() for r in reports]
    if as_json:
        _emit_json(data)
    else:
        for r in data:
            out.print(f"{r['relay']}: {sync_summary(r)}, {r['seconds']} s")
            for e in r["errors"] + r["warnings"]:
                err.print(Text.assemble((r["relay"], "yellow"),
                                        f" {e['device']} [{e['code']}]: {_plain(e['message'])}"))
        if any(r["conflicts"] for r in data):
            err.print("conflicts need you: `crdtsync conflicts`, then `crdtsync resolve`")
        if held:
            err.print(f"{held} received updates wait for writes no relay has brought yet: `crdtsync status` "
                      "shows whose")
        for alarm in raised:
            err.print(Text.assemble(("ALARM", "bold red"), f" [{alarm['code']}]: {_plain(alarm['message'])}"))
    if any(r["errors"] for r in data):
        raise typer.Exit(8)


RelayOpt = Annotated[str | None, typer.Option("--relay", help="Only this relay (default: every relay).")]


@app.command()
def sync(
    relay: RelayOpt = None,
    lan: Annotated[bool, typer.Option("--lan", help="Sync directly with the devices on the network instead of the "
                                      "relays: one round with each, then exit.")] = False,
    interface: InterfaceOpt = None,
    peer: PeerOpt = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="With --lan: seconds to look for peers.")] = 5.0,
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push then pull every relay; or, with --lan, one round of direct sync with every peer found.

    Exits 0 when it completed, even if it surfaced conflicts; 8 when a relay or an object failed (the rest still
    synced; the next sync retries); with --lan, 9 when it synced with no peer (LAN_NO_PEER)."""
    if lan:
        with _open(vault, as_json) as v:
            sync_lan(v, interface, peer, timeout, as_json)
        return
    if interface or peer:
        with _guard(as_json):
            raise InvalidInputError("--interface and --peer go with --lan")
    _run_sync(vault, relay, as_json, push=True, pull=True)


@app.command()
def push(relay: RelayOpt = None, vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """Send this device's new updates to every relay."""
    _run_sync(vault, relay, as_json, push=True, pull=False)


@app.command()
def pull(relay: RelayOpt = None, vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """Fetch and merge the other devices' new updates from every relay."""
    _run_sync(vault, relay, as_json, push=False, pull=True)


@app.command()
def join(
    url: Annotated[str, typer.Argument(help="The join string (or URL) another device's `relay add` printed.")],
    vault: VaultOpt = None,
    device_name: Annotated[str | None, typer.Option(help="Name of this device (default: host name).")] = None,
    relay: Annotated[str, typer.Option("--relay", help="Name to save the URL under.")] = "default",
    peer: Annotated[list[str] | None, typer.Option("--peer", help="With a pairing code: HOST:PORT of the inviting "
                                                   "device, as `crdtsync invite` printed it (repeatable); then the "
                                                   "LAN is searched only on --interface ones.")] = None,
    interface: Annotated[list[str] | None, typer.Option(
        "--interface", metavar="IP", help="With a pairing code: an IPv4 address of this host to look for the "
        "inviting device on (repeatable; default: the host's private LAN interfaces).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="With a pairing code: seconds to look for the "
                                           "inviting device on the LAN.")] = FIND_SECONDS,
    as_json: JsonOpt = False,
) -> None:
    """Join a vault from its join string (URL#vault=FINGERPRINT, from `relay add`) or mailbox URL with the
    passphrase, then pull everything; or from a pairing code (`crdtsync invite`), no passphrase: the inviting
    device is found on the LAN, or at --peer HOST:PORT."""
    if looks_like_code(url) or peer:
        return join_code(url, vault, device_name, peer or [], interface or [], timeout, as_json)
    path = _vault_path(vault)
    with _guard(as_json):
        passphrase = _passphrase(confirm=False)
        with _progress() as bar:
            task = bar.add_task("pulling", total=None)
            folder = Vault.join(path, url, passphrase=passphrase, device_name=device_name, relay_name=relay,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
        with Vault.open(folder) as v:
            count = len(v.list())
            device = v.device_id
            vault_fingerprint = v.fingerprint
    if as_json:
        _emit_json({"vault": str(folder), "device_id": device, "memories": count, "fingerprint": vault_fingerprint})
    else:
        out.print(f"joined vault {vault_fingerprint}: {count} memories in {folder} (device {device})")
