"""gRPC's own floor: a HotSession server that answers each turn with a recorded turn's
responses and no process, so what grpcio alone costs stands beside hotsvc.

    python -m hotsvc_tools.grpcfloor EVENTS             (prints its port; `make bench` runs it)
    python -m hotsvc_tools.grpcfloor --grpclib EVENTS   (the same, served by grpclib)
    python -m hotsvc_tools.grpcfloor --wakeups          (the CPU one wake-up of an idle loop costs)

EVENTS holds one JSON line per response: its offset in the real turn (seconds after the
turn was written) and the serialized PromptResponse. A turn whose text is `spaced` gets
them at those offsets, as a real turn's events come; any other turn gets them back to back
(the latency floor). It runs under uvloop, as hotsvc does, in a process of its own so
that its CPU time is gRPC's alone.

`--grpclib` serves the same responses with grpclib: HTTP/2 in pure Python on the event
loop, no core threads and no completion queue. It answers whether the floor is grpcio's
(its poller thread's hops) or any gRPC server's that sends events as they come.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # as hotsvc.cli sets it

import grpc
import uvloop
from grpclib.const import Cardinality, Handler
from grpclib.server import Server as GrpclibServer
from grpclib.server import Stream
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

SPACED = "spaced"
Recorded = Sequence[tuple[float, pb.PromptResponse]]


def save(path: Path, turn: Recorded) -> None:
    with path.open("w") as file:
        for offset, response in turn:
            data = base64.b64encode(response.SerializeToString()).decode()
            file.write(json.dumps({"offset": offset, "response": data}) + "\n")


def load(path: Path) -> list[tuple[float, pb.PromptResponse]]:
    turn = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        response = pb.PromptResponse.FromString(base64.b64decode(item["response"]))
        turn.append((float(item["offset"]), response))
    return turn


async def replay(
    turn: Recorded, requests: AsyncIterator[pb.PromptRequest]
) -> AsyncIterator[pb.PromptResponse]:
    """A Prompt stream's responses: `opened` for an open, the recorded turn for a turn."""
    loop = asyncio.get_running_loop()
    async for request in requests:
        if request.HasField("open"):
            yield pb.PromptResponse(opened=pb.SessionOpened())
            continue
        start, spaced = loop.time(), request.turn.text == SPACED
        for offset, response in turn:
            if spaced and (wait := start + offset - loop.time()) > 0:
                await asyncio.sleep(wait)
            yield response


class ReplayServicer(pb_grpc.HotSessionServicer):
    def __init__(self, turn: Recorded) -> None:
        self._turn = turn

    async def Prompt(
        self, request_iterator: AsyncIterator[pb.PromptRequest], context: object
    ) -> AsyncIterator[pb.PromptResponse]:
        async for response in replay(self._turn, request_iterator):  # grpc.aio streams
            yield response  # only from an async generator function


async def serve(turn: Recorded) -> None:
    server = grpc.aio.server()
    pb_grpc.add_HotSessionServicer_to_server(ReplayServicer(turn), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


class GrpclibReplay:
    """The same Prompt method as a grpclib handler (grpclib's generated-code shape)."""

    def __init__(self, turn: Recorded) -> None:
        self._turn = turn

    async def prompt(self, stream: Stream[pb.PromptRequest, pb.PromptResponse]) -> None:
        async for response in replay(self._turn, aiter(stream)):
            await stream.send_message(response)

    def __mapping__(self) -> dict[str, Handler]:
        path = "/hotsession.v1.HotSession/Prompt"
        kind = Cardinality.STREAM_STREAM
        return {path: Handler(self.prompt, kind, pb.PromptRequest, pb.PromptResponse)}


async def serve_grpclib(turn: Recorded) -> None:
    server = GrpclibServer([GrpclibReplay(turn)])
    with socket.create_server(("127.0.0.1", 0)) as listening:
        await server.start(sock=listening)
        print(listening.getsockname()[1], flush=True)
        await server.wait_closed()


async def wakeups(with_grpc: bool, count: int = 500) -> float:
    """CPU seconds per wake-up of an otherwise idle loop (a 10 ms timer), optionally with
    a gRPC server started: the least any event costs a process that sleeps between them."""
    server = grpc.aio.server() if with_grpc else None
    if server is not None:
        server.add_insecure_port("127.0.0.1:0")
        await server.start()
    started = time.process_time()
    for _ in range(count):
        await asyncio.sleep(0.01)
    used = (time.process_time() - started) / count
    if server is not None:
        await server.stop(None)
    return used


def main() -> None:
    if sys.argv[1:] == ["--wakeups"]:
        runners: dict[str, Callable[[Coroutine[Any, Any, float]], float]] = {
            "uvloop": uvloop.run,
            "asyncio": asyncio.run,
        }
        for name, run in runners.items():
            for with_grpc in (False, True):
                used = run(wakeups(with_grpc))
                grpc_note = "with" if with_grpc else "without"
                print(f"{name}, {grpc_note} a gRPC server: {used * 1e3:.3f} ms CPU a wake-up")
        return
    if sys.argv[1] == "--grpclib":
        uvloop.run(serve_grpclib(load(Path(sys.argv[2]))))
        return
    uvloop.run(serve(load(Path(sys.argv[1]))))


if __name__ == "__main__":
    main()
