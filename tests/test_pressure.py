"""Pressure on the real CLI: opens past the cap, a client that never reads, silent
streams, a stopped child. CI runs the short form; `make pressure` the full one
(HOTSVC_PRESSURE=full) and prints the figures recorded in docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import psutil
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.localmodel import LocalModelServer
from tests.conftest import (
    DEADLINE,
    EOF,
    REAL_CLAUDE,
    Conversation,
    ServerProcess,
    StartService,
    eventually,
    pid_alive,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]
FULL = os.environ.get("HOTSVC_PRESSURE") == "full"


@dataclass
class Figures:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(f"\npressure: {line}")


FIGURES = Figures()


async def test_opens_past_the_cap_are_all_answered(
    start_service: StartService, local_model: LocalModel
) -> None:
    opens, cap = (64, 8) if FULL else (16, 4)
    _, env = local_model
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),),
        child_env=env,
        pool_size=2,
        max_sessions=cap,
        open_queue_timeout=10.0,
    )
    answers: list[tuple[str, float]] = []

    async def caller(n: int) -> None:
        talk = Conversation(live.stub)
        started = time.monotonic()
        try:
            await talk.open()
        except grpc.aio.AioRpcError as refused:
            answers.append((refused.code().name, time.monotonic() - started))
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
            return
        answers.append(("OK", time.monotonic() - started))
        assert (await talk.ask(f"Remember {n}")).text == "OK"
        assert await talk.finish() == grpc.StatusCode.OK  # idle now: evictable

    await asyncio.gather(*(caller(n) for n in range(opens)))
    assert len(answers) == opens  # every open answered, none left hanging
    served = sum(1 for code, _ in answers if code == "OK")
    assert served > cap  # waiting opens were served by evicting idle holders
    status = await live.status()
    assert status.active_sessions + status.pool_size <= cap
    times = sorted(t for _, t in answers)
    FIGURES.add(
        f"{opens} opens at a cap of {cap}: {served} served, {opens - served} refused; "
        f"answered in p50 {statistics.median(times):.2f}s, max {times[-1]:.2f}s"
    )


async def test_a_client_that_never_reads_cannot_grow_the_service(
    local_model: LocalModel,
) -> None:
    turns = 10_000 if FULL else 1_000
    _, env = local_model
    args = ("--claude-cmd", str(REAL_CLAUDE), "--pool-size", "1")
    async with ServerProcess(*args, env=env) as server:
        assert server.proc is not None
        service = psutil.Process(server.proc.pid)
        stub = server.stub()
        talk = Conversation(stub)
        opened = await talk.open()
        assert (await talk.ask("Remember 3")).text == "OK"
        baseline = service.memory_info().rss
        for n in range(turns):  # written as fast as flow control lets them go; none read
            await talk.send_turn(f"echo {n}", turn_id=f"t{n}")

        async def stalled() -> bool:
            # The session stops taking turns once its events wait for the absent reader.
            before = await session_turns(stub)
            await asyncio.sleep(0.5)  # paces the probe; eventually() bounds the wait
            return await session_turns(stub) == before

        await eventually(stalled, "the session waits for the reader")
        peak = service.memory_info().rss
        await talk.call.done_writing()
        results, refused = set(), set()
        while (response := await talk.call.read()) is not EOF:
            assert isinstance(response, pb.PromptResponse)
            if response.HasField("result"):
                results.add(response.turn_id)
            elif response.HasField("error"):
                assert response.error.reason == "CAPACITY_EXHAUSTED"
                refused.add(response.turn_id)
        assert not results & refused and len(results | refused) == turns
        again = Conversation(stub)
        await again.open(session_id=opened.session_id)
        assert (await again.ask("What number?")).text == "3"
        growth_mb = (peak - baseline) / 2**20
        assert growth_mb < 64, f"service grew {growth_mb:.1f} MB for a client that never read"
        FIGURES.add(
            f"{turns} turns from a client that never reads: service RSS "
            f"{baseline / 2**20:.0f} -> {peak / 2**20:.0f} MB; {len(results)} ran, "
            f"{len(refused)} refused"
        )


async def session_turns(stub: Any) -> int:
    status = await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
    return sum(s.turns for s in status.sessions)


async def test_silent_streams_are_closed_at_the_open_deadline(
    start_service: StartService,
) -> None:
    streams = 200 if FULL else 50
    live = await start_service(open_timeout=0.5)
    calls = [live.stub.Prompt(timeout=DEADLINE) for _ in range(streams)]  # type: ignore[call-arg]
    codes = []
    for call in calls:
        try:
            await call.read()
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * streams
    FIGURES.add(f"{streams} streams that never sent: all closed DEADLINE_EXCEEDED")


async def test_a_stopped_child_ends_in_a_watchdog_result(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    server.set_slow_delay(0.2)
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),), child_env=env, turn_inactivity_timeout=3.0
    )
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 5")).text == "OK"
    await talk.send_turn("slow")
    while not (await talk.read()).HasField("text_delta"):
        pass
    os.kill(opened.pid, signal.SIGSTOP)
    started = time.monotonic()
    result = (await talk.until_result())[-1].result
    took = time.monotonic() - started
    assert result.subtype == "watchdog_timeout"

    async def dead() -> bool:
        return not pid_alive(opened.pid)

    await eventually(dead, "the stopped child was killed")
    assert (await talk.ask("What number?")).text == "5"  # resumed
    FIGURES.add(
        f"a SIGSTOPped child: watchdog_timeout {took:.1f}s after it stopped (inactivity timeout 3s)"
    )
