"""Authenticated connections between two devices of a vault over TCP, on anyio (asyncio or trio).

Opening one, either way (:func:`dial`, :func:`admit`), takes three steps under one deadline
(:data:`HANDSHAKE_TIMEOUT`):

1. the knock (:mod:`crdtsync.protocol.knock`): both sides prove they hold the vault's knock key; a server
   closes the connection on anyone who does not, having sent one random nonce;
2. TLS 1.3 (:mod:`crdtsync.transport.tls`): certificates of the vault's authority, verified both ways;
3. the device check (:func:`crdtsync.transport.tls.peer_device`): the certificate names a registered device of
   the vault whose key vouches for the TLS key.

Only then does the live session start (:func:`crdtsync.transport.stream.run_live`), whose frames are the
protocol's length-prefixed frames (:mod:`crdtsync.protocol.session`, at most 8 MiB each).

Errors (:class:`~crdtsync.errors.LanError`): ``LAN_UNREACHABLE`` (no connection: refused, no route, a reset),
``LAN_HANDSHAKE_TIMEOUT``, ``LAN_REFUSED`` (the peer failed the knock, TLS or the device check, or closed the
connection during them: it is not a member, or does not take us as one).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSAttribute, TLSStream

from crdtsync.errors import LanError
from crdtsync.protocol import knock
from crdtsync.transport.tls import TlsIdentity

#: Seconds the knock, the TLS handshake and the device check may take together.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT: Final = 5.0

#: ``await check(peer_certificate_der)`` returns the peer's device id or raises ``LAN_REFUSED``
#: (:func:`crdtsync.transport.tls.peer_device` bound to this vault's registry).
PeerCheck = Callable[[bytes | None], Awaitable[str]]


@dataclass
class Connection:
    """An authenticated connection: the TLS ``stream``, the peer's ``device`` id, its ``address`` (host, port) and
    whether this side ``dialed`` it."""

    stream: TLSStream
    device: str
    address: tuple[str, int]
    dialed: bool
    opened: float = field(default_factory=time.time)


async def dial(host: str, port: int, *, knock_key: bytes, tls: TlsIdentity, check: PeerCheck,
               timeout: float = HANDSHAKE_TIMEOUT) -> Connection:
    """Connect to ``host``:``port`` and authenticate both ways (module docstring).

    Raises:
        LanError: ``LAN_UNREACHABLE``, ``LAN_HANDSHAKE_TIMEOUT``, ``LAN_REFUSED``.
    """
    try:
        with anyio.fail_after(CONNECT_TIMEOUT):
            raw = await anyio.connect_tcp(host, port)
    except TimeoutError:
        raise LanError(f"no answer from {host}:{port} within {CONNECT_TIMEOUT:g} s", code="LAN_UNREACHABLE") from None
    except OSError as exc:
        raise LanError(f"cannot connect to {host}:{port}: {exc.strerror or exc}", code="LAN_UNREACHABLE") from None
    return await _handshake(raw, (host, port), True, knock_key, tls, check, timeout)


async def admit(raw: anyio.abc.SocketStream, *, knock_key: bytes, tls: TlsIdentity, check: PeerCheck,
                timeout: float = HANDSHAKE_TIMEOUT) -> Connection:
    """Authenticate a connection a listener accepted (module docstring); closes it on failure.

    Raises:
        LanError: ``LAN_HANDSHAKE_TIMEOUT``, ``LAN_REFUSED``.
    """
    remote = raw.extra(anyio.abc.SocketAttribute.remote_address)
    address = (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else (str(remote), 0)
    return await _handshake(raw, address, False, knock_key, tls, check, timeout)


async def _handshake(raw: anyio.abc.SocketStream, address: tuple[str, int], dialed: bool, knock_key: bytes,
                     tls: TlsIdentity, check: PeerCheck, timeout: float) -> Connection:
    where = f"{address[0]}:{address[1]}"
    try:
        with anyio.fail_after(timeout):
            if dialed:
                await _knock_as_client(raw, knock_key, where)
            else:
                await _knock_as_server(raw, knock_key, where)
            context = tls.client if dialed else tls.server
            stream = await TLSStream.wrap(raw, server_side=not dialed, ssl_context=context,
                                          standard_compatible=False)
            device = await check(stream.extra(TLSAttribute.peer_certificate_binary))
            return Connection(stream, device, address, dialed)
    except TimeoutError:
        await _close(raw)
        raise LanError(f"the handshake with {where} took over {timeout:g} s", code="LAN_HANDSHAKE_TIMEOUT") from None
    except LanError:
        await _close(raw)
        raise
    except (ssl.SSLError, anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError) as exc:
        await _close(raw)
        raise LanError(f"{where} refused the handshake or broke it off ({type(exc).__name__}): it is not a "
                       "device of this vault, or does not take this device as one", code="LAN_REFUSED") from None


async def _knock_as_client(raw: anyio.abc.SocketStream, key: bytes, where: str) -> None:
    reader = BufferedByteReceiveStream(raw)
    nc = os.urandom(knock.NONCE_BYTES)
    await raw.send(knock.hello(nc))
    ns = await reader.receive_exactly(knock.NONCE_BYTES)
    await raw.send(knock.client_proof(key, nc, ns))
    if not knock.proof_matches(knock.server_proof(key, nc, ns), await reader.receive_exactly(knock.PROOF_BYTES)):
        raise LanError(f"{where} does not know this vault's key", code="LAN_REFUSED")
    _drained(reader, where)


async def _knock_as_server(raw: anyio.abc.SocketStream, key: bytes, where: str) -> None:
    reader = BufferedByteReceiveStream(raw)
    nc = knock.read_hello(await reader.receive_exactly(knock.HELLO_BYTES))
    if nc is None:
        raise LanError(f"{where} did not knock as a crdtsync device", code="LAN_REFUSED")
    ns = os.urandom(knock.NONCE_BYTES)
    await raw.send(ns)
    if not knock.proof_matches(knock.client_proof(key, nc, ns), await reader.receive_exactly(knock.PROOF_BYTES)):
        raise LanError(f"{where} does not know this vault's key", code="LAN_REFUSED")
    await raw.send(knock.server_proof(key, nc, ns))
    _drained(reader, where)


def _drained(reader: BufferedByteReceiveStream, where: str) -> None:
    """The peer sent nothing past its knock before its turn (TLS starts on the raw socket)."""
    if reader.buffer:
        raise LanError(f"{where} sent bytes out of turn during the knock", code="LAN_REFUSED")


async def _close(raw: anyio.abc.SocketStream) -> None:
    with anyio.CancelScope(shield=True):
        await raw.aclose()
