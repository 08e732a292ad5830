"""Transports: byte streams between two devices of a vault, and the driver that runs a live session over one.

- :mod:`crdtsync.transport.stream`: :func:`~crdtsync.transport.stream.run_live` runs a
  :class:`~crdtsync.live.LiveSync` over any anyio byte stream (heartbeat, liveness, clean close).
"""
