"""The shipped load balancer configs, run: deploy/nginx/hotsvc.conf and
deploy/haproxy/hotsvc.cfg as hotsvc_tools.rendering renders them, in the foreground, in a
directory of their own, reloaded with other replicas, stopped with nothing left behind.
`make fleet` and tests/test_fleet.py use these, so what they exercise is the file an
operator installs.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil

from hotsvc_tools.rendering import (
    HAPROXY_CFG,
    NGINX_CONF,
    Upstreams,
    render_haproxy,
    render_nginx,
    with_silence,
)

STARTUP_DEADLINE = 30.0

# A per-call line of either shipped config's log format.
ROUTE = re.compile(r" session=(?P<session>\S+) replica=(?P<replica>.+?) status=")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (for programs that cannot be given port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _listens(pid: int, host: str, port: int) -> bool:
    """Whether `pid` or a descendant has a TCP socket listening on host:port."""
    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr[:2] == (host, port):
                    return True
    except psutil.NoSuchProcess:
        pass
    return False


async def wait_listening(address: str, proc: asyncio.subprocess.Process, what: str) -> None:
    """Until `proc` itself listens on `address` (not somebody else on that port); fails at
    once if it exits first (nginx gives up on a port in use after a few tries)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + STARTUP_DEADLINE
    while not _listens(proc.pid, host, int(port)):
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} is not listening on {address}")
        await asyncio.sleep(0.02)  # the bind is in another process: nothing to wait on


class Balancer(abc.ABC):
    """One balancer process (master and workers) over the shipped config."""

    name: str
    program: str

    def __init__(self, workdir: Path, listen: str, silence: int | None = None) -> None:
        self.workdir = workdir
        self.listen = listen
        self.silence = silence  # seconds, instead of the shipped silence timeouts
        self.proc: asyncio.subprocess.Process | None = None
        self.upstreams: list[tuple[str, str]] = []
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)  # workers may run as another user (nginx's `nobody`)

    @property
    def log_file(self) -> Path:
        return self.workdir / "balancer.log"

    @abc.abstractmethod
    def _write_config(self, upstreams: Upstreams) -> None: ...

    def _shipped(self, path: Path) -> str:
        text = path.read_text()
        return text if self.silence is None else with_silence(text, self.name, self.silence)

    @property
    @abc.abstractmethod
    def access_log(self) -> Path:
        """Where the shipped config's per-call lines (`session=... replica=...`) go."""

    def routes(self) -> list[tuple[str, str]]:
        """(session id, replica name) of every call logged so far, oldest first: the
        replica that answered (nginx names the addresses it tried, the last one did)."""
        names = {address: name for name, address in self.upstreams}
        found = []
        if self.access_log.exists():
            for line in self.access_log.read_text().splitlines():
                if match := ROUTE.search(line):
                    replica = match.group("replica").split(", ")[-1]
                    found.append((match.group("session"), names.get(replica, replica)))
        return found

    @abc.abstractmethod
    def _argv(self) -> list[str]: ...

    @abc.abstractmethod
    def _check_argv(self) -> list[str]: ...

    reload_signal: signal.Signals

    async def start(self, upstreams: Upstreams) -> None:
        self.upstreams = list(upstreams)
        if shutil.which(self.program) is None:
            raise RuntimeError(f"{self.program} is missing: run `make setup-dev`")
        self._write_config(upstreams)
        await self._check()
        with self.log_file.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C reaches the fleet tool only
            )
        try:
            await wait_listening(self.listen, self.proc, self.name)
        except (RuntimeError, TimeoutError) as exc:
            await self.stop()
            tail = self.log_file.read_text().strip().splitlines()[-3:]
            raise RuntimeError("\n".join([str(exc), *tail])) from None
        except BaseException:
            await self.stop()
            raise

    async def _check(self) -> None:
        check = await asyncio.create_subprocess_exec(
            *self._check_argv(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await check.communicate()
        if check.returncode != 0:
            raise RuntimeError(f"{self.name} refuses its config:\n{out.decode()}")

    def workers(self) -> set[int]:
        assert self.proc is not None
        try:
            return {p.pid for p in psutil.Process(self.proc.pid).children()}
        except psutil.NoSuchProcess:
            return set()

    @abc.abstractmethod
    def _stopped_accepting(self, worker: psutil.Process) -> bool:
        """Whether an old worker has closed its listeners (it may serve on, for streams
        under way)."""

    async def reconfigure(self, upstreams: Upstreams) -> None:
        """Reload with these replicas; returns once new connections get the new config:
        a new worker runs and the old ones accept no more. Streams under way stay on the
        old workers until they end."""
        assert self.proc is not None
        self.upstreams = list(upstreams)
        self._write_config(upstreams)
        await self._check()
        before = self.workers()
        self.proc.send_signal(self.reload_signal)
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not self.workers() - before or not all(map(self._old_done, before)):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not reload; see {self.log_file}")
            await asyncio.sleep(0.02)  # the master forks in its own time: poll its children

    def _old_done(self, pid: int) -> bool:
        try:
            worker = psutil.Process(pid)
            return worker.status() == psutil.STATUS_ZOMBIE or self._stopped_accepting(worker)
        except psutil.NoSuchProcess:
            return True

    def pids(self) -> set[int]:
        """The master and its workers, while they live."""
        if self.proc is None or self.proc.returncode is not None:
            return set()
        return {self.proc.pid, *self.workers()}

    async def stop(self) -> None:
        """SIGTERM: both stop at once (nginx's fast shutdown, HAProxy's hard stop)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        workers = self.workers()
        self.proc.terminate()
        try:
            async with asyncio.timeout(STARTUP_DEADLINE):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        for pid in workers:  # normally gone with their master
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


class Nginx(Balancer):
    name = "nginx"
    program = "nginx"
    reload_signal = signal.SIGHUP

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def _write_config(self, upstreams: Upstreams) -> None:
        site = render_nginx(self._shipped(NGINX_CONF), self.listen, upstreams, self.access_log)
        (self.workdir / "hotsvc.conf").write_text(site)
        temp = "\n".join(
            f"    {kind}_temp_path {self.workdir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # What Debian's /etc/nginx/nginx.conf gives the conf.d files, in the foreground.
        (self.workdir / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {self.workdir / 'nginx.pid'};\n"
            "error_log stderr notice;\nevents { worker_connections 1024; }\n"
            f"http {{\n{temp}\n    include {self.workdir / 'hotsvc.conf'};\n}}\n"
        )

    def _stopped_accepting(self, worker: psutil.Process) -> bool:
        # Set by the old worker as it closes its listening sockets (nginx's
        # ngx_worker_process_cycle, on the master's QUIT).
        return " ".join(worker.cmdline()).startswith("nginx: worker process is shutting down")

    def _base(self) -> list[str]:
        return [
            "nginx",
            "-e",
            "stderr",
            "-p",
            str(self.workdir),
            "-c",
            str(self.workdir / "nginx.conf"),
        ]

    def _argv(self) -> list[str]:
        return self._base()

    def _check_argv(self) -> list[str]:
        return [*self._base(), "-t", "-q"]


class HAProxy(Balancer):
    name = "haproxy"
    program = "haproxy"
    reload_signal = signal.SIGUSR2  # master-worker mode: re-read the file, new worker

    @property
    def config(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def access_log(self) -> Path:
        return self.log_file  # its stdout

    @property
    def stats_socket(self) -> Path:
        return self.workdir / "stats.sock"

    def _write_config(self, upstreams: Upstreams) -> None:
        text = render_haproxy(self._shipped(HAPROXY_CFG), self.listen, upstreams, self.stats_socket)
        self.config.write_text(text)

    async def servers(self) -> dict[str, tuple[str, str]]:
        """Each replica's state and last health check, from the stats socket: e.g.
        {"replica-1": ("UP", "L7OK"), "replica-2": ("DOWN", "L4CON")}."""
        reader, writer = await asyncio.open_unix_connection(self.stats_socket)
        writer.write(b"show stat\n")
        await writer.drain()
        text = (await reader.read()).decode()
        writer.close()
        await writer.wait_closed()
        header, *rows = [line for line in text.splitlines() if line]
        columns = header.lstrip("# ").split(",")
        states = {}
        for row in rows:
            field = dict(zip(columns, row.split(","), strict=False))
            if field["svname"] not in ("FRONTEND", "BACKEND"):
                states[field["svname"]] = (field["status"], field["check_status"])
        return states

    def _stopped_accepting(self, worker: psutil.Process) -> bool:
        # What the old worker logs as it closes the frontend's listener (soft stop).
        return f"({worker.pid}) : Proxy hotsvc stopped" in self.log_file.read_text()

    def _argv(self) -> list[str]:
        # -W: a master that reloads on SIGUSR2; -db: in the foreground.
        return ["haproxy", "-W", "-db", "-f", str(self.config)]

    def _check_argv(self) -> list[str]:
        return ["haproxy", "-c", "-q", "-f", str(self.config)]


BALANCERS: dict[str, type[Balancer]] = {"nginx": Nginx, "haproxy": HAProxy}
