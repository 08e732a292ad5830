"""A hand-made announcement for the namespace tests: sends ``COUNT`` mDNS announcements of one
``_crdtsync._tcp.local.`` instance, each from a fresh UDP source port, out of the interface with address ``IP``.
The tag is made with ``KEY_HEX`` for this instance and port, unless ``--tag`` gives one (say, copied from a
member's announcement).

Usage: fake_member.py IP KEY_HEX INSTANCE PORT COUNT [--tag TAG]
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from zeroconf import ServiceInfo
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import _FLAGS_AA, _FLAGS_QR_RESPONSE

from crdtsync.discovery import SERVICE_TYPE, make_tag


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("ip", "key", "instance"):
        parser.add_argument(name)
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--tag")
    args = parser.parse_args()
    tag = args.tag or make_tag(bytes.fromhex(args.key), os.urandom(16), instance=args.instance, port=args.port)
    info = ServiceInfo(SERVICE_TYPE, f"{args.instance}.{SERVICE_TYPE}", port=args.port,
                       properties={"v": "2", "t": tag}, server=f"{args.instance}.local.", host_ttl=120,
                       other_ttl=120, parsed_addresses=[args.ip])
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    for record in (info.dns_pointer(), info.dns_service(), info.dns_text(), *info.dns_addresses()):
        out.add_answer_at_time(record, 0)
    packet = out.packets()[0]
    for _ in range(args.count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((args.ip, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.ip))
            sock.sendto(packet, ("224.0.0.251", 5353))
        time.sleep(0.02)
    print("sent", flush=True)


if __name__ == "__main__":
    main()
