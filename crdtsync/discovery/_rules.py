"""The pure rules of LAN discovery: which interfaces to announce on, and the member tag of an announcement.

No IO, clock or randomness here: the caller passes the host's interfaces and the nonce.

The tag: every announcement carries ``t=<tag>`` in its TXT record, ``tag = base64url(nonce || mac)`` without
padding, with a fresh 16-byte nonce and ``mac = HMAC-SHA256(key, context)[:16]`` where ``key`` is the vault's
discovery key (:func:`crdtsync.crypto.lan.lan_key` with purpose ``"discovery"``) and ``context`` is
``b"crdtsync/v2/discovery-tag" || nonce || len(instance) (2 bytes) || instance (UTF-8) || port (2 bytes)``. Only a
holder of the vault key can make a tag that matches; two tags never share anything an outsider can compare (the
nonce is random and the MAC of a fresh nonce looks random). The instance name and port are in the MAC so that a
tag copied from a member's announcement is worth nothing under another instance name or port; the addresses
(A records) cannot be bound this way, so a tag is a hint that a member is there, never proof of who answers at
an address: the TLS handshake with device keys is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from crdtsync.errors import InvalidInputError

#: The DNS-SD service type every crdtsync node announces and browses.
SERVICE_TYPE: Final = "_crdtsync._tcp.local."
#: The direct-sync protocol version announced in the TXT record as ``v=2``.
PROTOCOL_VERSION: Final = 2
#: Bytes of the nonce in a tag.
NONCE_BYTES: Final = 16
#: Bytes of the truncated MAC in a tag.
MAC_BYTES: Final = 16
#: Characters of a tag (base64url of nonce and MAC, no padding).
TAG_CHARS: Final = 43
#: Interface name prefixes of container, VM and VPN links, left out unless an address on them is named.
EXCLUDED_PREFIXES: Final = ("docker", "br-", "veth", "tun", "tap", "wg", "virbr", "lxcbr", "lxdbr", "podman",
                            "cni", "flannel", "cali", "vboxnet", "vmnet", "zt", "tailscale", "utun")
_PRIVATE_NETWORKS: Final = tuple(ipaddress.IPv4Network(n) for n in
                                 ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"))
_TAG_CONTEXT: Final = b"crdtsync/v2/discovery-tag"
#: The error code when no interface qualifies or a named address is not this host's.
NO_INTERFACE: Final = "DISCOVERY_NO_INTERFACE"


@dataclass(frozen=True)
class Interface:
    """One IPv4 address of a network interface of this host.

    Attributes:
        name: the interface's name (``eth0``, ``wlp2s0``, ``docker0``).
        address: the IPv4 address, dotted quad.
        prefix_len: the length of its network prefix, in bits (24 for a /24).
    """

    name: str
    address: str
    prefix_len: int


def _is_ipv4(address: str) -> bool:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return True


def default_interfaces(interfaces: Iterable[Interface]) -> list[str]:
    """The addresses discovery uses when none is named, in the order given, without repeats.

    An address qualifies when it is IPv4, private (RFC 1918: 10/8, 172.16/12, 192.168/16) or link-local
    (169.254/16), and its interface is not loopback and not a container, VM or VPN link (a name that starts with
    one of :data:`EXCLUDED_PREFIXES`, such as ``docker0``, ``br-1a2b``, ``veth12``, ``tun0``, ``wg0``).
    Public and carrier-grade NAT addresses (100.64/10, used by some VPNs) never qualify by default.
    """
    chosen: list[str] = []
    for interface in interfaces:
        if not _is_ipv4(interface.address) or interface.name == "lo" or interface.name.startswith(
                EXCLUDED_PREFIXES):
            continue
        address = ipaddress.IPv4Address(interface.address)
        if address.is_loopback or not any(address in network for network in _PRIVATE_NETWORKS):
            continue
        if interface.address not in chosen:
            chosen.append(interface.address)
    return chosen


def choose_interfaces(named: Sequence[str], interfaces: Iterable[Interface]) -> list[str]:
    """The IPv4 addresses to run discovery on: the ``named`` ones (``--interface IP``, any interface, bridges
    included) when there are any, else :func:`default_interfaces` of the host's ``interfaces``.

    Raises:
        InvalidInputError: code ``DISCOVERY_NO_INTERFACE``: a named address is not an IPv4 address of this host,
            or none is named and no interface qualifies.
    """
    interfaces = list(interfaces)
    if not named:
        chosen = default_interfaces(interfaces)
        if not chosen:
            raise InvalidInputError(
                "no network interface qualifies for LAN discovery (it uses private IPv4 LAN interfaces, never "
                "container or VPN links): name one with --interface IP, or use --peer HOST:PORT",
                code=NO_INTERFACE)
        return chosen
    own = {interface.address for interface in interfaces}
    chosen = []
    for address in named:
        if not _is_ipv4(address) or address not in own:
            mine = ", ".join(sorted(own)) or "none"
            raise InvalidInputError(
                f"{address!r} is not an IPv4 address of this host: --interface takes one of its addresses "
                f"({mine})", code=NO_INTERFACE)
        if address not in chosen:
            chosen.append(address)
    return chosen


def _mac(key: bytes, nonce: bytes, instance: str, port: int) -> bytes:
    name = instance.encode()
    if len(name) > 0xFFFF or not 0 <= port <= 0xFFFF:
        raise ValueError("instance name or port out of range")
    context = _TAG_CONTEXT + nonce + len(name).to_bytes(2, "big") + name + port.to_bytes(2, "big")
    return hmac.digest(key, context, hashlib.sha256)[:MAC_BYTES]


def make_tag(key: bytes, nonce: bytes, *, instance: str, port: int) -> str:
    """The member tag of one announcement of ``instance`` (the service's instance label) on TCP ``port``.

    Args:
        key: the vault's 32-byte discovery key.
        nonce: :data:`NONCE_BYTES` fresh random bytes; never reuse one.

    Raises:
        ValueError: the nonce is not :data:`NONCE_BYTES` long, or the port is not 0-65535.
    """
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a tag nonce is {NONCE_BYTES} bytes")
    return base64.urlsafe_b64encode(nonce + _mac(key, nonce, instance, port)).rstrip(b"=").decode()


def tag_matches(key: bytes, tag: str, *, instance: str, port: int) -> bool:
    """Whether ``tag`` was made with ``key`` for ``instance`` and ``port`` (constant-time comparison). Anything
    that is not a well-formed tag is simply no match."""
    if len(tag) != TAG_CHARS or not 0 <= port <= 0xFFFF:
        return False
    try:
        raw = base64.b64decode(tag + "=", altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != NONCE_BYTES + MAC_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != tag:
        return False  # only the canonical spelling of a tag counts
    nonce, mac = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
    return hmac.compare_digest(mac, _mac(key, nonce, instance, port))
