"""Pairing a new device by a short code, on anyio (asyncio or trio): ``crdtsync invite`` and ``crdtsync join
CODE``. The protocol, the code and the keys are in :mod:`crdtsync.crypto.pairing` (pure); this module moves
its bytes over TCP and runs what follows.

**Inviter** (:func:`open_invitation`): a member device listens on the given interface addresses (TCP, port 0 =
any free port) with a fresh code and, with ``announce``, announces the invitation there by mDNS
(:mod:`crdtsync.discovery`, tagged with the code's :attr:`~crdtsync.crypto.pairing.PairingCode.discovery_key`,
which depends on the invitation number alone). Each connection is one attempt: the joiner's first bytes must be
the pairing magic (a sync connection never is), then SPAKE2 and key confirmation run under a deadline
(:data:`HANDSHAKE_SECONDS`). A wrong code costs one attempt and both sides report ``PAIRING_WRONG_CODE``; the
third withdraws the code (``PAIRING_WITHDRAWN`` on both sides); past :data:`~crdtsync.crypto.pairing.
INVITATION_SECONDS` it is ``PAIRING_EXPIRED``. A joiner that proves the code spends it (a code works once,
whatever happens next): the inviter then sends, sealed (:class:`SealedStream`), the :class:`~crdtsync.crypto.
pairing.Grant` (the vault's public header, the vault key of every epoch it holds, the vault's name and relays),
and both run the live session (:func:`crdtsync.transport.stream.run_live`, one-shot) over the same sealed
stream: the joiner pulls every author's entries, the inviter stores the joiner's first entry, which registers it.

**Joiner** (:func:`join_by_code`): tries the candidate addresses in turn, first the given ones (``--peer``), then
those of the announcements of its invitation number that discovery finds on the given interfaces within
``find_seconds``; runs the exchange, creates its store exactly as :meth:`crdtsync.vault.Vault.join` does (fresh
device keys, sealing under the vault's founding epoch, the relays saved) and runs the session until both sides
hold the same. If anything fails after the store was created, the vault folder is removed (or, when the folder
existed before, the files the join made in it): a failed join leaves no half-made vault.

Errors are :class:`~crdtsync.errors.LanError` (exit status 9): the ``PAIRING_*`` codes, ``LAN_NO_PEER`` (no
candidate address reachable or none given), ``LAN_HANDSHAKE_TIMEOUT``, ``LAN_BUSY`` (too many attempts at once),
and the session's own code when it breaks.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from crdtsync import _vault_create
from crdtsync._vault_create import DB_NAME
from crdtsync.crypto.keys import DeviceKeys
from crdtsync.crypto.pairing import (
    INVITATION_SECONDS,
    MAX_GRANT,
    ChannelKeys,
    Grant,
    Invitation,
    InvitationState,
    InviterHandshake,
    JoinerHandshake,
    PairingCode,
    RandBytes,
    RecordOpener,
    RecordSealer,
    error_frame,
    new_code,
    parse_code,
)
from crdtsync.errors import CrdtsyncError, LanError, VaultError
from crdtsync.live import LiveReport, LiveSync
from crdtsync.model.records import check_label
from crdtsync.node import show_address
from crdtsync.replication import AuthorLogReplica
from crdtsync.store.keystore import discard_secrets
from crdtsync.store.secrets_file import VaultSecrets
from crdtsync.transport.stream import DEAD_AFTER, run_live
from crdtsync.vault import Vault

log = logging.getLogger(__name__)

#: Interfaces an invitation listens on when none is given (the CLI picks the LAN interfaces instead).
DEFAULT_INTERFACES = ("127.0.0.1",)
#: Seconds a joiner looks for its invitation's announcement by default.
FIND_SECONDS = 10.0
#: Candidate addresses a joiner tries at most (given and discovered).
MAX_CANDIDATES = 16
#: Seconds the SPAKE2 exchange and key confirmation may take, from the connection.
HANDSHAKE_SECONDS = 10.0
#: Seconds a joiner waits for a TCP connection to one candidate address.
CONNECT_SECONDS = 5.0
#: Seconds the grant may take to arrive after the confirmation.
GRANT_SECONDS = 30.0
#: Attempts an invitation serves at once; more connections are refused with ``LAN_BUSY``.
MAX_CONCURRENT_ATTEMPTS = 4
#: Bytes read from the socket at once during the handshake.
_READ = 4096

Clock = Callable[[], float]


# -- the sealed stream ------------------------------------------------------------------------------------


class SealedStream(anyio.abc.ByteStream):
    """A byte stream sealed under a pairing's channel ``keys`` over ``inner`` (records: see
    :mod:`crdtsync.crypto.pairing`); ``leftover`` is what came after the handshake. A record that does not open
    (altered, replayed, reordered) or a stream cut without the END record raises ``anyio.BrokenResourceError``
    from :meth:`receive` and keeps the reason in :attr:`error` (``PAIRING_MALFORMED``, ``LAN_CONNECTION_LOST``).
    One task may send while another receives. :meth:`aclose` sends END first (at most one second), then closes
    ``inner``."""

    def __init__(self, inner: anyio.abc.ByteStream, keys: ChannelKeys, leftover: bytes = b"") -> None:
        self._inner = inner
        self._sealer = RecordSealer(keys.send)
        self._opener = RecordOpener(keys.receive)
        self._opener.receive_data(leftover)
        self._plain = bytearray()
        self._send_lock = anyio.Lock()
        #: Why :meth:`receive` raised ``BrokenResourceError`` (None: it did not).
        self.error: LanError | None = None

    async def send(self, item: bytes) -> None:
        if not item:
            return
        async with self._send_lock:
            await self._inner.send(self._sealer.seal(bytes(item)))

    async def send_eof(self) -> None:
        async with self._send_lock:
            if not self._sealer.ended:
                await self._inner.send(self._sealer.end())

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._plain:
            try:
                data = self._opener.next_data()
            except LanError as exc:
                self.error = exc
                raise anyio.BrokenResourceError from exc
            if data is not None:
                self._plain += data
                break
            if self._opener.ended:
                raise anyio.EndOfStream
            try:
                chunk = await self._inner.receive(65536)
            except anyio.EndOfStream:
                self.error = LanError("the other device's stream ended without its end mark (cut)",
                                      code="LAN_CONNECTION_LOST")
                raise anyio.BrokenResourceError from None
            self._opener.receive_data(chunk)
        out = bytes(self._plain[:max_bytes])
        del self._plain[:max_bytes]
        return out

    async def receive_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes (``anyio.IncompleteRead`` when the stream ends first)."""
        got = bytearray()
        while len(got) < size:
            try:
                got += await self.receive(size - len(got))
            except anyio.EndOfStream:
                raise anyio.IncompleteRead from None
        return bytes(got)

    async def aclose(self) -> None:
        with anyio.move_on_after(1.0, shield=True), suppress(anyio.BrokenResourceError, anyio.ClosedResourceError,
                                                              OSError):
            await self.send_eof()
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes


async def _send_message(stream: SealedStream, data: bytes) -> None:
    await stream.send(len(data).to_bytes(4, "big") + data)


async def _receive_message(stream: SealedStream, limit: int) -> bytes:
    try:
        size = int.from_bytes(await stream.receive_exactly(4), "big")
        if not 0 < size <= limit:
            raise LanError(f"the other device announced a message of {size} bytes (at most {limit})",
                           code="PAIRING_MALFORMED")
        return await stream.receive_exactly(size)
    except (anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        raise stream.error or LanError("the other device closed the connection during the pairing",
                                       code="LAN_CONNECTION_LOST") from None


# -- inviting ---------------------------------------------------------------------------------------------


@dataclass
class InviteReport:
    """How an invitation ended: the ``code``, the ``device`` that joined (its id and ``device_name`` as it
    registered), what the session moved (``live``) and the ``failures`` (codes of failed attempts) before it."""

    code: str
    device: str | None = None
    device_name: str | None = None
    live: LiveReport | None = None
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON object of the report."""
        return {"code": self.code, "device": self.device, "device_name": self.device_name,
                "failures": self.failures, "session": self.live.to_json() if self.live else None}


class Inviter:
    """An open invitation (made by :func:`open_invitation`): its :attr:`code`, the :attr:`addresses` it listens on,
    and :meth:`wait`."""

    def __init__(self, vault: Vault, invitation: Invitation, clock: Clock, randbytes: RandBytes,
                 handshake_seconds: float, dead_after: float,
                 on_failure: Callable[[LanError], None] | None) -> None:
        self.vault = vault
        self.invitation = invitation
        self.addresses: list[tuple[str, int]] = []
        #: The addresses the invitation is announced on by mDNS (none unless ``announce``).
        self.announced: list[str] = []
        #: Why the announcement could not start on some or all addresses (``announce`` only), else None.
        self.announce_error: CrdtsyncError | None = None
        #: Each failed attempt's error, in order (wrong codes, then the withdrawal).
        self.failures: list[LanError] = []
        self._clock, self._randbytes = clock, randbytes
        self._handshake_seconds, self._dead_after = handshake_seconds, dead_after
        self._on_failure = on_failure
        self._busy = 0
        self._done = anyio.Event()
        self._result: InviteReport | CrdtsyncError | None = None
        self._lock = anyio.CapacityLimiter(1)

    @property
    def code(self) -> PairingCode:
        """The invitation's code (say it to the person at the new device)."""
        return self.invitation.code

    async def wait(self) -> InviteReport:
        """Wait until a device joined and its session ended; returns the report.

        Raises:
            LanError: ``PAIRING_WITHDRAWN`` (three wrong codes), ``PAIRING_EXPIRED`` (no join in time), or the
                session's code when it broke after the code was proven (the code is spent then).
            CrdtsyncError: this vault's own error while serving the join (its code).
        """
        while not self._done.is_set():
            if self.invitation.state is InvitationState.OPEN:
                try:
                    self.invitation.check_open(self._clock())
                except LanError as exc:
                    self._finish(exc)
                    break
            with anyio.move_on_after(0.2):
                await self._done.wait()
        if isinstance(self._result, CrdtsyncError):
            raise self._result
        assert self._result is not None
        return self._result

    def _finish(self, result: InviteReport | CrdtsyncError) -> None:
        if self._result is None:
            self._result = result
            self._done.set()

    def _failed(self, error: LanError) -> None:
        self.failures.append(error)
        log.info("pairing attempt failed: %s", error)
        if self._on_failure is not None:
            self._on_failure(error)
        if error.code == "PAIRING_WITHDRAWN":
            self._finish(error)

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one connection: one attempt (see the module docstring). Never raises."""
        async with stream:
            if self._busy >= MAX_CONCURRENT_ATTEMPTS:
                await _tell(stream, LanError("the inviting device is busy with other attempts: try again in a "
                                             "few seconds", code="LAN_BUSY"))
                return
            self._busy += 1
            try:
                keys = await self._handshake(stream)
            finally:
                self._busy -= 1
            if keys is None:
                return
            try:
                report = await self._serve(SealedStream(stream, keys))
            except CrdtsyncError as exc:
                self._finish(exc)
            except BaseException:
                self._finish(LanError("the invitation stopped while a device was joining", code="LAN_CONNECTION_LOST"))
                raise
            else:
                self._finish(report)

    async def _handshake(self, stream: anyio.abc.ByteStream) -> ChannelKeys | None:
        handshake = InviterHandshake(self.invitation, self._randbytes)
        failures = self.invitation.failures
        try:
            with anyio.fail_after(self._handshake_seconds):
                while handshake.keys is None:
                    out = handshake.receive_data(await stream.receive(_READ), self._clock())
                    if out:
                        await stream.send(out)
        except LanError as exc:
            if self.invitation.failures > failures:  # this attempt proved a wrong code
                self._failed(exc)
            await _tell(stream, exc)
            return None
        except TimeoutError:
            await _tell(stream, LanError(f"the pairing took more than {self._handshake_seconds:g} s",
                                         code="LAN_HANDSHAKE_TIMEOUT"))
            return None
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return None
        return handshake.keys

    async def _serve(self, stream: SealedStream) -> InviteReport:
        vault = self.vault
        secrets = vault.secrets
        name = vault.store.get_meta("vault_name")
        grant = Grant(vault.header, dict(secrets.epochs), secrets.current_epoch, name if isinstance(name, str) else "",
                      tuple((r["name"], r["url"]) for r in vault.store.relays()))
        try:
            await _send_message(stream, grant.to_bytes())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise LanError("the joining device left before it received the vault", code="LAN_CONNECTION_LOST") from None
        live = _PairingLive(AuthorLogReplica(vault))
        report = live.outcome(await run_live(live, stream, vault_lock=self._lock, dead_after=self._dead_after,
                                             until_synced=True))
        if report.error is not None:
            raise _session_error(report, stream)
        device = report.peer
        names = vault.device_names()
        return InviteReport(str(self.code), device, names.get(device or ""), report,
                            [e.code for e in self.failures])


async def _tell(stream: anyio.abc.ByteStream, error: CrdtsyncError) -> None:
    """Send ``error`` as an error frame, if the peer still listens (at most one second)."""
    with anyio.move_on_after(1.0), suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send(error_frame(error))


def _session_error(report: LiveReport, stream: SealedStream) -> LanError:
    assert report.error is not None
    if stream.error is not None:
        return stream.error
    return LanError(f"the session with the other device ended: {report.error['message']}",
                    code=report.error["code"])


@asynccontextmanager
async def open_invitation(
    vault: Vault,
    *,
    interfaces: Sequence[str] = DEFAULT_INTERFACES,
    port: int = 0,
    announce: bool = False,
    seconds: float = INVITATION_SECONDS,
    clock: Clock = time.monotonic,
    randbytes: RandBytes = os.urandom,
    handshake_seconds: float = HANDSHAKE_SECONDS,
    dead_after: float = DEAD_AFTER,
    on_failure: Callable[[LanError], None] | None = None,
) -> AsyncIterator[Inviter]:
    """Invite a new device into ``vault``: listen on ``interfaces`` (IP addresses; port ``port``, 0 = any free
    one) with a fresh code valid ``seconds`` on ``clock`` (seconds, monotonic). With ``announce``, the invitation is
    announced by mDNS on each of those addresses (which must be IPv4 addresses of this host), so that
    :func:`join_by_code` finds it without an address; an announcement that cannot start is recorded in
    :attr:`Inviter.announce_error` (the listeners still work with ``--peer``). Yields the :class:`Inviter` (its
    code, addresses and :attr:`~Inviter.announced` ones) once the announcements went out; :meth:`Inviter.wait`
    waits for the join. ``on_failure`` is called with each failed attempt's error. On exit the announcements are
    withdrawn (mDNS goodbyes), the listeners close and any attempt still running is cancelled.

    Raises:
        LanError: ``LAN_UNREACHABLE`` when an interface cannot be listened on (not an address of this host, or
            the port is taken).
    """
    invitation = Invitation(new_code(randbytes), created=clock(), seconds=seconds)
    inviter = Inviter(vault, invitation, clock, randbytes, handshake_seconds, dead_after, on_failure)
    listeners: list[anyio.abc.SocketListener] = []
    try:
        for host in interfaces:
            try:
                multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
            except OSError as exc:
                raise LanError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                               code="LAN_UNREACHABLE") from None
            for listener in multi.listeners:
                listeners.append(listener)  # type: ignore[arg-type]
                address = listener.extra(anyio.abc.SocketAttribute.local_address)
                inviter.addresses.append((str(address[0]), int(address[1])))
        failed: Exception | None = None
        async with anyio.create_task_group() as tasks:
            for listener in listeners:
                tasks.start_soon(listener.serve, inviter.handle)
            if announce:
                await tasks.start(_announce, inviter)
            try:
                yield inviter
            except Exception as exc:  # raised as it is, not in the task group's exception group
                failed = exc
            finally:
                tasks.cancel_scope.cancel()
        if failed is not None:
            raise failed
    finally:
        for listener in listeners:
            with anyio.CancelScope(shield=True):
                await listener.aclose()


async def _announce(inviter: Inviter, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Announce ``inviter``'s invitation on each address it listens on (one :class:`~crdtsync.discovery.Discovery`
    per address: each listener may have its own port) until cancelled."""
    from crdtsync.discovery import Discovery

    async with AsyncExitStack() as stack:
        try:
            for host, port in inviter.addresses:
                await stack.enter_async_context(Discovery(inviter.code.discovery_key, interfaces=[host], port=port))
                inviter.announced.append(host)
        except CrdtsyncError as exc:
            inviter.announce_error = exc
            log.warning("cannot announce the invitation: %s", exc)
        task_status.started()
        await anyio.sleep_forever()


# -- joining ----------------------------------------------------------------------------------------------


@dataclass
class JoinReport:
    """A join by code: the new ``vault`` folder, this ``device_id``, the vault's ``fingerprint``, the memories it
    holds, the ``peer`` address it joined through, the relays saved and those left out (a folder relay that
    would hold the vault folder: ``RELAY_OVERLAPS_VAULT``), and what the session moved."""

    vault: Path
    device_id: str
    fingerprint: str
    memories: int
    peer: tuple[str, int]
    relays: list[str]
    skipped_relays: list[str]
    live: LiveReport

    def to_json(self) -> dict[str, Any]:
        """A JSON object of the report."""
        return {"vault": str(self.vault), "device_id": self.device_id, "fingerprint": self.fingerprint,
                "memories": self.memories, "peer": show_address(self.peer), "relays": self.relays,
                "skipped_relays": self.skipped_relays, "session": self.live.to_json()}


async def join_by_code(
    path: str | os.PathLike[str],
    code: str | PairingCode,
    *,
    addresses: Sequence[tuple[str, int]] = (),
    interfaces: Sequence[str] = (),
    find_seconds: float = FIND_SECONDS,
    device_name: str | None = None,
    randbytes: RandBytes = os.urandom,
    connect_seconds: float = CONNECT_SECONDS,
    handshake_seconds: float = HANDSHAKE_SECONDS,
    dead_after: float = DEAD_AFTER,
) -> JoinReport:
    """Join, as a new device in folder ``path``, the vault of the device that invited with ``code``. The inviter
    is looked for at ``addresses`` ((host, port), tried in order) and then, when ``interfaces`` (IPv4 addresses of
    this host) are given, at the addresses of the announcements of the code's invitation number that mDNS
    discovery finds on them within ``find_seconds`` (seconds). A candidate that cannot be reached, or that is
    not a pairing listener, is passed over, and so is a discovered one that stalls or drops the handshake
    (anyone on the LAN can announce); a wrong, withdrawn or expired code ends the join at once (each try costs
    the inviter one of its three attempts). At most :data:`MAX_CANDIDATES` addresses are tried. Returns once
    this device holds everything the inviter held and the inviter stored this device's registration.

    Raises:
        LanError: ``PAIRING_CODE_INVALID``, ``LAN_NO_PEER`` (no address given and discovery off, or no candidate
            answered as the inviter), ``PAIRING_WRONG_CODE``, ``PAIRING_WITHDRAWN``, ``PAIRING_EXPIRED``,
            ``PAIRING_MALFORMED``, ``LAN_HANDSHAKE_TIMEOUT`` and ``LAN_CONNECTION_LOST`` (from a given address),
            ``LAN_BUSY`` and the session's codes.
        VaultError: ``VAULT_EXISTS``.
        InvalidInputError: a device name that is not a valid label; ``DISCOVERY_NO_INTERFACE``: an interface that
            is not an IPv4 address of this host.
    """
    code = parse_code(code) if isinstance(code, str) else code
    check_label("device name", device_name)
    folder = _vault_create.vacant_folder(path)
    existed = folder.exists()
    if interfaces:
        from crdtsync.discovery import choose_interfaces, host_interfaces

        interfaces = choose_interfaces(interfaces, host_interfaces())
    if not addresses and not interfaces:
        raise LanError("no address to find the inviting device at: give the address `crdtsync invite` printed "
                       "(--peer HOST:PORT), or look for it on the LAN (--interface IP)", code="LAN_NO_PEER")
    passed: list[str] = []
    found: tuple[SealedStream, tuple[str, int]] | None = None
    failed: BaseException | None = None
    send, receive = anyio.create_memory_object_stream[tuple[str, int, bool]](MAX_CANDIDATES)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_candidates, send, code, addresses, interfaces, find_seconds, passed)
        tried: set[tuple[str, int]] = set()
        async with receive:
            async for host, port, discovered in receive:
                if (host, port) in tried:
                    continue
                if len(tried) >= MAX_CANDIDATES:
                    break
                tried.add((host, port))
                try:
                    sealed = await _attempt(host, port, discovered, code, randbytes, connect_seconds,
                                            handshake_seconds, passed)
                except Exception as exc:  # raised as it is, not in the task group's exception group
                    failed = exc
                    break
                if sealed is not None:
                    found = sealed, (host, port)
                    break
        tasks.cancel_scope.cancel()
    if failed is not None:
        raise failed
    if found is None:
        where = "; ".join(passed) or f"no announcement of invitation {code.number} within {find_seconds:g} s"
        raise LanError(f"no inviting device answered ({where}): check that `crdtsync invite` runs, and give the "
                       "address it printed (--peer HOST:PORT) if discovery cannot find it", code="LAN_NO_PEER")
    sealed, peer = found
    try:
        return await _receive_vault(sealed, folder, existed, device_name, peer, dead_after)
    finally:
        with anyio.CancelScope(shield=True):
            await sealed.aclose()


async def _candidates(send: anyio.abc.ObjectSendStream[tuple[str, int, bool]], code: PairingCode,
                      addresses: Sequence[tuple[str, int]], interfaces: Sequence[str], seconds: float,
                      passed: list[str]) -> None:
    """Feed ``send`` the given ``addresses`` (not discovered), then for ``seconds`` the addresses of the
    announcements of ``code``'s invitation that discovery finds on ``interfaces``; then close it. Discovery that
    cannot start is noted in ``passed``."""
    from crdtsync.discovery import Discovery

    async with send:
        for host, port in addresses:
            await send.send((host, port, False))
        if not interfaces:
            return
        with anyio.move_on_after(seconds):
            try:
                async with Discovery(code.discovery_key, interfaces=interfaces, port=None) as discovery:
                    while True:
                        announced = await discovery.next_found()
                        for host in announced.addresses:
                            await send.send((host, announced.port, True))
            except CrdtsyncError as exc:
                passed.append(f"discovery unavailable: {exc.message}")


async def _attempt(host: str, port: int, discovered: bool, code: PairingCode, randbytes: RandBytes,
                   connect_seconds: float, handshake_seconds: float, passed: list[str]) -> SealedStream | None:
    """Connect to one candidate and run the exchange: the sealed stream when it is the inviter, None when it
    is passed over (why goes to ``passed``).

    Raises:
        LanError: the exchange's error (a discovered candidate's timeout or lost connection pass it over).
    """
    try:
        with anyio.fail_after(connect_seconds):
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
    except (OSError, TimeoutError) as exc:
        passed.append(f"{host}:{port}: {getattr(exc, 'strerror', None) or exc or 'timed out'}")
        return None
    try:
        keys, leftover = await _join_handshake(stream, code, randbytes, handshake_seconds)
    except _NotInviting as exc:
        await stream.aclose()
        passed.append(f"{host}:{port}: not an inviting device ({exc.message})")
        return None
    except LanError as exc:
        await stream.aclose()
        if discovered and exc.code in ("LAN_HANDSHAKE_TIMEOUT", "LAN_CONNECTION_LOST"):
            passed.append(f"{host}:{port}: {exc.message}")
            return None
        raise
    except BaseException:
        await stream.aclose()
        raise
    return SealedStream(stream, keys, leftover)


class _PairingLive(LiveSync):
    """A one-shot live session that remembers whether it reached sync: both sides close once in sync, and the
    side that closes second may find the connection gone while its own CLOSE is still being written (the
    driver then reports ``LAN_CONNECTION_LOST``), which does not undo what the session did."""

    synced = False

    def in_sync(self) -> bool:
        result = super().in_sync()
        self.synced = self.synced or result
        return result

    def outcome(self, report: LiveReport) -> LiveReport:
        """``report``, without the ``LAN_CONNECTION_LOST`` of a connection closed after the session was in sync."""
        if self.synced and report.error is not None and report.error["code"] == "LAN_CONNECTION_LOST":
            report.error = None
        return report


class _NotInviting(LanError):
    """A candidate address that did not answer as an inviting device: the next one is tried."""


async def _join_handshake(stream: anyio.abc.ByteStream, code: PairingCode, randbytes: RandBytes,
                          seconds: float) -> tuple[ChannelKeys, bytes]:
    handshake = JoinerHandshake(code, randbytes)
    try:
        with anyio.fail_after(seconds):
            await stream.send(handshake.start())
            while handshake.keys is None:
                out = handshake.receive_data(await stream.receive(_READ))
                if out:
                    await stream.send(out)
    except LanError as exc:
        if exc.code == "PAIRING_MALFORMED" and not handshake.answered:
            raise _NotInviting(exc.message, code=exc.code) from None
        raise
    except TimeoutError:
        raise LanError(f"the inviting device did not finish the pairing in {seconds:g} s",
                       code="LAN_HANDSHAKE_TIMEOUT") from None
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        raise LanError("the inviting device closed the connection during the pairing", code="LAN_CONNECTION_LOST"
                       ) from None
    return handshake.keys, handshake.leftover()


async def _receive_vault(stream: SealedStream, folder: Path, existed: bool, device_name: str | None,
                         peer: tuple[str, int], dead_after: float) -> JoinReport:
    with anyio.fail_after(GRANT_SECONDS):
        grant = Grant.from_bytes(await _receive_message(stream, MAX_GRANT))
    try:
        relays, skipped = _create_store(folder, grant, device_name)
    except BaseException as exc:
        if not (isinstance(exc, VaultError) and exc.code == "VAULT_EXISTS"):  # else another process's vault
            _remove_vault(folder, existed)
        raise
    try:
        with Vault.open(folder) as vault:
            live = _PairingLive(AuthorLogReplica(vault))
            report = live.outcome(await run_live(live, stream, vault_lock=anyio.CapacityLimiter(1),
                                                 dead_after=dead_after, until_synced=True))
            if report.error is not None:
                raise _session_error(report, stream)
            return JoinReport(folder, vault.device_id, vault.fingerprint, len(vault.list()), peer, relays, skipped,
                              report)
    except BaseException:
        _remove_vault(folder, existed)
        raise


def _create_store(folder: Path, grant: Grant, device_name: str | None) -> tuple[list[str], list[str]]:
    """Create this device's store as :meth:`crdtsync.vault.Vault.join` does, with the grant's relays (those a
    folder relay check refuses are left out and named)."""
    from crdtsync.mailbox.backend import check_apart  # the storage backends load on first use

    kept: list[tuple[str, str]] = []
    skipped: list[str] = []
    for name, url in grant.relays:
        try:
            check_apart(folder, url)
        except CrdtsyncError as exc:
            skipped.append(f"{name}: [{exc.code}] {exc.message}")
            continue
        kept.append((name, url))
    _vault_create.make_folder(folder)
    # The inviter proved the code: the new device seals under the epoch it seals under. After its first pull, the
    # epoch statements decide (crdtsync._vault_epochs.settle).
    secrets = VaultSecrets(device=DeviceKeys.generate(), vault_id=grant.header.vault_id, epochs=dict(grant.epochs),
                           current_epoch=grant.current_epoch)
    _vault_create.create_store(folder, secrets, grant.header, vault_name=grant.name, device_name=device_name,
                               founder=False, relay=kept[0] if kept else None)
    if len(kept) > 1:
        with Vault.open(folder) as vault:
            for name, url in kept[1:]:
                vault.store.add_relay(name, url)
    return [name for name, _ in kept], skipped


def _remove_vault(folder: Path, existed: bool) -> None:
    """Remove what a failed join made in ``folder``: the folder, or when it existed before, the vault's files (and
    the keyring item of the device's keys, if they went there)."""
    with suppress(OSError):
        discard_secrets(folder)
    if not existed:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"):
        with suppress(FileNotFoundError):
            (folder / name).unlink()


__all__ = ["DEFAULT_INTERFACES", "FIND_SECONDS", "InviteReport", "Inviter", "JoinReport", "SealedStream",
           "join_by_code", "open_invitation"]
