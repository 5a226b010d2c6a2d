"""`make bench`: hotsvc against the floor, side by side in one run.

- hot turn: a turn on a hot session through hotsvc, versus the same turn written straight
  to the same kind of process over its pipes (the floor);
- first turn: a new session from the warm pool through hotsvc, versus spawning the CLI and
  sending the turn (what a caller without hotsvc does).

Measurements alternate between the two sides so drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.claude import protocol
from hotsvc.claude.launch import BASE_ARGS
from hotsvc.local import local_model_env
from hotsvc_tools.paths import PROJECT_CLAUDE

PROMPT = "Remember 42"


@dataclass
class Series:
    name: str
    seconds: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)


class DirectProcess:
    """The floor: a CLI process driven over its pipes with no service in between."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, claude_cmd: list[str], env: dict[str, str]) -> DirectProcess:
        proc = await asyncio.create_subprocess_exec(
            *claude_cmd,
            *BASE_ARGS,
            "--session-id",
            str(uuid.uuid4()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            limit=64 * 1024 * 1024,
        )
        return cls(proc)

    async def turn(self, text: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(protocol.encode(protocol.user_message(text)))
        await self.proc.stdin.drain()
        # Decode every line, as any caller must to use the events.
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if message.get("type") == "result":
                return str(message.get("result", ""))
        raise RuntimeError("the CLI exited mid-turn")

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


PromptCall = grpc.aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse]


async def read_event(call: PromptCall) -> pb.PromptResponse:
    response = await call.read()
    if not isinstance(response, pb.PromptResponse):
        raise RuntimeError(f"Prompt stream ended: {await call.code()}")
    return response


async def hotsvc_turn(call: PromptCall, text: str) -> str:
    await call.write(pb.PromptRequest(turn=pb.UserTurn(text=text)))
    while not (response := await read_event(call)).HasField("result"):
        pass
    return response.result.text


class ReplayServicer(pb_grpc.HotSessionServicer):
    """gRPC's own floor: answers each turn with hotsvc's events, canned, and no process."""

    def __init__(self, events: list[pb.PromptResponse]) -> None:
        self._events = events

    async def Prompt(
        self, request_iterator: AsyncIterator[pb.PromptRequest], context: object
    ) -> AsyncIterator[pb.PromptResponse]:
        async for request in request_iterator:
            if request.HasField("open"):
                yield pb.PromptResponse(opened=pb.SessionOpened())
                continue
            for event in self._events:
                yield event


async def bench_grpc_floor(events: list[pb.PromptResponse], turns: int) -> Series:
    """The same number and size of events per turn, through grpcio alone."""
    series = Series("same events, gRPC alone")
    server = grpc.aio.server()
    replay = ReplayServicer(events)  # type: ignore[abstract]  # only Prompt is called
    pb_grpc.add_HotSessionServicer_to_server(replay, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.HotSessionStub(channel).Prompt(request_iterator=None)
            await call.write(pb.PromptRequest(open=pb.OpenSession()))
            await read_event(call)
            for _ in range(5 + turns):
                await timed(series, lambda: hotsvc_turn(call, PROMPT))
            del series.seconds[:5]
            call.cancel()
    finally:
        await server.stop(None)
    return series


async def capture_turn(call: PromptCall, text: str) -> list[pb.PromptResponse]:
    await call.write(pb.PromptRequest(turn=pb.UserTurn(text=text)))
    events = [await read_event(call)]
    while not events[-1].HasField("result"):
        events.append(await read_event(call))
    return events


async def timed(series: Series, action: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await action()
    series.seconds.append(time.perf_counter() - started)


async def start_server(
    claude_cmd: list[str], env: dict[str, str], pool_size: int
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotsvc.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--claude-cmd",
        " ".join(claude_cmd),
        "--pool-size",
        str(pool_size),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    return proc, line.rsplit(" ", 1)[1].strip()


async def wait_pool_full(stub: pb_grpc.HotSessionAsyncStub, target: int) -> None:
    # Outside the timed part: the next warm measurement must find a full pool. PoolStatus
    # has no push form, so poll it.
    while (await stub.PoolStatus(pb.PoolStatusRequest())).pool_size < target:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def bench_hot(
    stub: pb_grpc.HotSessionAsyncStub, claude_cmd: list[str], env: dict[str, str], turns: int
) -> tuple[Series, Series, list[pb.PromptResponse]]:
    via, direct = Series("hot turn via hotsvc"), Series("hot turn direct (floor)")
    call = stub.Prompt(request_iterator=None)
    await call.write(pb.PromptRequest(open=pb.OpenSession()))
    await read_event(call)
    floor = await DirectProcess.spawn(claude_cmd, env)
    try:
        events = await capture_turn(call, PROMPT)
        for _ in range(5):  # warm both paths up before measuring
            await hotsvc_turn(call, PROMPT)
            await floor.turn(PROMPT)
        for _ in range(turns):
            await timed(via, lambda: hotsvc_turn(call, PROMPT))
            await timed(direct, lambda: floor.turn(PROMPT))
    finally:
        call.cancel()
        await floor.close()
    return via, direct, events


async def one_shot(claude_cmd: list[str], env: dict[str, str]) -> None:
    """What a caller without hotsvc does: `claude -p PROMPT`, one process per prompt."""
    proc = await asyncio.create_subprocess_exec(
        *claude_cmd,
        "-p",
        PROMPT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0 or b"OK" not in output:
        raise RuntimeError(f"claude -p failed ({proc.returncode}): {output[-200:]!r}")


async def bench_first(
    stub: pb_grpc.HotSessionAsyncStub,
    claude_cmd: list[str],
    env: dict[str, str],
    sessions: int,
    pool_size: int,
    cold_one_shot: bool,
) -> tuple[Series, Series]:
    warm = Series("first turn, warm pool via hotsvc")
    cold = Series(
        "cold spawn per prompt (claude -p)" if cold_one_shot else "first turn, cold spawn"
    )

    async def warm_first() -> None:
        call = stub.Prompt(request_iterator=None)
        await call.write(pb.PromptRequest(open=pb.OpenSession()))
        opened = (await read_event(call)).opened
        assert opened.start == pb.SESSION_START_WARM, opened
        await hotsvc_turn(call, PROMPT)
        call.cancel()
        await stub.DeleteSession(pb.DeleteSessionRequest(session_id=opened.session_id))

    async def cold_first() -> None:
        if cold_one_shot:
            return await one_shot(claude_cmd, env)
        process = await DirectProcess.spawn(claude_cmd, env)
        await process.turn(PROMPT)
        await process.close()

    for _ in range(sessions):
        await wait_pool_full(stub, pool_size)
        await timed(warm, warm_first)
        await timed(cold, cold_first)
    return warm, cold


def report(title: str, series: list[Series], ratios: list[tuple[Series, Series]]) -> str:
    lines = [f"### {title}", "", "| measure | p50 ms | p99 ms | n |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {s.name} | {s.p50 * 1e3:.2f} | {s.pct(0.99) * 1e3:.2f} | {len(s.seconds)} |"
        for s in series
    ]
    lines.append("")
    lines += [
        f"- {a.name} / {b.name}: **{a.p50 / b.p50:.3f}** at p50, "
        f"{a.pct(0.99) / b.pct(0.99):.3f} at p99"
        for a, b in ratios
    ]
    return "\n".join(lines) + "\n"


async def run(
    claude_cmd: list[str],
    title: str,
    turns: int,
    sessions: int,
    extra_env: dict[str, str],
    cold_one_shot: bool = False,
) -> str:
    pool_size = 2
    with tempfile.TemporaryDirectory() as config_dir:
        env = {**os.environ, "CLAUDE_CONFIG_DIR": config_dir, **extra_env}
        server, address = await start_server(claude_cmd, env, pool_size)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.HotSessionStub(channel)
                await wait_pool_full(stub, pool_size)
                via, direct, events = await bench_hot(stub, claude_cmd, env, turns)
                first = await bench_first(stub, claude_cmd, env, sessions, pool_size, cold_one_shot)
        finally:
            server.terminate()
            await server.wait()
    grpc_alone = await bench_grpc_floor(events, turns)
    warm, cold = first
    text = report(
        title, [via, direct, grpc_alone, warm, cold], [(via, direct), (warm, cold), (warm, via)]
    )
    added, grpc_cost = via.p50 - direct.p50, grpc_alone.p50
    return text + (
        f"- hotsvc adds {added * 1e3:.2f} ms per hot turn at p50; {len(events)} events "
        f"through gRPC alone cost {grpc_cost * 1e3:.2f} ms of it\n"
    )


async def local_model_process() -> tuple[asyncio.subprocess.Process, str]:
    """The scripted model in its own process, so it does not share the bench's CPU time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotsvc.localmodel",
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    return proc, line.split()[-1]


async def run_real(turns: int, sessions: int) -> str:
    if not PROJECT_CLAUDE.exists():
        raise SystemExit(f"{PROJECT_CLAUDE} is missing: run `make setup-dev`")
    model, url = await local_model_process()
    try:
        with tempfile.TemporaryDirectory() as home:
            env = {**local_model_env(url, Path(home) / ".claude"), "HOME": home, "TMPDIR": home}
            return await run(
                [str(PROJECT_CLAUDE)],
                "Real Claude Code CLI against the local scripted model",
                turns,
                sessions,
                env,
                cold_one_shot=True,
            )
    finally:
        model.terminate()
        await model.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hotsvc_tools.bench", description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--real-turns", type=int, default=100)
    parser.add_argument("--real-sessions", type=int, default=10)
    args = parser.parse_args()
    emulator = [str(Path(sys.executable).parent / "hotsvc-emulator")]
    print(
        asyncio.run(
            run(
                emulator,
                "Stand-in CLI (hotsvc-emulator), zero token delay",
                args.turns,
                args.sessions,
                {"HOTSVC_EMU_TOKEN_DELAY": "0"},
            )
        )
    )
    print(asyncio.run(run_real(args.real_turns, args.real_sessions)))


if __name__ == "__main__":
    main()
