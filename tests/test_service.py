"""HotSession through real gRPC, on real stand-in CLI processes."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from tests.conftest import (
    EMULATOR_CMD,
    Conversation,
    StartService,
    child_pids,
    eventually,
    pid_alive,
    pool_refilled,
)


def kinds(events: list[pb.PromptResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


async def test_two_turns_remember_in_one_session(start_service: StartService) -> None:
    live = await start_service(pool_size=1)
    talk = Conversation(live.stub)
    opened = await talk.open()

    first = await talk.turn("Remember 42")
    second = await talk.turn("What number?")

    assert first[-1].result.text == "OK"
    assert second[-1].result.text == "42"
    assert not second[-1].result.is_error
    for event in first + second:
        assert event.session_id == opened.session_id
    status = await live.status()
    (row,) = status.sessions
    assert (row.session_id, row.pid, row.turns) == (opened.session_id, opened.pid, 2)
    assert await talk.finish() == grpc.StatusCode.OK


async def test_turn_streams_deltas_then_messages_then_one_result(
    start_service: StartService,
) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    events = await talk.turn("tell me a story", turn_id="t-1")

    order = kinds(events)
    assert order[0] == "turn_started"
    assert order.count("result") == 1 and order[-1] == "result"
    assert "text_delta" in order and "assistant" in order
    assert order.index("text_delta") < order.index("assistant")
    assert {e.turn_id for e in events} == {"t-1"}
    streamed = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert streamed == events[-1].result.text == "echo: tell me a story"
    statuses = [e.progress.status.status for e in events if e.HasField("progress")]
    assert "requesting" in statuses


async def test_server_assigns_turn_ids_and_raw_json_on_request(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open(include_raw_json=True)
    events = await talk.turn("hello")

    ids = {e.turn_id for e in events}
    assert len(ids) == 1 and ids != {""}
    assert '"type":"result"' in events[-1].raw_json.replace(" ", "")
    assert events[0].raw_json == ""  # turn_started is hotsvc's own event


async def test_pool_hands_out_a_warm_process_and_refills(start_service: StartService) -> None:
    live = await start_service(pool_size=2)
    before = await live.status()
    assert (before.pool_size, before.target_size, before.active_sessions) == (2, 2, 0)
    warm_pids = set(before.pools[0].idle_pids)

    talk = Conversation(live.stub)
    opened = await talk.open()

    assert opened.start == pb.SESSION_START_WARM
    assert opened.pid in warm_pids
    assert (await talk.ask("Remember 7")).text == "OK"

    async def refilled() -> bool:
        status = await live.status()
        return status.pool_size == 2 and opened.pid not in status.pools[0].idle_pids

    await eventually(refilled, "the pool returns to its target")
    assert (await live.status()).spawn_stats.warm_starts == 1


async def test_empty_pool_spawns_cold(start_service: StartService) -> None:
    live = await start_service(pool_size=0)
    opened = await Conversation(live.stub).open()
    assert opened.start == pb.SESSION_START_COLD
    assert pid_alive(opened.pid)


async def test_dead_idle_process_is_replaced_not_handed_out(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    live = await start_service(pool_size=1)
    (victim,) = (await live.status()).pools[0].idle_pids
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        status = await live.status()
        return status.spawn_stats.replaced == 1 and status.pool_size == 1

    await eventually(replaced, "the dead warm process is replaced")
    # The operator is told how it died, not only that it did.
    assert f"warm process {victim} died while idle (exit -9)" in caplog.text
    opened = await Conversation(live.stub).open()
    assert opened.pid != victim and opened.start == pb.SESSION_START_WARM


async def test_a_refill_ready_after_the_pool_closed_is_not_kept(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop closes the pools before it ends the sessions; a refill that becomes ready
    in between is ended then, not kept idle for the last step's SIGKILL (which every
    such stop logged as "warm process N died while idle (exit -9)")."""
    hold, release, left = tmp_path / "hold", tmp_path / "release", tmp_path / "left"
    for fifo in (hold, release):
        os.mkfifo(fifo)
    # Each process's output waits for a line on `hold`; once its conversation has
    # ended (stdin closed), it notes its end in `left` and stays until a line on
    # `release` (SIGTERM ignored: the close waits for it, up to the SIGKILL).
    cli = tmp_path / "claude"
    cli.write_text(
        "#!/bin/sh\n"
        "trap '' TERM\n"
        f'{{ "{EMULATOR_CMD[0]}" "$@"; echo x >> "{left}"; read _ < "{release}"; }}'
        f' | {{ read _ < "{hold}"; exec cat; }}\n'
    )
    cli.chmod(0o755)
    holding, releasing = os.open(hold, os.O_RDWR), os.open(release, os.O_RDWR)
    try:
        os.write(holding, b"go\n")  # the first warm process
        live = await start_service(pool_size=1, claude_cmd=(str(cli),))
        await pool_refilled(live.stub, 1)
        talk = Conversation(live.stub)
        await talk.open()
        await talk.turn("hello")  # the refill starts after the first turn

        async def refilling() -> bool:
            return (await live.status()).spawn_stats.in_flight == 1

        await eventually(refilling, "the refill waits for its output")

        def ended(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return left.exists() and len(left.read_text().split()) == count

            return check

        stopping = asyncio.create_task(live.service.stop())
        await eventually(ended(1), "the stop ends the session's process (pools closed)")
        os.write(holding, b"go\n")  # the refill becomes ready now
        await eventually(ended(2), "the refill, ready after its pool closed, is ended")
        os.write(releasing, b"go\ngo\n")
        await stopping
    finally:
        os.close(holding)
        os.close(releasing)
    assert "died while idle" not in caplog.text


async def test_reattach_after_half_close_keeps_the_conversation(
    start_service: StartService,
) -> None:
    live = await start_service()
    first = Conversation(live.stub)
    opened = await first.open()
    await first.send(pb.PromptRequest(turn=pb.UserTurn(text="Remember 42")))
    # Half-close right away: the turn already sent still runs to its result.
    await first.call.done_writing()
    events = await first.until_result()
    assert events[-1].result.text == "OK"
    assert await first.finish() == grpc.StatusCode.OK

    again = Conversation(live.stub)
    reopened = await again.open(session_id=opened.session_id)
    assert reopened.start == pb.SESSION_START_ATTACHED
    assert (reopened.session_id, reopened.pid) == (opened.session_id, opened.pid)
    assert (await again.ask("What number?")).text == "42"


async def test_second_concurrent_attach_is_refused(start_service: StartService) -> None:
    live = await start_service()
    holder = Conversation(live.stub)
    opened = await holder.open()

    intruder = Conversation(live.stub)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await intruder.open(session_id=opened.session_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already has a stream attached" in str(refused.value.details())
    assert (await holder.ask("still mine?")).text == "echo: still mine?"


async def test_interrupt_ends_the_streaming_turn_and_keeps_the_process(
    start_service: StartService,
) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    opened = await talk.open()
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="please be slow")))
    while not (await talk.read()).HasField("text_delta"):
        pass
    await talk.send(pb.PromptRequest(interrupt=pb.Interrupt()))
    result = (await talk.until_result())[-1].result

    assert result.is_error
    assert result.subtype == "error_during_execution"
    assert (await talk.ask("Remember 5")).text == "OK"
    assert (await live.status()).sessions[0].pid == opened.pid


async def test_turns_sent_together_run_in_order(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    for number in (1, 2, 3):
        await talk.send(
            pb.PromptRequest(turn=pb.UserTurn(text=f"Remember {number}", turn_id=f"t{number}"))
        )
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="What number?", turn_id="q")))
    results = [(await talk.until_result())[-1] for _ in range(4)]
    assert [(r.turn_id, r.result.text) for r in results] == [
        ("t1", "OK"),
        ("t2", "OK"),
        ("t3", "OK"),
        ("q", "3"),
    ]


async def test_child_exit_mid_turn_ends_the_turn_with_an_error_result(
    start_service: StartService,
) -> None:
    live = await start_service(child_env={"HOTSVC_EMU_CRASH_CODE": "7"})
    talk = Conversation(live.stub)
    await talk.open()
    events = await talk.turn("please crash")
    result = events[-1].result
    assert kinds(events).count("result") == 1
    assert result.is_error and result.subtype == "process_exited"
    assert "code 7" in result.text and "crashing on purpose" in result.text


async def test_garbage_lines_are_skipped(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    assert (await talk.ask("garbage please")).text == "echo: garbage please"
    assert (await talk.ask("Remember 3")).text == "OK"


async def test_multi_megabyte_lines_arrive_whole(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    size = 12 * 1024 * 1024
    events = await talk.turn(f"huge {size}")
    # The text arrives whole as deltas (split into events a client accepts); the result
    # repeats it cut to fit in 4 MiB, and says so.
    streamed = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert len(streamed) == size
    result = events[-1].result
    assert not result.is_error and streamed.startswith(result.text.split("\n[...")[0])
    assert result.text.endswith("characters cut by hotsvc: an event must fit in 4 MiB]")
    assert all(e.ByteSize() <= 4 * 1024 * 1024 for e in events)


async def test_unknown_profile_is_not_found(start_service: StartService) -> None:
    live = await start_service()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await Conversation(live.stub).open(profile="nope")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "known profiles: default" in str(failed.value.details())


@pytest.mark.parametrize(
    "first",
    [
        pb.PromptRequest(turn=pb.UserTurn(text="hi")),
        pb.PromptRequest(interrupt=pb.Interrupt()),
        pb.PromptRequest(),
    ],
)
async def test_stream_must_start_with_open(
    start_service: StartService, first: pb.PromptRequest
) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.send(first)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await talk.read()
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be `open`" in str(failed.value.details())


async def test_bad_requests_mid_stream_are_invalid_argument(start_service: StartService) -> None:
    live = await start_service()
    for bad, message in [
        (pb.PromptRequest(turn=pb.UserTurn(text="  ")), "turn.text is empty"),
        (pb.PromptRequest(open=pb.OpenSession()), "may only be the first request"),
    ]:
        talk = Conversation(live.stub)
        await talk.open()
        assert (await talk.ask("Remember 1")).text == "OK"
        await talk.send(bad)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await talk.read()
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(failed.value.details())


async def test_reattach_to_unknown_or_malformed_ids(start_service: StartService) -> None:
    live = await start_service()
    for session_id, code in [
        ("7b0c5f9e-8a1f-4a53-9a43-3f2f9a0f8c11", grpc.StatusCode.NOT_FOUND),
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await Conversation(live.stub).open(session_id=session_id)
        assert failed.value.code() == code


async def test_max_sessions_is_resource_exhausted(start_service: StartService) -> None:
    live = await start_service(pool_size=1, max_sessions=2, open_queue_timeout=0.5)
    first, second = Conversation(live.stub), Conversation(live.stub)
    await first.open()  # takes the warm process
    await second.open()  # the pool's refill or a cold spawn: the second slot
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Conversation(live.stub).open()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "within 0.5s: all 2 are held" in str(refused.value.details())


async def test_close_session_ends_its_process_and_keeps_the_session(
    start_service: StartService,
) -> None:
    live = await start_service()
    opened = await Conversation(live.stub).open()
    closed = await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    assert closed.session_id == opened.session_id
    assert not pid_alive(opened.pid)
    assert opened.pid not in child_pids()
    status = await live.status()
    assert (status.active_sessions, status.stopped_sessions) == (0, 1)
    assert [(s.session_id, s.state) for s in status.sessions] == [
        (opened.session_id, pb.SESSION_STATE_STOPPED)
    ]
    again = await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    assert (again.session_id, again.exit_code) == (opened.session_id, 0)  # nothing left to end


async def test_control_requests_hotsvc_does_not_handle_are_refused_by_name(
    start_service: StartService,
) -> None:
    # Newer CLIs ask their host for dialogs and elicitations, where an empty success would
    # count as a real answer: hotsvc answers with the protocol's error, naming the subtype.
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    result = await talk.ask("ask host request_user_dialog")
    assert result.text == (
        "host answered request_user_dialog: error hotsvc does not handle "
        "'request_user_dialog' requests"
    )
    assert (await talk.ask("echo still here")).text == "echo: still here"


async def test_create_if_missing_opens_a_session_under_the_callers_id(
    start_service: StartService,
) -> None:
    # A load balancer can route by the id a caller chose before the session existed.
    live = await start_service(pool_size=1)
    await pool_refilled(live.stub, 1)
    chosen = str(uuid.uuid4())
    first = Conversation(live.stub)
    await first.send(
        pb.PromptRequest(open=pb.OpenSession(session_id=chosen, create_if_missing=True))
    )
    opened = (await first.read()).opened
    # A warm process serves it: it keeps its own Claude Code id behind the caller's.
    assert (opened.session_id, opened.start) == (chosen, pb.SESSION_START_WARM)
    assert (await first.ask("Remember 6")).text == "OK"
    assert await first.finish() == grpc.StatusCode.OK
    again = Conversation(live.stub)
    await again.send(
        pb.PromptRequest(open=pb.OpenSession(session_id=chosen, create_if_missing=True))
    )
    assert (await again.read()).opened.start == pb.SESSION_START_ATTACHED
    assert (await again.ask("What number?")).text == "6"
    # Without the flag an unknown id is still NOT_FOUND.
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await Conversation(live.stub).open(session_id=str(uuid.uuid4()))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
