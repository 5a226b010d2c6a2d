"""The local scripted model server: over raw HTTP, and behind the real Claude Code CLI.

The CLI tests run node_modules/.bin/claude (pinned in package.json) against the server, so
they check the very stream-json behaviour hotsvc relies on, offline. They wait on events,
never on time: asyncio.timeout is only a safety net.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hotsvc.claude.launch import BASE_ARGS
from hotsvc.local import local_model_env
from hotsvc.localmodel import MODEL_NAME, LocalModelServer, reply_for
from hotsvc.localmodel.script import StallReply, TextReply, ToolUseReply

REPO = Path(__file__).resolve().parent.parent
CLAUDE = REPO / "node_modules" / ".bin" / "claude"
DEADLINE = 60.0  # safety net for a whole exchange; nothing here waits on time itself
REMINDER = {
    "type": "text",
    "text": "<system-reminder>\nRemember 9 is not the user\n</system-reminder>",
}
SSE_SEQUENCE = [
    "message_start",
    "ping",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]

Json = dict[str, Any]


@pytest.fixture
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(record_requests=True) as running:
        yield running


# -- a minimal HTTP/1.1 client on asyncio streams, so the tests see the raw wire ----------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str, Json]]:
        """The server-sent events of a streamed body, as (event name, data)."""
        found = []
        for frame in self.body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
        return found


async def send_request(
    writer: asyncio.StreamWriter, server: LocalModelServer, method: str, path: str, body: Any
) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" at its end. IncompleteReadError if cut short."""
    size_line = await reader.readline()
    if not size_line:
        raise asyncio.IncompleteReadError(b"", None)
    size = int(size_line.strip(), 16)
    chunk = await reader.readexactly(size + 2)
    return chunk[:-2]


async def http(server: LocalModelServer, method: str, path: str, body: Any = None) -> Response:
    async with asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await send_request(writer, server, method, path, body)
            status, headers = await read_head(reader)
            if headers.get("transfer-encoding") == "chunked":
                payload = b""
                while chunk := await read_chunk(reader):
                    payload += chunk
            elif method == "HEAD":
                payload = b""
            else:
                payload = await reader.readexactly(int(headers.get("content-length", "0")))
            return Response(status, headers, payload)
        finally:
            writer.close()
            await writer.wait_closed()


def conversation(*turns: str | list[Json], stream: bool = True) -> Json:
    """A request body alternating user and assistant turns, starting with the user."""
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": turn} for i, turn in enumerate(turns)]
    return {"model": "claude-any-name", "max_tokens": 1024, "stream": stream, "messages": messages}


def streamed_text(events: list[tuple[str, Json]]) -> str:
    return "".join(
        data["delta"].get("text", "") for name, data in events if name == "content_block_delta"
    )


# -- the server over HTTP ------------------------------------------------------------------


async def test_remember_and_recall_stream_the_anthropic_event_sequence(
    server: LocalModelServer,
) -> None:
    remember = await http(server, "POST", "/v1/messages?beta=true", conversation("Remember 42"))
    assert remember.status == 200
    assert remember.headers["content-type"] == "text/event-stream"
    assert [name for name, _ in remember.events()] == SSE_SEQUENCE
    assert streamed_text(remember.events()) == "OK"
    start = remember.events()[0][1]["message"]
    assert start["model"] == MODEL_NAME

    # The reminder block mentions another number: only what the user typed counts.
    recall = conversation("Remember 42", "OK", [REMINDER, {"type": "text", "text": "What number?"}])
    response = await http(server, "POST", "/v1/messages?beta=true", recall)
    assert [name for name, _ in response.events()] == SSE_SEQUENCE
    assert streamed_text(response.events()) == "42"
    assert response.events()[-2][1]["delta"]["stop_reason"] == "end_turn"

    recorded = await asyncio.to_thread(server.wait_for_message_requests, 2, DEADLINE)
    assert [(r.path, r.query) for r in recorded] == [("/v1/messages", "beta=true")] * 2
    assert recorded[-1].last_user_text == "What number?"


async def test_non_streaming_reply_is_one_message(server: LocalModelServer) -> None:
    response = await http(server, "POST", "/v1/messages", conversation("echo hello", stream=False))
    assert response.status == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["model"] == MODEL_NAME
    assert message["content"] == [{"type": "text", "text": "echo: hello"}]
    assert message["stop_reason"] == "end_turn"


async def test_unmatched_text_is_echoed_and_says_it_is_not_claude(server: LocalModelServer) -> None:
    response = await http(server, "POST", "/v1/messages", conversation("hi there", stream=False))
    text = response.json()["content"][0]["text"]
    assert text.startswith("echo: hi there")
    assert "not Claude" in text


async def test_count_tokens_gives_a_plausible_count(server: LocalModelServer) -> None:
    short = await http(server, "POST", "/v1/messages/count_tokens", conversation("hi"))
    long = await http(server, "POST", "/v1/messages/count_tokens", conversation("hi " * 400))
    assert short.status == long.status == 200
    assert 0 < short.json()["input_tokens"] < long.json()["input_tokens"]


async def test_root_answers_and_unknown_paths_get_anthropic_style_404(
    server: LocalModelServer,
) -> None:
    assert (await http(server, "GET", "/")).status == 200
    assert (await http(server, "HEAD", "/")).status == 200
    missing = await http(server, "GET", "/v1/models/nope")
    assert missing.status == 404
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "not_found_error"


async def test_fail500_in_text_and_fail_next_give_api_errors(server: LocalModelServer) -> None:
    failed = await http(server, "POST", "/v1/messages", conversation("fail500 now"))
    assert failed.status == 500
    assert failed.json()["error"]["type"] == "api_error"

    server.fail_next(status=529, times=2)
    statuses = [
        (await http(server, "POST", "/v1/messages", conversation("hi"))).status for _ in "abc"
    ]
    assert statuses == [529, 529, 200]
    overloaded = await http(server, "POST", "/v1/messages", conversation("fail529"))
    assert overloaded.json()["error"]["type"] == "overloaded_error"


async def test_tool_use_streams_json_input_then_quotes_the_tool_result(
    server: LocalModelServer,
) -> None:
    response = await http(server, "POST", "/v1/messages", conversation("please run tool"))
    events = response.events()
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    tool = next(block for block in starts if block["type"] == "tool_use")
    assert tool["name"] == "Bash"
    pieces = [
        d["delta"]["partial_json"] for n, d in events if d.get("delta", {}).get("partial_json")
    ]
    assert len(pieces) > 1, "input JSON should arrive in pieces, as from the real API"
    assert json.loads("".join(pieces))["command"] == "echo hi"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    tool_use = {"type": "tool_use", "id": tool["id"], "name": "Bash", "input": {}}
    result = {"type": "tool_result", "tool_use_id": tool["id"], "content": "hi"}
    followup = conversation("please run tool", [tool_use], [result, REMINDER])
    answer = await http(server, "POST", "/v1/messages", followup)
    assert streamed_text(answer.events()) == 'Bash tool said: "hi"'


async def test_slow_reply_streams_thirty_words(server: LocalModelServer) -> None:
    server.set_slow_delay(0.001)
    response = await http(server, "POST", "/v1/messages", conversation("be slow"))
    deltas = [d["delta"]["text"] for n, d in response.events() if n == "content_block_delta"]
    assert deltas == [f"word{i} " for i in range(30)]


async def test_stop_unblocks_a_stalled_stream() -> None:
    server = LocalModelServer(record_requests=True).start()
    server.stall_next()
    try:
        async with asyncio.timeout(DEADLINE):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await send_request(writer, server, "POST", "/v1/messages", conversation("hi"))
            status, _ = await read_head(reader)
            assert status == 200
            assert b"message_start" in await read_chunk(reader)

            await asyncio.to_thread(server.stop)
            # The connection is cut: no more events and no terminating chunk.
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await read_chunk(reader)
            writer.close()
    finally:
        server.stop()


def test_script_recalls_across_the_conversation_and_writes_in_the_cwd() -> None:
    body = conversation(
        "Remember 1", "OK", "Remember 2", "OK", "hello", "echo: hello", "What number?"
    )
    assert reply_for(body) == TextReply("2")
    assert reply_for(conversation("What number?")) == TextReply(
        "I was not asked to remember a number."
    )
    write = reply_for(
        {
            "system": [{"type": "text", "text": "x"}],
            "messages": [
                {"role": "user", "content": "write file notes.txt"},
                {"role": "system", "content": " - Primary working directory: /srv/app\n"},
            ],
        }
    )
    assert isinstance(write, ToolUseReply)
    assert write.name == "Write"
    assert write.input["file_path"] == "/srv/app/notes.txt"
    assert isinstance(reply_for(conversation("stall")), StallReply)
    custom = reply_for(conversation("run tool: touch made_by_tool.txt"))
    assert isinstance(custom, ToolUseReply)
    assert custom.input["command"] == "touch made_by_tool.txt"


async def test_console_script_prints_its_url_and_stops_on_sigterm() -> None:
    script = Path(sys.executable).parent / "hotsvc-local-model"
    process = await asyncio.create_subprocess_exec(
        str(script), "--listen", "127.0.0.1:0", "--quiet", stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(DEADLINE):
            assert process.stdout is not None
            url = (await process.stdout.readline()).decode().strip()
            host, _, port = url.removeprefix("http://").rpartition(":")
            assert host == "127.0.0.1"
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _ = await read_head(reader)
            assert status == 200
            writer.close()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# -- the real Claude Code CLI against the server ------------------------------------------


@pytest.fixture
def claude_bin() -> Path:
    if not os.access(CLAUDE, os.X_OK):
        pytest.fail(
            f"{CLAUDE} is missing: run `make setup-dev` to install the pinned Claude Code CLI "
            "(npm ci)"
        )
    return CLAUDE


def claude_env(server: LocalModelServer, home: Path, **extra: str) -> dict[str, str]:
    """The environment that keeps the CLI local, quiet and isolated from the user's config."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    # The CLI puts a messaging socket (and scratch files) under TMPDIR; keep them in the test.
    scratch = home / "tmp"
    scratch.mkdir(exist_ok=True)
    return {
        **inherited,
        **local_model_env(server.url, home / ".claude"),
        "HOME": str(home),
        "TMPDIR": str(scratch),
        **extra,
    }


class Claude:
    """One CLI process over stream-json pipes."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.seen: list[Json] = []

    async def send(self, message: Json) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def user(self, text: str) -> None:
        await self.send({"type": "user", "message": {"role": "user", "content": text}})

    async def until(self, wanted: Callable[[Json], bool]) -> Json:
        """Read lines until one matches; everything read is kept in self.seen."""
        assert self.process.stdout is not None
        async with asyncio.timeout(DEADLINE):
            while line := await self.process.stdout.readline():
                self.seen.append(json.loads(line))
                if wanted(self.seen[-1]):
                    return self.seen[-1]
        raise AssertionError(f"the CLI exited first; stderr: {self.stderr()}")

    async def result(self) -> Json:
        return await self.until(lambda m: m.get("type") == "result")

    async def finish(self) -> int:
        """Close stdin as a caller ending the session does, and return the exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        async with asyncio.timeout(DEADLINE):
            return await self.process.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]


@asynccontextmanager
async def claude(
    claude_bin: Path,
    server: LocalModelServer,
    home: Path,
    *args: str,
    **env: str,
) -> AsyncIterator[Claude]:
    """Spawn the CLI in `home`; it is always reaped, killed if it outlives the test."""
    stderr_path = home / f"stderr-{uuid.uuid4().hex[:8]}.txt"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(claude_bin),
            *BASE_ARGS,
            *args,
            cwd=home,
            env=claude_env(server, home, **env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            limit=16 * 1024 * 1024,  # system/init and control responses are long lines
        )
    try:
        yield Claude(process, stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def is_text_delta(message: Json) -> bool:
    event = message.get("event", {})
    return message.get("type") == "stream_event" and event.get("type") == "content_block_delta"


async def test_cli_two_turns_keep_memory_on_one_process(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    async with claude(claude_bin, server, tmp_path) as cli:
        await cli.user("Remember 42")
        delta = await cli.until(is_text_delta)
        assert delta["event"]["delta"]["text"] == "OK"
        first = await cli.result()
        assert (first["subtype"], first["is_error"], first["result"]) == ("success", False, "OK")

        await cli.user("What number?")
        second = await cli.result()
        assert second["result"] == "42"
        assert second["session_id"] == first["session_id"]
        assert await cli.finish() == 0
    assert len(server.message_requests) == 2


async def test_cli_interrupt_mid_slow_stream_then_next_turn(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    # Long enough that the stream cannot finish before the interrupt lands.
    server.set_slow_delay(0.5)
    async with claude(claude_bin, server, tmp_path) as cli:
        await cli.user("please be slow")
        await cli.until(is_text_delta)
        await cli.send(
            {"type": "control_request", "request_id": "stop-1", "request": {"subtype": "interrupt"}}
        )
        ack = await cli.until(lambda m: m.get("type") == "control_response")
        assert ack["response"]["subtype"] == "success"
        assert ack["response"]["request_id"] == "stop-1"
        interrupted = await cli.result()
        assert interrupted["is_error"] is True
        assert interrupted["subtype"] == "error_during_execution"

        await cli.user("Remember 7")
        assert (await cli.result())["result"] == "OK"
        await cli.user("What number?")
        recalled = await cli.result()
        assert (recalled["result"], recalled["is_error"]) == ("7", False)
        assert await cli.finish() == 0


async def test_cli_interrupt_recovers_a_stalled_stream(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    server.stall_next()
    async with claude(claude_bin, server, tmp_path) as cli:
        await cli.user("hello")
        # The stream started and then went quiet: the CLI would wait on it indefinitely.
        await cli.until(lambda m: m.get("event", {}).get("type") == "message_start")
        await cli.send(
            {"type": "control_request", "request_id": "stop-2", "request": {"subtype": "interrupt"}}
        )
        assert (await cli.result())["is_error"] is True
        await cli.user("Remember 3")
        assert (await cli.result())["result"] == "OK"
        assert await cli.finish() == 0


async def test_cli_resume_in_a_new_process_keeps_memory(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    session_id = str(uuid.uuid4())
    async with claude(claude_bin, server, tmp_path, "--session-id", session_id) as cli:
        await cli.user("Remember 99")
        first = await cli.result()
        assert first["session_id"] == session_id
        assert await cli.finish() == 0

    async with claude(claude_bin, server, tmp_path, "--resume", session_id) as cli:
        await cli.user("What number?")
        resumed = await cli.result()
        assert resumed["result"] == "99"
        assert resumed["session_id"] == session_id
        assert await cli.finish() == 0


async def test_cli_api_error_is_a_result_and_the_process_takes_the_next_turn(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    async with claude(claude_bin, server, tmp_path, CLAUDE_CODE_MAX_RETRIES="1") as cli:
        await cli.user("fail500 now")
        retry = await cli.until(lambda m: m.get("subtype") == "api_retry")
        assert retry["error_status"] == 500
        failed = await cli.result()
        assert (failed["is_error"], failed["api_error_status"]) == (True, 500)

        await cli.user("Remember 5")
        assert (await cli.result())["result"] == "OK"
        assert await cli.finish() == 0


async def test_cli_runs_the_scripted_bash_tool(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    async with claude(claude_bin, server, tmp_path, "--allowedTools", "Bash") as cli:
        await cli.user("please run tool")
        tool_result = await cli.until(lambda m: m.get("type") == "user" and "tool_use_result" in m)
        assert tool_result["message"]["content"][0]["content"] == "hi"
        done = await cli.result()
        assert done["result"] == 'Bash tool said: "hi"'
        assert await cli.finish() == 0


async def test_cli_asks_over_stdio_before_a_tool_that_needs_permission(
    claude_bin: Path, server: LocalModelServer, tmp_path: Path
) -> None:
    async with claude(claude_bin, server, tmp_path, "--permission-prompt-tool", "stdio") as cli:
        await cli.user("run tool: touch made_by_tool.txt")
        ask = await cli.until(lambda m: m.get("type") == "control_request")
        request = ask["request"]
        assert (request["subtype"], request["tool_name"]) == ("can_use_tool", "Bash")
        allow = {"behavior": "allow", "updatedInput": request["input"]}
        await cli.send(
            {
                "type": "control_response",
                "response": {
                    "subtype": "success",
                    "request_id": ask["request_id"],
                    "response": allow,
                },
            }
        )
        assert (await cli.result())["is_error"] is False
        assert (tmp_path / "made_by_tool.txt").exists()
        assert await cli.finish() == 0


async def test_a_server_keeps_no_requests_unless_asked() -> None:
    # `hotsvc serve` runs the model for as long as it lives: it must not keep every body.
    with LocalModelServer() as quiet:
        response = await http(quiet, "POST", "/v1/messages", conversation("echo hi", stream=False))
        assert response.status == 200
        with pytest.raises(RuntimeError, match="record_requests=True"):
            _ = quiet.requests
        assert quiet._requests == []
