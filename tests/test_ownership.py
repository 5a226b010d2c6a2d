"""Sessions belong to their principal; quotas per principal; the audit log. Two principals
(alice, bob) and an admin, with tokens from `hotsvc token`, on the real CLI."""

from __future__ import annotations

import json
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.localmodel import LocalModelServer
from tests.conftest import (
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    Live,
    Metadata,
    Refusal,
    ServerProcess,
    StartService,
    bearer,
    hotsvc_token,
    refusal,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]


@dataclass
class Team:
    tokens: Path
    alice: Metadata
    bob: Metadata
    root: Metadata  # an admin


async def team(tmp_path: Path) -> Team:
    tokens = tmp_path / "tokens"
    return Team(
        tokens,
        bearer(await hotsvc_token(tokens, "alice")),
        bearer(await hotsvc_token(tokens, "bob")),
        bearer(await hotsvc_token(tokens, "root", admin=True)),
    )


async def start_shared(
    start_service: StartService, local_model: LocalModel, people: Team, **kwargs: Any
) -> Live:
    _, env = local_model
    return await start_service(
        claude_cmd=(str(REAL_CLAUDE),), child_env=env, auth_tokens=people.tokens, **kwargs
    )


async def status(live: Live, who: Metadata) -> pb.PoolStatusResponse:
    return await live.stub.PoolStatus(pb.PoolStatusRequest(), metadata=who, timeout=DEADLINE)


async def refused_open(live: Live, who: Metadata, **open_args: Any) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await Conversation(live.stub, metadata=who).open(**open_args)
    return refusal(failed.value)


async def refused_close(live: Live, who: Metadata, session_id: str) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await live.stub.CloseSession(
            pb.CloseSessionRequest(session_id=session_id), metadata=who, timeout=DEADLINE
        )
    return refusal(failed.value)


def anonymised(got: Refusal, session_id: str) -> tuple[Any, ...]:
    return (got.code, got.reason, got.message.replace(session_id, "ID"), got.metadata.keys())


async def test_another_principals_session_is_denied_and_unlisted(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    people = await team(tmp_path)
    live = await start_shared(start_service, local_model, people, pool_size=1)
    alice = Conversation(live.stub, metadata=people.alice)
    session_id = (await alice.open()).session_id
    assert (await alice.ask("Remember 42")).text == "OK"
    assert await alice.finish() == grpc.StatusCode.OK

    # bob: not listed (the service-wide figures stay), not attachable, not closable.
    seen_by_bob = await status(live, people.bob)
    assert (list(seen_by_bob.sessions), seen_by_bob.active_sessions) == ([], 1)
    attach = await refused_open(live, people.bob, session_id=session_id)
    assert (attach.code, attach.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert "does not exist or is not yours (principal bob)" in attach.message
    close = await refused_close(live, people.bob, session_id)
    assert close.code == grpc.StatusCode.PERMISSION_DENIED
    # Exactly what an id that never existed gets: nothing tells bob alice's id is real.
    unknown = str(uuid.uuid4())
    assert anonymised(attach, session_id) == anonymised(
        await refused_open(live, people.bob, session_id=unknown), unknown
    )
    assert anonymised(close, session_id) == anonymised(
        await refused_close(live, people.bob, unknown), unknown
    )

    # alice's conversation is untouched.
    again = Conversation(live.stub, metadata=people.alice)
    assert (await again.open(session_id=session_id)).start == pb.SESSION_START_ATTACHED
    assert (await again.ask("What number?")).text == "42"
    assert await again.finish() == grpc.StatusCode.OK

    # The admin sees it with its owner, drives it and closes it.
    (row,) = (await status(live, people.root)).sessions
    assert (row.session_id, row.owner) == (session_id, "alice")
    admin = Conversation(live.stub, metadata=people.root)
    assert (await admin.open(session_id=session_id)).session_id == session_id
    assert (await admin.ask("What number?")).text == "42"
    assert await admin.finish() == grpc.StatusCode.OK
    await live.stub.CloseSession(
        pb.CloseSessionRequest(session_id=session_id), metadata=people.root, timeout=DEADLINE
    )
    (row,) = (await status(live, people.alice)).sessions
    assert (row.session_id, row.state) == (session_id, pb.SESSION_STATE_STOPPED)
    await live.stub.DeleteSession(
        pb.DeleteSessionRequest(session_id=session_id), metadata=people.root, timeout=DEADLINE
    )
    assert (await status(live, people.alice)).sessions == []
    gone = await refused_open(live, people.root, session_id=session_id)
    assert (gone.code, gone.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


async def test_ownership_survives_a_restart(local_model: LocalModel, tmp_path: Path) -> None:
    _, env = local_model
    people = await team(tmp_path)
    args = (
        "--pool-size",
        "0",
        "--claude-cmd",
        str(REAL_CLAUDE),
        "--auth-tokens",
        str(people.tokens),
        "--data-dir",
        str(tmp_path / "data"),
    )
    async with ServerProcess(*args, env=env) as server, server.channel() as channel:
        talk = Conversation(pb_grpc.HotSessionStub(channel), metadata=people.alice)
        session_id = (await talk.open()).session_id
        assert (await talk.ask("Remember 42")).text == "OK"
        assert await talk.finish() == grpc.StatusCode.OK
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        await server.proc.wait()

    async with ServerProcess(*args, env=env) as server, server.channel() as channel:
        stub = pb_grpc.HotSessionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await Conversation(stub, metadata=people.bob).open(session_id=session_id)
        assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        resumed = Conversation(stub, metadata=people.alice)
        assert (await resumed.open(session_id=session_id)).start == pb.SESSION_START_RESUMED
        assert (await resumed.ask("What number?")).text == "42"


# -- quotas ----------------------------------------------------------------------------


async def test_session_quota_is_per_principal(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    people = await team(tmp_path)
    live = await start_shared(
        start_service, local_model, people, pool_size=0, max_sessions_per_principal=1
    )
    first = await Conversation(live.stub, metadata=people.alice).open()
    over = await refused_open(live, people.alice)
    assert (over.code, over.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert over.quota_subjects == ["principal:alice"]
    assert over.retry_delay is not None and over.retry_delay > 0
    assert over.metadata == {"principal": "alice", "quota": "sessions", "limit": "1"}
    assert "delete one (DeleteSession)" in over.message

    bob = Conversation(live.stub, metadata=people.bob)
    await bob.open()  # bob's own quota
    assert (await bob.ask("Remember 7")).text == "OK"

    await live.stub.CloseSession(
        pb.CloseSessionRequest(session_id=first.session_id), metadata=people.alice
    )
    # A closed session keeps its conversation, and its place in the quota.
    assert (await refused_open(live, people.alice)).reason == "QUOTA_EXCEEDED"
    await live.stub.DeleteSession(
        pb.DeleteSessionRequest(session_id=first.session_id), metadata=people.alice
    )
    await Conversation(live.stub, metadata=people.alice).open()


async def test_turn_rate_quota_refuses_the_turn_and_keeps_the_stream(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    people = await team(tmp_path)
    live = await start_shared(
        start_service, local_model, people, pool_size=0, turns_per_minute_per_principal=2
    )
    alice = Conversation(live.stub, metadata=people.alice)
    await alice.open()
    assert (await alice.ask("Remember 42")).text == "OK"
    assert (await alice.ask("Remember 43")).text == "OK"
    # The third within the minute: an `error` event for that turn; the stream stays open.
    await alice.send(pb.PromptRequest(turn=pb.UserTurn(text="What number?", turn_id="t3")))
    refused = await alice.read()
    assert (refused.turn_id, refused.WhichOneof("event")) == ("t3", "error")
    error = refused.error
    assert (error.code, error.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        "QUOTA_EXCEEDED",
    )
    assert dict(error.metadata) == {"principal": "alice", "quota": "turns", "limit": "2"}
    assert error.retry_delay.ToNanoseconds() > 0

    bob = Conversation(live.stub, metadata=people.bob)
    await bob.open()
    assert (await bob.ask("Remember 7")).text == "OK"  # bob's bucket is his own

    # alice's stream still works for what is not a turn, and ends normally.
    await alice.send(pb.PromptRequest(interrupt=pb.Interrupt()))
    assert await alice.finish() == grpc.StatusCode.OK


# -- the audit log ---------------------------------------------------------------------


async def test_the_audit_log_has_the_events_and_no_secret(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    people = await team(tmp_path)
    audit = tmp_path / "audit" / "events.jsonl"
    live = await start_shared(
        start_service,
        local_model,
        people,
        pool_size=0,
        audit_log=audit,
        max_sessions_per_principal=1,
    )
    secret_prompt = "Remember 4242 and the launch code swordfish"
    alice = Conversation(live.stub, metadata=people.alice)
    session_id = (await alice.open()).session_id
    assert (await alice.ask(secret_prompt)).text == "OK"
    assert await alice.finish() == grpc.StatusCode.OK
    await refused_open(live, people.alice)  # over the session quota
    await refused_open(live, people.bob, session_id=session_id)
    await refused_open(live, bearer("not-a-token"))
    again = Conversation(live.stub, metadata=people.alice)
    await again.open(session_id=session_id)
    assert await again.finish() == grpc.StatusCode.OK
    await live.stub.CloseSession(
        pb.CloseSessionRequest(session_id=session_id), metadata=people.root
    )
    await live.service.stop()  # writes out what is queued

    assert audit.stat().st_mode & 0o777 == 0o600
    text = audit.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    events = {(r["event"], r.get("principal")) for r in records}
    assert {
        ("auth.ok", "alice"),
        ("auth.ok", "bob"),
        ("auth.ok", "root"),
        ("auth.denied", None),
        ("session.opened", "alice"),
        ("session.attached", "alice"),
        ("quota.refused", "alice"),
        ("session.denied", "bob"),
        ("session.closed", "root"),
    } <= events
    opened = next(r for r in records if r["event"] == "session.opened")
    assert (opened["session"], opened["profile"]) == (session_id, "default")
    denied = next(r for r in records if r["event"] == "auth.denied")
    assert denied["method"] == "/hotsession.v1.HotSession/Prompt" and denied["peer"]
    closed = next(r for r in records if r["event"] == "session.closed")
    assert closed["owner"] == "alice"
    for secret in (
        *(m[0][1].split()[1] for m in (people.alice, people.bob, people.root)),
        "not-a-token",
        "swordfish",
        "4242",
    ):
        assert secret not in text, f"the audit log holds {secret!r}"
