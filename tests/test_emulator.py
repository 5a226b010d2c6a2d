"""The stand-in CLI, driven as a real subprocess over pipes like the service drives claude."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

Json = dict[str, Any]

BASE_ARGV = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
]
# Safety net only: every wait is for an event, this just stops a broken test hanging.
TIMEOUT = 20.0
STDOUT_LIMIT = 64 * 1024 * 1024


def user(text: str) -> Json:
    return {"type": "user", "message": {"role": "user", "content": text}}


def control(request_id: str, subtype: str) -> Json:
    return {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype}}


def event_type(msg: Json) -> str | None:
    event = msg.get("event")
    return event.get("type") if isinstance(event, dict) else None


def assistant_text(msg: Json) -> str:
    return "".join(block["text"] for block in msg["message"]["content"])


class Emulator:
    """One emulator process and line-level helpers over its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc.stdout is not None
        return self.proc.stdout

    async def send(self, msg: Json) -> None:
        await self.send_raw(json.dumps(msg))

    async def send_raw(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\n")
        await self.stdin.drain()

    async def read_line(self) -> str:
        line = await asyncio.wait_for(self.stdout.readline(), TIMEOUT)
        assert line, "emulator closed stdout"
        return line.decode()

    async def read(self) -> Json:
        msg: Json = json.loads(await self.read_line())
        return msg

    async def read_until(self, done: Callable[[Json], bool]) -> list[Json]:
        """Messages up to and including the first one ``done`` accepts."""
        msgs: list[Json] = []
        while not msgs or not done(msgs[-1]):
            msgs.append(await self.read())
        return msgs

    async def turn(self, text: str) -> list[Json]:
        """Send a prompt and collect everything through its result."""
        await self.send(user(text))
        return await self.read_until(lambda m: m["type"] == "result")

    async def close_and_wait(self) -> int:
        self.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await asyncio.wait_for(self.proc.stderr.read(), TIMEOUT)).decode()


Spawn = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start emulators with a private CLAUDE_CONFIG_DIR; kill whatever is left at the end."""
    procs: list[asyncio.subprocess.Process] = []
    workdir = tmp_path / "work"
    workdir.mkdir()

    async def start(*args: str, **env: str) -> Emulator:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hotsvc_tools.emulator",
            *BASE_ARGV,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env={**os.environ, "CLAUDE_CONFIG_DIR": str(tmp_path / "config"), **env},
            limit=STDOUT_LIMIT,
        )
        procs.append(proc)
        return Emulator(proc)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_two_turns_share_memory_and_session(spawn: Spawn) -> None:
    emu = await spawn()
    first = await emu.turn("Remember 42")
    second = await emu.turn("What number?")

    # Without partial messages a turn is init, assistant, result, as recorded.
    assert [m["type"] for m in first] == ["system", "assistant", "result"]
    init, reply, result = first
    assert init["subtype"] == "init"
    assert init["claude_code_version"] == "emulator-1"
    assert assistant_text(reply) == "OK"
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "OK"
    assert second[-1]["result"] == "42"
    session_ids = {m["session_id"] for m in first + second}
    assert len(session_ids) == 1
    assert await emu.close_and_wait() == 0


async def test_partial_messages_stream_text_deltas(spawn: Spawn) -> None:
    emu = await spawn("--include-partial-messages")
    msgs = await emu.turn("hello there world")

    kinds = [event_type(m) or m.get("status") or m.get("subtype") or m["type"] for m in msgs]
    deltas = [m["event"]["delta"]["text"] for m in msgs if event_type(m) == "content_block_delta"]
    # The recorded order: the complete assistant sits between the last delta and block stop.
    assert kinds == [
        "init",
        "requesting",
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(deltas),
        "assistant",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "success",
    ]
    assert len(deltas) > 1
    assert "".join(deltas) == msgs[-1]["result"] == "echo: hello there world"


async def test_interrupt_mid_stream_then_next_turn_works(spawn: Spawn) -> None:
    # A long delay keeps the stream open until the interrupt; it wakes the emulator at once.
    emu = await spawn("--include-partial-messages", HOTSVC_EMU_SLOW_DELAY="30")
    await emu.send(user("please be slow"))
    await emu.read_until(lambda m: event_type(m) == "content_block_delta")
    await emu.send(control("req_int", "interrupt"))
    msgs = await emu.read_until(lambda m: m["type"] == "result")

    # As CLI 2.1.330 does it: the partial assistant, the marker, then the stream closes.
    kinds = [event_type(m) or m["type"] for m in msgs]
    assert kinds == [
        "control_response",
        "assistant",
        "user",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "result",
    ]
    response, partial, marker, _stop, delta, message_stop, result = msgs
    assert response["response"] == {
        "subtype": "success",
        "request_id": "req_int",
        "response": {"still_queued": []},
    }
    assert assistant_text(partial) == "word0 "
    assert partial["aborted"] is True
    assert marker["message"]["content"][0]["text"] == "[Request interrupted by user]"
    assert delta["event"]["delta"]["stop_reason"] is None
    assert message_stop["abandoned_blocks"]["from_block_index"] == 1
    assert result["subtype"] == "error_during_execution"
    assert result["is_error"] is True
    assert result["terminal_reason"] == "aborted_streaming"

    after = await emu.turn("Remember 7")
    assert after[-1]["subtype"] == "success"
    assert after[-1]["result"] == "OK"
    assert await emu.close_and_wait() == 0


async def test_eof_after_error_result_exits_1(spawn: Spawn) -> None:
    emu = await spawn(HOTSVC_EMU_SLOW_DELAY="30")
    await emu.send(user("slow"))
    await emu.read_until(lambda m: m.get("subtype") == "init")
    await emu.send(control("i1", "interrupt"))
    await emu.read_until(lambda m: m["type"] == "result")
    assert await emu.close_and_wait() == 1


async def test_interrupt_while_idle_only_acknowledges(spawn: Spawn) -> None:
    emu = await spawn()
    await emu.send(control("i1", "interrupt"))
    assert await emu.read() == {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "i1", "response": {"still_queued": []}},
    }
    assert (await emu.turn("hi"))[-1]["result"] == "echo: hi"


async def test_control_requests(spawn: Spawn) -> None:
    emu = await spawn()
    await emu.send(control("c1", "initialize"))
    init = (await emu.read())["response"]
    await emu.send(control("c2", "get_context_usage"))
    usage = (await emu.read())["response"]
    await emu.send(control("c3", "no_such_thing"))
    unknown = (await emu.read())["response"]

    assert init["subtype"] == "success"
    assert init["request_id"] == "c1"
    assert init["response"]["commands"] == []
    assert init["response"]["models"]
    assert usage["subtype"] == "success"
    assert usage["response"]["maxTokens"] > usage["response"]["totalTokens"] > 0
    assert unknown["subtype"] == "error"
    assert unknown["request_id"] == "c3"
    assert "no_such_thing" in unknown["error"]


async def test_queued_prompts_run_in_order(spawn: Spawn) -> None:
    emu = await spawn()
    for text in ("one", "Remember 5", "What number?"):
        await emu.send(user(text))
    results = [(await emu.read_until(lambda m: m["type"] == "result"))[-1] for _ in range(3)]
    assert [r["result"] for r in results] == ["echo: one", "OK", "5"]


async def test_non_json_line_exits_1(spawn: Spawn) -> None:
    emu = await spawn()
    await emu.send_raw("this is not json")
    assert await asyncio.wait_for(emu.proc.wait(), TIMEOUT) == 1
    assert "Error" in await emu.stderr()


async def test_resume_remembers_across_processes(spawn: Spawn, tmp_path: Path) -> None:
    session_id = "5f0c1a52-7a38-4b57-9a39-3f2b1c3ee001"
    first = await spawn("--session-id", session_id)
    assert (await first.turn("Remember 42"))[-1]["result"] == "OK"
    assert await first.close_and_wait() == 0
    stored = list((tmp_path / "config" / "projects").glob(f"*/{session_id}.jsonl"))
    assert len(stored) == 1

    second = await spawn("--resume", session_id)
    msgs = await second.turn("What number?")
    assert msgs[-1]["result"] == "42"
    assert msgs[-1]["session_id"] == session_id


async def test_resume_unknown_session_exits_1(spawn: Spawn) -> None:
    emu = await spawn("--resume", "00000000-0000-4000-8000-000000000000")
    assert await asyncio.wait_for(emu.proc.wait(), TIMEOUT) == 1
    assert "No conversation found with session ID" in await emu.stderr()


async def test_crash_exits_with_code_and_stderr(spawn: Spawn) -> None:
    emu = await spawn("--include-partial-messages", HOTSVC_EMU_CRASH_CODE="7")
    await emu.send(user("crash please"))
    msgs: list[Json] = []
    while line := await asyncio.wait_for(emu.stdout.readline(), TIMEOUT):
        msgs.append(json.loads(line))
    assert await asyncio.wait_for(emu.proc.wait(), TIMEOUT) == 7
    assert "crashing on purpose" in await emu.stderr()
    assert event_type(msgs[-1]) == "content_block_delta"
    assert all(m["type"] != "result" for m in msgs)


async def test_crash_after_turns(spawn: Spawn) -> None:
    emu = await spawn(HOTSVC_EMU_CRASH_AFTER_TURNS="2")
    await emu.turn("one")
    await emu.turn("two")
    assert await asyncio.wait_for(emu.proc.wait(), TIMEOUT) == 3


async def test_garbage_line_precedes_reply(spawn: Spawn) -> None:
    emu = await spawn()
    await emu.send(user("garbage"))
    lines = [await emu.read_line() for _ in range(2)]
    assert json.loads(lines[0])["subtype"] == "init"
    assert lines[1].strip() == "this is not json"
    msgs = await emu.read_until(lambda m: m["type"] == "result")
    assert msgs[-1]["result"] == "echo: garbage"


async def test_huge_reply_is_one_line(spawn: Spawn) -> None:
    size = 20 * 1024 * 1024
    emu = await spawn("--include-partial-messages")
    msgs = await emu.turn(f"huge {size}")
    deltas = [m for m in msgs if event_type(m) == "content_block_delta"]
    assert len(deltas) == 1
    assert len(deltas[0]["event"]["delta"]["text"]) == size
    assert len(msgs[-1]["result"]) == size


async def test_stderr_noise_every_turn(spawn: Spawn) -> None:
    emu = await spawn(HOTSVC_EMU_STDERR_NOISE="1")
    await emu.turn("one")
    await emu.turn("two")
    assert await emu.close_and_wait() == 0
    assert len((await emu.stderr()).splitlines()) == 2


async def test_result_fields_in_the_real_cli_order(spawn: Spawn) -> None:
    emu = await spawn()
    line = ""
    await emu.send(user("Remember 1"))
    while '"result"' not in line or not line.startswith('{"duration_api_ms"'):
        line = await emu.read_line()
    result = json.loads(line)
    # CLI 2.1.330 does not put "type" first: readers must not rely on field order.
    assert next(iter(result)) != "type"
    assert (result["type"], result["result"]) == ("result", "OK")


async def test_echo_and_recall_say_what_the_local_model_says(spawn: Spawn) -> None:
    emu = await spawn()
    assert (await emu.turn("What number?"))[-1]["result"] == "I was not asked to remember a number."
    assert (await emu.turn("echo hello there"))[-1]["result"] == "echo: hello there"


@pytest.mark.parametrize(("status", "retry_error"), [(500, "server_error"), (529, "overloaded")])
async def test_api_failure_retries_then_reports_an_error_result(
    spawn: Spawn, status: int, retry_error: str
) -> None:
    emu = await spawn("--include-partial-messages", CLAUDE_CODE_MAX_RETRIES="2")
    msgs = await emu.turn(f"fail{status} please")

    kinds = [m.get("subtype") if m["type"] == "system" else m["type"] for m in msgs]
    assert kinds == ["init", "status", "api_retry", "api_retry", "assistant", "result"]
    retries = [m for m in msgs if m.get("subtype") == "api_retry"]
    assert [(r["attempt"], r["max_retries"], r["error_status"], r["error"]) for r in retries] == [
        (1, 2, status, retry_error),
        (2, 2, status, retry_error),
    ]
    assert all(r["retry_delay_ms"] > 0 for r in retries)
    synthetic, result = msgs[-2:]
    assert synthetic["message"]["model"] == "<synthetic>"
    assert synthetic["error"] == "server_error"
    assert result["subtype"] == "success" and result["is_error"] is True
    assert result["api_error_status"] == status
    assert result["terminal_reason"] == "api_error"
    assert result["result"].startswith(f"API Error: {status} ")
    assert (await emu.turn("Remember 3"))[-1]["result"] == "OK"


async def test_interrupt_while_waiting_to_retry(spawn: Spawn) -> None:
    emu = await spawn("--include-partial-messages", HOTSVC_EMU_RETRY_DELAY="30")
    await emu.send(user("fail500"))
    await emu.read_until(lambda m: m.get("subtype") == "api_retry")
    await emu.send(control("i1", "interrupt"))
    msgs = await emu.read_until(lambda m: m["type"] == "result")
    # Nothing streamed, so no assistant and no stream events to close.
    assert [m["type"] for m in msgs] == ["control_response", "user", "result"]
    assert msgs[-1]["subtype"] == "error_during_execution"


async def test_stall_waits_for_an_interrupt(spawn: Spawn) -> None:
    emu = await spawn("--include-partial-messages")
    await emu.send(user("stall"))
    await emu.read_until(lambda m: event_type(m) == "message_start")
    await emu.send(control("i1", "interrupt"))
    msgs = await emu.read_until(lambda m: m["type"] == "result")
    kinds = [event_type(m) or m["type"] for m in msgs]
    assert kinds == ["control_response", "user", "message_delta", "message_stop", "result"]
    assert msgs[-2]["abandoned_blocks"]["from_block_index"] == 0
    assert msgs[-1]["terminal_reason"] == "aborted_streaming"


async def test_tool_turn_runs_bash_when_allowed(spawn: Spawn) -> None:
    emu = await spawn("--allowedTools", "Bash")
    msgs = await emu.turn("run tool: echo from-bash")

    kinds = [m.get("subtype") if m["type"] == "system" else m["type"] for m in msgs]
    assert kinds == ["init", "assistant", "assistant", "user", "assistant", "result"]
    preamble, tool_use = (m["message"]["content"][0] for m in msgs[1:3])
    assert preamble["type"] == "text"
    assert (tool_use["name"], tool_use["input"]["command"]) == ("Bash", "echo from-bash")
    (tool_result,) = msgs[3]["message"]["content"]
    assert tool_result["tool_use_id"] == tool_use["id"]
    assert (tool_result["content"], tool_result["is_error"]) == ("from-bash", False)
    assert msgs[-1]["result"] == 'Bash tool said: "from-bash"'
    assert msgs[-1]["num_turns"] == 2


async def test_tool_turn_streams_each_api_message(spawn: Spawn) -> None:
    emu = await spawn("--include-partial-messages")
    msgs = await emu.turn("run tool")  # `echo hi` is read-only: no permission needed

    kinds = [event_type(m) or m.get("status") or m.get("subtype") or m["type"] for m in msgs]
    collapsed = [k for i, k in enumerate(kinds) if not i or k != kinds[i - 1]]
    one_call = [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "assistant",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    tool_call = [*one_call[:5], *one_call[1:5], *one_call[5:]]  # text, then tool_use
    assert collapsed == [
        "init",
        "requesting",
        *tool_call,
        "user",
        "requesting",
        *one_call,
        "success",
    ]
    starts = [
        m["event"]["content_block"]["type"] for m in msgs if event_type(m) == "content_block_start"
    ]
    assert starts == ["text", "tool_use", "text"]
    json_parts = [
        m["event"]["delta"]["partial_json"]
        for m in msgs
        if event_type(m) == "content_block_delta"
        and m["event"]["delta"]["type"] == "input_json_delta"
    ]
    assert json.loads("".join(json_parts))["command"] == "echo hi"
    assert msgs[-1]["result"] == 'Bash tool said: "hi"'


async def test_tool_turn_denies_a_command_that_needs_permission(
    spawn: Spawn, tmp_path: Path
) -> None:
    emu = await spawn()
    msgs = await emu.turn("run tool: touch made-by-tool")
    kinds = [m.get("subtype") if m["type"] == "system" else m["type"] for m in msgs]
    assert kinds == [
        "init",
        "assistant",
        "assistant",
        "permission_denied",
        "user",
        "assistant",
        "result",
    ]
    (tool_result,) = msgs[4]["message"]["content"]
    assert tool_result["is_error"] is True
    assert msgs[-1]["result"].startswith("Bash tool failed: ")
    assert [d["tool_name"] for d in msgs[-1]["permission_denials"]] == ["Bash"]
    assert not (tmp_path / "work" / "made-by-tool").exists()
