"""LAN discovery over mDNS/DNS-SD with python-zeroconf, usable from anyio code under asyncio and trio.

Design notes:

- Zeroconf's async API needs asyncio. :class:`Discovery` runs it on an asyncio loop in a thread of its own, so it
  behaves the same whatever anyio backend the caller runs; results cross back under a lock, and a socketpair
  wakes :meth:`Discovery.next_found` (``anyio.wait_readable`` works on both backends).
- One zeroconf instance per interface address, each with its own random instance name and host name and
  advertising only that interface's address: an observer on one network learns nothing about this device's
  other networks, and records heard on one interface never mix with another's.
- Zeroconf receives multicast on one socket bound to ``0.0.0.0:5353`` that joins 224.0.0.251 on each chosen
  interface (``zeroconf._utils.net.create_sockets``); its per-interface responder sockets are bound to the
  interface's address. On Linux, a socket bound to the wildcard address gets the multicast of *every* group any
  socket of the host joined, on every interface, while ``IP_MULTICAST_ALL`` is on (the default, ``ip(7)``):
  announcements from a Docker bridge or a VPN would leak in. Setting it off is not enough either: measured here
  (kernel 6.18, namespaces), when another program on the host also listens on 5353 with ``SO_REUSEPORT`` (other
  zeroconf stacks do) and joined the group on another interface, about half of that interface's datagrams reach
  our socket *instead of* that program's (of 40 sent, 22 came to ours and 18 to it: the kernel picked one socket
  of the port's reuseport group by source address and port). So :func:`_bind_to_interface` also binds every
  socket of an instance to its interface's device (``SO_BINDTODEVICE``, allowed without privileges since Linux
  5.7 on a socket not yet bound to a device); the kernel then hands it only what arrived on that device, and the
  other program gets all of its own (40 of 40, ours 0; sockets bound to the same interface all still get every
  datagram). zeroconf takes no sockets from outside, so this is done on its sockets right after its constructor
  made them, before its loop ever reads them (the constructor runs on that loop and the loop wraps the sockets
  later), and whatever the kernel queued in between is dropped. The test
  ``test_announcements_on_an_interface_not_chosen_never_reach_discovery`` fails without it.
- Zeroconf silently runs with no socket when an address is not the host's; :class:`Discovery` checks the
  addresses against :func:`host_interfaces` first, and that zeroconf made a responder socket, and raises.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import ifaddr
from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from crdtsync.discovery._rules import (
    NO_INTERFACE,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    Interface,
    _is_ipv4,
    make_tag,
    tag_matches,
)
from crdtsync.errors import DiscoveryError, InvalidInputError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``IP_MULTICAST_ALL`` from ``<linux/in.h>`` (the socket module does not name it).
IP_MULTICAST_ALL: Final = getattr(socket, "IP_MULTICAST_ALL", 49)
#: TTL of every record we announce, in seconds: a member that vanishes without a goodbye (crash, pulled cable)
#: drops out of the others' view within about this long (RFC 6762 suggests 120 s for address records).
RECORD_TTL: Final = 120
#: Seconds :meth:`Discovery.__aenter__` may take to open sockets and probe our names before it gives up.
START_TIMEOUT: Final = 15.0
#: Seconds :meth:`Discovery.__aexit__` may take for goodbyes and closing.
STOP_TIMEOUT: Final = 5.0
#: Milliseconds a member's records may take to resolve after its announcement.
RESOLVE_TIMEOUT_MS: Final = 3000
#: Members remembered at most (announcements past this are ignored), and changes queued for next_found.
MAX_FOUND: Final = 256
#: Resolutions in flight at most; more announcements meanwhile wait for the browser's next event.
MAX_RESOLVING: Final = 64


@dataclass(frozen=True)
class Found:
    """A member of the vault seen on the LAN (its announcement carried a tag made with the vault's key).

    Attributes:
        instance: its instance label (random per run and interface of the member).
        addresses: its IPv4 addresses as announced.
        port: the TCP port it announced for direct sync.
        version: the protocol version it announced (``v=``).
        seen: when its latest announcement was verified, in ``time.monotonic()`` seconds.
    """

    instance: str
    addresses: tuple[str, ...]
    port: int
    version: int
    seen: float


def host_interfaces() -> list[Interface]:
    """Every IPv4 address of every network interface of this host (in its network namespace), via ifaddr."""
    found: list[Interface] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(Interface(str(adapter.nice_name), ip.ip, int(ip.network_prefix)))
    return found


def _bind_to_interface(zc: Zeroconf, device: str) -> None:
    """Set ``IP_MULTICAST_ALL`` off and ``SO_BINDTODEVICE`` to ``device`` on the sockets of ``zc`` and drop what
    they queued before (see the module docstring). Runs on zc's loop right after the constructor, before the
    loop wraps the sockets. Where the system has no ``SO_BINDTODEVICE`` or refuses it (Linux before 5.7 without
    CAP_NET_RAW), a warning is logged and ``IP_MULTICAST_ALL`` alone filters.

    Raises:
        DiscoveryError: this zeroconf keeps its sockets elsewhere (a version we do not know), or setsockopt
            failed.
    """
    engine = zc.engine
    listen = getattr(engine, "_listen_socket", None)
    responders = getattr(engine, "_respond_sockets", None)
    if not isinstance(listen, socket.socket) or not isinstance(responders, list):
        raise DiscoveryError("this version of python-zeroconf keeps its sockets where crdtsync does not look: "
                             "install a version crdtsync supports")
    bind_to_device = getattr(socket, "SO_BINDTODEVICE", None)
    try:
        for sock in (listen, *responders):
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            if bind_to_device is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, bind_to_device, device.encode())
                except PermissionError:
                    log.warning("cannot bind mDNS sockets to %s: announcements from other interfaces may reach "
                                "discovery when other mDNS programs run here", device)
                    bind_to_device = None
        for _ in range(1000):  # what arrived before the options took effect, bounded
            listen.recv(9000, socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise DiscoveryError(f"cannot restrict mDNS to the interface {device}: {exc}") from exc


class Discovery:
    """Advertise this device (when ``port`` is given) and browse for members of the vault on the LAN.

    Use as an async context manager (anyio: asyncio or trio). Each chosen interface gets a random instance name
    and host name for this run; the TXT record says ``v=2`` and carries a tag made with ``key`` over a fresh
    nonce, renewed every ``reannounce`` seconds and on :meth:`reannounce`. Announcements of others are kept when
    their tag matches ``key``; our own instances are left out.

    Args:
        key: the vault's discovery key (:func:`crdtsync.crypto.lan.lan_key` with purpose ``"discovery"``).
        interfaces: IPv4 addresses of this host to run on (see
            :func:`crdtsync.discovery.choose_interfaces`); never empty.
        port: the TCP port to announce for direct sync (1-65535), or None to browse only.
        reannounce: seconds between announcements with a fresh tag.

    Raises:
        InvalidInputError: code ``DISCOVERY_NO_INTERFACE``: no interface, or one not an IPv4 address; from
            ``__aenter__``: an address is not this host's. ``INVALID_INPUT``: a bad port, key or interval.
        DiscoveryError: from ``__aenter__``: ``DISCOVERY_UNAVAILABLE``, the sockets could not be opened or our
            names could not be announced in :data:`START_TIMEOUT` seconds.
    """

    def __init__(self, key: bytes, *, interfaces: Sequence[str], port: int | None,
                 reannounce: float = 60.0) -> None:
        if not interfaces or not all(_is_ipv4(address) for address in interfaces):
            raise InvalidInputError(f"LAN discovery needs IPv4 interface addresses, not {list(interfaces)!r}",
                                    code=NO_INTERFACE)
        if port is not None and not 1 <= port <= 65535:
            raise InvalidInputError(f"port {port} is not a TCP port (1-65535)")
        if len(key) < 16:
            raise InvalidInputError("the discovery key is too short")
        if not reannounce > 0:
            raise InvalidInputError("the re-announcement interval must be positive")
        self._key = key
        self._interfaces = list(dict.fromkeys(interfaces))
        self._port = port
        self._reannounce_every = reannounce
        # Our names, one per interface: instance label and host name, random for this run.
        self._instances = {address: secrets.token_hex(8) for address in self._interfaces}
        self._servers = {address: f"{secrets.token_hex(8)}.local." for address in self._interfaces}
        self._own_names = {f"{label}.{SERVICE_TYPE}".lower() for label in self._instances.values()}
        self._lock = threading.Lock()
        self._found: dict[str, Found] = {}
        self._changes: deque[Found] = deque(maxlen=MAX_FOUND)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._waiting = anyio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Owned by the zeroconf thread:
        self._zeroconfs: dict[str, AsyncZeroconf] = {}
        self._browsers: list[AsyncServiceBrowser] = []
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self._devices: dict[str, str] = {}  # address -> interface name, from __aenter__

    @property
    def own_instances(self) -> tuple[str, ...]:
        """The instance labels this device announces under, one per interface, in the order given."""
        return tuple(self._instances[address] for address in self._interfaces)

    # -- the caller's side (anyio) --------------------------------------------------------------------------

    async def __aenter__(self) -> Discovery:
        """Open the sockets, announce (after probing our names) and start browsing.

        On error or cancellation, everything opened so far is closed before the exception propagates."""
        if self._thread is not None:
            raise RuntimeError("a Discovery is entered once")
        own = {interface.address: interface.name for interface in host_interfaces()}
        self._devices = own
        for address in self._interfaces:
            if address not in own:
                self._wake_r.close()
                self._wake_w.close()
                raise InvalidInputError(f"{address} is not an IPv4 address of this host: name one of its "
                                        f"addresses ({', '.join(sorted(own)) or 'none'})", code=NO_INTERFACE)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="crdtsync-discovery",
                                        daemon=True)
        self._thread.start()
        try:
            if not await anyio.to_thread.run_sync(ready.wait, 5.0):
                raise DiscoveryError("LAN discovery's thread did not start within 5 s")
            await self._call(self._start(), START_TIMEOUT)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Send goodbyes (our names leave the others' view at once) and close, within :data:`STOP_TIMEOUT`
        seconds; shielded from cancellation so that this also happens when the caller is cancelled. Failures
        while closing are logged, never raised."""
        with anyio.CancelScope(shield=True):
            await self._shutdown()

    def found(self) -> list[Found]:
        """The members seen now, by instance label; safe to call from any thread."""
        with self._lock:
            return sorted(self._found.values(), key=lambda f: f.instance)

    async def next_found(self) -> Found:
        """Wait for the next member that appeared, or whose addresses or port changed, since the last call
        (changes are queued from ``__aenter__`` on, at most :data:`MAX_FOUND`, the oldest dropped). Cancellable;
        concurrent callers take turns."""
        if self._thread is None or self._closing:
            raise RuntimeError("next_found() is for an entered Discovery, before it exits")
        async with self._waiting:
            while True:
                with self._lock:
                    if self._changes:
                        return self._changes.popleft()
                await anyio.wait_readable(self._wake_r)
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)

    def reannounce(self) -> None:
        """Announce again now with a fresh tag (returns at once; the packets go out within milliseconds).
        Does nothing when browsing only or once closing."""
        loop = self._loop
        if loop is None or self._port is None or self._closing:
            return
        future = asyncio.run_coroutine_threadsafe(self._announce_fresh(), loop)
        future.add_done_callback(_log_failure)

    async def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the zeroconf loop and wait for it, at most ``timeout`` seconds; on cancellation, the
        coroutine is cancelled too."""
        if self._loop is None:
            coro.close()
            raise DiscoveryError("LAN discovery's thread is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return await anyio.to_thread.run_sync(future.result, timeout, abandon_on_cancel=True)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise DiscoveryError(f"LAN discovery did not start within {timeout:g} s") from exc
        except BaseException:
            future.cancel()
            raise

    async def _shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        self._closing = True
        if loop is not None and not loop.is_closed():
            try:
                await self._call(self._stop(), STOP_TIMEOUT)
            except Exception:
                log.warning("LAN discovery did not close cleanly", exc_info=True)
            with contextlib.suppress(RuntimeError):  # the loop already stopped
                loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join, STOP_TIMEOUT)
        anyio.notify_closing(self._wake_r)  # a next_found() still waiting wakes up with ClosedResourceError
        self._wake_r.close()
        self._wake_w.close()

    # -- the zeroconf thread (asyncio) ------------------------------------------------------------------------

    def _run_loop(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _start(self) -> None:
        for address in self._interfaces:
            try:
                aiozc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
            except OSError as exc:
                raise DiscoveryError(f"cannot open mDNS sockets on {address}: {exc} (is another mDNS "
                                     "responder holding port 5353 without SO_REUSEPORT?)") from exc
            self._zeroconfs[address] = aiozc
            _bind_to_interface(aiozc.zeroconf, self._devices[address])
            if not getattr(aiozc.zeroconf.engine, "_respond_sockets", None):
                raise InvalidInputError(f"cannot send mDNS from {address}: is it still an address of this host?",
                                        code=NO_INTERFACE)
        for aiozc in self._zeroconfs.values():
            await aiozc.zeroconf.async_wait_for_start()
            self._browsers.append(AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE,
                                                      handlers=[self._on_change(aiozc.zeroconf)]))
        if self._port is not None:
            broadcasts = await asyncio.gather(*(aiozc.async_register_service(self._info(address))
                                                for address, aiozc in self._zeroconfs.items()))
            del broadcasts  # the announcements go out in the background
            self._ticker = asyncio.create_task(self._tick())

    async def _stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for task in self._resolving.values():
            task.cancel()
        await asyncio.gather(*(browser.async_cancel() for browser in self._browsers), return_exceptions=True)
        # async_close sends goodbyes for every registered service (three times, 125 ms apart), then closes.
        results = await asyncio.gather(*(aiozc.async_close() for aiozc in self._zeroconfs.values()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("closing zeroconf failed: %r", result)

    def _info(self, address: str) -> ServiceInfo:
        assert self._port is not None
        instance = self._instances[address]
        tag = make_tag(self._key, os.urandom(NONCE_BYTES), instance=instance, port=self._port)
        return ServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=self._port,
                           properties={"v": str(PROTOCOL_VERSION), "t": tag}, server=self._servers[address],
                           host_ttl=RECORD_TTL, other_ttl=RECORD_TTL, parsed_addresses=[address])

    async def _announce_fresh(self) -> None:
        if self._closing:
            return
        await asyncio.gather(*(aiozc.async_update_service(self._info(address))
                               for address, aiozc in self._zeroconfs.items()))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._reannounce_every)
            try:
                await self._announce_fresh()
            except Exception:
                log.warning("re-announcing failed", exc_info=True)

    def _on_change(self, zc: Zeroconf) -> Callable[..., None]:
        def handler(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
            key = name.lower()
            if key in self._own_names or not key.endswith("." + SERVICE_TYPE.lower()):
                return
            if state_change is ServiceStateChange.Removed:
                self._forget(key)
            elif key in self._resolving:
                self._again.add(key)  # resolve once more when the one in flight ends
            elif len(self._resolving) < MAX_RESOLVING:
                self._resolving[key] = asyncio.ensure_future(self._resolve(zc, name, key))
        return handler

    async def _resolve(self, zc: Zeroconf, name: str, key: str) -> None:
        try:
            for _ in range(3):  # again at most twice when announcements keep coming in meanwhile
                self._again.discard(key)
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if await info.async_request(zc, RESOLVE_TIMEOUT_MS):
                    self._judge(info, key)
                if key not in self._again:
                    break
        except Exception:
            log.debug("resolving %s failed", name, exc_info=True)
        finally:
            self._resolving.pop(key, None)

    def _judge(self, info: AsyncServiceInfo, key: str) -> None:
        """Keep ``info`` as a member when its tag verifies; forget it otherwise."""
        instance = info.name[: -len(SERVICE_TYPE) - 1]
        properties = info.decoded_properties
        version, tag, port = properties.get("v"), properties.get("t"), info.port
        if (version is None or not version.isdecimal() or len(version) > 4 or tag is None or port is None
                or not tag_matches(self._key, tag, instance=instance, port=port)):
            self._forget(key)
            return
        found = Found(instance, tuple(info.parsed_addresses(IPVersion.V4Only)), port, int(version),
                      time.monotonic())
        with self._lock:
            previous = self._found.get(key)
            if previous is None and len(self._found) >= MAX_FOUND:
                return
            self._found[key] = found
            changed = previous is None or (previous.addresses, previous.port) != (found.addresses, found.port)
            if changed:
                self._changes.append(found)
        if changed:
            with contextlib.suppress(OSError):  # a full wake-up buffer already wakes the waiter
                self._wake_w.send(b"\0")

    def _forget(self, key: str) -> None:
        with self._lock:
            self._found.pop(key, None)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("re-announcing failed: %r", future.exception())
