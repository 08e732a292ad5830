"""CLI commands for direct sync on the LAN: ``serve``, ``peers``, ``peer add|rm``, and the ``--lan`` round of
``sync`` (:func:`sync_lan`)."""

from __future__ import annotations

import signal
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import anyio
import typer
from rich.table import Table

from crdtsync import lan, node
from crdtsync.cli.app import JsonOpt, VaultOpt, _emit_json, _epoch, _guard, _open, _plain, app, err, out
from crdtsync.discovery import choose_interfaces, host_interfaces
from crdtsync.errors import CrdtsyncError, LanError
from crdtsync.lan import DEFAULT_PORT, LanNode, LanOptions, RoundResult
from crdtsync.node import parse_address
from crdtsync.vault import Vault

InterfaceOpt = Annotated[list[str] | None, typer.Option(
    "--interface", metavar="IP", help="An IPv4 address of this host to listen, announce and look for peers on "
    "(repeatable; default: the host's private LAN interfaces, never container or VPN links).")]
PeerOpt = Annotated[list[str] | None, typer.Option(
    "--peer", metavar="HOST:PORT", help="A peer to dial besides the ones discovery finds (repeatable).")]

peer_app = typer.Typer(help="Addresses of peers kept for `serve` and `sync --lan` to dial (where multicast fails).",
                       no_args_is_help=True)
app.add_typer(peer_app, name="peer")


def _stderr_log(line: str) -> None:
    """One line per event on stderr, stamped with the UTC time to the millisecond."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    sys.stderr.write(f"{stamp} {line}\n")
    sys.stderr.flush()


def lan_interfaces(named: list[str] | None, *, required: bool) -> tuple[str, ...]:
    """The interface addresses to use: ``--interface`` ones, else the default choice; with ``required`` False a
    host with no qualifying interface gets none (the ``--peer`` addresses still work)."""
    try:
        return tuple(choose_interfaces(named or [], host_interfaces()))
    except CrdtsyncError:
        if required or named:
            raise
        return ()


@app.command()
def serve(
    interface: InterfaceOpt = None,
    port: Annotated[int, typer.Option(min=0, max=65535,
                                      help="TCP port to listen on (0: any free port).")] = DEFAULT_PORT,
    peer: PeerOpt = None,
    relay_interval: Annotated[float, typer.Option(
        "--relay-interval", min=0, help="Seconds between syncs with the relays (0: never).")] = 60.0,
    no_discovery: Annotated[bool, typer.Option(
        "--no-discovery",
        help="Neither announce nor look for peers with mDNS (dial --peer and kept addresses).")] = False,
    vault: VaultOpt = None,
) -> None:
    """Sync live with the vault's other devices on the network until stopped (Ctrl-C or SIGTERM).

    Announces this device with mDNS on the chosen interfaces, accepts and dials peers, sends every change made
    here (by any process) to connected peers at once, passes on what each peer sends to the others, and syncs the
    relays every --relay-interval seconds. Logs one line per event on stderr. When the vault moves to a new key
    epoch (a revocation, a new passphrase) it restarts with that epoch's keys."""
    with _guard():
        peers = tuple(parse_address(p) for p in peer or [])
        interfaces = lan_interfaces(interface, required=not peers)
    with _open(vault) as v:
        options = LanOptions(interfaces=interfaces, port=port, peers=peers, relay_interval=relay_interval)
        restart = True
        while restart:  # a new epoch: a new node with its keys
            node = LanNode(v, options, log=_stderr_log)
            anyio.run(_serve, node, not no_discovery)
            restart = node.restart
    _stderr_log("stopped")


async def _serve(node: LanNode, discover: bool) -> None:
    async with anyio.create_task_group() as tasks:
        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for received in signals:
                    node.log(f"{signal.Signals(received).name}: closing every session")
                    node.stop()
                    return

        tasks.start_soon(stop_on_signal)
        await lan.serve(node, discover=discover)
        tasks.cancel_scope.cancel()


def sync_lan(vault: Vault, interface: list[str] | None, peer: list[str] | None, timeout: float,
             as_json: bool) -> None:
    """``sync --lan``: one round with every peer found within ``timeout`` seconds (and every ``--peer``, kept
    and remembered address); prints what each session moved. Exits 9 with ``LAN_NO_PEER`` when it synced with
    none."""
    peers = tuple(parse_address(p) for p in peer or [])
    interfaces = lan_interfaces(interface, required=False)
    node = LanNode(vault, LanOptions(), log=_stderr_log)
    started = time.monotonic()
    result: RoundResult = anyio.run(lambda: lan.sync_round(node, peers, timeout=timeout, interfaces=interfaces))
    names = vault.device_names()
    sessions = [{"device": r.peer, "name": names.get(r.peer or "", ""), **r.to_json()} for r in result.sessions]
    if as_json:
        _emit_json({"sessions": sessions, "failures": result.failures,
                    "seconds": round(time.monotonic() - started, 3)})
    else:
        for s in sessions:
            state = "in sync" if s["error"] is None else f"[{s['error']['code']}] {_plain(s['error']['message'])}"
            out.print(f"{_plain(s['name'] or '')} ({(s['device'] or '')[:12]}): sent {s['entries']['sent']}, "
                      f"received {s['entries']['received']} entries, {s['memories_changed']} memories changed; "
                      f"{state}")
        for f in result.failures:
            err.print(f"{f['address']}: [{f['code']}] {_plain(f['message'])}")
    if not result.synced:
        where = f" on {', '.join(interfaces)}" if interfaces else ""
        raise LanError(f"synced with no peer within {timeout:g} s{where}: is `crdtsync serve` running on another "
                       "device of this vault? Where multicast does not pass, give --peer HOST:PORT",
                       code="LAN_NO_PEER")


@app.command()
def peers(vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """List the peers met directly (connected now when `serve` runs), and the addresses kept with `peer add`."""
    with _open(vault, as_json) as v:
        rows = node.peer_rows(v.store, v.device_names())
    if as_json:
        _emit_json(rows)
        return
    daemon = rows["daemon"]
    if daemon.get("running"):
        out.print(f"serve is running (pid {daemon['pid']}, port {', '.join(map(str, daemon.get('ports', [])))})")
    else:
        out.print("serve is not running: `crdtsync serve` syncs live with the peers")
    table = Table()
    for column in ("device", "name", "address", "state", "last seen", "entries sent", "received", "last error"):
        table.add_column(column, overflow="fold")
    for p in rows["peers"]:
        seen = _epoch(p["last_seen"])
        error = p["last_error"]
        table.add_row(p["device"][:12], _plain(p["name"]), p["address"] or "", p["state"], seen,
                      str(p["entries_sent"]), str(p["entries_received"]),
                      f"[{error['code']}] {_plain(error['message'])}" if error else "")
    out.print(table)
    for kept in rows["kept"]:
        out.print(f"kept: {_plain(kept['name'])} -> {kept['address']}")


@peer_app.command("add")
def peer_add(
    name: Annotated[str, typer.Argument(help="A name for this address.")],
    address: Annotated[str, typer.Argument(metavar="HOST:PORT", help="Where a device's `serve` listens.")],
    vault: VaultOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep an address for `serve` and `sync --lan` to dial (for networks where multicast does not pass)."""
    with _open(vault, as_json) as v:
        node.keep_peer(v.store, name, address)
    if as_json:
        _emit_json({"name": name, "address": address})
    else:
        out.print(f"kept peer {name} -> {address}")


@peer_app.command("rm")
def peer_rm(name: str, vault: VaultOpt = None, as_json: JsonOpt = False) -> None:
    """Forget a kept address."""
    with _open(vault, as_json) as v:
        node.forget_peer(v.store, name)
    if as_json:
        _emit_json({"removed": name})
    else:
        out.print(f"forgot peer {name}")

