"""The shipped load balancer configs, run: deploy/nginx/hotsvc.conf and
deploy/haproxy/hotsvc.cfg with only their addresses (and log target) changed, in the
foreground, in a directory of their own. `make fleet` and tests/test_fleet.py use these,
so what they exercise is the file an operator installs.

Rendering refuses a shipped file whose shape it does not recognise (one listen/bind line,
a run of `server` lines), so a change there fails loudly instead of going untested.
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
from collections.abc import Sequence
from pathlib import Path

import psutil

from hotsvc_tools.paths import REPO

NGINX_CONF = REPO / "deploy" / "nginx" / "hotsvc.conf"
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "hotsvc.cfg"
STARTUP_DEADLINE = 30.0

# A per-call line of either shipped config's log format.
ROUTE = re.compile(r" session=(?P<session>\S+) replica=(?P<replica>.+?) status=")
# (name, HOST:PORT) of each replica, in the order the balancer lists them.
Upstreams = Sequence[tuple[str, str]]


class RenderError(ValueError):
    """The shipped config no longer has the shape the renderer replaces."""


def _replace_one(pattern: str, replacement: str, text: str, what: str) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise RenderError(f"expected one {what} in the shipped config, found {count}")
    return result


def _replace_servers(pattern: str, lines: Sequence[str], text: str, what: str) -> str:
    """Replace the one run of consecutive `server` lines with `lines` (same indent)."""
    found = list(re.finditer(pattern, text, flags=re.MULTILINE))
    if not found:
        raise RenderError(f"no {what} lines in the shipped config")
    first, last = found[0], found[-1]
    between = text[first.start() : last.end()]
    if len(between.splitlines()) != len(found):
        raise RenderError(f"the {what} lines of the shipped config are not one block")
    indent = first.group("indent")
    return text[: first.start()] + "\n".join(indent + line for line in lines) + text[last.end() :]


def render_nginx(text: str, listen: str, upstreams: Upstreams, access_log: Path) -> str:
    """deploy/nginx/hotsvc.conf for these replicas, listening on `listen`."""
    server = r"^(?P<indent>[ \t]*)server[ \t]+[^\s{]+(?P<params>[^;\n]*);[ \t]*$"
    match = re.search(server, text, flags=re.MULTILINE)
    params = match.group("params") if match else ""
    lines = [f"server {address}{params};" for _, address in upstreams]
    text = _replace_servers(server, lines, text, "upstream server")
    text = _replace_one(
        r"^([ \t]*listen[ \t]+)\S+([ \t]+http2;)", rf"\g<1>{listen}\2", text, "listen"
    )
    return _replace_one(
        r"^([ \t]*access_log[ \t]+)\S+([ \t]+hotsvc;)", rf"\g<1>{access_log}\2", text, "access_log"
    )


def render_haproxy(text: str, listen: str, upstreams: Upstreams, stats_socket: Path) -> str:
    """deploy/haproxy/hotsvc.cfg for these replicas, listening on `listen`, logging to
    stdout (HAProxy writes no log files), with a stats socket to read server states."""
    server = r"^(?P<indent>[ \t]*)server[ \t]+\S+[ \t]+\S+[^\n]*$"
    lines = [f"server {name} {address}" for name, address in upstreams]
    text = _replace_servers(server, lines, text, "backend server")
    text = _replace_one(
        r"^([ \t]*bind[ \t]+)\S+([ \t]+proto h2)", rf"\g<1>{listen}\2", text, "bind"
    )
    return _replace_one(
        r"^([ \t]*)log[ \t]+/dev/log([ \t]+local0)[ \t]*$",
        rf"\1log stdout format raw\2\n\1stats socket {stats_socket} mode 600 level operator",
        text,
        "global log",
    )


# The timeouts that bound a stream's silence in each shipped config.
SILENCE = {
    "nginx": (
        r"^([ \t]*(?:grpc_read_timeout|grpc_send_timeout|client_body_timeout)[ \t]+)\S+;",
        ";",
        3,
    ),
    "haproxy": (r"^([ \t]*timeout[ \t]+(?:client|server)[ \t]+)\S+$", "", 2),
}


def with_silence(text: str, balancer: str, seconds: int) -> str:
    """The config with every silence timeout set to `seconds` (tests shorten them)."""
    pattern, end, expected = SILENCE[balancer]
    result, count = re.subn(pattern, rf"\g<1>{seconds}s{end}", text, flags=re.MULTILINE)
    if count != expected:
        raise RenderError(f"expected {expected} silence timeouts in the {balancer} config")
    return result


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (for programs that cannot be given port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def wait_listening(address: str, proc: asyncio.subprocess.Process, what: str) -> None:
    """Until `address` accepts connections; fails at once if `proc` exits first."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + STARTUP_DEADLINE
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} is not listening on {address}") from None
            await asyncio.sleep(0.02)  # the bind is in another process: nothing to wait on
            continue
        writer.close()
        await writer.wait_closed()
        return


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


# The balancer of deploy/kubernetes/balancer.yaml: the shipped HAProxy config with its
# replicas found in the DNS records of the headless Service (one server slot per pod).
KUBERNETES_HEADER = """\
# deploy/haproxy/hotsvc.cfg for Kubernetes, made by hotsvc_tools.balancers.
# haproxy_for_kubernetes (tests/test_deploy.py checks that this is what it makes): the
# replicas are the pods behind the headless Service hotsvc-replicas, found in its DNS
# records (one server slot per pod, up to 10); logs go to stdout.

"""
KUBERNETES_RESOLVERS = """resolvers kube
    parse-resolv-conf
    hold valid 5s

"""


def haproxy_for_kubernetes(text: str, service: str, slots: int) -> str:
    """deploy/haproxy/hotsvc.cfg with `server` lines replaced by a server-template over
    `service` (HOST:PORT of a headless Service), listening on all addresses."""
    server = r"^(?P<indent>[ \t]*)server[ \t]+\S+[ \t]+\S+[^\n]*$"
    template = f"server-template replica- {slots} {service} resolvers kube init-addr none"
    text = _replace_servers(server, [template], text, "backend server")
    text = _replace_one(r"^([ \t]*bind[ \t]+)\S+([ \t]+proto h2)", r"\g<1>:50051\2", text, "bind")
    text = _replace_one(r"^(defaults)$", KUBERNETES_RESOLVERS + r"\1", text, "defaults")
    text = _replace_one(
        r"^([ \t]*)log[ \t]+/dev/log([ \t]+local0)[ \t]*$",
        r"\1log stdout format raw\2",
        text,
        "log",
    )
    # Its own header instead of the host install's.
    return KUBERNETES_HEADER + text[text.index("\nglobal\n") + 1 :]
