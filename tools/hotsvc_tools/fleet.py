"""`make fleet`: a fleet of hotsvc replicas on this machine, as README "Running a fleet"
describes for several hosts: a throwaway PostgreSQL as the shared session store, three
replicas on loopback ports, and nginx (the shipped deploy/nginx/hotsvc.conf) in front on
127.0.0.1:50051. Ctrl-C stops all of them and removes their files.

    make fleet                                   # nginx, 3 replicas, hotsvc's defaults
    make fleet ARGS='--balancer haproxy --replicas 2 -- --pool-size 1'

Arguments after `--` go to every `hotsvc serve`. The same classes run the fleet tests
(tests/test_fleet.py): `Fleet` owns replicas and a balancer, each in a session of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hotsvc_tools.balancers import BALANCERS, STARTUP_DEADLINE, Balancer, free_port
from hotsvc_tools.paths import REPO
from hotsvc_tools.postgres import Cluster

HOTSVC = Path(sys.executable).parent / "hotsvc"


def tree(pid: int) -> set[int]:
    """`pid` and every live descendant."""
    try:
        root = psutil.Process(pid)
        return {pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


class Replica:
    """One `hotsvc serve` on a loopback port of its own, sharing the fleet's store."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_file: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""
        self.metrics = ""  # HOST:PORT of /metrics, with --metrics-listen

    async def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C reaches the fleet tool only
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(STARTUP_DEADLINE):
            line = (await self.proc.stdout.readline()).decode()
        if not line.startswith("hotsvc listening on "):
            await self.kill()
            raise RuntimeError(f"{self.name} did not start (see {self.log_file}): {line!r}")
        self.address = line.rsplit(" ", 1)[1].strip()
        if "--metrics-listen" in self.argv:  # its line follows (after an http one, if any)
            async with asyncio.timeout(STARTUP_DEADLINE):
                while not (line := (await self.proc.stdout.readline()).decode()).startswith(
                    "hotsvc metrics listening on "
                ):
                    if not line:
                        raise RuntimeError(f"{self.name} printed no metrics address")
            self.metrics = line.rsplit(" ", 1)[1].strip()
        async with grpc.aio.insecure_channel(self.address) as channel:
            await wait_serving(channel)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def pids(self) -> set[int]:
        return tree(self.proc.pid) if self.alive and self.proc else set()

    async def stop(self) -> None:
        """SIGTERM: hotsvc drains its turns, ends its children, releases its leases."""
        if not self.alive or self.proc is None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(STARTUP_DEADLINE):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL the replica and everything it started, as if its host were lost."""
        if self.proc is None:
            return
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        await self.proc.wait()


async def wait_serving(channel: grpc.aio.Channel) -> None:
    """Block on the standard health Watch until the server reports SERVING."""
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=STARTUP_DEADLINE)
    async for update in watch:
        if update.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return
    raise RuntimeError("health watch ended before SERVING")


class Fleet:
    """Replicas on one store behind one balancer, under `root` (removed at close)."""

    def __init__(
        self,
        store_url: str,
        *,
        balancer: str = "nginx",
        listen: str = "127.0.0.1:0",
        serve_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        root: Path | None = None,
        balancer_silence: int | None = None,
    ) -> None:
        self.store_url = store_url
        self.serve_args = list(serve_args)
        self.env = {**os.environ, **(env or {})}
        self.root = root or Path(tempfile.mkdtemp(prefix="hotsvc-fleet-"))
        # One working directory for every replica's sessions: Claude Code files a session's
        # transcript under its cwd, so a session resumes elsewhere only at the same path.
        self.sessions = self.root / "sessions"
        self.sessions.mkdir(parents=True, exist_ok=True)
        host, port = listen.rsplit(":", 1)
        self.address = f"{host}:{port if port != '0' else free_port(host)}"
        self.balancer: Balancer = BALANCERS[balancer](
            self.root / balancer, self.address, balancer_silence
        )
        self.replicas: list[Replica] = []

    def upstreams(self) -> list[tuple[str, str]]:
        return [(r.name, r.address) for r in self.replicas if r.address]

    async def start_replica(self) -> Replica:
        """One more replica on the store, not yet in the balancer."""
        name = f"replica-{len(self.replicas) + 1}"
        home = self.root / name
        argv = [str(HOTSVC), "serve", "--listen", "127.0.0.1:0", "--store", self.store_url]
        argv += ["--replica-id", name, "--data-dir", str(home / "data"), *self.serve_args]
        home.mkdir(parents=True, exist_ok=True)
        replica = Replica(name, argv, self.env, self.sessions, self.root / f"{name}.log")
        self.replicas.append(replica)
        await replica.start()
        return replica

    async def start(self, replicas: int = 3) -> None:
        try:
            for _ in range(replicas):
                await self.start_replica()
            await self.balancer.start(self.upstreams())
        except BaseException:
            await self.close()
            raise

    async def add_replica(self) -> Replica:
        """One more replica, put in the balancer by a reload (live streams stay where
        they are)."""
        replica = await self.start_replica()
        await self.balance([r.name for r in self.replicas])
        return replica

    async def balance(self, names: Sequence[str]) -> None:
        """Reload the balancer with just these replicas (in the fleet's order)."""
        await self.balancer.reconfigure([u for u in self.upstreams() if u[0] in names])

    def replica(self, name: str) -> Replica:
        (found,) = (r for r in self.replicas if r.name == name)
        return found

    def pids(self) -> set[int]:
        """Every process of the fleet that is still alive."""
        return set().union(self.balancer.pids(), *(r.pids() for r in self.replicas))

    async def close(self) -> None:
        """The balancer first (no new calls), then every replica (each drains)."""
        try:
            await self.balancer.stop()
        finally:
            await asyncio.gather(*(r.stop() for r in self.replicas))
            shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50051", help="the balancer's address")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--balancer", choices=sorted(BALANCERS), default="nginx")
    parser.add_argument("serve_args", nargs="*", help="after --: for every `hotsvc serve`")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cluster = Cluster()
    try:
        await asyncio.to_thread(cluster.start)
        store = cluster.create_database("hotsvc")
        # As `make run`: the local scripted model unless there are credentials or a
        # --claude-cmd; the pinned CLI after any `claude` on PATH.
        path = f"{os.environ.get('PATH', '')}{os.pathsep}{REPO / 'node_modules' / '.bin'}"
        serve_args = ["--local-model", "auto", "--metrics-listen", "127.0.0.1:0"]
        serve_args += args.serve_args
        fleet = Fleet(
            store,
            balancer=args.balancer,
            listen=args.listen,
            serve_args=serve_args,
            env={"PATH": path},
        )
        try:
            await fleet.start(args.replicas)
            print(f"hotsvc fleet listening on {fleet.address}", flush=True)
            print(f"  {args.balancer} ({fleet.balancer.workdir}) in front of:", flush=True)
            for replica in fleet.replicas:
                print(
                    f"  {replica.name} on {replica.address}, metrics "
                    f"http://{replica.metrics}/metrics, log {replica.log_file}"
                )
            print(f"  session store: --store '{store}'")
            print("Ctrl-C stops the fleet.", flush=True)
            await stop.wait()
            print("stopping the fleet ...", flush=True)
        finally:
            await fleet.close()
    finally:
        await asyncio.to_thread(cluster.stop)
    print("fleet stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        asyncio.run(run(parse_args(argv)))
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"make fleet: {exc}") from None


if __name__ == "__main__":
    main()
