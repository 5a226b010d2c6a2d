"""The floor under any service between a caller and the CLI: a relay that only copies bytes.

    python -m hotsvc_tools.relayfloor CLAUDE_CMD...   (prints its port; `make bench` runs it)

It starts the CLI as the direct side does (bench_kit.spawn_cli, in this process's
environment), takes one TCP connection, and copies the caller's bytes to the CLI's stdin
and the CLI's stdout to the caller as they come: no parsing, no store, no gRPC, under
uvloop as hotsvc runs. What it adds to a turn over the direct pipes is the least any
process in between adds on this machine: one more process to wake for every write, both
ways. It ends with the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import uvloop

from hotsvc_tools.bench_kit import spawn_cli

CHUNK = 64 * 1024


async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):  # the caller left mid-write: the relay ends
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    sink.close()


async def relay(claude_cmd: list[str]) -> None:
    cli = await spawn_cli(claude_cmd, dict(os.environ))
    assert cli.stdin is not None and cli.stdout is not None
    done = asyncio.get_running_loop().create_future()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert cli.stdin is not None and cli.stdout is not None
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(copy(reader, cli.stdin))  # EOF closes stdin: the CLI ends
                tasks.create_task(copy(cli.stdout, writer))
        finally:
            done.set_result(None)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    try:
        await done
    finally:
        server.close()
        if cli.returncode is None:
            cli.kill()
        await cli.wait()


if __name__ == "__main__":
    uvloop.run(relay(sys.argv[1:]))
