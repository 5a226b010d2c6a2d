"""Streaming the scripted model's API messages, as the real CLI relays them.

Per API message: message_start, per content block its start, deltas, the complete
assistant line, and its stop, then message_delta and message_stop. The stream events go
out only with --include-partial-messages; the assistant lines always do. Every pause
wakes early on an interrupt, which raises ``Interrupted`` in the turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

from .stdio import Output
from .wire import TURN_INPUT_TOKENS, TURN_OUTPUT_TOKENS, Json, Wire


class Interrupted(Exception):
    """An interrupt control request stopped the running turn."""


@dataclass(frozen=True)
class Block:
    """One content block of a scripted API message and the pieces it streams in."""

    content: Json  # the whole block, as the assistant message carries it
    pieces: list[str]  # text deltas, or a tool_use's input JSON in parts
    delay: float = 0.0

    @classmethod
    def text(cls, chunks: list[str], delay: float = 0.0) -> Block:
        return cls({"type": "text", "text": "".join(chunks)}, chunks, delay)

    @classmethod
    def tool_use(cls, tool_id: str, name: str, tool_input: Json) -> Block:
        arguments = json.dumps(tool_input)
        half = len(arguments) // 2
        content = {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}
        return cls(content, [arguments[:half], arguments[half:]])

    def start(self) -> Json:
        """The block as content_block_start announces it: empty."""
        if self.content["type"] == "text":
            return {"type": "text", "text": ""}
        return {**self.content, "input": {}}

    def delta(self, piece: str) -> Json:
        if self.content["type"] == "text":
            return {"type": "text_delta", "text": piece}
        return {"type": "input_json_delta", "partial_json": piece}


@dataclass
class ApiCall:
    """The API message being streamed now: what an interrupt has to close."""

    message_id: str
    blocks_started: int = 0
    open_block: Block | None = None
    sent: str = ""  # the open block's streamed text


class Stream:
    """One session's API messages; ``call`` is the one streaming now, if any."""

    def __init__(
        self, out: Output, wire: Wire, include_partial: bool, interrupt: asyncio.Event
    ) -> None:
        self.out = out
        self.wire = wire
        self.include_partial = include_partial
        self.interrupt = interrupt
        self.call: ApiCall | None = None
        self._message_ids = itertools.count(1)

    def start_call(self) -> ApiCall:
        self.call = ApiCall(f"msg_emu_{next(self._message_ids):06d}")
        if self.include_partial:
            message = self.wire.message(self.call.message_id, [])
            self.event({"type": "message_start", "message": message}, ttft_ms=1)
        return self.call

    async def api_call(self, blocks: list[Block], stop_reason: str) -> None:
        """Stream one API message: per block its deltas, then its complete assistant line."""
        call = self.start_call()
        for index, block in enumerate(blocks):
            call.blocks_started, call.open_block, call.sent = index + 1, block, ""
            if self.include_partial:
                start = {"type": "content_block_start", "index": index}
                self.event({**start, "content_block": block.start()})
            for position, piece in enumerate(block.pieces):
                await self.wait(block.delay if position else 0.0)
                if self.include_partial:
                    delta = {"type": "content_block_delta", "index": index}
                    self.event({**delta, "delta": block.delta(piece)})
                if block.content["type"] == "text":
                    call.sent += piece
            await self.wait(0.0)  # an interrupt that came with the last piece still counts
            self.out.send(self.wire.assistant(call.message_id, [block.content]))
            call.open_block = None
            if self.include_partial:
                self.event({"type": "content_block_stop", "index": index})
        if self.include_partial:
            self.event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": TURN_OUTPUT_TOKENS},
                }
            )
            self.event({"type": "message_stop"})
        self.call = None

    async def wait(self, seconds: float | None) -> None:
        """Pause (None: until interrupted), waking early on interrupt; raises Interrupted."""
        if seconds is not None and seconds <= 0:
            await asyncio.sleep(0)  # let a pending control request be read
        elif seconds is None:
            await self.interrupt.wait()
        else:
            try:
                await asyncio.wait_for(self.interrupt.wait(), seconds)
            except TimeoutError:
                return
        if self.interrupt.is_set():
            raise Interrupted

    def event(self, event: Json, ttft_ms: int | None = None, **extra: Any) -> None:
        message_id = self.call.message_id if self.call is not None else None
        self.out.send(self.wire.stream_event(event, message_id, ttft_ms, **extra))

    def send_partial(self) -> str:
        """After an interrupt: the open text block so far as an aborted assistant; its text."""
        call = self.call
        if call is None or call.open_block is None or not call.sent:
            return ""
        self.out.send(
            self.wire.assistant(
                call.message_id, [{"type": "text", "text": call.sent}], aborted=True
            )
        )
        return call.sent

    def abandon(self) -> None:
        """After an interrupt: close the cut-short message's stream, as recorded."""
        call = self.call
        if call is not None and self.include_partial:
            if call.open_block is not None:
                self.event({"type": "content_block_stop", "index": call.blocks_started - 1})
            self.event(
                {
                    "type": "message_delta",
                    "context_management": None,
                    "delta": {
                        "container": None,
                        "stop_details": None,
                        "stop_reason": None,
                        "stop_sequence": None,
                    },
                    "usage": {"input_tokens": TURN_INPUT_TOKENS, "output_tokens": 1},
                }
            )
            abandoned = {"api_message_id": call.message_id, "from_block_index": call.blocks_started}
            self.event({"type": "message_stop"}, abandoned_blocks=abandoned)
        self.call = None
