"""The whole soak: start the service, run two halves of the clients with checks after
each, close everything, stop the service, and judge the figures."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc_tools.soak.checks import Checks, judge, no_survivors
from hotsvc_tools.soak.client import Clients
from hotsvc_tools.soak.figures import Figures, Options
from hotsvc_tools.soak.procfs import descendants, rss_mb, total_rss_mb
from hotsvc_tools.soak.server import Server, wait_serving


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
            await no_survivors(server, figures)
    figures.seconds = time.monotonic() - started
    judge(options, figures)
    return figures


async def _drive(options: Options, server: Server, figures: Figures) -> None:
    sampler = asyncio.create_task(server.sampler(figures))
    channel = grpc.aio.insecure_channel(server.address)
    stub: pb_grpc.HotSessionAsyncStub = pb_grpc.HotSessionStub(channel)
    clients = Clients(options, stub, figures)
    checks = Checks(options, server, stub, figures)
    try:
        async with asyncio.timeout(options.time_limit):
            await wait_serving(channel)
            half = options.sessions // 2
            await clients.run_half(range(half))
            figures.service_rss_mb[0] = await checks.quiesce()
            await clients.run_half(range(half, options.sessions))
            figures.service_rss_mb[1] = await checks.quiesce()
            await clients.close_remaining()
            await checks.none_left()
            await checks.quiesce()
    except TimeoutError:
        checks.fail(f"the soak did not finish within {options.time_limit:g} s")
    finally:
        sampler.cancel()
        figures.spawn_stats = await checks.spawn_summary()
        figures.service_final_mb = rss_mb(server.pid)
        figures.children_final_mb = total_rss_mb(descendants(server.pid))
        await channel.close(grace=None)


@contextlib.contextmanager
def _work_dir(options: Options) -> Iterator[Path]:
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
        yield options.work_dir
        return
    with tempfile.TemporaryDirectory(prefix="hotsvc-soak-") as path:
        yield Path(path)
