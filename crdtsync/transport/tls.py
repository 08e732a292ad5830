"""TLS 1.3 between two devices of a vault, from the standard library's ``ssl``, with the peer's device key pinned
from the registry (in the manner of Syncthing's device certificates).

**Certificates.** Every member derives the same certificate authority from the vault key
(:func:`crdtsync.crypto.lan.lan_key` ``"tls-ca"`` as an Ed25519 seed): only members can issue certificates
that the other members' TLS accepts. Each run of a device makes a TLS key of its own (Ed25519) and a certificate
for it, issued by that authority, that carries in extension :data:`DEVICE_EXTENSION` the device's id and its
device key's signature over the vault id and the TLS key (``b"crdtsync/v2/tls-key" + vault_id + SPKI DER``). The
device's signing key is never in a certificate, and certificates only pass after the knock
(:mod:`crdtsync.protocol.knock`), so no stranger sees them.

**Verification** is never switched off. OpenSSL checks the chain to the vault's authority and the handshake's
proof of the TLS key (``CERT_REQUIRED`` on both sides, TLS 1.3 only); there is no host name to check, so that
check is replaced by ours (:func:`peer_device`): the extension must name a registered device of the vault,
other than this one, whose registered key signed this very TLS key. A member that knows the vault key but
forges another device's extension fails there; one that replays another device's certificate cannot complete
the handshake without that device's TLS key.

Python 3.11's ``ssl`` loads keys only from files: they are written to a private temporary folder (0700) and
removed at once.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from crdtsync.crypto.keys import DeviceKeys, is_device_id, verify
from crdtsync.crypto.lan import lan_key
from crdtsync.errors import LanError
from crdtsync.model.authorship import registered_key

#: The certificate extension that binds a TLS key to a device (an OID under the UUID arc 2.25, ITU-T X.667).
DEVICE_EXTENSION: Final = x509.ObjectIdentifier("2.25.291224835851800481996464646569607766071")
#: What a device key signs to vouch for a TLS key: this prefix, the vault id, the TLS key's SPKI DER.
SIGNED_PREFIX: Final = b"crdtsync/v2/tls-key"
#: Largest extension value read, in bytes.
MAX_EXTENSION_BYTES: Final = 512

_NOT_BEFORE: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER: Final = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)
_CA_NAME: Final = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crdtsync vault")])


@dataclass(frozen=True)
class TlsIdentity:
    """This run's TLS material for one vault: contexts for either side of a connection, and the device and vault
    it speaks for."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    device_id: str
    vault_id: bytes


def identity(vault_id: bytes, vault_key: bytes, epoch: int, device: DeviceKeys) -> TlsIdentity:
    """A fresh TLS key and certificate for ``device`` in the vault (16-byte ``vault_id``, 32-byte ``vault_key``
    of ``epoch``), and the server and client contexts that present it and accept only certificates of the
    vault's authority (TLS 1.3, verification required both ways)."""
    ca_key = Ed25519PrivateKey.from_private_bytes(lan_key(vault_id, vault_key, epoch, "tls-ca"))
    ca_cert = _certificate(_CA_NAME, ca_key, ca_key, ca=True, serial=1)
    tls_key = Ed25519PrivateKey.generate()
    spki = tls_key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    vouch = msgpack.packb({"device": device.device_id, "sig": device.sign(SIGNED_PREFIX + vault_id + spki)},
                          use_bin_type=True)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crdtsync device")])
    leaf = _certificate(name, tls_key, ca_key, ca=False, serial=x509.random_serial_number(), extension=vouch)
    contexts = [_context(side, leaf, tls_key, ca_cert) for side in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT)]
    return TlsIdentity(contexts[0], contexts[1], device.device_id, vault_id)


def peer_device(cert_der: bytes | None, vault_id: bytes, registry: dict[str, dict[str, Any]], me: str) -> str:
    """The device id a peer's certificate (DER, as the handshake verified it) speaks for.

    Raises:
        LanError: ``LAN_REFUSED``: no certificate, no or a malformed device extension, a device that is not
            registered in ``registry`` (or is this device, ``me``), or a signature that its registered key did
            not make over this certificate's TLS key and this vault.
    """
    if cert_der is None:
        raise LanError("the peer showed no certificate", code="LAN_REFUSED")
    cert = x509.load_der_x509_certificate(cert_der)
    try:
        value = cert.extensions.get_extension_for_oid(DEVICE_EXTENSION).value
    except x509.ExtensionNotFound:
        raise LanError("the peer's certificate names no device", code="LAN_REFUSED") from None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    device, signature = _vouch(raw)
    if device == me:
        raise LanError("the peer claims to be this device", code="LAN_REFUSED")
    key = registered_key(registry, device)
    if key is None:
        raise LanError(f"the peer claims to be device {device}, which is not registered in this vault (if it "
                       "joined a moment ago, a sync through a relay brings its registration)", code="LAN_REFUSED")
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not verify(key, signature, SIGNED_PREFIX + vault_id + spki):
        raise LanError(f"the peer's certificate is not vouched for by device {device}'s key", code="LAN_REFUSED")
    return device


def _vouch(raw: bytes) -> tuple[str, bytes]:
    malformed = LanError("the peer's certificate has a malformed device extension", code="LAN_REFUSED")
    if not 0 < len(raw) <= MAX_EXTENSION_BYTES:
        raise malformed
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_EXTENSION_BYTES,
                                 max_str_len=64, max_map_len=2, max_array_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise malformed from None
    if not isinstance(fields, dict) or set(fields) != {"device", "sig"}:
        raise malformed
    device, signature = fields["device"], fields["sig"]
    if not isinstance(device, str) or not is_device_id(device) or not isinstance(signature, bytes):
        raise malformed
    return device, signature


def _certificate(subject: x509.Name, key: Ed25519PrivateKey, issuer_key: Ed25519PrivateKey, *, ca: bool,
                 serial: int, extension: bytes | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(_CA_NAME).public_key(key.public_key())
               .serial_number(serial).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if extension is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(DEVICE_EXTENSION, extension), critical=False)
    return builder.sign(issuer_key, None)


def _context(protocol: ssl._SSLMethod, cert: x509.Certificate, key: Ed25519PrivateKey,
             ca_cert: x509.Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # no host names here: peer_device() checks the device instead
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_cert.public_bytes(serialization.Encoding.DER))
    with tempfile.TemporaryDirectory(prefix="crdtsync-tls-") as folder:
        os.chmod(folder, 0o700)
        cert_path, key_path = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        context.load_cert_chain(cert_path, key_path)
    return context
