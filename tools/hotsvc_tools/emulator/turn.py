"""One turn at a time: the scripted model's part, from the init line to the result."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import NoReturn

from hotsvc.localmodel.script import TOOL_PREAMBLE, Intent

from .options import Knobs, Options
from .reply import (
    CRASH_DELTA,
    GARBAGE_LINE,
    PERMISSION_HINT,
    TOOL_DESCRIPTION,
    Fault,
    classify,
    compose_reply,
    needs_permission,
    retry_delay_ms,
    tool_report,
    wants_garbage,
    words,
)
from .results import Results
from .stdio import Output, die
from .stream import Block, Interrupted, Stream
from .transcript import Transcript, project_dir
from .wire import Json, Wire


class Turns:
    """Plays the queued turns of one process; ``interrupt()`` stops the running one."""

    def __init__(
        self, opts: Options, knobs: Knobs, out: Output, session_id: str, number: str | None
    ) -> None:
        self.opts = opts
        self.knobs = knobs
        self.out = out
        self.cwd = os.getcwd()
        project = project_dir(self.cwd)
        self.transcript = Transcript(
            project / f"{session_id}.jsonl", session_id, self.cwd, opts.persist
        )
        self.wire = Wire(opts, session_id, self.cwd, project)
        out.on_entry = self.transcript.record
        self.results = Results(session_id, opts.model)
        self._interrupt = asyncio.Event()
        self.stream = Stream(out, self.wire, opts.include_partial, self._interrupt)
        self.number = number  # what the script was last told to remember
        self.running = False
        self.hung = False
        self.results_sent = 0
        self.last_ok = True
        # Control requests this process sent its host, by id, until answered.
        self.asked: dict[str, asyncio.Future[Json]] = {}

    def interrupt(self) -> None:
        if self.running:
            self._interrupt.set()

    async def play(self, prompt: str, prompt_uuid: str = "") -> None:
        started = time.monotonic()
        self._interrupt.clear()
        self.running = True
        self.stream.call = None
        try:
            intent = classify(prompt)
            self.transcript.append("user", prompt, prompt_uuid)
            if self.knobs.stderr_noise:
                sys.stderr.write(f"emulator: noise for turn {self.results_sent + 1}\n")
                sys.stderr.flush()
            self.out.send(self.wire.init())
            if self.opts.include_partial:
                # The recordings show status/requesting only with partial messages.
                self.out.send(self.wire.status())
            if self.opts.replay:  # where CLI 2.1.330 echoes it: after init and status
                self.out.send(self.wire.echo(prompt, prompt_uuid))
            if intent.kind == "crash":
                self._crash()
            if intent.kind == "hang":
                await self._hang()
            if wants_garbage(prompt):
                self.out.raw(GARBAGE_LINE)
            if isinstance(intent, Intent) and intent.kind == "remember":
                self.number = intent.number
            await self._answer(intent, prompt, started)
        except Interrupted:
            self._finish_interrupted(started)
        finally:
            self.running = False
            self.stream.call = None

    async def _answer(self, intent: Fault | Intent, prompt: str, started: float) -> None:
        """Play the scripted model's part of the turn, through to its result."""
        if isinstance(intent, Fault) and intent.kind == "ask":
            await self._ask_host(intent.subtype, started)
            return
        if isinstance(intent, Intent):
            if intent.kind == "fail":
                await self._fail_api(intent.status, started)
                return
            if intent.kind == "stall":
                self.stream.start_call()  # the stream starts, then nothing until an interrupt
                await self.stream.wait(None)
            if intent.kind == "tool":
                await self._tool_turn(intent.command, started)
                return
        reply = compose_reply(intent, prompt, self.number, self.knobs)
        await self.stream.api_call([Block.text(reply.chunks, reply.delay)], "end_turn")
        self._finish(reply.text, started, num_turns=1)

    async def _ask_host(self, subtype: str, started: float) -> None:
        """Send the host a control request, as newer CLIs do for dialogs; report its answer."""
        request_id = f"emu_ask_{uuid.uuid4().hex[:12]}"
        answer = self.asked[request_id] = asyncio.get_running_loop().create_future()
        self.out.send(
            {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype}}
        )
        response = await answer
        text = f"host answered {subtype}: {response.get('subtype')} {response.get('error', '')}"
        await self.stream.api_call([Block.text([text.strip()])], "end_turn")
        self._finish(text.strip(), started, num_turns=1)

    def answered(self, response: Json) -> None:
        """The host's control_response to one of our requests."""
        future = self.asked.pop(str(response.get("request_id")), None)
        if future is not None and not future.done():
            future.set_result(response)

    async def _fail_api(self, status: int, started: float) -> None:
        """The API answers every attempt with ``status``: retries, then an error result."""
        retries = self.knobs.max_retries
        for attempt in range(1, retries + 1):
            self.out.send(self.wire.api_retry(attempt, retries, status, retry_delay_ms(attempt)))
            await self.stream.wait(self.knobs.retry_delay)
        self.out.send(self.wire.synthetic_error(status))
        self._send_result(self.results.api_error(status, started), ok=False)

    async def _tool_turn(self, command: str, started: float) -> None:
        """A Bash tool_use, its result (run, or denied), then a reply quoting it."""
        tool_id = f"toolu_emu_{uuid.uuid4().hex[:24]}"
        tool_input = {"command": command, "description": TOOL_DESCRIPTION}
        preamble = Block.text(words(TOOL_PREAMBLE), self.knobs.token_delay)
        tool_use = Block.tool_use(tool_id, "Bash", tool_input)
        await self.stream.api_call([preamble, tool_use], "tool_use")
        denials: list[Json] = []
        if self._may_run(command):
            output, is_error = await run_bash(command, self.cwd)
        elif self.opts.permission_prompt_tool == "stdio":
            answer = await self._ask_permission(tool_id, tool_input)
            body = answer.get("response") or {}
            if answer.get("subtype") == "success" and body.get("behavior") == "allow":
                updated = body.get("updatedInput") or tool_input
                output, is_error = await run_bash(str(updated.get("command", command)), self.cwd)
            else:
                output = str(body.get("message") or answer.get("error") or "denied")
                is_error = True
                denials.append(
                    {"tool_name": "Bash", "tool_use_id": tool_id, "tool_input": tool_input}
                )
        else:
            output, is_error = f"{command} needs approval: {PERMISSION_HINT}", True
            denials.append({"tool_name": "Bash", "tool_use_id": tool_id, "tool_input": tool_input})
            self.out.send(self.wire.permission_denied("Bash", tool_id, output))
        self.out.send(self.wire.tool_result(tool_id, output, is_error))
        if self.opts.include_partial:
            self.out.send(self.wire.status())  # the second API call of the turn
        text = tool_report(output, is_error)
        await self.stream.api_call([Block.text(words(text), self.knobs.token_delay)], "end_turn")
        self._finish(text, started, num_turns=2, denials=denials)

    async def _ask_permission(self, tool_id: str, tool_input: Json) -> Json:
        """Ask the host whether the tool may run (`can_use_tool`, shaped like the real
        CLI's); an interrupt meanwhile withdraws the request (`control_cancel_request`)."""
        request_id = str(uuid.uuid4())
        answer = self.asked[request_id] = asyncio.get_running_loop().create_future()
        command = str(tool_input["command"])
        self.out.send(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {
                    "subtype": "can_use_tool",
                    "tool_name": "Bash",
                    "display_name": "Bash",
                    "input": tool_input,
                    "description": TOOL_DESCRIPTION,
                    "permission_suggestions": [
                        {
                            "type": "addRules",
                            "rules": [{"toolName": "Bash", "ruleContent": command}],
                            "behavior": "allow",
                            "destination": "localSettings",
                        },
                        {"type": "setMode", "mode": "acceptEdits", "destination": "session"},
                    ],
                    "blocked_path": self.cwd,
                    "tool_use_id": tool_id,
                },
            }
        )
        interrupted = asyncio.ensure_future(self._interrupt.wait())
        await asyncio.wait({answer, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not answer.done():
            self.asked.pop(request_id, None)
            self.out.send({"type": "control_cancel_request", "request_id": request_id})
            raise Interrupted
        response: Json = answer.result()
        return response

    def _may_run(self, command: str) -> bool:
        return (
            "Bash" in self.opts.allowed_tools
            or self.opts.permission_mode == "bypassPermissions"
            or not needs_permission(command)
        )

    def _crash(self) -> NoReturn:
        if self.opts.include_partial:
            self.stream.start_call()
            self.stream.event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            self.stream.event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": CRASH_DELTA},
                }
            )
        die(
            self.knobs.crash_code,
            "emulator: crashing on purpose",
            "    at scriptedModel (emulator)",
            f"emulator: exit code {self.knobs.crash_code}",
        )

    async def _hang(self) -> NoReturn:
        """Go silent and deaf until killed; stdin is still drained so the writer never blocks."""
        self.hung = True
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def _finish(
        self, text: str, started: float, num_turns: int, denials: list[Json] | None = None
    ) -> None:
        self.results.bill()
        result = self.results.success(text, started, num_turns, denials or [])
        self._send_result(result, ok=True)

    def _finish_interrupted(self, started: float) -> None:
        """As recorded: the partial assistant (aborted), the marker, then the stream closes."""
        self.stream.send_partial()
        self.out.send(self.wire.interrupted_marker())
        self.stream.abandon()
        self._send_result(self.results.interrupted(started), ok=False)

    def _send_result(self, result: Json, ok: bool) -> None:
        self.out.send(result)
        self.results_sent += 1
        self.last_ok = ok
        if self.results_sent == self.knobs.crash_after_turns:
            die(self.knobs.crash_code, f"emulator: crashing after {self.results_sent} turns")


async def run_bash(command: str, cwd: str) -> tuple[str, bool]:
    """Run a Bash tool call for real: its output, and whether it failed."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await proc.communicate()
    output = stdout.decode(errors="replace").rstrip("\n")
    if proc.returncode:
        return f"Exit code {proc.returncode}\n{output}".rstrip("\n"), True
    return output, False
