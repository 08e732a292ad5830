"""Direct sync on the LAN: the ``serve`` daemon and the one-shot ``sync --lan`` round (runtime, on anyio).

A :class:`LanNode` holds one open vault and, in one task group:

- **listeners** on the chosen interface addresses (one port for all), admitting connections through
  :func:`crdtsync.transport.tcp.admit`, with bounds: :attr:`LanOptions.max_sessions` sessions,
  :attr:`LanOptions.handshakes_per_source` handshakes at once and :attr:`LanOptions.attempts_per_minute`
  connection attempts per source address; past a bound the connection is closed at once (``LAN_BUSY``);
- **dialers** for every address it knows: ``--peer`` addresses, the ones kept with ``peer add``, the addresses
  where a device was last reached, and what discovery reports; an address whose device has a session is not
  dialled again, a failing one is retried with a growing pause (:attr:`LanOptions.redial` up to 60 s);
- one live session per peer device (:func:`crdtsync.transport.stream.run_live`). When both sides dial at once,
  both keep the connection dialled by the device with the smaller id and close the other (``LAN_DUPLICATE``
  in the log), so each pair has one session;
- a **watcher** that notices commits of other processes on the same vault (a CLI ``add``, a library user, the
  assistant's server): each commit pokes the daemon's socket in the vault folder
  (:data:`~crdtsync.store.db.POKE_NAME`), and SQLite's ``PRAGMA data_version`` tells whether another process
  committed (looked at every :attr:`LanOptions.watch_interval` seconds where there is no socket); it wakes every
  session, which sends this device's new entry to its peer. One ``serve`` per vault: a second is refused
  (``LAN_BUSY``);
- a **relay loop** that syncs the vault's relays every :attr:`LanOptions.relay_interval` seconds, and at once
  (after a second's grace) when this device wrote while no peer is connected.

Everything that touches the vault runs in worker threads under one lock (``vault_lock``), so the event loop stays
free for heartbeats and handshakes. What the peers and sessions look like is kept in the store (cursor scopes
``lan-peer`` and ``lan-daemon``) for ``crdtsync peers`` and ``status`` in other processes.

The log: one line per event that matters, given to ``log`` (the CLI prints it on stderr): peer up or down with
the reason, entries sent and received, refusals with their codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from crdtsync._process import process_token
from crdtsync.crypto.lan import lan_key
from crdtsync.errors import CrdtsyncError, LanError
from crdtsync.live import LiveReport, LiveSync
from crdtsync.node import (
    ALIVE_EVERY,
    DAEMON_SCOPE,
    MANUAL_SCOPE,
    PEER_SCOPE,
    Address,
    parse_address,
    show_address,
)
from crdtsync.replication import LOGGED_KEY, LOGGED_SCOPE, AuthorLogReplica
from crdtsync.store.db import POKE_NAME
from crdtsync.transport.stream import DEAD_AFTER, HEARTBEAT, Changes, run_live
from crdtsync.transport.tcp import HANDSHAKE_TIMEOUT, Connection, admit, dial
from crdtsync.transport.tls import TlsIdentity, identity, peer_device
from crdtsync.vault import Vault

#: The TCP port ``serve`` listens on unless told otherwise.
DEFAULT_PORT: Final = 47354
#: Longest pause between two attempts to dial an address, in seconds.
MAX_REDIAL: Final = 60.0
#: Most discovered addresses waiting to be dialled.
MAX_FOUND: Final = 256
#: Seconds between two looks at the vault for other processes' commits when they poke the daemon as well.
POKED_POLL: Final = 0.25
#: Longest path of a Unix socket (``sun_path`` holds 108 bytes with the final NUL on Linux, 104 on macOS).
MAX_SOCKET_PATH: Final = 104
#: Seconds without a change before the daemon compacts the vault's log (when it is due).
IDLE_BEFORE_COMPACTING: Final = 2.0
#: Most addresses dialled at once (given, kept, remembered and discovered).
MAX_DIALING: Final = 64
#: Failed dials in a row after which a discovered address is dropped (until it is announced again).
DISCOVERED_ATTEMPTS: Final = 3

T = TypeVar("T")


@dataclass(frozen=True)
class LanOptions:
    """How a :class:`LanNode` listens, dials and paces itself (times in seconds)."""

    #: IPv4 or IPv6 addresses of this host to listen (and announce) on; empty: do not listen.
    interfaces: tuple[str, ...] = ()
    #: TCP port to listen on (0: any free port).
    port: int = DEFAULT_PORT
    #: Addresses to dial besides the kept and remembered ones.
    peers: tuple[Address, ...] = ()
    heartbeat: float = HEARTBEAT
    dead_after: float = DEAD_AFTER
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    #: Seconds between two syncs of the vault's relays (0: never).
    relay_interval: float = 60.0
    #: First pause before dialling a failing address again.
    redial: float = 2.0
    max_sessions: int = 32
    handshakes_per_source: int = 4
    attempts_per_minute: int = 60
    watch_interval: float = 0.02


@dataclass
class _Session:
    connection: Connection
    stop: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    live: LiveSync | None = None


@dataclass
class RoundResult:
    """What a one-shot round did: the reports of the sessions it ran (one per peer device) and the addresses it
    could not sync with (``{address, code, message}``)."""

    sessions: list[LiveReport] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def synced(self) -> list[LiveReport]:
        """The sessions that ended cleanly in sync."""
        return [r for r in self.sessions if r.error is None]


class LanNode:
    """Direct sync of ``vault`` with its peers on the network (see the module docstring).

    Args:
        vault: an open vault; this node uses it from worker threads only, one call at a time.
        options: listening, dialling and pacing.
        log: receives one line per event (``print`` to stderr in the CLI).
    """

    def __init__(self, vault: Vault, options: LanOptions, *, log: Callable[[str], None] = lambda line: None) -> None:
        self.vault = vault
        self.options = options
        self.log = log
        self.vault_lock = anyio.CapacityLimiter(1)
        self.changes = Changes()
        self.logs = AuthorLogReplica(vault)
        self.me = vault.device_id
        secrets = vault.secrets
        #: The epoch whose key this node's knock, discovery and TLS keys come from.
        self.epoch = secrets.current_epoch
        #: Set when the node stopped because this device moved to another epoch: run a new node, with its keys.
        self.restart = False
        key = secrets.epochs[secrets.current_epoch]
        self.knock_key = lan_key(secrets.vault_id, key, secrets.current_epoch, "knock")
        self.discovery_key = lan_key(secrets.vault_id, key, secrets.current_epoch, "discovery")
        self.tls: TlsIdentity = identity(secrets.vault_id, key, secrets.current_epoch, secrets.device)
        self.sessions: dict[str, _Session] = {}
        self.ports: list[int] = []
        self._stop = anyio.Event()
        self._dialing: set[Address] = set()
        self._handshakes: dict[str, int] = defaultdict(int)
        self._attempts: dict[str, deque[float]] = defaultdict(deque)
        self._one_shot = False
        self._address_device: dict[Address, str] = {}
        self._holder = process_token()

    # -- public ------------------------------------------------------------------------------------------

    async def serve(self, *, found: anyio.abc.ObjectReceiveStream[Address] | None = None,
                    task_status: anyio.abc.TaskStatus[list[int]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop` (then every session closes cleanly) or cancellation. ``task_status.started``
        gets the ports listened on once the listeners are up.

        Raises:
            LanError: ``LAN_UNREACHABLE`` when an interface address cannot be listened on (not on this host,
                or the port is taken).
        """
        poked = self._open_poke_socket()
        try:
            listeners = await self._listen()
        except BaseException:
            self._close_poke_socket(poked)
            raise
        await self._call(self._note_daemon, True)
        try:
            async with anyio.create_task_group() as tasks:
                for listener in listeners:
                    tasks.start_soon(self._accept_loop, listener, tasks)
                tasks.start_soon(self._dial_loop, tasks)
                if found is not None:
                    tasks.start_soon(self._found_loop, found, tasks)
                tasks.start_soon(self._watch, poked)
                tasks.start_soon(self._relay_loop)
                tasks.start_soon(self._epoch_loop)
                tasks.start_soon(self._alive_loop)
                tasks.start_soon(self._compact_when_idle)
                task_status.started(self.ports)
                await self._stop.wait()
                for session in list(self.sessions.values()):
                    session.stop.set()
                with anyio.move_on_after(5):
                    for session in list(self.sessions.values()):
                        await session.done.wait()
                tasks.cancel_scope.cancel()
        finally:
            for listener in listeners:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
            self._close_poke_socket(poked)
            with anyio.CancelScope(shield=True):
                await self._call(self._note_daemon, False)

    def _close_poke_socket(self, sock: socket.socket | None) -> None:
        if sock is not None:
            sock.close()
            (self.vault.path / POKE_NAME).unlink(missing_ok=True)

    def stop(self) -> None:
        """Ask :meth:`serve` to close every session cleanly and return."""
        self._stop.set()

    async def sync_round(self, addresses: Iterable[Address], *, timeout: float,
                         found: anyio.abc.ObjectReceiveStream[Address] | None = None) -> RoundResult:
        """One round (``sync --lan``): dial every address given, kept and remembered (and every address
        ``found`` reports within ``timeout`` seconds), sync with each device reached until neither side lacks
        anything, and return. A session runs to its end (in sync, or its peer gone: the heartbeat bounds it);
        only the search for peers stops at ``timeout``. Two addresses of one device make one session."""
        self._one_shot = True
        result = RoundResult()
        targets = list(dict.fromkeys([*addresses, *await self._call(self._known_addresses)]))
        async with anyio.create_task_group() as tasks:
            for address in targets:
                tasks.start_soon(self._round_with, address, result)
            if found is not None:
                with anyio.move_on_after(timeout):
                    async for address in found:
                        if address not in targets:
                            targets.append(address)
                            tasks.start_soon(self._round_with, address, result)
        return result

    # -- listening --------------------------------------------------------------------------------------

    async def _listen(self) -> list[anyio.abc.SocketListener]:
        listeners: list[anyio.abc.SocketListener] = []
        port = self.options.port
        try:
            for host in self.options.interfaces:
                listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
                listeners.extend(listener.listeners)  # type: ignore[arg-type]
                port = listener.extra(anyio.abc.SocketAttribute.local_port)
                self.ports.append(port)
        except OSError as exc:
            for opened in listeners:
                await opened.aclose()
            raise LanError(f"cannot listen on {host} port {port}: {exc.strerror or exc}",
                           code="LAN_UNREACHABLE") from None
        for host in self.options.interfaces:
            self.log(f"listening on {show_address((host, port))}")
        return listeners

    async def _accept_loop(self, listener: anyio.abc.SocketListener, tasks: anyio.abc.TaskGroup) -> None:
        while True:
            raw = await listener.accept()
            tasks.start_soon(self._admit, raw)

    async def _admit(self, raw: anyio.abc.SocketStream) -> None:
        remote = raw.extra(anyio.abc.SocketAttribute.remote_address)
        source = str(remote[0]) if isinstance(remote, tuple) else str(remote)
        refusal = self._bounded(source)
        if refusal is not None:
            self.log(f"refused {source}: LAN_BUSY ({refusal})")
            await raw.aclose()
            return
        self._handshakes[source] += 1
        try:
            connection = await admit(raw, knock_key=self.knock_key, tls=self.tls, check=self._check,
                                     timeout=self.options.handshake_timeout)
        except LanError as exc:
            self.log(f"refused {source}: {exc.code} {exc.message}")
            return
        finally:
            self._handshakes[source] -= 1
        await self._run(connection)

    def _bounded(self, source: str) -> str | None:
        """Why a connection from ``source`` is turned away now, or None (counts the attempt)."""
        now = time.monotonic()
        attempts = self._attempts[source]
        while attempts and now - attempts[0] > 60:
            attempts.popleft()
        attempts.append(now)
        if len(attempts) > self.options.attempts_per_minute:
            return f"over {self.options.attempts_per_minute} connection attempts in a minute"
        if self._handshakes[source] >= self.options.handshakes_per_source:
            return f"{self._handshakes[source]} handshakes from it at once"
        if len(self.sessions) >= self.options.max_sessions:
            return f"{len(self.sessions)} sessions already"
        return None

    async def _check(self, cert: bytes | None) -> str:
        def check() -> str:
            device = peer_device(cert, self.tls.vault_id, self.logs.registry(), self.me)
            revocation = self.logs.view().revoked.get(device)
            if revocation is not None:
                raise LanError(f"the peer is device {device}, which device {revocation.by} revoked",
                               code="LAN_REFUSED")
            return device

        return await self._call(check)

    # -- dialling ---------------------------------------------------------------------------------------

    async def _dial_loop(self, tasks: anyio.abc.TaskGroup) -> None:
        while True:
            for address in await self._call(self._known_addresses):
                if address not in self._dialing:
                    tasks.start_soon(self._keep_dialing, address)
            await anyio.sleep(self.options.redial * 5)

    async def _found_loop(self, found: anyio.abc.ObjectReceiveStream[Address], tasks: anyio.abc.TaskGroup) -> None:
        """Dial what discovery reports. Its addresses are not authenticated (anyone on the LAN can announce a
        member's tag with an address of its own), so each gets :data:`DISCOVERED_ATTEMPTS` failed attempts in a
        row before it is dropped until announced again, and at most :data:`MAX_DIALING` addresses are dialled."""
        async for address in found:
            if address in self._dialing:
                continue
            if len(self._dialing) >= MAX_DIALING:
                self.log(f"not dialling {show_address(address)}: {MAX_DIALING} addresses are being dialled")
                continue
            tasks.start_soon(self._keep_dialing, address, DISCOVERED_ATTEMPTS)

    async def _keep_dialing(self, address: Address, attempts: int | None = None) -> None:
        """Keep a session going through ``address`` (or leave it to another address of the same device); with
        ``attempts``, give up after that many failed dials in a row."""
        self._dialing.add(address)
        pause = self.options.redial
        last_code = ""
        failures = 0
        try:
            while attempts is None or failures < attempts:
                device = self._device_at(address)
                if device is not None and device in self.sessions:
                    await anyio.sleep(self.options.redial)
                    continue
                try:
                    connection = await dial(*address, knock_key=self.knock_key, tls=self.tls, check=self._check,
                                            timeout=self.options.handshake_timeout)
                except LanError as exc:
                    if exc.code != last_code:
                        self.log(f"cannot sync with {show_address(address)}: {exc.code} {exc.message}")
                        last_code = exc.code
                    failures += 1
                    await anyio.sleep(pause)
                    pause = min(pause * 2, MAX_REDIAL)
                    continue
                last_code, pause, failures = "", self.options.redial, 0
                await self._run(connection)
                await anyio.sleep(self.options.redial)
        finally:
            self._dialing.discard(address)

    async def _round_with(self, address: Address, result: RoundResult) -> None:
        try:
            connection = await dial(*address, knock_key=self.knock_key, tls=self.tls, check=self._check,
                                    timeout=self.options.handshake_timeout)
        except LanError as exc:
            self.log(f"cannot sync with {show_address(address)}: {exc.code} {exc.message}")
            result.failures.append({"address": show_address(address), "code": exc.code, "message": exc.message})
            return
        report = await self._run(connection)
        if report is not None:
            result.sessions.append(report)

    def _device_at(self, address: Address) -> str | None:
        """The device a dial of ``address`` reached last (None: not dialled yet)."""
        return self._address_device.get(address)

    # -- sessions ---------------------------------------------------------------------------------------

    async def _run(self, connection: Connection) -> LiveReport | None:
        """Run a session over an authenticated connection, unless the pair has one already (module docstring)."""
        device = connection.device
        if connection.dialed:  # this address reaches that device: not dialled again while it has a session
            self._address_device[connection.address] = device
        existing = self.sessions.get(device)
        if existing is not None:
            # Same direction (two addresses of one device): keep the first. Crossed dials: keep the one the
            # smaller device id dialled, which both sides choose alike.
            keep_new = existing.connection.dialed != connection.dialed and connection.dialed == (self.me < device)
            loser = existing if keep_new else None
            if loser is None:
                self.log(f"peer {device[:12]}: LAN_DUPLICATE: a session with it runs already; closing the "
                         "second connection")
                with anyio.CancelScope(shield=True):
                    await connection.stream.aclose()
                return None
            self.log(f"peer {device[:12]}: LAN_DUPLICATE: both sides dialled; keeping the connection "
                     "dialled by the smaller device id")
            loser.stop.set()
            await loser.done.wait()
        session = _Session(connection)
        self.sessions[device] = session
        how = "dialled" if connection.dialed else "accepted"
        name = await self._call(self._note_peer, connection, "connected", None)
        self.log(f"peer up {name} at {show_address(connection.address)} ({how})")
        live = LiveSync(self.logs)
        session.live = live

        def progress(report: LiveReport) -> None:
            self.log(f"peer {name}: entries sent {report.entries_sent}, received {report.entries_received}")

        try:
            report = await run_live(live, connection.stream, vault_lock=self.vault_lock,
                                    heartbeat=self.options.heartbeat, dead_after=self.options.dead_after,
                                    changes=self.changes, until_synced=self._one_shot, stop=session.stop,
                                    progress=progress)
        finally:
            session.done.set()
            if self.sessions.get(device) is session:
                del self.sessions[device]
        reason = "closed" if report.error is None else f"{report.error['code']} {report.error['message']}"
        self.log(f"peer down {name}: {reason} (entries sent {report.entries_sent}, received "
                 f"{report.entries_received})")
        with anyio.CancelScope(shield=True):
            await self._call(self._note_peer, connection, "disconnected", report)
        return report

    # -- watching, relays, bookkeeping -------------------------------------------------------------------

    async def _watch(self, poked: socket.socket | None) -> None:
        """Wake the sessions when another process committed to the vault: at once when it pokes
        :data:`~crdtsync.store.db.POKE_NAME`, else within :attr:`LanOptions.watch_interval` seconds (SQLite's
        ``data_version`` on this process's own connection changes only for other connections' commits, so the
        entries this process's sessions store do not wake them again); also when this process itself wrote
        through the vault (a library user beside the node): its log then lacks local writes."""
        seen = await self._call(self._data_version)
        while True:
            with anyio.move_on_after(POKED_POLL if poked is not None else self.options.watch_interval):
                if poked is not None:
                    await anyio.wait_readable(poked)
            if poked is not None:
                _drain(poked)
            version, unlogged = await self._call(self._look)
            if version != seen or unlogged:
                seen = version
                self.logs.forget_registry()  # it is read again, under the vault lock, when next needed
                self.changes.notify()

    def _look(self) -> tuple[int, bool]:
        """SQLite's ``data_version`` on this process's connection, and whether this device has writes its log
        does not hold yet (a library user of this process writing through the same vault)."""
        return self._data_version(), self._unlogged()

    def _data_version(self) -> int:
        return int(self.vault.store.conn.execute("PRAGMA data_version").fetchone()[0])

    def _open_poke_socket(self) -> socket.socket | None:
        """Bind the vault's poke socket (None where the path is too long for one: polling alone then).

        Raises:
            LanError: ``LAN_BUSY`` when another ``serve`` of this vault listens on it.
        """
        path = self.vault.path / POKE_NAME
        if len(os.fsencode(path)) >= MAX_SOCKET_PATH:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if path.exists():
                try:
                    sock.connect(str(path))
                except OSError:
                    path.unlink(missing_ok=True)  # left by a daemon that died
                else:
                    raise LanError(f"another `crdtsync serve` runs on the vault in {self.vault.path}",
                                   code="LAN_BUSY")
                sock.close()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
        except LanError:
            sock.close()
            raise
        except OSError as exc:  # a filesystem without sockets: polling alone
            sock.close()
            self.log(f"no poke socket in the vault folder ({exc.strerror or exc}): other processes' writes are "
                     f"seen within {self.options.watch_interval:g} s")
            return None
        return sock

    async def _epoch_loop(self) -> None:
        """Stop, with :attr:`restart` set, once this device seals under another epoch (a revocation or a new
        passphrase, made here or taken from a statement): this node's keys are the old epoch's."""
        seen = self.changes.version
        while True:
            with anyio.move_on_after(1.0):  # a change wakes it at once; the second bounds a missed one
                seen = await self.changes.wait(seen)
            epoch = await self._call(lambda: self.vault.secrets.current_epoch)
            if epoch != self.epoch:
                self.log(f"the vault key moved from epoch {self.epoch} to {epoch}: restarting with its keys")
                self.restart = True
                self.stop()
                return

    async def _relay_loop(self) -> None:
        if self.options.relay_interval <= 0:
            return
        seen = self.changes.version
        while True:
            with anyio.move_on_after(self.options.relay_interval):
                while True:
                    seen = await self.changes.wait(seen)
                    if not self.sessions and await self._call(self._unlogged):
                        await anyio.sleep(1.0)
                        break
            if not await self._call(lambda: bool(self.vault.relays())):
                continue
            try:
                reports = await self._call(self.vault.sync)
            except CrdtsyncError as exc:
                self.log(f"relay sync failed: {exc.code} {exc.message}")
                continue
            for report in reports:
                for error in report.errors:
                    self.log(f"relay {report.relay}: {error['code']} {error['message']}")
                if report.objects_down:
                    self.log(f"relay {report.relay}: {report.objects_down} objects in, "
                             f"{len(report.memories_changed)} memories changed")
            seen = self.changes.version
            self.changes.notify()

    def _unlogged(self) -> bool:
        store = self.vault.store
        return store.count_local_updates_after(int(store.get_cursor(LOGGED_SCOPE, LOGGED_KEY) or b"0")) > 0

    async def _compact_when_idle(self) -> None:
        """Compact the vault's log once nothing has come or gone for :data:`IDLE_BEFORE_COMPACTING` seconds:
        writes and integrations leave it to this (``Vault.defer_compaction``), so that no entry waits seconds
        behind a Doc load and encode."""
        self.vault.defer_compaction(True)
        seen = self.changes.version
        while True:
            with anyio.move_on_after(IDLE_BEFORE_COMPACTING):
                seen = await self.changes.wait(seen)
                continue
            await self._call(self.vault.compact_if_due)
            seen = await self.changes.wait(seen)  # nothing more to compact until something changes

    async def _alive_loop(self) -> None:
        while True:
            await anyio.sleep(ALIVE_EVERY)
            await self._call(self._note_daemon, True)

    def _note_daemon(self, running: bool) -> None:
        value = {"pid": os.getpid(), "holder": self._holder, "updated": time.time(), "ports": self.ports,
                 "interfaces": list(self.options.interfaces), "running": running,
                 "sessions": sorted(self.sessions)}
        with self.vault.store.write():
            self.vault.store.set_cursor(DAEMON_SCOPE, "", json.dumps(value).encode())

    def _note_peer(self, connection: Connection, state: str, report: LiveReport | None) -> str:
        """Keep what is known of the peer; returns how the log names it (its registered name and id)."""
        store = self.vault.store
        raw = store.get_cursor(PEER_SCOPE, connection.device)
        known: dict[str, Any] = json.loads(raw) if raw else {}
        known.update(state=state, last_seen=time.time(), address=show_address(connection.address))
        if connection.dialed:
            known["dialled"] = show_address(connection.address)
        if report is not None:
            known["last_error"] = report.error
            known["entries_sent"] = int(known.get("entries_sent", 0)) + report.entries_sent
            known["entries_received"] = int(known.get("entries_received", 0)) + report.entries_received
        with store.write():
            store.set_cursor(PEER_SCOPE, connection.device, json.dumps(known).encode())
            self._note_daemon(True)  # the sessions it lists changed
        name = str(self.logs.registry().get(connection.device, {}).get("name") or "")
        return f"{name} ({connection.device[:12]})" if name else connection.device[:12]

    def _known_addresses(self) -> list[Address]:
        """The addresses to dial: given, kept with ``peer add``, and where a device was last reached by dialling."""
        store = self.vault.store
        kept = [parse_address(value.decode()) for value in store.cursors(MANUAL_SCOPE).values()]
        remembered = []
        for device, raw in store.cursors(PEER_SCOPE).items():
            dialled = json.loads(raw).get("dialled")
            if dialled and device != self.me:
                remembered.append(parse_address(dialled))
        return list(dict.fromkeys([*self.options.peers, *kept, *remembered]))

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.vault_lock)


async def serve(node: LanNode, *, discover: bool,
                task_status: anyio.abc.TaskStatus[list[int]] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run ``node`` (:meth:`LanNode.serve`) with discovery on its interfaces when ``discover``: it announces the
    port it listens on and dials every member it finds. Returns once the node was stopped. Discovery that cannot
    start is logged and left out (``--peer`` and remembered addresses still work)."""
    send, receive = anyio.create_memory_object_stream[Address](MAX_FOUND)
    async with anyio.create_task_group() as tasks:
        async def run_node(*, task_status: anyio.abc.TaskStatus[list[int]]) -> None:
            await node.serve(found=receive, task_status=task_status)
            tasks.cancel_scope.cancel()

        ports = await tasks.start(run_node)
        task_status.started(ports)
        if discover and node.options.interfaces:
            tasks.start_soon(_discover, node, send, ports[0])


async def sync_round(node: LanNode, addresses: Sequence[Address], *, timeout: float,
                     interfaces: Sequence[str]) -> RoundResult:
    """A one-shot round (:meth:`LanNode.sync_round`) with ``addresses`` and, when ``interfaces`` are given, every
    member discovery finds on them within ``timeout`` seconds."""
    if not interfaces:
        return await node.sync_round(addresses, timeout=timeout)
    send, receive = anyio.create_memory_object_stream[Address](MAX_FOUND)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_discover, node, send, None, tuple(interfaces))
        result = await node.sync_round(addresses, timeout=timeout, found=receive)
        tasks.cancel_scope.cancel()
    return result


async def _discover(node: LanNode, send: anyio.abc.ObjectSendStream[Address], port: int | None,
                    interfaces: tuple[str, ...] | None = None) -> None:
    """Feed the addresses of members discovery finds to ``send`` (announcing ``port`` unless None)."""
    from crdtsync.discovery import Discovery

    chosen = interfaces or node.options.interfaces
    async with send:
        try:
            async with Discovery(node.discovery_key, interfaces=chosen, port=port) as discovery:
                node.log(f"discovery on {', '.join(chosen)}" + (f", announcing port {port}" if port else ""))
                while True:
                    found = await discovery.next_found()
                    for host in found.addresses:
                        await send.send((host, found.port))
        except CrdtsyncError as exc:
            node.log(f"discovery unavailable: {exc.code} {exc.message}")


def _drain(sock: socket.socket) -> None:
    """Read every datagram waiting on a non-blocking socket (pokes carry nothing but their arrival)."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while sock.recv(64):
            pass
