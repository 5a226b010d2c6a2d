"""A fleet: replicas of `hotsvc serve` (the real CLI, against the local model) sharing a
real PostgreSQL behind the shipped deploy/nginx and deploy/haproxy configs, run by the
same hotsvc_tools.fleet classes as `make fleet`. Sessions survive the loss of the replica
running them, a replica added later leaves live sessions alone, and two replicas never
run one session."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
import pytest
from hotsession.client import HotSessionClient, HotSessionError, Session
from hotsession.errors import ServiceError
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc_tools.balancers import free_port
from hotsvc_tools.fleet import Fleet
from tests.conftest import (
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    eventually,
    pid_alive,
    refusal,
)

LEASE_SECONDS = 3.0
# Sessions start cold (no warm pool: two cores), the real CLI on the local model.
SERVE_ARGS = (
    "--pool-size",
    "0",
    "--lease-seconds",
    str(LEASE_SECONDS),
    "--claude-cmd",
    str(REAL_CLAUDE),
    "--local-model",
    "always",
)
BALANCERS = ["nginx", "haproxy"]


async def start_fleet(
    postgres_url: str,
    tmp_path: Path,
    balancer: str,
    replicas: int,
    *serve_args: str,
    silence: int | None = None,
) -> Fleet:
    home = tmp_path / "home"  # not the user's: the CLI's own files go here
    home.mkdir(exist_ok=True)
    fleet = Fleet(
        postgres_url,
        balancer=balancer,
        serve_args=(*SERVE_ARGS, *serve_args),
        env={"HOME": str(home)},
        balancer_silence=silence,
    )
    await fleet.start(replicas)
    return fleet


async def close_leaving_nothing(fleet: Fleet) -> None:
    pids = fleet.pids()
    await fleet.close()
    assert not [pid for pid in pids if pid_alive(pid)], "the fleet left processes behind"


@pytest.fixture(params=BALANCERS)
async def fleet(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """Three replicas behind the balancer this test runs with; nothing survives it."""
    started = await start_fleet(postgres_url, tmp_path, request.param, 3)
    try:
        yield started
    finally:
        await close_leaving_nothing(started)


async def holder(client: HotSessionClient, session_id: str) -> str:
    """The replica running a session, as GetSession through the balancer tells it."""
    return (await client.get_session(session_id)).replica_id


async def open_when_free(
    fleet: Fleet, client: HotSessionClient, session_id: str, refused_by: list[str]
) -> Session:
    """Open through the balancer as a caller should: an UNAVAILABLE that names the
    session's holder is retried after its RetryInfo delay (each holder noted). Through
    HAProxy 2.6 (Debian 12's) the call itself says CANCELLED: it resets a stream hotsvc
    refused with RST_STREAM(CANCEL) (haproxy#1219, fixed in 3.2); the helper reads the
    real status from the google.rpc.Status trailer, which arrived first. HAProxy also
    answers UNAVAILABLE itself (a 503, no details) while it still routes to a dead replica
    (deploy/haproxy: no redispatch), noted as "balancer" and retried with a backoff."""
    backoff = 0.25
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                return await client.open_session(session_id)
            except ServiceError as refused:
                assert refused.code == grpc.StatusCode.UNAVAILABLE, refused
                if refused.reason == "" and fleet.balancer.name == "haproxy":
                    refused_by.append("balancer")
                    await asyncio.sleep(backoff)  # a caller's backoff: no RetryInfo
                    backoff = min(backoff * 2, 2.0)
                    continue
                assert refused.reason == "SESSION_HELD_ELSEWHERE", refused
                assert 0 <= float(refused.metadata["leaseSecondsLeft"]) <= LEASE_SECONDS
                refused_by.append(refused.metadata["replicaId"])
                assert refused.retry_delay is not None
                await asyncio.sleep(refused.retry_delay)  # what RetryInfo asks of a caller


async def test_a_session_outlives_the_replica_running_it(fleet: Fleet) -> None:
    async with HotSessionClient(fleet.address) as client:
        # Under an id of the caller's: routed from its first call to the replica its id
        # hashes to, so that the balancer's first choice is the one that dies.
        session_id = str(uuid.uuid4())
        first = await client.open_session(session_id, create_if_missing=True)
        assert await first.ask("Remember 42") == "OK"
        lost = await holder(client, session_id)

        async def logged() -> bool:
            return (session_id, lost) in fleet.balancer.routes()

        await eventually(logged, "the balancer sent the session's calls to its holder")

        await fleet.replica(lost).kill()  # the replica and its children: a lost host
        with pytest.raises(HotSessionError):
            await first.ask("What number?")

        # Through the balancer again: its first choice refuses connections, so the next
        # replica on the ring gets the call (HAProxy: once its health check marked the
        # dead one down); it answers UNAVAILABLE naming the dead one until that one's
        # lease (LEASE_SECONDS) runs out, then takes the session over from the store.
        refused_by: list[str] = []
        again = await open_when_free(fleet, client, session_id, refused_by)
        assert refused_by and set(refused_by) <= {lost, "balancer"}, refused_by
        if fleet.balancer.name == "nginx":  # it tries the next replica at once
            assert set(refused_by) == {lost}
        assert again.start == pb.SESSION_START_RESUMED
        assert await again.ask("What number?") == "42"
        now = await holder(client, session_id)
        assert now != lost and fleet.replica(now).alive
        await again.close()


async def route_of(fleet: Fleet, client: HotSessionClient, session_id: str) -> str:
    """Which replica the balancer sends `session_id` to: a cheap call naming it (NOT_FOUND
    from whichever replica), read back from the balancer's log."""
    with pytest.raises(ServiceError) as missing:
        await client.get_session(session_id)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND

    async def logged() -> bool:
        return any(s == session_id for s, _ in fleet.balancer.routes())

    await eventually(logged, f"the balancer logged its call for {session_id}")
    return next(r for s, r in reversed(fleet.balancer.routes()) if s == session_id)


async def test_a_replica_added_later_leaves_live_sessions_alone(fleet: Fleet) -> None:
    # Two session ids the balancer will send, once replica-4 is in, one to replica-4 and
    # one to where it sends it today: found by asking a four-replica balancer first (the
    # ring is a function of the replicas alone), then going back to three.
    await fleet.add_replica()
    moves = stays = ""
    async with HotSessionClient(fleet.address) as probe:
        while not (moves and stays):
            candidate = str(uuid.uuid4())
            if await route_of(fleet, probe, candidate) == "replica-4":
                moves = moves or candidate
            else:
                stays = stays or candidate
    await fleet.balance(["replica-1", "replica-2", "replica-3"])

    numbers = {moves: "17", stays: "23"}
    async with HotSessionClient(fleet.address) as client:
        live = {}
        for session_id, number in numbers.items():
            live[session_id] = await client.open_session(session_id, create_if_missing=True)
            assert await live[session_id].ask(f"Remember {number}") == "OK"
        before = {session_id: await holder(client, session_id) for session_id in numbers}
        assert "replica-4" not in before.values()

        await fleet.balance(["replica-1", "replica-2", "replica-3", "replica-4"])
        # Streams under way stay where they run.
        for session_id, number in numbers.items():
            assert await live[session_id].ask("What number?") == number
            assert await holder(client, session_id) == before[session_id]
            await live[session_id].detach()

    # A new connection sees the new ring: one session moved to replica-4 and resumed there
    # from the store; the other stayed, its process still hot.
    async with HotSessionClient(fleet.address) as client:
        for session_id, number in numbers.items():
            session = await open_when_free(fleet, client, session_id, [])
            now = await holder(client, session_id)
            if session_id == moves:
                assert (now, session.start) == ("replica-4", pb.SESSION_START_RESUMED)
            else:
                assert (now, session.start) == (before[session_id], pb.SESSION_START_ATTACHED)
            assert await session.ask("What number?") == number
            await session.close()


def running(fleet: Fleet, session_id: str) -> list[int]:
    """The fleet's Claude Code processes for this session (by their --session-id or
    --resume argument)."""
    found = []
    for pid in fleet.pids():
        try:
            argv = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        if session_id in argv:
            found.append(pid)
    return found


async def test_two_replicas_racing_for_a_session_exactly_one_runs_it(
    postgres_url: str, tmp_path: Path
) -> None:
    # No balancer sends one session to two replicas; a caller reaching them directly can.
    fleet = await start_fleet(postgres_url, tmp_path, "nginx", 2)
    try:
        clients = [HotSessionClient(r.address) for r in fleet.replicas]
        session_id = str(uuid.uuid4())
        for round_ in ("new", "stopped"):
            opened = await asyncio.gather(
                *(c.open_session(session_id, create_if_missing=True) for c in clients),
                return_exceptions=True,
            )
            (winner,) = [s for s in opened if isinstance(s, Session)]
            (lost,) = [e for e in opened if not isinstance(e, Session)]
            assert isinstance(lost, HotSessionError), lost
            assert isinstance(lost.__cause__, grpc.aio.AioRpcError)
            refused = refusal(lost.__cause__)
            assert refused.reason == "SESSION_HELD_ELSEWHERE", (round_, refused)
            winner_name = fleet.replicas[opened.index(winner)].name
            assert refused.metadata["replicaId"] == winner_name

            async def one_process() -> bool:
                return len(running(fleet, session_id)) == 1

            await eventually(one_process, "one Claude Code process runs the session")
            if round_ == "new":
                assert await winner.ask("Remember 5") == "OK"
            else:
                assert await winner.ask("What number?") == "5"
            await winner.close()  # stopped: the next round races to resume it
        for client in clients:
            await client.close()
    finally:
        await close_leaving_nothing(fleet)


async def test_closing_a_session_another_replica_runs_names_that_replica(
    postgres_url: str, tmp_path: Path
) -> None:
    # A CloseSession routed to the wrong replica must not answer OK having ended nothing.
    fleet = await start_fleet(postgres_url, tmp_path, "nginx", 2)
    try:
        running_on, other = fleet.replicas
        async with HotSessionClient(running_on.address) as client:
            session = await client.open_session()
            assert await session.ask("Remember 8") == "OK"
            (pid,) = running(fleet, session.session_id)
            async with grpc.aio.insecure_channel(other.address) as channel:
                wrong = pb_grpc.HotSessionStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await wrong.CloseSession(
                        pb.CloseSessionRequest(session_id=session.session_id), timeout=DEADLINE
                    )
            refused = refusal(failed.value)
            assert (refused.code, refused.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "SESSION_HELD_ELSEWHERE",
            )
            assert refused.metadata["replicaId"] == running_on.name
            assert pid_alive(pid)
            await client.close_session(session.session_id)  # where it runs: it ends

            async def ended() -> bool:
                return not pid_alive(pid)

            await eventually(ended, "the session's process ends")
    finally:
        await close_leaving_nothing(fleet)


async def test_a_replica_stopped_on_purpose_hands_its_sessions_over_at_once(
    fleet: Fleet,
) -> None:
    async with HotSessionClient(fleet.address) as client:
        first = await client.open_session()
        assert await first.ask("Remember 42") == "OK"
        stopped = await holder(client, first.session_id)
        await fleet.replica(stopped).stop()  # SIGTERM: drain, end children, release leases
        with pytest.raises(HotSessionError):
            await first.ask("What number?")

        # The balancer passes the stopped replica over (HAProxy: once its health check
        # marked it down); the next one takes the session at once (its lease was
        # released, not left to expire): no replica refuses it on the way.
        refused_by: list[str] = []
        again = await open_when_free(fleet, client, first.session_id, refused_by)
        assert set(refused_by) <= {"balancer"}, refused_by
        assert again.start == pb.SESSION_START_RESUMED
        assert await again.ask("What number?") == "42"
        assert await holder(client, first.session_id) != stopped
        await again.close()


@pytest.mark.parametrize("balancer", BALANCERS)
async def test_heartbeats_keep_a_quiet_stream_through_the_balancer(
    balancer: str, postgres_url: str, tmp_path: Path
) -> None:
    # The shipped silence timeouts are 300 s over a 30 s heartbeat; here 2 s over 0.5 s.
    fleet = await start_fleet(
        postgres_url, tmp_path, balancer, 1, "--heartbeat-interval", "0.5", silence=2
    )
    try:
        async with grpc.aio.insecure_channel(fleet.address) as channel:
            talk = Conversation(pb_grpc.HotSessionStub(channel))
            await talk.open()
            assert (await talk.ask("Remember 42")).text == "OK"
            # The caller thinks for six heartbeats (3 s): silent towards the balancer
            # longer than any of its timeouts allow, while the replica's heartbeats flow.
            for _ in range(6):
                event = await talk.read()
                assert event.WhichOneof("event") == "heartbeat", event
            assert (await talk.ask("What number?")).text == "42"
            assert await talk.finish() == grpc.StatusCode.OK
    finally:
        await close_leaving_nothing(fleet)


async def test_make_fleet_serves_through_nginx_and_leaves_nothing_on_ctrl_c() -> None:
    listen = f"127.0.0.1:{free_port()}"
    tool = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotsvc_tools.fleet",
        "--listen",
        listen,
        "--",
        "--pool-size",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert tool.stdout is not None
        async with asyncio.timeout(DEADLINE):
            first = (await tool.stdout.readline()).decode()
            assert first == f"hotsvc fleet listening on {listen}\n", first
            lines = []
            while not (line := (await tool.stdout.readline()).decode()).startswith("Ctrl-C"):
                lines.append(line)
        (store,) = [line for line in lines if "session store" in line]
        cluster_dir = Path(store.split("host=", 1)[1].split("&", 1)[0])
        postmaster = int((cluster_dir / "data" / "postmaster.pid").read_text().split()[0])
        (nginx,) = [line for line in lines if "nginx (" in line]
        fleet_dir = Path(nginx.split("(")[1].split(")")[0]).parent

        async with HotSessionClient(listen) as client, await client.open_session() as session:
            assert await session.ask("Remember 42") == "OK"
            assert await session.ask("What number?") == "42"
            before = {tool.pid, postmaster}
            before |= {p.pid for p in psutil.Process(tool.pid).children(recursive=True)}
            before |= {p.pid for p in psutil.Process(postmaster).children(recursive=True)}
            assert len(before) > 6  # the tool, 3 replicas, nginx's two, a CLI, PostgreSQL's

        tool.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(DEADLINE):
            rest, _ = await tool.communicate()
        assert tool.returncode == 0, rest.decode()
        assert rest.decode().endswith("fleet stopped\n")
        assert [pid for pid in before if pid_alive(pid)] == []
        assert not await asyncio.to_thread(cluster_dir.exists)
        assert not await asyncio.to_thread(fleet_dir.exists)
    finally:
        if tool.returncode is None:  # the test failed first: stop the fleet all the same
            tool.send_signal(signal.SIGINT)
            await tool.wait()
