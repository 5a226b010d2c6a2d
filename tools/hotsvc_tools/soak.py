"""`make soak`: many sessions and turns at once, with faults, against a real `hotsvc serve`.

Clients open sessions on three profiles (plain, slow to start, noisy on stderr), send turns
that are ordinary or faulty (the stand-in CLI crashes, hangs past the inactivity timeout,
writes garbage or a long line, streams slowly), interrupt some, disconnect mid-turn, come
back to their sessions (resumed when their process was evicted or died) and close them.
`--max-sessions` is below the number of clients, so sessions are evicted and refused.

It fails (exit 1) when any process leaked, when a turn on a stream the client did not
cancel lacks exactly one result, on an undocumented status, when more processes ran than
`--max-sessions`, or when the service's memory grew past a bound between the first and
the second half of the sessions. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.errors import REASONS

Code = grpc.StatusCode
Call = grpc.aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse]
PROFILES = ("", "", "slowstart", "noisy")  # "" is the default profile
# Refusals a client waits out and retries; anything else on open is a failure.
RETRIED = {"CAPACITY_EXHAUSTED", "SESSION_ATTACHED", "SPAWN_FAILED"}
# Safety net for one turn: the slowest, a hang, takes the watchdog's ~12 s.
TURN_DEADLINE = 30.0


@dataclass
class Options:
    sessions: int = 160
    concurrency: int = 16  # clients at once
    turns: int = 10  # per session, over one or more streams
    max_sessions: int = 10
    pool_size: int = 2
    hangs: int = 4  # turns that hang (each costs the watchdog's ~12 s: silence, interrupt)
    seed: int = 0  # 0: a random seed, printed
    time_limit: float = 300.0
    # Service RSS may grow this much from the end of the first half to the end of the
    # second: past it, memory is held per session or per turn.
    growth_limit_mb: float = 24.0
    work_dir: Path | None = None  # None: a temporary directory
    verbose: bool = False


@dataclass
class Figures:
    """What happened, as counted by the clients and sampled from /proc."""

    sessions: int = 0
    streams: int = 0
    disconnects: int = 0
    closes: int = 0
    turns_sent: int = 0
    turns_accepted: int = 0  # on streams that were not cancelled
    results: int = 0
    results_lost_to_disconnects: int = 0
    interrupts: int = 0
    sent_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    results_by_subtype: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    opened_by_start: collections.Counter[str] = field(default_factory=collections.Counter)
    resumed_in_turn: int = 0
    spawn_stats: str = ""
    service_rss_mb: list[float] = field(default_factory=lambda: [0.0, 0.0])  # after each half
    service_peak_mb: float = 0.0
    service_final_mb: float = 0.0
    children_peak_mb: float = 0.0
    children_final_mb: float = 0.0
    children_peak: int = 0
    leaked: set[int] = field(default_factory=set)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# -- /proc -------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> set[int]:
    """Live (non-zombie) processes below `root`."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = _stat_fields(int(entry.name))
                if fields[0] != "Z":
                    parents[int(fields[1])].append(int(entry.name))
    found: set[int] = set()
    frontier = [root]
    while frontier:
        for child in parents.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def session_of(pid: int) -> str:
    """The session a Claude Code process runs, from its argv (for a leak report)."""
    with contextlib.suppress(OSError):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        for flag in ("--resume", "--session-id"):
            if flag in argv[:-1]:
                return f"{flag} {argv[argv.index(flag) + 1]}"
    return "?"


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- the service under test ------------------------------------------------------------------


class Server:
    """`hotsvc serve` in a subprocess with the soak's profiles and limits."""

    def __init__(self, options: Options, work_dir: Path) -> None:
        self.options = options
        self.work_dir = work_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""
        self.emulator = ""
        self.seen: set[int] = set()  # every child process ever sampled
        self.log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        config = self.work_dir / "profiles.toml"
        config.write_text(
            "[profiles.slowstart]\npool_size = 1\n"
            'env = { HOTSVC_EMU_STARTUP_DELAY = "0.3" }\n'
            "[profiles.noisy]\npool_size = 0\n"
            'env = { HOTSVC_EMU_STDERR_NOISE = "1", HOTSVC_EMU_TOKEN_DELAY = "0.001" }\n'
        )
        emulator = Path(sys.executable).parent / "hotsvc-emulator"
        env = {
            **os.environ,
            "CLAUDE_CONFIG_DIR": str(self.work_dir / "claude"),
            "HOTSVC_EMU_SLOW_DELAY": "0.01",
        }
        self.log = (self.work_dir / "hotsvc.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hotsvc.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--claude-cmd",
            str(emulator),
            "--config",
            str(config),
            "--data-dir",
            str(self.work_dir / "data"),
            "--pool-size",
            str(self.options.pool_size),
            "--max-sessions",
            str(self.options.max_sessions),
            # Above the slow profile's start-up, so only the hang prompts trip the watchdog.
            "--turn-inactivity-timeout",
            "1.5",
            "--shutdown-grace",
            "5",
            "--log-level",
            "INFO" if self.options.verbose else "WARNING",
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await self.proc.stdout.readline()).decode()
        if not line.startswith("hotsvc listening on "):
            raise RuntimeError(f"hotsvc did not start: {line!r}; see {self.log.name}")
        self.emulator = str(emulator)
        self.address = line.rsplit(" ", 1)[1].strip()

    def sample(self, figures: Figures) -> set[int]:
        children = descendants(self.pid)
        self.seen |= children
        figures.children_peak = max(figures.children_peak, len(children))
        figures.children_peak_mb = max(
            figures.children_peak_mb, sum(rss_mb(pid) for pid in children)
        )
        figures.service_peak_mb = max(figures.service_peak_mb, rss_mb(self.pid))
        return children

    async def sampler(self, figures: Figures) -> None:
        while True:
            self.sample(figures)
            await asyncio.sleep(0.2)

    async def stop(self, figures: Figures) -> None:
        """SIGTERM; then nothing it ever started may be alive."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    code = await self.proc.wait()
            except TimeoutError:
                figures.failures.append("hotsvc did not exit within 30 s of SIGTERM")
                self.proc.kill()
                code = await self.proc.wait()
            if code != 0:
                figures.failures.append(f"hotsvc exited with {code} on SIGTERM")
        survivors: set[int] = set()
        for _ in range(50):  # children die with their process group, or by parent death
            survivors = {pid for pid in self.seen if alive(pid) and self._emulator(pid)}
            if not survivors:
                break
            await asyncio.sleep(0.1)
        if survivors:
            figures.leaked |= survivors
            figures.failures.append(f"processes outlived hotsvc: {sorted(survivors)}")
            for pid in survivors:  # ours to clean up: started under this soak
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.log is not None:
            self.log.close()

    def _emulator(self, pid: int) -> bool:
        """Still the stand-in CLI (not an unrelated process that got a recycled pid)."""
        try:
            return self.emulator in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                errors="replace"
            )
        except OSError:
            return False


# -- clients ---------------------------------------------------------------------------------


@dataclass
class Stream:
    sent: list[str] = field(default_factory=list)
    results: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: bool = False


def retry_delay(error: grpc.aio.AioRpcError) -> tuple[str, float]:
    """The ErrorInfo reason and the RetryInfo delay of a refusal."""
    status: Any = rpc_status.from_call(error)  # type: ignore[arg-type]  # an aio error
    reason, delay = "", 0.05
    for packed in status.details if status is not None else ():
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, delay


class Soak:
    def __init__(self, options: Options, server: Server, figures: Figures) -> None:
        self.options = options
        self.server = server
        self.figures = figures
        self.turn_ids = itertools.count(1)
        self.hangs_left = options.hangs
        self.channel = grpc.aio.insecure_channel(server.address)
        self.stub: pb_grpc.HotSessionAsyncStub = pb_grpc.HotSessionStub(self.channel)
        self.session_ids: set[str] = set()
        self.closed: set[str] = set()

    def fail(self, message: str) -> None:
        self.figures.failures.append(message)
        if self.options.verbose:
            print("FAILURE:", message, file=sys.stderr)

    # -- the workload

    def turn_text(self, rng: random.Random) -> tuple[str, str]:
        """(kind, text) of the next turn."""
        roll = rng.random()
        if roll < 0.02 and self.hangs_left > 0:
            self.hangs_left -= 1
            return "hang", "please hang"
        for kind, text, share in (
            ("crash", "please crash", 0.06),
            ("garbage", "garbage then echo", 0.06),
            ("slow", "slow story", 0.08),
            ("huge", "huge 300000", 0.03),
        ):
            roll -= share
            if roll < 0:
                return kind, text
        number = rng.randint(1, 999)
        return rng.choice(
            [
                ("remember", f"Remember {number}"),
                ("recall", "What number?"),
                ("echo", f"echo soak {number}"),
            ]
        )

    async def client(self, index: int) -> None:
        rng = random.Random(f"{self.options.seed}-{index}")  # the same plan on every run
        profile = rng.choice(PROFILES)
        session_id, turns_left = "", self.options.turns
        while turns_left > 0:
            count = rng.randint(1, min(turns_left, 4))
            turns_left -= count
            texts = [self.turn_text(rng) for _ in range(count)]
            disconnect = rng.random() < 0.15
            opened = await self.stream(session_id, profile, texts, rng, disconnect)
            if not opened:
                return
            session_id = opened
            if disconnect and rng.random() < 0.3:  # gone for good: cancel, then close
                break
        await self.close(session_id)

    async def stream(
        self,
        session_id: str,
        profile: str,
        texts: list[tuple[str, str]],
        rng: random.Random,
        disconnect: bool,
    ) -> str:
        """One Prompt stream; the session id, or "" if it could not be opened."""
        call, opened = await self.open(session_id, profile)
        if call is None or opened is None:
            return ""
        self.figures.streams += 1
        start = pb.SessionStart.Name(opened.start).removeprefix("SESSION_START_")
        self.figures.opened_by_start[start] += 1
        if not session_id:
            self.figures.sessions += 1
            self.session_ids.add(opened.session_id)
        stream = Stream()
        cancel_turn = rng.randrange(len(texts)) if disconnect else -1
        try:
            for index, (kind, text) in enumerate(texts):
                turn_id = f"soak-{next(self.turn_ids)}"
                stream.sent.append(turn_id)
                self.figures.turns_sent += 1
                self.figures.sent_by_kind[kind] += 1
                await call.write(pb.PromptRequest(turn=pb.UserTurn(text=text, turn_id=turn_id)))
                interrupt = kind == "slow" and rng.random() < 0.5
                cancel_after = rng.randint(0, 6) if index == cancel_turn else -1
                if not await self.read_turn(call, stream, turn_id, kind, interrupt, cancel_after):
                    break
            if not stream.cancelled:
                await call.done_writing()
                async with asyncio.timeout(TURN_DEADLINE):
                    while isinstance(extra := await call.read(), pb.PromptResponse):
                        self.fail(f"an event after the last result: {extra}")
                code = await call.code()
                if code != Code.OK:
                    self.fail(f"stream on {opened.session_id} ended {code.name}, not OK")
        except grpc.aio.AioRpcError as error:
            self.fail(
                f"stream on {opened.session_id} failed: {error.code().name} {error.details()}"
            )
        except TimeoutError:
            self.fail(
                f"stream on {opened.session_id}: turn {stream.sent[-1]} had no result, "
                f"or the stream no end, within {TURN_DEADLINE:g} s"
            )
        finally:
            call.cancel()
        self.account(stream, opened.session_id)
        return opened.session_id

    async def read_turn(
        self,
        call: Call,
        stream: Stream,
        turn_id: str,
        kind: str,
        interrupt: bool,
        cancel_after: int,
    ) -> bool:
        """Read up to this turn's result; False if the client disconnected instead."""
        events = 0
        async with asyncio.timeout(TURN_DEADLINE):
            while True:
                if events == cancel_after:
                    stream.cancelled = True
                    self.figures.disconnects += 1
                    call.cancel()
                    return False
                response = await call.read()
                if not isinstance(response, pb.PromptResponse):
                    self.fail(f"stream ended before the result of {turn_id}")
                    return False
                events += 1
                event = response.WhichOneof("event")
                if response.turn_id and response.turn_id not in stream.sent:
                    self.fail(f"an event of {response.turn_id} on a stream that did not send it")
                if event == "progress" and response.progress.subtype == "resumed":
                    self.figures.resumed_in_turn += 1
                if event == "text_delta" and interrupt:
                    interrupt = False
                    self.figures.interrupts += 1
                    kind += "+interrupt"
                    await call.write(pb.PromptRequest(interrupt=pb.Interrupt()))
                if event == "result":
                    subtype = response.result.subtype or "?"
                    stream.results[response.turn_id] += 1
                    self.figures.results += 1
                    self.figures.results_by_subtype[subtype] += 1
                    if response.turn_id == turn_id:
                        self.figures.outcomes[f"{kind} -> {subtype}"] += 1
                        return True

    def account(self, stream: Stream, session_id: str) -> None:
        for turn_id in stream.sent:
            got = stream.results[turn_id]
            if got > 1:
                self.fail(f"turn {turn_id} of {session_id} got {got} results")
            if stream.cancelled:
                self.figures.results_lost_to_disconnects += got == 0
            else:
                self.figures.turns_accepted += 1
                if got != 1:
                    self.fail(f"turn {turn_id} of {session_id} got {got} results, not one")

    async def open(
        self,
        session_id: str,
        profile: str,
    ) -> tuple[Call | None, pb.SessionOpened | None]:
        """Open or re-attach, waiting out refusals a retry can cure (as RetryInfo says)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            call = self.stub.Prompt(None, timeout=180)
            try:
                await call.write(
                    pb.PromptRequest(open=pb.OpenSession(session_id=session_id, profile=profile))
                )
                response = await call.read()
                # An open at the cap waits in line and is told its place first.
                while isinstance(response, pb.PromptResponse) and (
                    response.progress.subtype == "queued"
                ):
                    response = await call.read()
            except grpc.aio.AioRpcError as error:
                reason, delay = retry_delay(error)
                self.figures.refusals[reason or error.code().name] += 1
                if reason not in RETRIED:
                    self.fail(
                        f"open of {session_id or 'a new session'} refused: "
                        f"{error.code().name} {reason} {error.details()}"
                    )
                    return None, None
                if reason not in REASONS:
                    self.fail(f"undocumented reason {reason!r}")
                await asyncio.sleep(delay * (0.5 + random.random()))
                continue
            if isinstance(response, pb.PromptResponse) and response.HasField("opened"):
                return call, response.opened
            self.fail(f"open answered {response!r}")
            call.cancel()
            return None, None
        self.fail(f"could not open {session_id or 'a new session'} within 60 s")
        return None, None

    async def close(self, session_id: str) -> None:
        if not session_id or session_id in self.closed:
            return
        self.closed.add(session_id)
        try:
            await self.stub.CloseSession(pb.CloseSessionRequest(session_id=session_id), timeout=60)
            self.figures.closes += 1
        except grpc.aio.AioRpcError as error:
            self.fail(f"CloseSession {session_id}: {error.code().name} {error.details()}")

    # -- checks

    async def status(self) -> pb.PoolStatusResponse:
        return await self.stub.PoolStatus(pb.PoolStatusRequest(), timeout=30)

    async def quiesce(self) -> float:
        """Wait until no turn runs and every child is one PoolStatus knows; service RSS."""
        unknown: set[int] = set()
        for _ in range(100):  # 10 s for pool refills and exits to settle
            status = await self.status()
            known = {s.pid for s in status.sessions if s.state != pb.SESSION_STATE_STOPPED}
            known |= {pid for pool in status.pools for pid in pool.idle_pids}
            busy = any(s.state == pb.SESSION_STATE_BUSY or s.attached for s in status.sessions)
            unknown = self.server.sample(self.figures) - known
            if not busy and not unknown and status.spawn_stats.in_flight == 0:
                break
            await asyncio.sleep(0.1)
        if busy:
            self.fail("turns still running or streams attached 10 s after every client ended")
        if unknown - self.figures.leaked:
            self.fail(
                "processes PoolStatus does not know of: "
                + ", ".join(
                    f"{pid} ({session_of(pid)})" for pid in sorted(unknown - self.figures.leaked)
                )
            )
            self.figures.leaked |= unknown
        return rss_mb(self.server.pid)

    async def run_half(self, indices: range) -> None:
        slots = asyncio.Semaphore(self.options.concurrency)

        async def limited(index: int) -> None:
            async with slots:
                await self.client(index)

        await asyncio.gather(*(limited(i) for i in indices))

    async def close_everything(self) -> None:
        for session_id in sorted(self.session_ids - self.closed):
            await self.close(session_id)
        status = await self.status()
        if status.sessions:
            self.fail(f"{len(status.sessions)} sessions left after closing every one")


async def run(options: Options) -> Figures:
    """The whole soak; the figures say what happened and what failed."""
    if not options.seed:
        options.seed = random.randrange(1, 2**31)
    figures = Figures()
    started = time.monotonic()
    with _work_dir(options) as work_dir:
        server = Server(options, work_dir)
        try:
            await server.start()
            await _drive(options, server, figures)
        finally:
            await server.stop(figures)
    figures.seconds = time.monotonic() - started
    _judge(options, figures)
    return figures


async def _drive(options: Options, server: Server, figures: Figures) -> None:
    sampler = asyncio.create_task(server.sampler(figures))
    soak = Soak(options, server, figures)
    try:
        async with asyncio.timeout(options.time_limit):
            await wait_serving(soak.channel)
            half = options.sessions // 2
            await soak.run_half(range(half))
            figures.service_rss_mb[0] = await soak.quiesce()
            await soak.run_half(range(half, options.sessions))
            figures.service_rss_mb[1] = await soak.quiesce()
            await soak.close_everything()
            await soak.quiesce()
    except TimeoutError:
        soak.fail(f"the soak did not finish within {options.time_limit:g} s")
    finally:
        sampler.cancel()
        figures.spawn_stats = await _final_status(soak)
        figures.service_final_mb = rss_mb(server.pid)
        figures.children_final_mb = sum(rss_mb(p) for p in descendants(server.pid))
        await soak.channel.close(grace=None)


async def _final_status(soak: Soak) -> str:
    try:
        stats = (await soak.status()).spawn_stats
    except grpc.aio.AioRpcError as error:
        return f"(PoolStatus failed: {error.code().name})"
    return (
        f"spawned {stats.spawned}, failed {stats.failed}, warm starts "
        f"{stats.warm_starts}, cold starts {stats.cold_starts}, replaced {stats.replaced}"
    )


def _judge(options: Options, figures: Figures) -> None:
    first, second = figures.service_rss_mb
    if second - first > options.growth_limit_mb:
        figures.failures.append(
            f"service RSS grew {second - first:.1f} MB between the halves "
            f"({first:.1f} -> {second:.1f} MB), over {options.growth_limit_mb:g} MB"
        )
    if figures.children_peak > options.max_sessions:
        figures.failures.append(
            f"{figures.children_peak} processes at once, over --max-sessions {options.max_sessions}"
        )


@contextlib.contextmanager
def _work_dir(options: Options) -> Iterator[Path]:
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
        yield options.work_dir
        return
    with tempfile.TemporaryDirectory(prefix="hotsvc-soak-") as path:
        yield Path(path)


async def wait_serving(channel: grpc.aio.Channel) -> None:
    """Until the standard health Watch says SERVING (the warm pools are filled)."""
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="hotsession.v1.HotSession"))
    async for update in watch:
        if update.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return
    raise RuntimeError("the health watch ended before SERVING")


def render(options: Options, figures: Figures) -> str:
    def counts(counter: collections.Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"

    first, second = figures.service_rss_mb
    lines = [
        f"hotsvc soak: {options.sessions} sessions, {options.concurrency} clients, "
        f"{options.turns} turns each, --max-sessions {options.max_sessions}, "
        f"--pool-size {options.pool_size}, seed {options.seed}, {figures.seconds:.1f} s",
        f"  sessions        {figures.sessions} opened, {figures.closes} closed",
        f"  streams         {figures.streams} ({counts(figures.opened_by_start)}); "
        f"{figures.disconnects} disconnected mid-turn",
        f"  turns           {figures.turns_sent} sent ({counts(figures.sent_by_kind)})",
        f"                  {figures.turns_accepted} on streams kept to the end, "
        f"{figures.results} results, {figures.results_lost_to_disconnects} "
        f"without a result on a cancelled stream; {figures.interrupts} interrupted",
        f"  results         {counts(figures.results_by_subtype)}",
        f"  by prompt       {counts(figures.outcomes)}",
        f"  resumes         {figures.opened_by_start['RESUMED']} on open, "
        f"{figures.resumed_in_turn} within a turn",
        f"  open refused    {counts(figures.refusals)}",
        f"  spawns          {figures.spawn_stats}",
        f"  service RSS     {first:.1f} MB after the first half, {second:.1f} MB after the "
        f"second; peak {figures.service_peak_mb:.1f}, final {figures.service_final_mb:.1f} MB",
        f"  children RSS    peak {figures.children_peak_mb:.1f} MB, final "
        f"{figures.children_final_mb:.1f} MB; at most {figures.children_peak} processes "
        f"at once (cap {options.max_sessions})",
        f"  leaked          {len(figures.leaked)} processes",
    ]
    if figures.failures:
        lines.append(f"FAILED ({len(figures.failures)}):")
        lines += [f"  - {failure}" for failure in figures.failures[:20]]
    else:
        lines.append("OK")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m hotsvc_tools.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sessions", type=int, default=defaults.sessions)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--turns", type=int, default=defaults.turns, help="per session")
    parser.add_argument("--max-sessions", type=int, default=defaults.max_sessions)
    parser.add_argument("--pool-size", type=int, default=defaults.pool_size)
    parser.add_argument("--hangs", type=int, default=defaults.hangs)
    parser.add_argument("--seed", type=int, default=0, help="0 picks one (printed)")
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit)
    parser.add_argument("--growth-limit-mb", type=float, default=defaults.growth_limit_mb)
    parser.add_argument("--work-dir", type=Path, help="keep hotsvc.log and state here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    options = Options(**{k: v for k, v in vars(args).items()})
    figures = asyncio.run(run(options))
    print(render(options, figures))
    sys.exit(0 if figures.ok else 1)


if __name__ == "__main__":
    main()
