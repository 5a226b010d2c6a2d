"""Profile hot turns: the service's own CPU time per turn, optionally under py-spy.

    python -m hotsvc_tools.hotturn --turns 300 [--py-spy out.svg] [--claude-cmd CMD]

Starts the local scripted model and `hotsvc serve` (real CLI by default), runs hot turns
on one session and prints the service process's CPU per turn (its own, children excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.local import local_model_env
from hotsvc_tools.paths import PROJECT_CLAUDE

PROMPT = "Remember 42"


async def start_model(log_requests: bool = False) -> tuple[asyncio.subprocess.Process, str]:
    """The local scripted model and its URL; with `log_requests`, its request log on a
    stderr pipe."""
    quiet = () if log_requests else ("--quiet",)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotsvc.localmodel", "--listen", "127.0.0.1:0", *quiet,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if log_requests else None,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, (await proc.stdout.readline()).decode().split()[-1]


async def start_server(
    claude_cmd: str, env: dict[str, str], extra: list[str], wrap: list[str], cwd: str | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """`hotsvc serve`; with `cwd` outside the checkout, PYTHONPATH picks which hotsvc."""
    proc = await asyncio.create_subprocess_exec(
        *(wrap or [sys.executable, "-m", "hotsvc.cli"]), "serve", "--listen", "127.0.0.1:0",
        "--claude-cmd", claude_cmd, "--log-level", "WARNING", *extra,
        stdout=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )  # fmt: skip
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("the server exited before it listened")
        if "listening" in line.lower() or line.rsplit(" ", 1)[-1].strip().count(":") == 1:
            return proc, line.rsplit(" ", 1)[1].strip()


def service_pid(proc: asyncio.subprocess.Process) -> int:
    """The python process running hotsvc (py-spy's child when wrapped)."""
    me = psutil.Process(proc.pid)
    if "py-spy" not in " ".join(me.cmdline()):
        return proc.pid
    return next(p.pid for p in me.children() if "python" in p.name())


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread name (grpc's pollers, to_thread workers, the event loop)."""
    out: dict[str, float] = {}
    for t in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        key = "main" if t.id == pid else name
        out[key] = out.get(key, 0.0) + t.user_time + t.system_time
    return out


async def turn(call: grpc.aio.StreamStreamCall, text: str) -> int:  # type: ignore[type-arg]
    await call.write(pb.PromptRequest(turn=pb.UserTurn(text=text)))
    events = 0
    while True:
        response = await call.read()
        assert isinstance(response, pb.PromptResponse), "the stream ended"
        events += 1
        if response.HasField("result"):
            return events


async def main_async(args: argparse.Namespace) -> None:
    model, url = await start_model()
    try:
        with tempfile.TemporaryDirectory() as home:
            env = {
                **os.environ,
                **local_model_env(url, Path(home) / ".claude"),
                "HOME": home,
                "TMPDIR": home,
            }
            wrap = []
            if args.cprofile or args.wrap:
                wrap = [sys.executable, args.cprofile or args.wrap]
            if args.py_spy:
                spy = str(Path(sys.executable).parent / "py-spy")
                wrap = [
                    spy,
                    "record",
                    "-o",
                    args.py_spy,
                    "-r",
                    "1000",
                    "--gil",
                    *args.spy_flags.split(),
                ]
                if args.py_spy.endswith(".txt"):
                    wrap += ["-f", "raw"]
                wrap += ["--", sys.executable, "-m", "hotsvc.cli"]
            extra = ["--pool-size", "1", *args.serve_args]
            server, address = await start_server(args.claude_cmd, env, extra, wrap)
            pid = service_pid(server)
            try:
                async with grpc.aio.insecure_channel(address) as channel:
                    stub = pb_grpc.HotSessionStub(channel)
                    call = stub.Prompt(request_iterator=None)
                    await call.write(pb.PromptRequest(open=pb.OpenSession()))
                    await call.read()
                    for _ in range(5):
                        await turn(call, PROMPT)
                    if args.idle:
                        idle0 = cpu(pid)
                        await asyncio.sleep(args.idle)
                        print(f"idle: {(cpu(pid) - idle0) / args.idle * 1e3:.2f} ms CPU per second")
                    threads = thread_cpu(pid)
                    if args.cprofile:
                        os.kill(pid, signal.SIGUSR1)
                    tracer = None
                    if args.attach:
                        tracer = await asyncio.create_subprocess_shell(args.attach.format(pid=pid))
                        await asyncio.sleep(1.0)  # let it attach
                    before, started = cpu(pid), time.perf_counter()
                    events = 0
                    for _ in range(args.turns):
                        events += await turn(call, PROMPT)
                    used, wall = cpu(pid) - before, time.perf_counter() - started
                    after = thread_cpu(pid)
                    if tracer is not None:
                        tracer.send_signal(signal.SIGINT)
                        await tracer.wait()
                    if args.cprofile:
                        os.kill(pid, signal.SIGUSR2)
                    call.cancel()
                print(
                    f"{args.turns} turns, {events / args.turns:.1f} events/turn: service CPU "
                    f"{used / args.turns * 1e3:.2f} ms/turn, wall {wall / args.turns * 1e3:.1f} "
                    f"ms/turn"
                )
                for name, seconds in sorted(after.items(), key=lambda kv: -kv[1]):
                    spent = (seconds - threads.get(name, 0.0)) / args.turns * 1e3
                    if spent > 0.005:
                        print(f"  thread {name}: {spent:.2f} ms/turn")
            finally:
                server.send_signal(2)
                await server.wait()
    finally:
        model.terminate()
        await model.wait()


async def compare(args: argparse.Namespace) -> None:
    """Several servers side by side, turns alternating between them: each side is
    `NAME|VAR=VALUE ...|serve flags` (VAR=VALUE may set PYTHONPATH to another checkout)."""
    model, url = await start_model()
    servers: list[asyncio.subprocess.Process] = []
    try:
        with tempfile.TemporaryDirectory() as home:
            base = {
                **os.environ,
                **local_model_env(url, Path(home) / ".claude"),
                "HOME": home,
                "TMPDIR": home,
            }
            sides = []
            for n, spec in enumerate(args.side):
                name, env_text, flags = [*spec.split("|"), "", ""][:3]
                env = {**base, **dict(kv.split("=", 1) for kv in env_text.split())}
                extra = ["--pool-size", "1", "--data-dir", f"{home}/d{n}", *flags.split()]
                work = Path(home) / "work"
                work.mkdir(exist_ok=True)
                server, address = await start_server(args.claude_cmd, env, extra, [], str(work))
                servers.append(server)
                channel = grpc.aio.insecure_channel(address)
                call = pb_grpc.HotSessionStub(channel).Prompt(request_iterator=None)
                await call.write(pb.PromptRequest(open=pb.OpenSession()))
                await call.read()
                for _ in range(5):
                    await turn(call, PROMPT)
                sides.append([name, server.pid, call, 0.0, channel])
            before = [cpu(side[1]) for side in sides]
            for _ in range(args.turns):
                for side in sides:
                    await turn(side[2], PROMPT)
            for side, start in zip(sides, before, strict=True):
                used = (cpu(side[1]) - start) / args.turns * 1e3
                print(f"{side[0]}: service CPU {used:.2f} ms/turn")
                side[2].cancel()
                await side[4].close()
            for server in servers:
                server.send_signal(2)
                await server.wait()
    finally:
        for server in servers:
            if server.returncode is None:
                server.kill()
                await server.wait()
        model.terminate()
        await model.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hotsvc_tools.hotturn", description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--claude-cmd", default=str(PROJECT_CLAUDE))
    parser.add_argument("--py-spy", default="", help="write a py-spy profile here")
    parser.add_argument(
        "--cprofile",
        default="",
        help="a script that runs hotsvc.cli under cProfile, on between SIGUSR1 and SIGUSR2",
    )
    parser.add_argument("--idle", type=float, default=0, help="first measure idle CPU")
    parser.add_argument("--spy-flags", default="", help="more py-spy record flags")
    parser.add_argument(
        "--attach", default="", help="a command run during the measured turns ({pid})"
    )
    parser.add_argument("--side", action="append", default=[], help="NAME|ENV|FLAGS; repeat")
    parser.add_argument("--wrap", default="", help="a script that runs hotsvc.cli")
    parser.add_argument("serve_args", nargs="*", help="more `hotsvc serve` flags")
    args = parser.parse_args()
    asyncio.run(compare(args) if args.side else main_async(args))


if __name__ == "__main__":
    main()
