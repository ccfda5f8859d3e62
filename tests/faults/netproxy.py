"""A slow link: a TCP proxy that delays every byte by a fixed time in each direction, keeping order.

Run inside a host's namespace (`ip netns exec <ns> python -m tests.faults.netproxy ...`): the host's workers connect
to it on their loopback, and it forwards over the host's link to Redis. Each direction is a queue of (due time,
chunk): a chunk is read at once and written `--delay-s` later, so bandwidth is not limited, only latency added
(200 ms each way makes every Redis round trip at least 400 ms). It writes `--ready-file` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while chunk := await reader.read(65536):
                due.put_nowait((time.monotonic() + delay_s, chunk))
        except OSError:
            pass
        due.put_nowait((time.monotonic() + delay_s, b''))

    reading = asyncio.create_task(read())
    try:
        while True:
            at, chunk = await due.get()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading
        writer.close()


async def _serve(listen: tuple[str, int], upstream: tuple[str, int], delay_s: float, ready_file: Path | None) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the proxy is stopping: the connection just ends
            await asyncio.gather(
                _pump(client_reader, server_writer, delay_s), _pump(server_reader, client_writer, delay_s)
            )

    server = await asyncio.start_server(connection, *listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        ready_file.write_text('ready\n')
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(':')
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--listen', type=_address, required=True, metavar='HOST:PORT')
    parser.add_argument('--upstream', type=_address, required=True, metavar='HOST:PORT')
    parser.add_argument('--delay-s', type=float, required=True, help='added to every byte, each way')
    parser.add_argument('--ready-file', type=Path)
    args = parser.parse_args()
    asyncio.run(_serve(args.listen, args.upstream, args.delay_s, args.ready_file))


if __name__ == '__main__':
    main()
