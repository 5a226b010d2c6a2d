"""Permission prompts decided by the caller (`permission_prompts = "caller"`): the real CLI
asks (`can_use_tool`), the caller sees a `permission_request` and answers with a
`permission_decision`; no answer, no stream or a stream that cannot answer is a deny."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from hotsession.client import HotSessionClient
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc import metrics
from hotsvc.localmodel import LocalModelServer
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import (
    CLAUDE_VERSIONS,
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    Live,
    StartService,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]


async def start(
    start_service: StartService,
    local_model: LocalModel,
    root: Path,
    cli: Path = REAL_CLAUDE,
    **fields: Any,
) -> Live:
    _, env = local_model
    service = {
        k: fields.pop(k) for k in ("on_disconnect", "audit_log", "metrics_listen") if k in fields
    }
    profile = Profile(
        name=DEFAULT_PROFILE,
        pool_size=0,
        workspace_root=str(root),
        permission_prompts="caller",
        **fields,
    )
    return await start_service(
        claude_cmd=(str(cli),), child_env=env, profiles={DEFAULT_PROFILE: profile}, **service
    )


async def until(talk: Conversation, kind: str) -> list[pb.PromptResponse]:
    """The stream's events up to and including the first of `kind`."""
    events = []
    while (event := await talk.read()).WhichOneof("event") != kind:
        assert event.WhichOneof("event") != "result", f"no {kind} before the result: {event}"
        events.append(event)
    return [*events, event]


async def asked(talk: Conversation, text: str) -> pb.PermissionRequest:
    await talk.send_turn(text)
    return (await until(talk, "permission_request"))[-1].permission_request


async def decide(talk: Conversation, request_id: str, **decision: Any) -> None:
    await talk.send(
        pb.PromptRequest(
            permission_decision=pb.PermissionDecision(request_id=request_id, **decision)
        )
    )


def tool_results(events: list[pb.PromptResponse]) -> list[pb.ToolResult]:
    return [e.tool_result for e in events if e.HasField("tool_result")]


def counted() -> dict[str, float]:
    """hotsvc_permission_requests_total by decision, in this (the service's) process."""
    return {
        s.labels["decision"]: s.value
        for family in metrics.REGISTRY.collect()
        if family.name == "hotsvc_permission_requests"
        for s in family.samples
    }


def moved(before: dict[str, float]) -> dict[str, float]:
    return {d: n - before.get(d, 0.0) for d, n in counted().items() if n != before.get(d, 0.0)}


def workspace_of(root: Path) -> Path:
    (workspace,) = root.iterdir()
    return workspace


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_a_caller_who_allows_a_write_sees_the_file_and_its_tool_result(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, version: str
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root, CLAUDE_VERSIONS[version])
    talk = Conversation(live.stub)
    await talk.open()
    request = await asked(talk, "write file allowed.txt")
    workspace = workspace_of(root)
    assert request.tool_name == "Write" and request.request_id and request.tool_use_id
    assert request.input["file_path"] == str(workspace.resolve() / "allowed.txt")
    assert 0 < request.time_left.ToNanoseconds() <= 60e9
    assert not (workspace / "allowed.txt").exists()  # it waits for the caller
    await decide(talk, request.request_id, allow=True)
    events = await talk.until_result()
    (written,) = tool_results(events)
    assert not written.is_error and written.tool_use_id == request.tool_use_id
    assert (workspace / "allowed.txt").read_text() == "written by hotsvc-local-scripted\n"
    assert not events[-1].result.is_error


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_a_caller_who_denies_sees_no_file_and_claude_is_told_the_message(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, version: str
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root, CLAUDE_VERSIONS[version])
    talk = Conversation(live.stub)
    await talk.open()
    request = await asked(talk, "write file denied.txt")
    message = "Not in this workspace: ask the team lead first."
    await decide(talk, request.request_id, allow=False, message=message)
    events = await talk.until_result()
    (refused,) = tool_results(events)
    assert refused.is_error and refused.content == message
    assert message in events[-1].result.text  # the scripted model quotes what it was told
    assert not (workspace_of(root) / "denied.txt").exists()
    assert (await talk.ask("echo still here")).text.startswith("echo: still here")


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_a_caller_who_never_answers_gets_the_timeout_deny_and_one_result(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, version: str
) -> None:
    root = tmp_path / "workspaces"
    live = await start(
        start_service, local_model, root, CLAUDE_VERSIONS[version], permission_timeout=0.5
    )
    talk = Conversation(live.stub)
    await talk.open()
    before = counted()
    await talk.send_turn("write file unanswered.txt", turn_id="first")
    events = await talk.until_result()
    assert moved(before) == {"timeout": 1}
    (request,) = [e.permission_request for e in events if e.HasField("permission_request")]
    (refused,) = tool_results(events)
    assert refused.is_error and "did not answer the permission request within 0.5s" in (
        refused.content
    )
    assert {e.turn_id for e in events} == {"first"}
    # Exactly one result: the next turn's events are all its own, ending in its result.
    await talk.send_turn("echo next", turn_id="second")
    events = await talk.until_result()
    assert {e.turn_id for e in events} == {"second"}
    assert events[-1].result.text.startswith("echo: next")
    assert not (workspace_of(root) / "unanswered.txt").exists()
    # Too late now: the request is no longer waiting, and the stream stays.
    await decide(talk, request.request_id, allow=True)
    refusal = (await until(talk, "error"))[-1].error
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refusal.metadata["requestId"] == request.request_id
    assert (await talk.ask("echo after")).text.startswith("echo: after")


async def test_a_decision_for_no_waiting_request_is_invalid_and_the_stream_stays(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    live = await start(start_service, local_model, tmp_path / "workspaces")
    talk = Conversation(live.stub)
    await talk.open()
    await decide(talk, "no-such-request", allow=True)
    refusal = (await until(talk, "error"))[-1].error
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "no permission request 'no-such-request' is waiting" in refusal.message
    request = await asked(talk, "write file twice.txt")
    await decide(talk, request.request_id, allow=True, apply_suggestions=[7])
    refusal = (await until(talk, "error"))[-1].error
    assert "apply_suggestions [7] are out of range" in refusal.message
    await decide(talk, request.request_id, allow=True)
    await decide(talk, request.request_id, allow=False)  # answered already
    events = await talk.until_result()
    refusals = [e.error for e in events if e.HasField("error")]
    assert [r.metadata["field"] for r in refusals] == ["permission_decision.request_id"]
    assert not tool_results(events)[0].is_error


async def test_a_reattaching_caller_is_sent_the_requests_still_waiting(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root, on_disconnect="finish")
    first = Conversation(live.stub)
    session_id = (await first.open()).session_id
    request = await asked(first, "write file later.txt")
    first.call.cancel()  # the caller goes away; the turn goes on, the request waits
    again = Conversation(live.stub)
    await again.open(session_id=session_id)
    resent = (await until(again, "permission_request"))[-1]
    assert resent.permission_request.request_id == request.request_id
    assert resent.permission_request.input == request.input
    await decide(again, request.request_id, allow=True)
    # The next turn runs once the waiting one is done.
    assert (await again.ask("echo after")).text.startswith("echo: after")
    assert (workspace_of(root) / "later.txt").exists()


async def test_ask_cannot_answer_so_its_requests_are_denied_at_once(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root)
    call = live.stub.Ask(
        pb.AskRequest(turn=pb.UserTurn(text="write file asked.txt")), timeout=DEADLINE
    )
    events = [event async for event in call]
    assert not [e for e in events if e.HasField("permission_request")]
    (refused,) = tool_results(events)
    assert refused.is_error and "cannot answer permission requests" in refused.content
    assert "use a Prompt stream" in refused.content
    assert not list(workspace_of(root).iterdir())


async def test_deny_with_interrupt_ends_the_turn_and_the_next_one_runs(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    live = await start(start_service, local_model, tmp_path / "workspaces")
    talk = Conversation(live.stub)
    await talk.open()
    request = await asked(talk, "write file stop.txt")
    await decide(talk, request.request_id, allow=False, interrupt=True)
    result = (await talk.until_result())[-1].result
    assert result.is_error and result.subtype == "error_during_execution"
    assert (await talk.ask("Remember 5")).text == "OK"


async def test_an_interrupt_withdraws_a_waiting_request(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    live = await start(start_service, local_model, tmp_path / "workspaces")
    talk = Conversation(live.stub)
    await talk.open()
    before = counted()
    request = await asked(talk, "write file withdrawn.txt")
    await talk.send(pb.PromptRequest(interrupt=pb.Interrupt()))
    result = (await talk.until_result())[-1].result
    assert result.is_error
    assert moved(before) == {"withdrawn": 1}  # answered with nothing, counted once
    await decide(talk, request.request_id, allow=True)
    refusal = (await until(talk, "error"))[-1].error
    assert refusal.metadata["requestId"] == request.request_id
    assert (await talk.ask("Remember 6")).text == "OK"


async def test_an_allow_may_change_the_input(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root)
    talk = Conversation(live.stub)
    await talk.open()
    request = await asked(talk, "write file asked-for.txt")
    instead = struct_pb2.Struct()
    instead.update(
        {
            "file_path": str(workspace_of(root).resolve() / "instead.txt"),
            "content": "the caller's own\n",
        }
    )
    await decide(talk, request.request_id, allow=True, updated_input=instead)
    (written,) = tool_results(await talk.until_result())
    assert not written.is_error
    assert sorted(p.name for p in workspace_of(root).iterdir()) == ["instead.txt"]
    assert (workspace_of(root) / "instead.txt").read_text() == "the caller's own\n"


@pytest.mark.parametrize("persist", [False, True])
async def test_only_session_suggestions_apply_unless_the_profile_lets_callers_persist(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, persist: bool
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root, caller_may_persist_permissions=persist)
    talk = Conversation(live.stub)
    await talk.open()
    request = await asked(talk, "run tool: touch suggested")
    destinations = [s["destination"] for s in request.suggestions]
    lasting = destinations.index("localSettings")
    await decide(talk, request.request_id, allow=True, apply_suggestions=[lasting])
    assert not tool_results(await talk.until_result())[0].is_error
    rules = workspace_of(root) / ".claude" / "settings.local.json"
    assert rules.exists() is persist
    if persist:
        assert "touch suggested" in json.dumps(json.loads(rules.read_text()))


async def test_the_audit_log_has_the_permission_events_and_no_input(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    live = await start(
        start_service, local_model, tmp_path / "workspaces", audit_log=audit, permission_timeout=0.5
    )
    talk = Conversation(live.stub)
    session_id = (await talk.open()).session_id
    request = await asked(talk, "write file swordfish-allowed.txt")
    await decide(talk, request.request_id, allow=True)
    await talk.until_result()
    request = await asked(talk, "write file swordfish-denied.txt")
    await decide(talk, request.request_id, allow=False, message="no")
    await talk.until_result()
    await talk.ask("write file swordfish-unanswered.txt")
    await live.service.stop()
    text = audit.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    permission = [
        (r["event"], r.get("reason", "")) for r in records if r["event"].startswith("permission.")
    ]
    assert permission == [
        ("permission.asked", ""),
        ("permission.allowed", "caller"),
        ("permission.asked", ""),
        ("permission.denied", "caller"),
        ("permission.asked", ""),
        ("permission.denied", "timeout"),
    ]
    for record in records:
        if record["event"].startswith("permission."):
            assert record["session"] == session_id and record["principal"] == "local"
            assert record["tool"] == "Write" and record["input_digest"].startswith("sha256:")
    assert "swordfish" not in text and "written by" not in text


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_the_python_helper_answers_with_a_callback(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root)
    seen: list[pb.PermissionRequest] = []

    def sync_verdict(request: pb.PermissionRequest) -> bool | pb.PermissionDecision:
        seen.append(request)
        if str(request.input["file_path"]).endswith("yes.txt"):
            return True
        return pb.PermissionDecision(allow=False, message="not that one")

    async def async_verdict(request: pb.PermissionRequest) -> bool | pb.PermissionDecision:
        await asyncio.sleep(0)
        return sync_verdict(request)

    callback = sync_verdict if kind == "sync" else async_verdict
    async with (
        HotSessionClient(live.address) as client,
        await client.open_session(on_permission=callback) as session,
    ):
        assert "File created successfully" in await session.ask("write file yes.txt")
        turn = await session.send("write file no.txt")
        events = [event async for event in turn]
        kinds = [e.WhichOneof("event") for e in events]
        assert "permission_request" in kinds  # the raw events are there too
        assert "not that one" in await turn.text()
    assert [r.tool_name for r in seen] == ["Write", "Write"]
    assert sorted(p.name for p in workspace_of(root).iterdir()) == ["yes.txt"]


async def test_the_python_helper_can_answer_while_iterating(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root)
    async with HotSessionClient(live.address) as client, await client.open_session() as session:
        turn = await session.send("write file by-hand.txt")
        async for event in turn:
            if event.HasField("permission_request"):
                request = event.permission_request
                await session.decide(request.request_id, allow=True)
        assert "File created successfully" in await turn.text()
    assert (workspace_of(root) / "by-hand.txt").exists()
