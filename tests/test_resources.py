"""Sessions as resources, on the real CLI: GetSession, ListSessions (pages, filters,
owners), GetSessionMessages, ForkSession, DeleteSession, and CloseSession keeping the
conversation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.claude.transcripts import transcript_path
from hotsvc.localmodel import LocalModelServer
from hotsvc.localmodel.script import MODEL_NAME, NO_NUMBER_TEXT
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import (
    CLAUDE_VERSIONS,
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    Live,
    Metadata,
    StartService,
    child_pids,
    eventually,
    pid_alive,
    refusal,
)
from tests.test_ownership import team

LocalModel = tuple[LocalModelServer, dict[str, str]]


async def start_real(start_service: StartService, env: dict[str, str], **kwargs: Any) -> Live:
    return await start_service(claude_cmd=(str(REAL_CLAUDE),), child_env=env, **kwargs)


async def remember(live: Live, number: int, **open_args: Any) -> str:
    """A new session told to remember `number`, detached; its id."""
    talk = Conversation(live.stub)
    session_id = (await talk.open(**open_args)).session_id
    assert (await talk.ask(f"Remember {number}")).text == "OK"
    assert await talk.finish() == grpc.StatusCode.OK
    return session_id


async def recall(live: Live, session_id: str, **call_options: Any) -> str:
    talk = Conversation(live.stub, **call_options)
    await talk.open(session_id=session_id)
    text = (await talk.ask("What number?")).text
    assert await talk.finish() == grpc.StatusCode.OK
    return text


async def get(live: Live, session_id: str) -> pb.Session:
    return await live.stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=DEADLINE)


async def pages(live: Live, size: int, filter: str = "") -> list[list[str]]:
    """Every page of ListSessions, as session ids."""
    found, token = [], ""
    while True:
        page = await live.stub.ListSessions(
            pb.ListSessionsRequest(page_size=size, page_token=token, filter=filter),
            timeout=DEADLINE,
        )
        found.append([s.session_id for s in page.sessions])
        if not (token := page.next_page_token):
            return found


def per_session_calls(
    live: Live, session_id: str
) -> dict[str, Callable[[Metadata | None], Awaitable[object]]]:
    """The resource RPCs on one session, each as a call taking the caller's metadata."""
    stub, sid, limit = live.stub, session_id, DEADLINE
    return {
        "GetSession": lambda who: stub.GetSession(
            pb.GetSessionRequest(session_id=sid), metadata=who, timeout=limit
        ),
        "GetSessionMessages": lambda who: stub.GetSessionMessages(
            pb.GetSessionMessagesRequest(session_id=sid), metadata=who, timeout=limit
        ),
        "ForkSession": lambda who: stub.ForkSession(
            pb.ForkSessionRequest(session_id=sid), metadata=who, timeout=limit
        ),
        "DeleteSession": lambda who: stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=sid), metadata=who, timeout=limit
        ),
    }


def texts(message: pb.SessionMessage) -> list[str]:
    return [block.text.text for block in message.content if block.HasField("text")]


async def test_get_session_describes_a_live_then_a_stopped_session(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    live = await start_real(start_service, env)
    talk = Conversation(live.stub)
    opened = await talk.open()
    first = await talk.ask("Remember 42")
    second = await talk.ask("What number?")
    assert second.text == "42"

    session = await get(live, opened.session_id)
    assert (session.session_id, session.owner, session.profile) == (
        opened.session_id,
        "local",
        DEFAULT_PROFILE,
    )
    assert (session.state, session.turns, session.pid) == (
        pb.SESSION_STATE_ATTACHED,
        2,
        opened.pid,  # `local` is an admin: it sees pids
    )
    assert session.model  # as the CLI reported it
    assert session.working_directory == str(Path.cwd().resolve())
    assert session.create_time.ToNanoseconds() <= session.last_used_time.ToNanoseconds()

    async def totals_recorded() -> bool:  # the store has a turn a moment after its result
        usage = (await get(live, opened.session_id)).usage
        return usage.output_tokens == first.usage.output_tokens + second.usage.output_tokens

    await eventually(totals_recorded, "both turns' usage in the totals")
    session = await get(live, opened.session_id)
    assert session.usage.input_tokens == first.usage.input_tokens + second.usage.input_tokens
    assert session.total_cost_usd == pytest.approx(second.total_cost_usd)  # per process
    assert await talk.finish() == grpc.StatusCode.OK

    # CloseSession ends the process and keeps the conversation: stopped, then resumed.
    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    stopped = await get(live, opened.session_id)
    assert (stopped.state, stopped.pid, stopped.turns) == (pb.SESSION_STATE_STOPPED, 0, 2)
    assert not pid_alive(opened.pid)
    again = Conversation(live.stub)
    assert (await again.open(session_id=opened.session_id)).start == pb.SESSION_START_RESUMED
    assert (await again.ask("What number?")).text == "42"
    assert await again.finish() == grpc.StatusCode.OK


async def test_list_sessions_pages_newest_first_and_filters(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    profiles = {name: Profile(name=name, pool_size=0) for name in (DEFAULT_PROFILE, "review")}
    live = await start_real(start_service, env, profiles=profiles)
    opened = []
    for profile in (DEFAULT_PROFILE, "review", DEFAULT_PROFILE, "review", "review"):
        talk = Conversation(live.stub)
        opened.append((await talk.open(profile=profile)).session_id)
        assert await talk.finish() == grpc.StatusCode.OK
    newest_first = opened[::-1]

    assert await pages(live, 2) == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    assert await pages(live, 0) == [newest_first]  # the default page holds them all

    for session_id in opened[:2]:
        await live.stub.CloseSession(pb.CloseSessionRequest(session_id=session_id))
    assert await pages(live, 10, "state = STOPPED") == [opened[1::-1]]
    assert await pages(live, 10, 'state = STOPPED AND profile = "review"') == [[opened[1]]]
    assert await pages(live, 10, "profile != review AND state = idle") == [[opened[2]]]
    assert await pages(live, 1, "state = SESSION_STATE_STOPPED") == [[opened[1]], [opened[0]]]

    async def refused(**request: Any) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await live.stub.ListSessions(pb.ListSessionsRequest(**request), timeout=DEADLINE)
        got = refusal(failed.value)
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT
        assert got.field is not None
        return f"{got.field}: {got.message}"

    assert "unknown field 'colour'" in await refused(filter="colour = red")
    assert "joined by AND, not 'OR'" in await refused(filter="state = IDLE OR state = BUSY")
    assert "state 'asleep' is not one of IDLE, BUSY" in await refused(filter="state = asleep")
    assert "page_size: page_size is -1" in await refused(page_size=-1)
    assert "page_token: page_token is not a token" in await refused(page_token="bogus")
    first = await live.stub.ListSessions(pb.ListSessionsRequest(page_size=1))
    assert "made for another request" in await refused(
        page_token=first.next_page_token, filter="state = STOPPED"
    )


async def test_each_principal_sees_and_reaches_only_its_own_sessions(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    _, env = local_model
    people = await team(tmp_path)
    live = await start_real(start_service, env, auth_tokens=people.tokens)
    alice = Conversation(live.stub, metadata=people.alice)
    session_id = (await alice.open()).session_id
    assert (await alice.ask("Remember 42")).text == "OK"
    assert await alice.finish() == grpc.StatusCode.OK

    async def listed(who: Any) -> list[pb.Session]:
        page = await live.stub.ListSessions(pb.ListSessionsRequest(), metadata=who)
        return list(page.sessions)

    assert await listed(people.bob) == []
    (mine,) = await listed(people.alice)
    assert (mine.session_id, mine.owner, mine.pid) == (session_id, "alice", 0)  # no pids
    (seen,) = await listed(people.root)
    assert (seen.owner, seen.pid != 0) == ("alice", True)  # admins see every pid
    assert [s.session_id for s in await listed(people.root)] == [session_id]

    for name, call in per_session_calls(live, session_id).items():
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call(people.bob)
        got = refusal(failed.value)
        assert got.code == grpc.StatusCode.PERMISSION_DENIED, name
        assert "does not exist or is not yours (principal bob)" in got.message, name
    assert await recall(live, session_id, metadata=people.alice) == "42"  # untouched


async def test_messages_read_back_the_conversation(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    live = await start_real(start_service, env)
    talk = Conversation(live.stub)
    session_id = (await talk.open()).session_id
    assert (await talk.ask("Remember 42")).text == "OK"
    assert (await talk.ask("What number?")).text == "42"
    assert await talk.finish() == grpc.StatusCode.OK

    whole = await live.stub.GetSessionMessages(
        pb.GetSessionMessagesRequest(session_id=session_id), timeout=DEADLINE
    )
    said = [(m.role, texts(m)) for m in whole.messages]
    assert said == [
        (pb.MESSAGE_ROLE_USER, ["Remember 42"]),
        (pb.MESSAGE_ROLE_ASSISTANT, ["OK"]),
        (pb.MESSAGE_ROLE_USER, ["What number?"]),
        (pb.MESSAGE_ROLE_ASSISTANT, ["42"]),
    ]
    assert whole.next_page_token == ""
    assistant = whole.messages[1]
    assert assistant.model == MODEL_NAME and assistant.uuid
    assert whole.messages[0].create_time.ToNanoseconds() > 0

    one_by_one, token = [], ""
    while True:
        page = await live.stub.GetSessionMessages(
            pb.GetSessionMessagesRequest(session_id=session_id, page_size=1, page_token=token)
        )
        one_by_one += list(page.messages)
        if not (token := page.next_page_token):
            break
    assert one_by_one == list(whole.messages)


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_fork_recalls_and_diverges_without_touching_the_original(
    start_service: StartService, local_model: LocalModel, version: str
) -> None:
    _, env = local_model
    live = await start_service(claude_cmd=(str(CLAUDE_VERSIONS[version]),), child_env=env)
    original = await remember(live, 42)
    path = transcript_path(env, str(Path.cwd()), original)
    before = path.read_bytes()

    fork = await live.stub.ForkSession(pb.ForkSessionRequest(session_id=original), timeout=DEADLINE)
    assert fork.session_id != original
    assert (fork.owner, fork.state, fork.turns) == ("local", pb.SESSION_STATE_IDLE, 1)
    forked = [
        texts(m)
        for m in (
            await live.stub.GetSessionMessages(
                pb.GetSessionMessagesRequest(session_id=fork.session_id)
            )
        ).messages
    ]
    assert forked == [["Remember 42"], ["OK"]]  # the copy, before the fork's first turn

    talk = Conversation(live.stub)
    assert (await talk.open(session_id=fork.session_id)).start == pb.SESSION_START_ATTACHED
    assert (await talk.ask("What number?")).text == "42"
    assert (await talk.ask("Remember 7")).text == "OK"
    assert (await talk.ask("What number?")).text == "7"
    assert await talk.finish() == grpc.StatusCode.OK
    assert path.read_bytes() == before  # not a byte of the original changed

    assert await recall(live, original) == "42"
    said = await live.stub.GetSessionMessages(pb.GetSessionMessagesRequest(session_id=original))
    assert ["Remember 7"] not in [texts(m) for m in said.messages]

    # The fork has a transcript of its own now: it resumes without its source.
    await live.stub.DeleteSession(pb.DeleteSessionRequest(session_id=original))
    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=fork.session_id))
    assert await recall(live, fork.session_id) == "7"


async def test_delete_removes_the_process_transcript_and_record(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    live = await start_real(start_service, env)
    session_id = await remember(live, 42)
    pid = (await get(live, session_id)).pid
    path = transcript_path(env, str(Path.cwd()), session_id)
    assert path.is_file()

    await live.stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id), timeout=DEADLINE)

    assert not path.exists()
    assert not pid_alive(pid) and pid not in child_pids()
    assert (await live.status()).sessions == []
    for name, call in per_session_calls(live, session_id).items():
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call(None)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND, name
    # Its id is free again: a session created under it starts afresh.
    talk = Conversation(live.stub)
    await talk.send(
        pb.PromptRequest(open=pb.OpenSession(session_id=session_id, create_if_missing=True))
    )
    opened = (await talk.read()).opened
    assert (opened.session_id, opened.start) == (session_id, pb.SESSION_START_COLD)
    assert (await talk.ask("What number?")).text == NO_NUMBER_TEXT
    assert await talk.finish() == grpc.StatusCode.OK
