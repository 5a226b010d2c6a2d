"""The session loop: read stdin, queue prompts for one turn at a time, answer controls."""

from __future__ import annotations

import asyncio

from .control import context_usage, control_error, control_response, initialize_response
from .options import Knobs, Options
from .stdio import STDIN_LIMIT, Output, die, open_stdin, parse_line, prompt_text
from .turn import Turns
from .wire import Json


class Session:
    """One CLI process: reads stdin, runs queued turns one at a time, answers controls."""

    def __init__(
        self, opts: Options, knobs: Knobs, out: Output, session_id: str, number: str | None
    ) -> None:
        self.opts = opts
        self.out = out
        self.turns = Turns(opts, knobs, out, session_id, number)
        self.queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def run(self) -> int:
        """Serve until stdin closes and queued turns are done; the exit code."""
        worker = asyncio.create_task(self.work())
        reader = await open_stdin(STDIN_LIMIT)
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                die(1, f"Error: input line longer than {STDIN_LIMIT} bytes")
            if not line:
                break
            if not self.turns.hung and line.strip():
                await self.dispatch(parse_line(line))
        await self.queue.put(None)
        await worker
        return 0 if self.turns.last_ok else 1

    async def work(self) -> None:
        while (prompt := await self.queue.get()) is not None:
            await self.turns.play(*prompt)

    async def dispatch(self, msg: Json) -> None:
        kind = msg.get("type")
        if kind == "user":
            self.queue.put_nowait((prompt_text(msg), str(msg.get("uuid") or "")))
            # Let an idle worker start the turn before later lines are looked at, so an
            # interrupt written right after a prompt finds that turn running (or hung).
            await asyncio.sleep(0)
        elif kind == "control_request":
            self.control(msg)
        elif kind == "control_response" and isinstance(msg.get("response"), dict):
            self.turns.answered(msg["response"])
        # Anything else (keep_alive, ...) needs no answer here.

    def control(self, msg: Json) -> None:
        request_id = msg.get("request_id")
        request = msg.get("request")
        subtype = request.get("subtype") if isinstance(request, dict) else None
        if subtype == "interrupt":
            # CLI 2.1.330 lists the prompts still queued behind the interrupted turn.
            self.out.send(control_response(request_id, {"still_queued": []}))
            self.turns.interrupt()
        elif subtype == "initialize":
            self.out.send(control_response(request_id, initialize_response(self.opts.model)))
        elif subtype == "get_context_usage":
            usage = context_usage(self.opts.model, self.turns.results.billed_turns)
            self.out.send(control_response(request_id, usage))
        else:
            error = f"Unsupported control request subtype: {subtype}"
            self.out.send(control_error(request_id, error))
