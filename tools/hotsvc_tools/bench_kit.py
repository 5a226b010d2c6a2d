"""What every part of `make bench` shares: series, the direct floor, a hotsvc server, the
real CLI's environment, and the report's tables and targets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
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
from hotsvc_tools.hotturn import start_model, start_server

PROMPT = "Remember 42"
LINE_LIMIT = 64 * 1024 * 1024  # a stdout line the readers take whole
PromptCall = grpc.aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse]


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

    @property
    def p99(self) -> float:
        return self.pct(0.99)


@dataclass
class Target:
    """One line of the targets table: what the issue asks, what this run measured."""

    target: str
    measured: str
    met: bool | None  # None: reported only, no bound to meet


@dataclass
class Part:
    """A part's output: its markdown section and its lines of the targets table."""

    text: str
    targets: list[Target] = field(default_factory=list)


async def spawn_cli(
    claude_cmd: list[str], env: dict[str, str], cwd: str | None = None
) -> asyncio.subprocess.Process:
    """A CLI with hotsvc's stream-json flags and a session id of its own, over pipes."""
    return await asyncio.create_subprocess_exec(
        *claude_cmd, *BASE_ARGS, "--session-id", str(uuid.uuid4()),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=env, cwd=cwd, limit=LINE_LIMIT,
    )  # fmt: skip


class DirectProcess:
    """The floor: a CLI process driven over its pipes with no service in between."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, claude_cmd: list[str], env: dict[str, str]) -> DirectProcess:
        return cls(await spawn_cli(claude_cmd, env))

    async def turn(self, text: str = PROMPT) -> str:
        assert self.proc.stdin and self.proc.stdout
        return await line_turn(self.proc.stdout, self.proc.stdin, text)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


class RelayedProcess:
    """The same, through the barest process in between: hotsvc_tools.relayfloor, which
    copies bytes both ways over a TCP connection."""

    def __init__(
        self,
        relay: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.relay, self._reader, self._writer = relay, reader, writer

    @classmethod
    async def spawn(cls, claude_cmd: list[str], env: dict[str, str]) -> RelayedProcess:
        relay, port = await start_floor("hotsvc_tools.relayfloor", *claude_cmd, env=env)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=LINE_LIMIT)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(relay, reader, writer)

    async def turn(self, text: str = PROMPT) -> str:
        return await line_turn(self._reader, self._writer, text)

    async def close(self) -> None:
        self._writer.close()  # the relay ends its CLI and itself
        try:
            await asyncio.wait_for(self.relay.wait(), 10)
        except TimeoutError:
            self.relay.kill()
            await self.relay.wait()


async def start_floor(
    module: str, *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    """A floor's own process (`python -m MODULE ARGS`) and the port it prints first."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    try:
        return proc, int(await proc.stdout.readline())
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


async def line_turn(
    lines: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str = PROMPT
) -> str:
    """One turn over the CLI's own stream-json, until its `result`."""
    writer.write(protocol.encode(protocol.user_message(text)))
    await writer.drain()
    # Decode every line, as any caller must to use the events.
    while line := await lines.readline():
        message = json.loads(line)
        if message.get("type") == "result":
            return str(message.get("result", ""))
    raise RuntimeError("the CLI exited mid-turn")


async def read_event(call: PromptCall) -> pb.PromptResponse:
    response = await call.read()
    if not isinstance(response, pb.PromptResponse):
        raise RuntimeError(f"Prompt stream ended: {await call.code()}")
    return response


async def hotsvc_turn(call: PromptCall, text: str = PROMPT) -> str:
    await call.write(pb.PromptRequest(turn=pb.UserTurn(text=text)))
    while not (response := await read_event(call)).HasField("result"):
        pass
    return response.result.text


# `hotsvc serve` flags for every server of the run, after each part's own (bench --serve-args).
serve_args: list[str] = []
OPEN_ATTEMPTS = 10
# Opens that failed because the CLI process died as it started (see `open_session`).
spawn_failures: list[str] = []


async def open_session(stub: pb_grpc.HotSessionAsyncStub) -> tuple[PromptCall, pb.SessionOpened]:
    """A new session's stream, past any `progress` events of a wait in line. An open whose
    process died as it started is retried, as a caller would, and counted: the count should
    stay 0 (a uvloop fork in a busy gRPC server once crashed children; docs/benchmarks.md)."""
    for attempt in range(OPEN_ATTEMPTS):
        call = stub.Prompt(request_iterator=None)
        await call.write(pb.PromptRequest(open=pb.OpenSession()))
        try:
            while not (response := await read_event(call)).HasField("opened"):
                pass
            return call, response.opened
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() != grpc.StatusCode.UNAVAILABLE or "did not start" not in details:
                raise
            spawn_failures.append(details)
            if attempt == OPEN_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def timed(series: Series, action: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await action()
    series.seconds.append(time.perf_counter() - started)


async def wait_pool_full(stub: pb_grpc.HotSessionAsyncStub, target: int) -> None:
    # Outside the timed part: the next warm measurement must find a full pool. PoolStatus
    # has no push form, so poll it.
    while (await stub.PoolStatus(pb.PoolStatusRequest())).pool_size < target:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


@dataclass
class Served:
    pid: int  # the service's own process: its CPU and RSS, children excluded
    stub: pb_grpc.HotSessionAsyncStub


@contextlib.asynccontextmanager
async def serving(claude_cmd: list[str], env: dict[str, str], *flags: str) -> AsyncIterator[Served]:
    """`hotsvc serve` with `flags`, a channel to it, and its end (children with it)."""
    with tempfile.TemporaryDirectory() as data:
        extra = ["--data-dir", data, *flags, *serve_args]
        server, address = await start_server(" ".join(claude_cmd), env, extra, [])
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                yield Served(server.pid, pb_grpc.HotSessionStub(channel))
        finally:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 30)
            except TimeoutError:
                server.kill()
                await server.wait()


@contextlib.asynccontextmanager
async def real_cli_env() -> AsyncIterator[dict[str, str]]:
    """The real CLI's environment: the local scripted model in its own process (so it does
    not share the bench's CPU time), and a throwaway HOME."""
    model, url = await start_model()
    try:
        with tempfile.TemporaryDirectory() as home:
            yield {
                **os.environ,
                **local_model_env(url, Path(home) / ".claude"),
                "HOME": home,
                "TMPDIR": home,
            }
    finally:
        model.terminate()
        await model.wait()


async def gather_limited(count: int, limit: int, make: Callable[[], Awaitable[object]]) -> None:
    """`count` calls of `make`, at most `limit` at once (process starts on few cores)."""
    gate = asyncio.Semaphore(limit)

    async def one() -> None:
        async with gate:
            await make()

    await asyncio.gather(*(one() for _ in range(count)))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def table(series: list[Series]) -> list[str]:
    lines = ["| measure | p50 ms | p99 ms | n |", "| --- | --- | --- | --- |"]
    lines += [f"| {s.name} | {ms(s.p50)} | {ms(s.p99)} | {len(s.seconds)} |" for s in series]
    return lines


def ratio_line(a: Series, b: Series) -> str:
    return f"- {a.name} / {b.name}: **{a.p50 / b.p50:.3f}** at p50, {a.p99 / b.p99:.3f} at p99"


def targets_table(targets: list[Target]) -> str:
    verdict = {True: "met", False: "**not met**", None: "reported"}
    lines = ["### Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    lines += [f"| {t.target} | {t.measured} | {verdict[t.met]} |" for t in targets]
    return "\n".join(lines) + "\n"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
