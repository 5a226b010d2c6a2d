"""The checks on the service: no leaked process (while it runs, and after it exits), no
turn or stream left running, no session left after closing them all, the process cap,
and memory flat between the halves. What the clients check themselves is in `client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc_tools.soak.figures import Figures, Options
from hotsvc_tools.soak.procfs import alive, rss_mb, session_of
from hotsvc_tools.soak.server import Server


class Checks:
    """What PoolStatus and /proc say while the service runs."""

    def __init__(
        self, options: Options, server: Server, stub: pb_grpc.HotSessionAsyncStub, figures: Figures
    ) -> None:
        self.options = options
        self.server = server
        self.stub = stub
        self.figures = figures

    def fail(self, message: str) -> None:
        self.figures.fail(message, echo=self.options.verbose)

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
        if new := unknown - self.figures.leaked:
            self.fail(
                "processes PoolStatus does not know of: "
                + ", ".join(f"{pid} ({session_of(pid)})" for pid in sorted(new))
            )
            self.figures.leaked |= unknown
        return rss_mb(self.server.pid)

    async def none_left(self) -> None:
        """After every client's session was closed."""
        status = await self.status()
        if status.sessions:
            self.fail(f"{len(status.sessions)} sessions left after closing every one")

    async def spawn_summary(self) -> str:
        try:
            stats = (await self.status()).spawn_stats
        except grpc.aio.AioRpcError as error:
            return f"(PoolStatus failed: {error.code().name})"
        return (
            f"spawned {stats.spawned}, failed {stats.failed}, warm starts "
            f"{stats.warm_starts}, cold starts {stats.cold_starts}, replaced {stats.replaced}"
        )


async def no_survivors(server: Server, figures: Figures) -> None:
    """Once the service has exited, nothing it ever started may be alive."""
    survivors: set[int] = set()
    for _ in range(50):  # children die with their process group, or by parent death
        survivors = {pid for pid in server.seen if alive(pid) and server.started(pid)}
        if not survivors:
            break
        await asyncio.sleep(0.1)
    if survivors:
        figures.leaked |= survivors
        figures.fail(f"processes outlived hotsvc: {sorted(survivors)}")
        for pid in survivors:  # ours to clean up: started under this soak
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def judge(options: Options, figures: Figures) -> None:
    """The bounds over the whole run: memory growth between the halves, the process cap."""
    first, second = figures.service_rss_mb
    if second - first > options.growth_limit_mb:
        figures.fail(
            f"service RSS grew {second - first:.1f} MB between the halves "
            f"({first:.1f} -> {second:.1f} MB), over {options.growth_limit_mb:g} MB"
        )
    if figures.children_peak > options.max_sessions:
        figures.fail(
            f"{figures.children_peak} processes at once, over --max-sessions {options.max_sessions}"
        )
