"""Shared fixtures: a live hotsvc on an ephemeral port, driven through real gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import psutil
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.errors import REASONS
from hotsvc.grpc.server import Service
from hotsvc.grpc.status import DOMAIN
from hotsvc.local import local_model_env
from hotsvc.localmodel import LocalModelServer
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from hotsvc.settings import ServiceConfig
from hotsvc.store import SessionStore, open_store
from hotsvc_tools.postgres import Cluster

BIN = Path(sys.executable).parent
EMULATOR_CMD = (str(BIN / "hotsvc-emulator"),)
REAL_CLAUDE = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "claude"
# An older CLI the suite also runs (make setup-dev installs it): users run whatever is on
# their PATH, and 2.1.197 writes its transcript 40-90 ms after a turn's result.
OLD_CLAUDE = (
    Path(__file__).resolve().parent
    / "claude-versions"
    / "2.1.197"
    / "node_modules"
    / (".bin/claude")
)
CLAUDE_VERSIONS = {"2.1.330": REAL_CLAUDE, "2.1.197": OLD_CLAUDE}


def _reachable_by_others(path: Path) -> bool:
    """Whether another account can get to `path`: every directory above it searchable."""
    return all(parent.stat().st_mode & 0o001 for parent in path.resolve().parents)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


@pytest.fixture(scope="session")
def child_clis() -> Iterator[dict[str, Path]]:
    """CLAUDE_VERSIONS as other accounts can run them (--child-user, --session-uids): in
    place when every directory above them lets others through, else their packages linked
    into a directory that does (a checkout under a 0700 directory, as `mktemp -d` makes)."""
    if all(_reachable_by_others(cli) for cli in CLAUDE_VERSIONS.values()):
        yield CLAUDE_VERSIONS
        return
    shared = Path(tempfile.mkdtemp(prefix="hotsvc-clis-"))
    os.chmod(shared, 0o755)
    try:
        clis = {}
        for version, cli in CLAUDE_VERSIONS.items():
            binary = cli.resolve()
            package = binary.parents[1]  # node_modules/@anthropic-ai/claude-code
            shutil.copytree(package, shared / version, copy_function=_link_or_copy)
            clis[version] = shared / version / binary.relative_to(package)
        yield clis
    finally:
        shutil.rmtree(shared)


# As `make run` does: the pinned CLI is found after any `claude` already on PATH.
os.environ["PATH"] = f"{os.environ.get('PATH', '')}{os.pathsep}{REAL_CLAUDE.parent}"
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
DEADLINE = 30.0  # safety net for every wait; tests wait on events, not on time


def child_pids() -> set[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    return _children_of(os.getpid())


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def eventually(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Re-check, through the public API, a state the service reaches in the background.

    PoolStatus has no push form, so this is how a caller observes a refill; the interval
    only paces the RPCs, and DEADLINE is a safety net, not an expectation.
    """
    async with asyncio.timeout(DEADLINE):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await predicate(), what


async def pool_refilled(stub: pb_grpc.HotSessionAsyncStub, size: int) -> None:
    async def full() -> bool:
        status = await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        return status.pool_size == size

    await eventually(full, f"the warm pool holds {size} processes")


@dataclasses.dataclass
class Live:
    service: Service
    channel: grpc.aio.Channel
    stub: pb_grpc.HotSessionAsyncStub

    @property
    def address(self) -> str:
        return self.service.address

    async def status(self) -> pb.PoolStatusResponse:
        return await self.stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)


def make_config(
    pool_size: int = 0,
    child_env: dict[str, str] | None = None,
    claude_cmd: tuple[str, ...] = EMULATOR_CMD,
    **overrides: Any,
) -> ServiceConfig:
    profiles = overrides.pop("profiles", None) or {
        DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, pool_size=pool_size)
    }
    overrides.setdefault("data_dir", None)  # the store in memory unless a test asks
    # The service's defaults depend on the host (memory) and evict after 15 minutes;
    # tests name their limits (tests/test_operability.py runs the defaults).
    overrides.setdefault("max_sessions", 0)
    overrides.setdefault("idle_timeout", 0.0)
    return ServiceConfig(
        listen="127.0.0.1:0",
        claude_cmd=claude_cmd,
        profiles=profiles,
        env=child_env or {},
        **overrides,
    )


StartService = Callable[..., Awaitable[Live]]


@pytest.fixture
async def start_service(tmp_path: Path) -> AsyncIterator[StartService]:
    """Start hotsvc in this event loop; stopped after the test, and no child may survive.
    `credentials=` makes the fixture's channel a TLS one; `tracer_provider=` is the
    OpenTelemetry one an `otel=True` service uses."""
    started: list[Live] = []

    async def start(**kwargs: Any) -> Live:
        env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude"), **kwargs.pop("child_env", {})}
        credentials: grpc.ChannelCredentials | None = kwargs.pop("credentials", None)
        tracer_provider = kwargs.pop("tracer_provider", None)  # with otel=True
        service = Service(make_config(child_env=env, **kwargs), tracer_provider)
        await service.start()
        options = [("grpc.max_receive_message_length", -1)]
        channel = (
            grpc.aio.secure_channel(service.address, credentials, options)
            if credentials is not None
            else grpc.aio.insecure_channel(service.address, options)
        )
        live = Live(service, channel, pb_grpc.HotSessionStub(channel))
        started.append(live)
        await wait_serving(channel)
        return live

    yield start
    for live in started:
        await live.channel.close(grace=None)
        await live.service.stop()
    assert child_pids() == set(), "hotsvc left child processes behind"


async def wait_serving(channel: grpc.aio.Channel) -> None:
    """Block on the standard health Watch until the service reports SERVING."""
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(
        health_pb2.HealthCheckRequest(service="hotsession.v1.HotSession"), timeout=DEADLINE
    )
    async for update in watch:
        if update.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return
    raise AssertionError("health watch ended before SERVING")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL for the whole run; each test takes its own database."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """The URL of a new, empty database (`--store` takes it as is)."""
    return postgres_cluster.create_database()


OpenStore = Callable[..., Awaitable[SessionStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new store location: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'data' / 'registry.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[OpenStore]:
    """Opens stores on one database, like replicas (or restarts) sharing it."""
    opened: list[SessionStore] = []

    async def connect(replica_id: str = "replica-a", lease_seconds: float = 15.0) -> SessionStore:
        store = open_store(store_url, replica_id, lease_seconds)
        await store.open()
        opened.append(store)
        return store

    yield connect
    for store in opened:
        await store.close()


@pytest.fixture
def local_model(tmp_path: Path) -> Iterator[tuple[LocalModelServer, dict[str, str]]]:
    """The local scripted model, and the env that points the real CLI at it, isolated."""
    assert REAL_CLAUDE.exists(), f"{REAL_CLAUDE} is missing: run `make setup-dev` (npm ci)"
    home = tmp_path / "home"
    home.mkdir()
    # No TMPDIR: hotsvc gives each child its own (tests/test_tmpdirs.py).
    with LocalModelServer(host="127.0.0.1", port=0, record_requests=True) as server:
        yield server, {**local_model_env(server.url, home / ".claude"), "HOME": str(home)}


class Conversation:
    """One Prompt stream, driven request by request like a real caller."""

    def __init__(self, stub: pb_grpc.HotSessionAsyncStub, **call_options: Any) -> None:
        self.call = stub.Prompt(timeout=DEADLINE, **call_options)

    async def open(
        self, session_id: str = "", profile: str = "", include_raw_json: bool = False
    ) -> pb.SessionOpened:
        await self.send(
            pb.PromptRequest(
                open=pb.OpenSession(
                    session_id=session_id, profile=profile, include_raw_json=include_raw_json
                )
            )
        )
        self.queued: list[str] = []  # where the open waited in line for a session slot
        while (response := await self.read()).WhichOneof("event") == "progress":
            assert response.progress.subtype == "queued", response
            self.queued.append(response.progress.status.status)
        assert response.WhichOneof("event") == "opened", response
        return response.opened

    async def send_turn(self, text: str, turn_id: str = "") -> None:
        await self.send(pb.PromptRequest(turn=pb.UserTurn(text=text, turn_id=turn_id)))

    async def send(self, request: pb.PromptRequest) -> None:
        await self.call.write(request)

    async def read(self) -> pb.PromptResponse:
        response = await self.call.read()
        assert response is not EOF, "stream ended early"
        assert isinstance(response, pb.PromptResponse)
        return response

    async def turn(self, text: str, turn_id: str = "") -> list[pb.PromptResponse]:
        """Send a turn and collect its events up to and including the result."""
        await self.send(pb.PromptRequest(turn=pb.UserTurn(text=text, turn_id=turn_id)))
        return await self.until_result()

    async def until_result(self) -> list[pb.PromptResponse]:
        events = []
        while True:
            events.append(await self.read())
            if events[-1].WhichOneof("event") == "result":
                return events

    async def ask(self, text: str) -> pb.TurnResult:
        return (await self.turn(text))[-1].result

    async def finish(self) -> grpc.StatusCode:
        """Half-close, drain what is left, and return the RPC's status."""
        await self.call.done_writing()
        while await self.call.read() is not EOF:
            pass
        return await self.call.code()


@dataclasses.dataclass
class Refusal:
    """A failed call as a client sees it: status, message, and the rich details."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    field: str | None  # from BadRequest
    retry_delay: float | None  # from RetryInfo, in seconds
    quota_subjects: list[str]  # from QuotaFailure


def refusal(error: grpc.aio.AioRpcError) -> Refusal:
    # from_call raises if the trailer's code or message differ from the call's own.
    status = rpc_status.from_call(cast(grpc.Call, error))
    assert status is not None, f"no google.rpc.Status details on {error!r}"
    infos: list[Any] = []
    fields: list[Any] = []
    delays: list[Any] = []
    quotas: list[Any] = []
    for packed in status.details:
        for kind, found in (
            (error_details_pb2.ErrorInfo, infos),
            (error_details_pb2.BadRequest, fields),
            (error_details_pb2.RetryInfo, delays),
            (error_details_pb2.QuotaFailure, quotas),
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found.append(detail)
    (info,) = infos
    assert info.domain == DOMAIN and info.reason in REASONS, info
    assert len(fields) <= 1 and len(delays) <= 1 and len(quotas) <= 1
    field = None
    if fields:
        (violation,) = fields[0].field_violations
        assert violation.description == status.message
        field = violation.field
    return Refusal(
        code=error.code(),
        message=str(error.details()),
        reason=info.reason,
        metadata=dict(info.metadata),
        field=field,
        retry_delay=delays[0].retry_delay.ToNanoseconds() / 1e9 if delays else None,
        quota_subjects=[v.subject for q in quotas for v in q.violations],
    )


Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def hotsvc_token(path: Path, principal: str, admin: bool = False) -> str:
    """A token made the way an operator makes one: `hotsvc token`."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "hotsvc"),
        "token",
        principal,
        *(["--admin"] if admin else []),
        "--file",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


class ServerProcess:
    """`hotsvc serve` as a real subprocess, on an ephemeral port."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.args = ["--listen", "127.0.0.1:0", "--claude-cmd", " ".join(EMULATOR_CMD), *args]
        # The default --data-dir is under $XDG_STATE_HOME: a throwaway one, not the user's.
        self._state = tempfile.TemporaryDirectory(prefix="hotsvc-state-")
        self.env = {**os.environ, "XDG_STATE_HOME": self._state.name, **(env or {})}
        self.credentials = credentials  # for TLS: how the health check reaches it
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""

    def channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, self.credentials)

    async def __aenter__(self) -> ServerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            str(BIN / "hotsvc"), "serve", *self.args, env=self.env, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = (await self.proc.stdout.readline()).decode()
        assert line.startswith("hotsvc listening on "), f"unexpected first line {line!r}"
        self.address = line.rsplit(" ", 1)[1].strip()
        async with self.channel() as channel:
            await wait_serving(channel)
        return self

    def stub(self) -> pb_grpc.HotSessionAsyncStub:
        """A stub on a channel that lives as long as this test's event loop."""
        return pb_grpc.HotSessionStub(grpc.aio.insecure_channel(self.address))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._state.cleanup()

    def descendants(self) -> set[int]:
        """Every live process whose ancestry leads to the server (its sessions, by pgid too)."""
        assert self.proc is not None
        found, frontier = set(), {self.proc.pid}
        while frontier:
            parent = frontier.pop()
            for pid in _children_of(parent):
                if pid not in found:
                    found.add(pid)
                    frontier.add(pid)
        return found


def _children_of(parent: int) -> set[int]:
    try:
        children = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return set()
    return {child.pid for child in children if pid_alive(child.pid)}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI nothing may be skipped: a skip there is a missing install step."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped:
        print(f"\nCI: {len(skipped)} skipped tests count as failures")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
