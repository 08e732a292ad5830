"""An outsider on the LAN for the namespace tests: listens to mDNS on one address and prints every record of
``_crdtsync._tcp.local.`` it hears, as JSON lines, for at most ``LIFETIME`` seconds. It only listens.

Usage: mdns_observer.py IP LIFETIME
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

from zeroconf._dns import DNSAddress, DNSPointer, DNSService, DNSText
from zeroconf._protocol.incoming import DNSIncoming


def txt_entries(text: bytes) -> dict[str, str]:
    entries, i = {}, 0
    while i < len(text):
        length = text[i]
        key, _, value = text[i + 1:i + 1 + length].decode().partition("=")
        entries[key] = value
        i += 1 + length
    return entries


def main(ip: str, lifetime: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", 5353))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("224.0.0.251") + socket.inet_aton(ip))
    print(json.dumps({"event": "ready"}), flush=True)
    end = time.monotonic() + lifetime
    while (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], min(left, 0.5))[0]:
            continue
        data, (source, _) = sock.recvfrom(9000)
        message = DNSIncoming(data)
        for record in message.answers():
            out: dict[str, object] = {"event": "record", "source": source, "name": record.name, "ttl": record.ttl}
            if isinstance(record, DNSText):
                out.update(type="TXT", txt=txt_entries(record.text))
            elif isinstance(record, DNSService):
                out.update(type="SRV", server=record.server, port=record.port)
            elif isinstance(record, DNSPointer):
                out.update(type="PTR", alias=record.alias)
            elif isinstance(record, DNSAddress):
                out.update(type="A", address=socket.inet_ntoa(record.address) if len(record.address) == 4 else "")
            else:
                continue
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
