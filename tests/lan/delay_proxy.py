"""A TCP forwarder that delays every chunk by a fixed time each way, and can record what the client sent: run in
a namespace between two devices (this kernel has no ``tc netem``). Prints ``ready`` on stdout once it listens.

    python delay_proxy.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_S [RECORD_FILE]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
               record: Path | None) -> None:
    """Forward what ``reader`` gives to ``writer``, each chunk ``delay`` seconds after it arrived (a link with
    that one-way latency, not a stop-and-wait one)."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await chunks.get()
            if not data:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            if record is not None:
                with record.open("ab") as out:
                    out.write(data)
            chunks.put_nowait((loop.time() + delay, data))
        chunks.put_nowait((0.0, b""))
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        writer.close()


async def main() -> None:
    host, port, target, target_port, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), \
        float(sys.argv[5])
    record = Path(sys.argv[6]) if len(sys.argv) > 6 else None

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer, delay, record),
                             pipe(server_reader, client_writer, delay, None))

    server = await asyncio.start_server(handle, host, port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
