"""HotSession end to end through real gRPC on the REAL Claude Code CLI.

The CLI (node_modules/.bin/claude, installed by `make setup-dev`) runs offline against the
local scripted model (hotsvc.localmodel); nothing here is skipped: without the binary the
`local_model` fixture fails and says how to install it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.localmodel import LocalModelServer
from hotsvc.localmodel.script import slow_words
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import REAL_CLAUDE, Conversation, Live, StartService, eventually

LocalModel = tuple[LocalModelServer, dict[str, str]]

# The local model's whole "slow" reply.
SLOW_TEXT = "".join(slow_words())


async def start_real(start_service: StartService, env: dict[str, str], **kwargs: Any) -> Live:
    return await start_service(claude_cmd=(str(REAL_CLAUDE),), child_env=env, **kwargs)


def kinds(events: list[pb.PromptResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def deltas(events: list[pb.PromptResponse]) -> list[str]:
    return [e.text_delta.text for e in events if e.HasField("text_delta")]


async def session_row(live: Live, session_id: str) -> pb.SessionInfo:
    rows = [row for row in (await live.status()).sessions if row.session_id == session_id]
    assert len(rows) == 1, f"no single PoolStatus row for {session_id}: {rows}"
    return rows[0]


async def read_until_delta(talk: Conversation) -> list[pb.PromptResponse]:
    """Events of the running turn up to and including its first text_delta."""
    events = [await talk.read()]
    while not events[-1].HasField("text_delta"):
        assert not events[-1].HasField("result"), f"turn ended before streaming: {events}"
        events.append(await talk.read())
    return events


class TimedConversation(Conversation):
    """A Prompt stream with the caller's own deadline instead of the suite's safety net."""

    def __init__(self, stub: pb_grpc.HotSessionAsyncStub, timeout: float) -> None:
        # grpc-stubs miss the aio form that takes no request iterator (write() feeds it).
        self.call = stub.Prompt(timeout=timeout)  # type: ignore[call-arg]


async def test_warm_session_remembers_across_two_turns(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    live = await start_real(start_service, env, pool_size=1)
    (warm_pid,) = (await live.status()).pools[0].idle_pids
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert opened.start == pb.SESSION_START_WARM
    assert opened.pid == warm_pid

    first = await talk.turn("Remember 42")
    after_first = await session_row(live, opened.session_id)
    second = await talk.turn("What number?")
    after_second = await session_row(live, opened.session_id)

    assert (first[-1].result.text, first[-1].result.is_error) == ("OK", False)
    assert (second[-1].result.text, second[-1].result.is_error) == ("42", False)
    assert first[-1].result.subtype == second[-1].result.subtype == "success"
    assert {e.session_id for e in first + second} == {opened.session_id}
    assert (after_first.pid, after_first.turns) == (opened.pid, 1)
    assert (after_second.pid, after_second.turns) == (opened.pid, 2)
    assert await talk.finish() == grpc.StatusCode.OK


async def test_tokens_stream_as_text_deltas_before_the_result(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    server.set_slow_delay(0.01)
    live = await start_real(start_service, env)
    talk = Conversation(live.stub)
    await talk.open()

    events = await talk.turn("please be slow", turn_id="stream-1")

    order = kinds(events)
    streamed = deltas(events)
    assert order[0] == "turn_started" and order[-1] == "result"
    assert order.count("result") == 1
    assert len(streamed) >= 3, f"expected the words to stream one by one, got {streamed}"
    assert order.index("text_delta") < order.index("assistant")
    assistant_text = "".join(
        block.text.text for e in events if e.HasField("assistant") for block in e.assistant.content
    )
    result = events[-1].result
    assert "".join(streamed) == result.text == assistant_text == SLOW_TEXT
    assert not result.is_error
    assert {e.turn_id for e in events} == {"stream-1"}
    statuses = [e.progress.status.status for e in events if e.HasField("progress")]
    assert "requesting" in statuses


async def test_interrupt_mid_stream_ends_the_turn_and_keeps_the_process(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    server.set_slow_delay(1.0)  # 30 words: the stream is still going when the interrupt lands
    live = await start_real(start_service, env)
    talk = Conversation(live.stub)
    opened = await talk.open()
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="please be slow")))
    before = await read_until_delta(talk)

    await talk.send(pb.PromptRequest(interrupt=pb.Interrupt()))
    rest = await talk.until_result()

    result = rest[-1].result
    assert result.is_error
    assert result.subtype == "error_during_execution"
    streamed = "".join(deltas(before + rest))
    assert streamed and SLOW_TEXT.startswith(streamed) and streamed != SLOW_TEXT
    partial = [e.assistant for e in rest if e.HasField("assistant")]
    assert partial and partial[-1].content[0].text.text == streamed
    assert (await talk.ask("Remember 5")).text == "OK"
    assert (await talk.ask("What number?")).text == "5"
    assert (await session_row(live, opened.session_id)).pid == opened.pid


async def test_api_failure_reports_retries_and_an_error_result_then_recovers(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    live = await start_real(start_service, {**env, "CLAUDE_CODE_MAX_RETRIES": "1"})
    talk = Conversation(live.stub)
    opened = await talk.open()

    events = await talk.turn("fail500")

    retries = [e.progress for e in events if e.progress.subtype == "api_retry"]
    assert [
        (r.api_retry.attempt, r.api_retry.max_retries, r.api_retry.error_status) for r in retries
    ] == [(1, 1, 500)]
    assert retries[0].api_retry.retry_delay_ms > 0
    (synthetic,) = [e.assistant for e in events if e.HasField("assistant")]
    assert synthetic.error == "server_error"
    result = events[-1].result
    assert result.is_error
    assert result.api_error_status == 500
    assert result.subtype == "success"  # as the real CLI reports it; is_error is what counts
    assert "500" in result.text
    assert (await talk.ask("Remember 9")).text == "OK"
    assert (await talk.ask("What number?")).text == "9"
    assert (await session_row(live, opened.session_id)).pid == opened.pid


async def test_caller_deadline_cancels_the_turn_not_the_session(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    server.set_slow_delay(10.0)  # the slow reply would take five minutes
    live = await start_real(start_service, env, pool_size=1)
    impatient = TimedConversation(live.stub, timeout=4.0)
    opened = await impatient.open()
    assert (await impatient.ask("Remember 42")).text == "OK"
    await impatient.send(pb.PromptRequest(turn=pb.UserTurn(text="please be slow")))
    await read_until_delta(impatient)

    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await impatient.until_result()
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    again = Conversation(live.stub)
    reopened = await again.open(session_id=opened.session_id)
    assert reopened.start == pb.SESSION_START_ATTACHED
    assert (reopened.session_id, reopened.pid) == (opened.session_id, opened.pid)
    # Turns run one at a time, so this answer also proves the five-minute turn was stopped.
    recall = await again.ask("What number?")
    assert (recall.text, recall.is_error) == ("42", False)
    assert await again.finish() == grpc.StatusCode.OK


async def test_tool_turn_runs_bash_and_quotes_its_output(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    _, env = local_model
    workdir = tmp_path / "work"
    workdir.mkdir()
    profile = Profile(name=DEFAULT_PROFILE, pool_size=0, allowed_tools=("Bash",), cwd=str(workdir))
    live = await start_real(start_service, env, profiles={DEFAULT_PROFILE: profile})
    talk = Conversation(live.stub)
    await talk.open()

    events = await talk.turn("run tool: echo hi")

    uses = [
        block.tool_use
        for e in events
        if e.HasField("assistant")
        for block in e.assistant.content
        if block.HasField("tool_use")
    ]
    assert len(uses) == 1
    assert uses[0].name == "Bash"
    assert uses[0].input["command"] == "echo hi"
    (tool_result,) = [e.tool_result for e in events if e.HasField("tool_result")]
    assert tool_result.tool_use_id == uses[0].id
    assert (tool_result.content, tool_result.is_error) == ("hi", False)
    order = kinds(events)
    assert order.index("assistant") < order.index("tool_result") < order.index("result")
    result = events[-1].result
    assert (result.text, result.is_error) == ('Bash tool said: "hi"', False)
    assert result.num_turns == 2


async def test_a_huge_reply_fits_a_client_with_default_limits(
    start_service: StartService, local_model: LocalModel
) -> None:
    # 1,000,000 three-byte characters, echoed: with raw_json this was a 6 MB event.
    _, env = local_model
    live = await start_real(start_service, env)
    async with grpc.aio.insecure_channel(live.address) as channel:  # 4 MiB receive limit
        talk = Conversation(pb_grpc.HotSessionStub(channel))
        await talk.open(include_raw_json=True)
        text = "€" * 1_000_000
        events = await talk.turn(f"echo {text}")
    assert all(e.ByteSize() <= 4 * 1024 * 1024 for e in events)
    result = events[-1].result
    assert (result.is_error, result.text) == (False, f"echo: {text}")
    assert "".join(deltas(events)) == f"echo: {text}"
    assert len(deltas(events)) > 1  # split
    (assistant,) = [e for e in events if e.HasField("assistant")]
    assert assistant.raw_json_truncated and assistant.raw_json == ""
    assert assistant.assistant.content[0].text.text == f"echo: {text}"
    small = [e for e in events if e.HasField("turn_started") or e.HasField("progress")]
    assert all(e.raw_json or e.HasField("turn_started") for e in small)


@pytest.mark.parametrize(
    ("retention_days", "kept"), [(0, True), (30, False)], ids=["never", "30-days"]
)
async def test_transcripts_are_kept_for_the_retention_period(
    start_service: StartService, local_model: LocalModel, retention_days: int, kept: bool
) -> None:
    # Claude Code deletes transcripts older than its cleanupPeriodDays (30 by default) once
    # a day, ~5 s after a first turn, and then writes .last-cleanup.
    _, env = local_model
    config_dir = Path(env["CLAUDE_CONFIG_DIR"])
    old = config_dir / "projects" / "-srv-old-project" / f"{uuid.uuid4()}.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text('{"type":"user"}\n')
    forty_days_ago = time.time() - 40 * 86400
    os.utime(old, (forty_days_ago, forty_days_ago))

    live = await start_real(start_service, env, transcript_retention_days=retention_days)
    talk = Conversation(live.stub)
    await talk.open()
    assert (await talk.ask("Remember 42")).text == "OK"

    async def cleaned_up() -> bool:
        return (config_dir / ".last-cleanup").exists()

    await eventually(cleaned_up, "Claude Code ran its transcript cleanup")
    if not kept:  # the sweep may still be deleting when it writes .last-cleanup

        async def deleted() -> bool:
            return not old.exists()

        await eventually(deleted, "the 40-day-old transcript was deleted")
    assert old.exists() == kept


async def test_a_quiet_tool_is_not_a_hang(
    start_service: StartService, local_model: LocalModel
) -> None:
    # A tool step silent for longer than the inactivity timeout (a build, a test run) gets
    # --tool-timeout instead, and progress meanwhile.
    _, env = local_model
    profile = Profile(name=DEFAULT_PROFILE, pool_size=0, allowed_tools=("Bash",))
    live = await start_real(
        start_service,
        env,
        profiles={DEFAULT_PROFILE: profile},
        turn_inactivity_timeout=3.0,
        heartbeat_interval=1.0,
    )
    talk = Conversation(live.stub)
    await talk.open()
    assert (await talk.ask("Remember 1")).text == "OK"  # the CLI's first-turn work done
    # (The CLI refuses a long `sleep` command, not one inside a program.)
    events = await talk.turn("run tool: python3 -c 'import time; time.sleep(5)' && echo done")
    result = events[-1].result
    assert (result.subtype, result.text) == ("success", 'Bash tool said: "done"'), events
    subtypes = [e.progress.subtype for e in events if e.HasField("progress")]
    assert "tool_running" in subtypes and "watchdog" not in subtypes
    running = next(e for e in events if e.progress.subtype == "tool_running")
    assert running.progress.status.status.startswith("Bash running, quiet for ")


async def test_a_tool_past_the_tool_timeout_is_stopped(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    profile = Profile(name=DEFAULT_PROFILE, pool_size=0, allowed_tools=("Bash",))
    live = await start_real(
        start_service,
        env,
        profiles={DEFAULT_PROFILE: profile},
        turn_inactivity_timeout=60.0,
        tool_timeout=2.0,
    )
    talk = Conversation(live.stub)
    await talk.open()
    events = await talk.turn("run tool: python3 -c 'import time; time.sleep(30)'")
    watchdog = [e.progress.status.status for e in events if e.progress.subtype == "watchdog"]
    assert watchdog == ["no output for 2s: interrupting"]  # the tool's limit, not 60 s
    assert events[-1].result.is_error
    assert (await talk.ask("Remember 7")).text == "OK"  # the session goes on
