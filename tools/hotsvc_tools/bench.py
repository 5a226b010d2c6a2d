"""`make bench`: hotsvc against the floor, side by side in one run, every figure of issue 15.

Parts (`--only PART`, repeatable; all by default):
- hot: a hot turn through hotsvc versus the same turn written straight to the same kind of
  process over its pipes and through a bare relay (the least any process in between
  adds), the same events from gRPC alone, grpcio and grpclib (the floor under any gRPC
  service), and the service's own CPU per hot turn; with the pinned CLI and an older one
  (`--claude-cmd`);
- first: a new session's first turn from the warm pool, versus its later hot turns and a
  cold `claude -p` per prompt;
- throughput, memory, burst, waves: concurrent sessions, idle sessions, a burst of opens,
  waves of opens (sustained demand: the fixed pool against the elastic one)
  (hotsvc_tools.bench_load);
- emulator: hot and first turns with the stand-in CLI (no model, no node), and the
  service's RSS per stopped session (hundreds opened, used and closed).

Measurements alternate between the two sides so drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

# Before grpc is imported: this process starts CLIs with uvloop's fork() (hotsvc.cli).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
import uvloop
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc_tools import bench_kit, bench_load, grpcfloor
from hotsvc_tools.bench_kit import (
    PROMPT,
    DirectProcess,
    Part,
    PromptCall,
    RelayedProcess,
    Series,
    Target,
    hotsvc_turn,
    load_average,
    ms,
    open_session,
    ratio_line,
    read_event,
    real_cli_env,
    serving,
    start_floor,
    table,
    targets_table,
    timed,
    wait_pool_full,
)
from hotsvc_tools.hotturn import cpu
from hotsvc_tools.paths import PROJECT_CLAUDE, REPO

OLD_CLAUDE = REPO / "tests" / "claude-versions" / "2.1.197" / "node_modules" / ".bin" / "claude"
PARTS = ("hot", "first", "throughput", "memory", "burst", "waves", "emulator")


@contextlib.asynccontextmanager
async def grpc_floor(
    turn: grpcfloor.Recorded, *flags: str
) -> AsyncIterator[tuple[int, PromptCall]]:
    """gRPC alone replaying `turn` (hotsvc_tools.grpcfloor): its pid and a Prompt stream."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "turn.jsonl"
        grpcfloor.save(path, turn)
        server, port = await start_floor("hotsvc_tools.grpcfloor", *flags, str(path))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = pb_grpc.HotSessionStub(channel).Prompt(request_iterator=None)
                await call.write(pb.PromptRequest(open=pb.OpenSession()))
                await read_event(call)
                yield server.pid, call
                call.cancel()
        finally:
            server.kill()
            await server.wait()


async def bench_grpc_floor(
    turn: grpcfloor.Recorded, turns: int, name: str = "gRPC alone", *flags: str
) -> tuple[Series, float]:
    """The same responses through a gRPC server alone: their latency back to back, and the
    server's CPU per turn with them spaced as the real turn spaced them."""
    series = Series(f"same events, {name}")
    async with grpc_floor(turn, *flags) as (pid, call):
        for _ in range(5):
            await hotsvc_turn(call)
            await hotsvc_turn(call, grpcfloor.SPACED)
        for _ in range(turns):
            await timed(series, lambda: hotsvc_turn(call))
        before = cpu(pid)
        for _ in range(turns):
            await hotsvc_turn(call, grpcfloor.SPACED)
        return series, (cpu(pid) - before) / turns


async def capture_turn(call: PromptCall) -> list[tuple[float, pb.PromptResponse]]:
    """One turn's responses, each with its offset from the turn's write."""
    started = time.perf_counter()
    await call.write(pb.PromptRequest(turn=pb.UserTurn(text=PROMPT)))
    events = [(time.perf_counter() - started, await read_event(call))]
    while not events[-1][1].HasField("result"):
        response = await read_event(call)
        events.append((time.perf_counter() - started, response))
    return events


async def bench_hot(
    claude_cmd: list[str], env: dict[str, str], label: str, turns: int, cpu_turns: int
) -> Part:
    """Hot turns alternating between hotsvc and a direct pipe, then hotsvc's CPU over a
    block of hot turns of its own. No pool, so no idle process runs beside them.

    Beside hotsvc's CPU per turn, its two floors: what the direct side (this process,
    reading the CLI's pipes) spends on a turn, and what gRPC alone spends sending the
    same responses, spaced as the real turn sent them."""
    via, direct = Series("hot turn via hotsvc"), Series("hot turn direct (floor)")
    relayed = Series("hot turn through a bare relay")
    direct_cpu = 0.0
    async with serving(claude_cmd, env, "--pool-size", "0") as served:
        call, _ = await open_session(served.stub)
        floor = await DirectProcess.spawn(claude_cmd, env)
        relay = await RelayedProcess.spawn(claude_cmd, env)
        try:
            recorded = await capture_turn(call)
            await floor.turn()
            await relay.turn()
            for _ in range(5):  # warm every path up before measuring
                await hotsvc_turn(call)
                await floor.turn()
                await relay.turn()
            for _ in range(turns):
                await timed(via, lambda: hotsvc_turn(call))
                before = time.process_time()
                await timed(direct, floor.turn)
                direct_cpu += time.process_time() - before
                await timed(relayed, relay.turn)
            await floor.close()
            await relay.close()
            before, started = cpu(served.pid), time.perf_counter()
            for _ in range(cpu_turns):
                await hotsvc_turn(call)
            per_turn = (cpu(served.pid) - before) / cpu_turns
            wall = (time.perf_counter() - started) / cpu_turns
        finally:
            call.cancel()
            await floor.close()
            await relay.close()
    grpc_alone, grpc_cpu = await bench_grpc_floor(recorded, turns)
    grpclib_alone, grpclib_cpu = await bench_grpc_floor(
        recorded, turns, "grpclib alone", "--grpclib"
    )
    pipes_cpu = direct_cpu / turns
    p50, p99 = via.p50 / direct.p50, via.p99 / direct.p99
    series = [via, direct, relayed, grpc_alone, grpclib_alone]
    lines = [f"### Hot turn, {label}", "", *table(series), ""]
    lines += [
        ratio_line(via, direct),
        ratio_line(relayed, direct) + f": hotsvc_tools.relayfloor copies bytes both ways "
        f"(no parsing, no store, no gRPC) and adds {ms(relayed.p50 - direct.p50)} ms at p50, "
        "the least one more process in between adds here",
        f"- hotsvc adds **{ms(via.p50 - direct.p50)} ms** at p50 and "
        f"{ms(via.p99 - direct.p99)} ms at p99; the floor, {len(recorded)} events through "
        f"gRPC alone: {ms(grpc_alone.p50)} ms at p50, {ms(grpc_alone.p99)} ms at p99",
        f"- service CPU per hot turn (its own process, children excluded, over {cpu_turns} "
        f"turns): **{ms(per_turn)} ms** (wall {ms(wall)} ms per turn)",
        f"- its floors, CPU per turn: the direct side reading the CLI's pipes (json per "
        f"line) **{ms(pipes_cpu)} ms**; gRPC alone sending the same {len(recorded)} "
        f"responses spaced as in the turn **{ms(grpc_cpu)} ms**; together "
        f"{ms(pipes_cpu + grpc_cpu)} ms",
        f"- the same responses from grpclib (HTTP/2 in pure Python on the loop, no core "
        f"threads): **{ms(grpclib_cpu)} ms** of CPU a turn, {grpclib_cpu / grpc_cpu:.2f} of "
        "grpcio's",
    ]
    return Part(
        "\n".join(lines) + "\n",
        [
            Target(
                f"{label}: service CPU per hot turn ≤ 1.0 ms (floors: pipes + gRPC alone)",
                f"{ms(per_turn)} ms ({ms(pipes_cpu)} + {ms(grpc_cpu)} ms)",
                per_turn <= 1e-3,
            ),
            Target(
                f"{label}: hot p50 via hotsvc / direct ≤ 1.05 (floor: a bare relay)",
                f"{p50:.3f} ({relayed.p50 / direct.p50:.3f})",
                p50 <= 1.05,
            ),
            Target(f"{label}: hot p99 via hotsvc / direct ≤ 1.10", f"{p99:.3f}", p99 <= 1.10),
            Target(
                f"{label}: hotsvc's added ms at p50 / p99 (floor: gRPC alone)",
                f"{ms(via.p50 - direct.p50)} / {ms(via.p99 - direct.p99)} "
                f"({ms(grpc_alone.p50)} / {ms(grpc_alone.p99)})",
                None,
            ),
        ],
    )


async def one_shot(claude_cmd: list[str], env: dict[str, str]) -> None:
    """What a caller without hotsvc does: `claude -p PROMPT`, one process per prompt."""
    proc = await asyncio.create_subprocess_exec(
        *claude_cmd, "-p", PROMPT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    output, _ = await proc.communicate()
    if proc.returncode != 0 or b"OK" not in output:
        raise RuntimeError(f"claude -p failed ({proc.returncode}): {output[-200:]!r}")


async def bench_first(
    claude_cmd: list[str], env: dict[str, str], label: str, sessions: int, cold_one_shot: bool
) -> Part:
    """Per new session: its first turn from a full warm pool, then its next hot turns
    (the pool full again first, so its refill does not land on them), and a cold start."""
    pool_size, hot_turns = 2, 3
    warm, hot = Series("first turn, warm pool via hotsvc"), Series("its next hot turns")
    cold = Series("cold spawn per prompt (claude -p)" if cold_one_shot else "cold spawn, turn")

    async def cold_first() -> None:
        if cold_one_shot:
            return await one_shot(claude_cmd, env)
        process = await DirectProcess.spawn(claude_cmd, env)
        await process.turn()
        await process.close()

    async with serving(claude_cmd, env, "--pool-size", str(pool_size)) as served:
        for _ in range(sessions):
            await wait_pool_full(served.stub, pool_size)
            call, opened = await open_session(served.stub)
            assert opened.start == pb.SESSION_START_WARM, opened
            await timed(warm, functools.partial(hotsvc_turn, call))
            await wait_pool_full(served.stub, pool_size)
            for _ in range(hot_turns):
                await timed(hot, functools.partial(hotsvc_turn, call))
            call.cancel()
            await served.stub.DeleteSession(pb.DeleteSessionRequest(session_id=opened.session_id))
            await timed(cold, cold_first)
    first_hot = warm.p50 / hot.p50
    lines = [f"### New session, {label}", "", *table([warm, hot, cold]), ""]
    lines += [ratio_line(warm, hot), ratio_line(warm, cold)]
    return Part(
        "\n".join(lines) + "\n",
        [
            Target(
                f"{label}: first turn / hot turn ≤ 2.0 (p50)", f"{first_hot:.2f}", first_hot <= 2.0
            )
        ],
    )


async def bench_emulator(turns: int, sessions: int, stopped: int) -> Part:
    emulator = [str(Path(sys.executable).parent / "hotsvc-emulator")]
    with tempfile.TemporaryDirectory() as config_dir:
        env = {**os.environ, "CLAUDE_CONFIG_DIR": config_dir, "HOTSVC_EMU_TOKEN_DELAY": "0"}
        label = "stand-in CLI (hotsvc-emulator, zero token delay)"
        hot = await bench_hot(emulator, env, label, turns, turns)
        first = await bench_first(emulator, env, label, sessions, cold_one_shot=False)
        # Hundreds of sessions: the stand-in CLI starts in a fraction of the real one's time.
        kept = await bench_load.stopped(emulator, env, stopped)
    # The hot and first parts' targets are the real CLI's.
    return Part(hot.text + "\n" + first.text + "\n" + kept.text, kept.targets)


async def run(args: argparse.Namespace) -> str:
    only = set(args.only or PARTS)
    bench_kit.serve_args[:] = args.serve_args.split()
    pinned, old = [str(PROJECT_CLAUDE)], args.claude_cmd.split()
    if not PROJECT_CLAUDE.exists():
        raise SystemExit(f"{PROJECT_CLAUDE} is missing: run `make setup-dev`")
    parts: list[Part] = []

    async def part(name: str, make: Callable[[], Awaitable[Part]]) -> None:
        if name in only:
            print(f"bench: {name} (load average {load_average()})", file=sys.stderr, flush=True)
            parts.append(await make())
            print(parts[-1].text, flush=True)  # as it comes: a later part's failure keeps it

    async with real_cli_env() as env:
        pinned_label = f"pinned CLI {await version(pinned, env)}"
        old_label = f"older CLI {await version(old, env)}" if old else ""
        await part("hot", lambda: bench_hot(pinned, env, pinned_label, args.turns, args.cpu_turns))
        if old:
            await part("hot", lambda: bench_hot(old, env, old_label, args.turns, args.cpu_turns))
        await part("first", lambda: bench_first(pinned, env, pinned_label, args.sessions, True))
        await part("throughput", lambda: bench_load.throughput(pinned, env, args.window))
        await part("memory", lambda: bench_load.memory(pinned, env, args.idle_sessions))
        await part("burst", lambda: bench_load.burst(pinned, env, args.burst))
        await part("waves", lambda: bench_load.waves(pinned, env))
    await part(
        "emulator",
        lambda: bench_emulator(args.emulator_turns, args.emulator_sessions, args.stopped_sessions),
    )
    header = (
        f"Recorded {datetime.date.today()}, load average at the end {load_average()} "
        f"(1, 5, 15 min), {os.cpu_count()} cores; `hotsvc serve` extra flags: "
        f"{' '.join(bench_kit.serve_args) or 'none'}; opens retried because the CLI "
        f"process died as it started: {len(bench_kit.spawn_failures)}.\n"
    )
    return header + "\n" + targets_table([t for p in parts for t in p.targets])


async def version(claude_cmd: list[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *claude_cmd, "--version", stdout=asyncio.subprocess.PIPE, env=env
    )
    output, _ = await proc.communicate()
    return output.decode().split()[0] if output else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hotsvc_tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", action="append", choices=PARTS, help="run this part; repeat")
    parser.add_argument(
        "--claude-cmd",
        default=str(OLD_CLAUDE) if OLD_CLAUDE.exists() else "",
        help="the older CLI the hot part also runs ('' for none; default: %(default)s)",
    )
    parser.add_argument("--turns", type=int, default=200, help="hot turns per side")
    parser.add_argument("--cpu-turns", type=int, default=300, help="hot turns for CPU/turn")
    parser.add_argument("--sessions", type=int, default=10, help="new sessions (first)")
    parser.add_argument("--window", type=float, default=6.0, help="seconds per throughput window")
    parser.add_argument("--idle-sessions", default="16,64", help="memory: idle session counts")
    parser.add_argument("--burst", type=int, default=32, help="sessions opened at once")
    parser.add_argument("--serve-args", default="", help="more `hotsvc serve` flags, every server")
    parser.add_argument("--emulator-turns", type=int, default=300)
    parser.add_argument("--emulator-sessions", type=int, default=20)
    parser.add_argument(
        "--stopped-sessions", type=int, default=1000, help="opened, used and closed (emulator)"
    )
    # uvloop, as hotsvc runs: the direct side's CPU is a floor on the same loop.
    print(uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
