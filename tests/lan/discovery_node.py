"""A vault member for the namespace tests: runs :class:`crdtsync.discovery.Discovery` on one address.

Prints JSON lines on stdout: ``{"event": "ready", "instances": [...]}`` once announced, ``{"event": "new", ...}``
for each member :meth:`Discovery.next_found` reports, ``{"event": "found", "members": [...]}`` in answer to the
command ``found`` on stdin, ``{"event": "closed"}`` after ``quit`` (or end of stdin) once the goodbyes are out.
Other commands: ``reannounce``. Exits after ``--lifetime`` seconds whatever happens.

Usage: discovery_node.py KEY_HEX IP PORT(0: browse only) BACKEND [--reannounce S] [--lifetime S]
(with DISCOVERY_NODE_DEBUG=1 in the environment, zeroconf's debug log goes to stderr, every packet in it.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading

import anyio
import anyio.from_thread

from crdtsync.discovery import Discovery, Found


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def as_dict(found: Found) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(found).items() if k != "seen"}


async def main(args: argparse.Namespace) -> None:
    commands_send, commands = anyio.create_memory_object_stream[str](100)
    token = anyio.lowlevel.current_token()

    def read_stdin() -> None:  # a daemon thread: it may block in readline when the process ends
        for line in sys.stdin:
            anyio.from_thread.run_sync(commands_send.send_nowait, line.strip(), token=token)
        anyio.from_thread.run_sync(commands_send.send_nowait, "quit", token=token)

    with anyio.move_on_after(args.lifetime):
        async with Discovery(bytes.fromhex(args.key), interfaces=[args.ip], port=args.port or None,
                             reannounce=args.reannounce) as discovery:
            say("ready", instances=list(discovery.own_instances))
            threading.Thread(target=read_stdin, daemon=True).start()
            async with anyio.create_task_group() as tasks:

                async def report() -> None:
                    while True:
                        say("new", **as_dict(await discovery.next_found()))

                tasks.start_soon(report)
                async for command in commands:
                    if command == "found":
                        say("found", members=[as_dict(f) for f in discovery.found()])
                    elif command == "reannounce":
                        discovery.reannounce()
                        say("reannounced")
                    elif command == "quit":
                        break
                tasks.cancel_scope.cancel()
    say("closed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("key")
    parser.add_argument("ip")
    parser.add_argument("port", type=int)
    parser.add_argument("backend", choices=["asyncio", "trio"])
    parser.add_argument("--reannounce", type=float, default=60.0)
    parser.add_argument("--lifetime", type=float, default=60.0)
    arguments = parser.parse_args()
    if os.environ.get("DISCOVERY_NODE_DEBUG"):
        logging.basicConfig(stream=sys.stderr, format=f"{arguments.ip} %(name)s %(message)s")
        logging.getLogger("zeroconf").setLevel(logging.DEBUG)
        logging.getLogger("crdtsync").setLevel(logging.DEBUG)
    anyio.run(main, arguments, backend=arguments.backend)
