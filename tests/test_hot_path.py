"""The hot path's behaviour: the stdout reader, the bounded outbox, which events reach
callers, and pipelined turns read slowly (order, one result each, bounded memory)."""

from __future__ import annotations

import asyncio
import sys

import psutil
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.attachment import EVENT_OVERHEAD_BYTES, GoAway, Heartbeat, Outbox, Rejected
from hotsvc.claude.events import (
    ApiRetry,
    AssistantMessage,
    ControlRequest,
    ControlResponse,
    Event,
    ProcessExited,
    Result,
    StreamEvent,
    SystemEvent,
    TextBlock,
    TextDelta,
    ToolResult,
    TranscriptMirror,
    Unknown,
    UserMessage,
)
from hotsvc.claude.process import ClaudeProcess
from hotsvc.controls import ControlOutcome
from hotsvc.errors import CapacityExhausted
from hotsvc.grpc import converters
from hotsvc.turn import TurnStarted
from tests.conftest import DEADLINE, Conversation, ServerProcess, eventually

# -- the outbox ------------------------------------------------------------------------


async def test_the_outbox_holds_the_producer_back_past_either_bound() -> None:
    outbox = Outbox(4, byte_bound=10_000)
    small = TextDelta("x", 0)
    assert all(outbox.put("t", small) is None for _ in range(3))
    room = outbox.put("t", small)  # the 4th event: the producer must wait
    assert room is not None and not room.done()
    outbox.put_nowait("t", Result("done", False, "success"))  # never waits
    for _ in range(2):
        await outbox.get()
    assert room.done(), "draining to half the bound frees the producer"
    for _ in range(3):
        await outbox.get()
    assert outbox.empty()

    big = TextDelta("y", 0, line="y" * (10_000 - EVENT_OVERHEAD_BYTES))
    room = outbox.put("t", big)  # one event as large as the byte bound
    assert room is not None and not room.done()
    await outbox.get()
    assert room.done()


async def test_a_closed_outbox_frees_its_producer_and_drops_what_waits() -> None:
    outbox = Outbox(1)
    room = outbox.put("t", TextDelta("x", 0))
    assert room is not None
    outbox.close()
    assert room.done() and outbox.empty()
    assert outbox.put("t", TextDelta("x", 0)) is None


def test_only_visible_events_become_responses() -> None:
    """The session passes on only `visible` events: exactly those callers are sent."""
    events: list[Event] = [
        SystemEvent("init", model="m"),
        ApiRetry("api_retry", attempt=1),
        TextDelta("hi", 0),
        StreamEvent("message_start"),
        AssistantMessage("m1", "model", (TextBlock("hi"),)),
        ToolResult("tu1", "out", False),
        UserMessage("[Request interrupted by user]"),
        TranscriptMirror("/tmp/x.jsonl"),
        Result("OK", False, "success"),
        ControlRequest("r1", "can_use_tool", {}),
        ControlResponse("r1", True, {}),
        Unknown("command_lifecycle"),
        TurnStarted("hello"),
        Heartbeat(True),
        GoAway(1.0, "draining"),
        Rejected(CapacityExhausted("full")),
        ControlOutcome("r2", "get_settings"),
    ]
    for event in events:
        response = converters.event_response(event, "s", "t", include_raw_json=True)
        assert (response is not None) == event.visible, type(event).__name__


# -- the reader ------------------------------------------------------------------------


async def spawn_printing(script: str, line_limit: int = 1024) -> ClaudeProcess:
    """A real child that prints what `script` (Python) prints, read by ClaudeProcess."""
    return await ClaudeProcess.spawn(
        [sys.executable, "-c", script],
        session_id="s",
        env={"PATH": "/usr/bin:/bin"},
        cwd=None,
        line_limit=line_limit,
    )


async def test_the_reader_routes_lines_in_order_and_drops_what_it_cannot_read() -> None:
    script = (
        "import sys, json\n"
        "w = sys.stdout.write\n"
        "w(json.dumps({'type': 'system', 'subtype': 'init', 'model': 'm'}) + '\\n')\n"
        "w('x' * 5000 + '\\n')\n"  # over the line limit: dropped, the rest still read
        "w('not json\\n\\n')\n"
        "w(json.dumps({'type': 'stream_event', 'event': {'type': 'content_block_delta', "
        "'index': 0, 'delta': {'type': 'text_delta', 'text': 'hi'}}}) + '\\n')\n"
        "w(json.dumps({'type': 'result', 'subtype': 'success', 'result': 'OK'}))\n"  # no \\n
    )
    process = await spawn_printing(script)
    seen: list[Event] = []
    process.listener = seen.append
    async with asyncio.timeout(DEADLINE):
        await process.run()
    assert [type(e) for e in seen] == [
        SystemEvent,
        TextDelta,
        Result,
        ProcessExited,
    ]
    assert isinstance(seen[1], TextDelta) and seen[1].text == "hi"
    assert isinstance(seen[-1], ProcessExited) and seen[-1].returncode == 0


async def test_a_listener_that_waits_pauses_the_reader_without_losing_a_line() -> None:
    count = 2000
    script = (
        "import sys, json\n"
        f"for n in range({count}):\n"
        "    sys.stdout.write(json.dumps({'type': 'system', 'subtype': 'status', "
        "'status': str(n)}) + '\\n')\n"
    )
    process = await spawn_printing(script)
    seen: list[str] = []
    held: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()

    def listener(event: Event) -> asyncio.Future[None] | None:
        if isinstance(event, SystemEvent):
            seen.append(event.status)
            if len(seen) % 100 == 0:  # every 100th event makes the reader wait
                held.append(loop.create_future())
                return held[-1]
        return None

    process.listener = listener
    reading = asyncio.create_task(process.run())
    async with asyncio.timeout(DEADLINE):
        while not reading.done():
            if held and not held[-1].done():
                waiting = len(seen)
                await asyncio.sleep(0)  # the reader must not move while held
                assert len(seen) == waiting, "the reader went on past a listener that waits"
                held[-1].set_result(None)
            await asyncio.sleep(0)
        await reading
    assert seen == [str(n) for n in range(count)]


# -- a live service ---------------------------------------------------------------------


async def test_pipelined_turns_read_slowly_keep_order_and_bounded_memory() -> None:
    """Turns sent back to back to a caller that reads nothing until the session has
    stalled on it, then reads: each turn gets exactly one result, in the order sent, and
    the service's memory stays bounded meanwhile (the outbox holds the reader back)."""
    turns = 40
    text = "echo " + "z" * 100_000  # replies as long: the outbox fills before it drains
    async with ServerProcess("--pool-size", "1", "--max-pending-turns", str(turns)) as server:
        assert server.proc is not None
        service = psutil.Process(server.proc.pid)
        stub = server.stub()
        talk = Conversation(stub)
        await talk.open()
        assert (await talk.ask("Remember 1")).text == "OK"
        baseline = service.memory_info().rss
        for n in range(turns):
            await talk.send_turn(text, turn_id=f"t{n}")
        await talk.call.done_writing()

        async def stalled() -> bool:
            before = await session_turns(stub)
            await asyncio.sleep(0.5)  # paces the probe; eventually() bounds the wait
            return await session_turns(stub) == before

        await eventually(stalled, "the session waits for the reader")
        peak = service.memory_info().rss
        results: list[str] = []
        while isinstance(response := await talk.call.read(), pb.PromptResponse):
            if response.HasField("result"):
                assert not response.result.is_error, response.result
                results.append(response.turn_id)
        assert results == [f"t{n}" for n in range(turns)]
        growth_mb = (peak - baseline) / 2**20
        # The turns' own text (4 MB) and gRPC's buffers, plus at most one outbox (4 MB of
        # events) waiting for the reader: the bound measured at start plus a margin.
        assert growth_mb < 48, f"service grew {growth_mb:.1f} MB for a stalled reader"


async def session_turns(stub: pb_grpc.HotSessionAsyncStub) -> int:
    status = await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
    return sum(s.turns for s in status.sessions)
