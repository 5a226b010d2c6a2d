"""The service under test: `hotsvc serve` in a subprocess with the soak's profiles and limits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hotsvc_tools.soak.figures import Figures, Options
from hotsvc_tools.soak.procfs import cmdline, descendants, rss_mb, total_rss_mb


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
        figures.children_peak_mb = max(figures.children_peak_mb, total_rss_mb(children))
        figures.service_peak_mb = max(figures.service_peak_mb, rss_mb(self.pid))
        return children

    async def sampler(self, figures: Figures) -> None:
        while True:
            self.sample(figures)
            await asyncio.sleep(0.2)

    async def stop(self, figures: Figures) -> None:
        """SIGTERM, and a failure unless it exits with 0 within 30 s."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    code = await self.proc.wait()
            except TimeoutError:
                figures.fail("hotsvc did not exit within 30 s of SIGTERM")
                self.proc.kill()
                code = await self.proc.wait()
            if code != 0:
                figures.fail(f"hotsvc exited with {code} on SIGTERM")
        if self.log is not None:
            self.log.close()

    def started(self, pid: int) -> bool:
        """Still the stand-in CLI (not an unrelated process that got a recycled pid)."""
        return any(self.emulator in arg for arg in cmdline(pid))


async def wait_serving(channel: grpc.aio.Channel) -> None:
    """Until the standard health Watch says SERVING (the warm pools are filled)."""
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="hotsession.v1.HotSession"))
    async for update in watch:
        if update.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return
    raise RuntimeError("the health watch ended before SERVING")
