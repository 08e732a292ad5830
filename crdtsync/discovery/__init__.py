"""Direct sync on the LAN, discovery: members of a vault find each other with mDNS/DNS-SD (python-zeroconf).

Each device announces ``_crdtsync._tcp.local.`` under a random instance name per run and interface, with a TXT
record holding the protocol version and a tag only members recognise, which changes with every announcement
(``_rules``, pure); :class:`Discovery` (``_service``) advertises and browses on chosen interfaces only. See
``README-section.md`` here for what an observer on the network learns.
"""

from crdtsync.discovery._rules import (
    EXCLUDED_PREFIXES,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    Interface,
    choose_interfaces,
    default_interfaces,
    make_tag,
    tag_matches,
)
from crdtsync.discovery._service import Discovery, Found, host_interfaces

__all__ = [
    "EXCLUDED_PREFIXES",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Discovery",
    "Found",
    "Interface",
    "choose_interfaces",
    "default_interfaces",
    "host_interfaces",
    "make_tag",
    "tag_matches",
]
