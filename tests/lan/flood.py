"""Open COUNT TCP connections to HOST PORT as fast as possible, each closed at once (a bounded flood).

    python flood.py HOST PORT COUNT
"""

from __future__ import annotations

import socket
import sys


def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=5):
                pass
        except OSError:
            continue


if __name__ == "__main__":
    main()
