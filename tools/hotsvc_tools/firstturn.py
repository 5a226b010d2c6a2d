"""Where a new session's first turn goes: the real CLI over its pipes, no service between.

    python -m hotsvc_tools.firstturn [--runs 5] [--claude-cmd CMD] [--idle 2] [--way NAME]
        [--strace DIR]

Each run spawns a CLI as hotsvc does (same stream-json flags, its own session id), primes
it one way, leaves it idle as a warm pool would, then times three turns (write → result)
and counts the model server's requests in each. The priming ways are the handshake alone,
the handshake plus one control request that calls no model and adds nothing to the
conversation, or a local slash command the CLI answers itself. With --strace (needs
strace), one more run a way under `strace -f -c`, the first turn's system calls apart from
the second's. The CLI's own timeline of a turn: `--debug-file FILE` in --claude-cmd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hotsvc.claude import protocol
from hotsvc.local import local_model_env
from hotsvc_tools.bench_kit import spawn_cli
from hotsvc_tools.hotturn import start_model
from hotsvc_tools.paths import PROJECT_CLAUDE

PROMPT = "Remember 42"
# name -> the control requests sent after `initialize` (None: not even `initialize`).
WAYS: dict[str, list[tuple[str, dict[str, Any]]] | None] = {
    "nothing": None,
    "initialize": [],
    "get_context_usage": [("get_context_usage", {"detail": "summary"})],
    "get_settings": [("get_settings", {})],
    "mcp_status": [("mcp_status", {})],
    "reload_plugins": [("reload_plugins", {})],
    "list_models": [("list_models", {})],
    "list_permission_rules": [("list_permission_rules", {})],
    "all": [
        ("get_context_usage", {"detail": "summary"}),
        ("get_settings", {}),
        ("mcp_status", {}),
        ("list_permission_rules", {}),
    ],
}
SLASH = "/cost"  # answered by the CLI itself: no model request


@dataclass
class Run:
    turns: list[float] = field(default_factory=list)  # seconds, write → result
    requests: list[int] = field(default_factory=list)  # model requests during each
    cpu: list[float] = field(default_factory=list)  # the CLI's CPU seconds during each
    answers: dict[str, str] = field(default_factory=dict)  # control subtype -> outcome


class Model:
    """The local scripted model, its request log read to count requests."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url, self.requests = proc, url, 0
        self._task = asyncio.create_task(self._count())

    @classmethod
    async def start(cls) -> Model:
        return cls(*await start_model(log_requests=True))

    async def _count(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            if b'"POST ' in line:
                self.requests += 1

    async def stop(self) -> None:
        self.proc.terminate()
        await self.proc.wait()
        self._task.cancel()


class Cli:
    """One CLI process over its pipes: control requests and turns, one reader."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, command: list[str], env: dict[str, str], cwd: str) -> Cli:
        return cls(await spawn_cli(command, env, cwd))

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if message.get("type") == "control_response":
                response = message.get("response", {})
                waiter = self._waiting.pop(response.get("request_id", ""), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)
            else:
                await self._lines.put(message)

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(protocol.encode(message))
        await self.proc.stdin.drain()

    async def request(self, subtype: str, **fields: Any) -> str:
        """Send a control request; its outcome ("success" or the error text)."""
        request_id = uuid.uuid4().hex
        answer = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        await self._write(protocol.control_request(request_id, subtype, **fields))
        response = await asyncio.wait_for(answer, 60)
        if response.get("subtype") == "success":
            return "success"
        return f"error: {str(response.get('error', ''))[:80]}"

    async def turn(self, text: str = PROMPT) -> float:
        """Seconds from writing the user message to its `result`."""
        started = time.perf_counter()
        await self._write(protocol.user_message(text))
        while True:
            message = await asyncio.wait_for(self._lines.get(), 60)
            if message.get("type") == "result":
                return time.perf_counter() - started

    def cpu(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()


async def prime(cli: Cli, way: str, model: Model) -> dict[str, str]:
    """Prime `cli` the `way` named; each request's outcome, by subtype."""
    answers: dict[str, str] = {}
    requests = WAYS.get(way)
    if way == "slash" or requests is not None:
        answers["initialize"] = await cli.request("initialize", hooks=None)
    for subtype, fields in requests or []:
        answers[subtype] = await cli.request(subtype, **fields)
    if way == "slash":
        before = model.requests
        await cli.turn(SLASH)
        answers[SLASH] = f"{model.requests - before} model requests"
    return answers


async def one_run(
    command: list[str], env: dict[str, str], model: Model, way: str, idle: float, cwd: str
) -> Run:
    run = Run()
    cli = await Cli.spawn(command, env, cwd)
    try:
        run.answers = await prime(cli, way, model)
        await asyncio.sleep(idle)  # a warm pool's process waits idle for its session
        for _ in range(3):
            before, cpu = model.requests, cli.cpu()
            run.turns.append(await cli.turn())
            await asyncio.sleep(0.3)  # let the turn's own after-work (title, transcript) end
            run.requests.append(model.requests - before)
            run.cpu.append(cli.cpu() - cpu)
    finally:
        await cli.close()
    return run


async def strace_counts(
    command: list[str],
    env: dict[str, str],
    model: Model,
    way: str,
    idle: float,
    cwd: str,
    out: Path,
) -> None:
    """System call counts of the first turn and of the second, each its own strace."""
    cli = await Cli.spawn(command, env, cwd)
    try:
        await prime(cli, way, model)
        await asyncio.sleep(idle)
        for n in (1, 2):
            path = out / f"{way}-turn{n}.txt"
            tracer = await asyncio.create_subprocess_exec(
                "strace", "-f", "-c", "-o", str(path), "-p", str(cli.proc.pid),
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # strace attaches to every thread
            await cli.turn()
            await asyncio.sleep(0.3)
            tracer.send_signal(2)
            await tracer.wait()
            print(f"  strace of turn {n}: {path} ({_total_calls(path)} calls)")
    finally:
        await cli.close()


def _total_calls(path: Path) -> str:
    match = re.search(r"^\S+\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total$", path.read_text(), re.M)
    return match.group(1) if match else "?"


async def main_async(args: argparse.Namespace, command: list[str], home: str) -> None:
    ways = args.way or [*WAYS, "slash"]
    work = Path(home) / "work"
    model = await Model.start()
    env = {
        **os.environ,
        **local_model_env(model.url, Path(home) / ".claude"),
        "HOME": home,
        "TMPDIR": home,
    }
    try:
        print(f"{args.runs} runs a way, idle {args.idle} s before the first turn")
        print(
            "| priming | turn 1 ms | turn 2 ms | turn 3 ms | 1 ÷ 2 | CLI CPU ms, turns 1/2/3 "
            "| model requests |"
        )
        print("|---|---:|---:|---:|---:|---|---|")
        for way in ways:
            runs = [
                await one_run(command, env, model, way, args.idle, str(work))
                for _ in range(args.runs)
            ]
            turns = [statistics.median(r.turns[n] for r in runs) * 1e3 for n in range(3)]
            requests = "/".join(str(n) for n in runs[-1].requests)
            cpu = "/".join(
                f"{statistics.median(r.cpu[n] for r in runs) * 1e3:.0f}" for n in range(3)
            )
            answers = ", ".join(f"{k}: {v}" for k, v in runs[-1].answers.items())
            print(
                f"| {way} | {turns[0]:.0f} | {turns[1]:.0f} | {turns[2]:.0f} | "
                f"{turns[0] / turns[1]:.2f} | {cpu} | {requests} |"
                + (f" {answers}" if answers else "")
            )
        if args.strace:
            for way in ("initialize", "get_context_usage"):
                print(f"strace, primed with {way}:")
                await strace_counts(
                    command, env, model, way, args.idle, str(work), Path(args.strace)
                )
    finally:
        await model.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--claude-cmd", default=str(PROJECT_CLAUDE))
    parser.add_argument("--way", action="append", help=f"one of {[*WAYS, 'slash']}; repeat")
    parser.add_argument("--strace", default="", help="write strace -c counts here")
    args = parser.parse_args()
    command = shlex.split(args.claude_cmd)
    if "/" in command[0]:  # the CLI runs in a directory of its own
        command[0] = str(Path(command[0]).resolve())
    if args.strace:
        Path(args.strace).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "work").mkdir()
        asyncio.run(main_async(args, command, home))


if __name__ == "__main__":
    main()
