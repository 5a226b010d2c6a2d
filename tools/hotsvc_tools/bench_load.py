"""`make bench`'s parts under load: concurrent sessions (throughput against as many direct
pipes), idle and stopped sessions (the service's RSS per session), a burst of new sessions,
and waves of them (sustained demand, which the elastic pool is for)."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable

import psutil
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc_tools.bench_kit import (
    DirectProcess,
    Part,
    PromptCall,
    Series,
    Target,
    gather_limited,
    hotsvc_turn,
    load_average,
    ms,
    open_session,
    serving,
    table,
    wait_pool_full,
)
from hotsvc_tools.hotturn import cpu
from hotsvc_tools.soak.procfs import rss_mb

LEVELS = (1, 8, 32)
# Windows per side and level, in the order hotsvc, direct, direct, hotsvc, repeated: the
# same CLI processes' own CPU per turn drifts by a third between consecutive windows (44 to
# 68 ms at 8 sessions, docs/benchmarks.md), which one such round does not cancel.
ORDER = ("via", "direct", "direct", "via") * 2
# Waves of new sessions: the elastic pool's target counts the last 10 s of demand, so waves
# closer than that find it grown; a fixed pool of 2 serves two of each wave warm.
WAVES, WAVE_SIZE, WAVE_GAP = 5, 6, 8.0
POOLS = (("--pool-size", "2"), ("--pool-min", "2", "--pool-max", "8"))
CLI_BUDGET_MB = 300  # a real CLI process's RSS with headroom, before holding many at once
Turn = Callable[[], Awaitable[object]]


async def drive(turns: list[Turn], warmup: float, window: float) -> tuple[int, int]:
    """Each of `turns` in a loop, one turn after another: the turns that end within
    `window` seconds after a `warmup` (so every loop is mid-stride: steady state, not the
    start or the drain, whose length is one turn's, seconds at 32 sessions). Returns
    (turns in the window, all turns)."""
    ended: list[float] = []
    started = time.perf_counter()
    stop = started + warmup + window

    async def loop(turn: Turn) -> None:
        while time.perf_counter() < stop:
            await turn()
            ended.append(time.perf_counter())

    await asyncio.gather(*(loop(turn) for turn in turns))
    return sum(started + warmup <= t < stop for t in ended), len(ended)


async def open_hot(stub: pb_grpc.HotSessionAsyncStub, count: int) -> list[PromptCall]:
    """`count` sessions, opened at once (hotsvc's spawn line paces them), past their first
    turn and one hot turn."""

    async def one() -> PromptCall:
        call, _ = await open_session(stub)
        for _ in range(2):
            await hotsvc_turn(call)
        return call

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def spawn_pipes(
    claude_cmd: list[str], env: dict[str, str], count: int
) -> list[DirectProcess]:
    pipes: list[DirectProcess] = []

    async def one() -> None:
        pipe = await DirectProcess.spawn(claude_cmd, env)
        pipes.append(pipe)
        for _ in range(2):
            await pipe.turn()

    await gather_limited(count, os.cpu_count() or 1, one)  # as hotsvc's line does
    return pipes


async def throughput(claude_cmd: list[str], env: dict[str, str], window: float) -> Part:
    """Per level: N hotsvc sessions and N direct pipes (this one asyncio program drives
    both), windows in ORDER so drift hits both alike."""
    rows = ["| sessions | via hotsvc turns/s | direct turns/s | ratio | service CPU ms/turn |"]
    rows.append("| --- | --- | --- | --- | --- |")
    targets = []
    for level in LEVELS:
        flags = ("--pool-size", "0", "--max-sessions", str(level + 2))
        async with serving(claude_cmd, env, *flags) as served:
            calls = await open_hot(served.stub, level)
            pipes = await spawn_pipes(claude_cmd, env, level)
            sides: dict[str, list[Turn]] = {
                "via": [functools.partial(hotsvc_turn, c) for c in calls],
                "direct": [p.turn for p in pipes],
            }
            totals = {"via": 0, "direct": 0}
            used, via_turns = 0.0, 0
            try:
                for side in ORDER:
                    before = cpu(served.pid)
                    counted, turns = await drive(sides[side], window / 2, window)
                    totals[side] += counted
                    if side == "via":  # over all its turns, the warm-up's and drain's too
                        used += cpu(served.pid) - before
                        via_turns += turns
            finally:
                for call in calls:
                    call.cancel()
                for pipe in pipes:
                    await pipe.close()
        seconds = len(ORDER) // 2 * window  # counted per side
        via_rate, direct_rate = totals["via"] / seconds, totals["direct"] / seconds
        ratio, per_turn = via_rate / direct_rate, used / via_turns
        rows.append(
            f"| {level} | {via_rate:.1f} | {direct_rate:.1f} | **{ratio:.3f}** | {ms(per_turn)} |"
        )
        targets.append(
            Target(
                f"throughput, {level} sessions: via hotsvc / direct ≥ 0.9",
                f"{ratio:.3f} (service CPU {ms(per_turn)} ms/turn)",
                ratio >= 0.9,
            )
        )
    text = [
        "### Throughput, concurrent sessions doing hot turns",
        "",
        f"Each level: {len(ORDER) // 2} {window:.0f} s windows per side (hotsvc, direct, direct, "
        f"hotsvc, twice), each after {window / 2:.0f} s of warm-up; load average after: "
        f"{load_average()}.",
        "",
        *rows,
    ]
    return Part("\n".join(text) + "\n", targets)


async def memory(claude_cmd: list[str], env: dict[str, str], counts_text: str) -> Part:
    """The service's own RSS (children excluded) with N idle sessions attached, each past
    one turn. A session opened, used and deleted first puts one-time costs (lazy imports,
    gRPC's first stream) before RSS_0."""
    counts = sorted(int(c) for c in counts_text.split(","))
    held: list[PromptCall] = []
    flags = ("--pool-size", "0", "--max-sessions", str(counts[-1] + 2))
    rows = ["| idle sessions | service RSS MB | per session KB |", "| --- | --- | --- |"]
    per_session: dict[int, float] = {}
    rss_at: dict[int, float] = {}
    async with serving(claude_cmd, env, *flags) as served:
        call, opened = await open_session(served.stub)
        await hotsvc_turn(call)
        call.cancel()
        await served.stub.DeleteSession(pb.DeleteSessionRequest(session_id=opened.session_id))
        await asyncio.sleep(2)
        rss0 = rss_mb(served.pid)
        rows.append(f"| 0 | {rss0:.1f} | |")
        try:
            for count in counts:
                free_mb = psutil.virtual_memory().available / 2**20
                if (count - len(held)) * CLI_BUDGET_MB > free_mb:
                    rows.append(f"| {count} | skipped: {free_mb:.0f} MB available | |")
                    break
                held += await open_hot(served.stub, count - len(held))
                await asyncio.sleep(2)  # the opens' transient buffers freed
                rss = rss_mb(served.pid)
                per_session[count] = (rss - rss0) * 1024 / count
                rss_at[count] = rss
                rows.append(f"| {count} | {rss:.1f} | {per_session[count]:.0f} |")
        finally:
            for call in held:
                call.cancel()
    text = [
        "### Memory, idle sessions",
        "",
        "`--pool-size 0`; each session attached (its Prompt stream open) and past one turn;",
        "per session = (RSS_n - RSS_0) / n, the service's own VmRSS, children excluded.",
        "",
        *rows,
    ]
    if len(rss_at) > 1:  # the slope leaves out what the first sessions grow once
        (low, low_rss), (high, high_rss) = min(rss_at.items()), max(rss_at.items())
        slope = (high_rss - low_rss) * 1024 / (high - low)
        text += ["", f"- each session past {low} (the slope from {low} to {high}): {slope:.0f} KB"]
    targets = [
        Target(f"service RSS per idle session at {n} ≤ 100 KB", f"{kb:.0f} KB", kb <= 100)
        for n, kb in per_session.items()
    ]
    return Part("\n".join(text) + "\n", targets)


async def stopped(claude_cmd: list[str], env: dict[str, str], count: int) -> Part:
    """The service's own RSS per stopped session: `count` sessions opened, used for a turn
    and closed (each stays resumable), after 50 that put the one-time costs before RSS_0."""
    async with serving(claude_cmd, env, "--pool-size", "2") as served:
        await open_use_close(served.stub, 50)
        rss0 = rss_mb(served.pid)
        await open_use_close(served.stub, count)
        rss = rss_mb(served.pid)
    kb = (rss - rss0) * 1024 / count
    text = [
        "### Memory, stopped sessions",
        "",
        f"{count} sessions opened, used for one turn and closed (CloseSession: each stays",
        "resumable), four at a time, after 50 more; the service's own VmRSS.",
        "",
        "| stopped sessions | service RSS MB | per session KB |",
        "| --- | --- | --- |",
        f"| 0 | {rss0:.1f} | |",
        f"| {count} | {rss:.1f} | {kb:.1f} |",
    ]
    target = Target("service RSS per stopped session", f"{kb:.1f} KB", None)
    return Part("\n".join(text) + "\n", [target])


async def open_use_close(stub: pb_grpc.HotSessionAsyncStub, count: int) -> None:
    await gather_limited(count, 4, functools.partial(one_short_session, stub))


async def one_short_session(stub: pb_grpc.HotSessionAsyncStub) -> tuple[pb.SessionOpened, float]:
    """A session opened, used for one turn and closed: how it opened, and the seconds from
    the open to its first result."""
    started = time.perf_counter()
    call, opened = await open_session(stub)
    try:
        await hotsvc_turn(call)
        seconds = time.perf_counter() - started
    finally:
        call.cancel()
    await stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    return opened, seconds


async def burst(claude_cmd: list[str], env: dict[str, str], count: int) -> Part:
    """`count` sessions opened at once, each sending a turn as soon as it is open: the time
    from open to first result. With the fixed pool of 2, then the elastic one."""
    rows: list[Series] = []
    notes, targets = [], []
    for pool in POOLS:
        shown = " ".join(pool)
        series = Series(f"{count} opened at once, `{shown}`: open → first result")
        flags = (*pool, "--max-sessions", str(count + 10))
        async with serving(claude_cmd, env, *flags) as served:
            await wait_pool_full(served.stub, 2)
            warm, elapsed = await burst_once(served.stub, count, series)
        rows.append(series)
        notes.append(f"- `{shown}`: {warm} of {count} started warm, all done in {elapsed:.1f} s")
        targets.append(
            Target(
                f"burst of {count}, `{shown}`: time to first result p50 / p99",
                f"{series.p50:.2f} s / {series.p99:.2f} s",
                None,
            )
        )
    text = ["### Burst of new sessions", "", *table(rows), "", *notes]
    text.append(f"- load average after: {load_average()}")
    return Part("\n".join(text) + "\n", targets)


async def burst_once(
    stub: pb_grpc.HotSessionAsyncStub, count: int, series: Series
) -> tuple[int, float]:
    """Returns how many opens found a warm process, and the seconds until all had a result."""
    calls: list[PromptCall] = []
    starts: list[bool] = []

    async def one() -> None:
        started = time.perf_counter()
        call, opened = await open_session(stub)
        calls.append(call)
        starts.append(opened.start == pb.SESSION_START_WARM)
        await hotsvc_turn(call)
        series.seconds.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one() for _ in range(count)))
    finally:
        for call in calls:
            call.cancel()
    return sum(starts), time.perf_counter() - started


async def waves(claude_cmd: list[str], env: dict[str, str]) -> Part:
    """WAVES waves of WAVE_SIZE opens, one every WAVE_GAP s, each session closed after its
    first result: how many found a warm process, and open to first result, fixed pool
    against elastic."""
    rows: list[Series] = []
    notes, targets = [], []
    for pool in POOLS:
        shown = " ".join(pool)
        series = Series(f"{WAVES} waves of {WAVE_SIZE}, `{shown}`: open → first result")
        async with serving(claude_cmd, env, *pool) as served:
            await wait_pool_full(served.stub, 2)
            warm_per_wave = await waves_once(served.stub, series)
        rows.append(series)
        warm = sum(warm_per_wave)
        each = ", ".join(map(str, warm_per_wave))
        notes.append(f"- `{shown}`: {warm} of {len(series.seconds)} started warm ({each})")
        targets.append(
            Target(
                f"{WAVES} waves of {WAVE_SIZE} opens {WAVE_GAP:g} s apart, `{shown}`: "
                "started warm; time to first result p50 / p99",
                f"{warm} of {len(series.seconds)}; {series.p50:.2f} s / {series.p99:.2f} s",
                None,
            )
        )
    heading = f"### Waves of new sessions ({WAVE_SIZE} every {WAVE_GAP:g} s)"
    text = [heading, "", *table(rows), "", *notes]
    text.append(f"- load average after: {load_average()}")
    return Part("\n".join(text) + "\n", targets)


async def waves_once(stub: pb_grpc.HotSessionAsyncStub, series: Series) -> list[int]:
    """Each wave's count of warm starts; a wave starts on schedule whether or not the one
    before it is done, as independent callers would."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    counts = [0] * WAVES

    async def one(wave: int) -> None:
        opened, seconds = await one_short_session(stub)
        counts[wave] += opened.start == pb.SESSION_START_WARM
        series.seconds.append(seconds)

    async with asyncio.TaskGroup() as group:
        for wave in range(WAVES):
            await asyncio.sleep(max(0.0, first + wave * WAVE_GAP - loop.time()))
            for _ in range(WAVE_SIZE):
                group.create_task(one(wave))
    return counts
