"""The process's pipes: JSON lines in on stdin, whole lines out on stdout, and exiting."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import BinaryIO, NoReturn

from .wire import Json

# Largest stdin line accepted; the driver may send big prompts.
STDIN_LIMIT = 64 * 1024 * 1024


def die(code: int, *stderr_lines: str) -> NoReturn:
    """Exit at once, as the real process does when it crashes or rejects input."""
    for line in stderr_lines:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    try:
        sys.stdout.flush()
    finally:
        os._exit(code)


class Output:
    """The single stdout write path: whole lines, flushed, never interleaved."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        # Told of every assistant and user line first: the real CLI has written their
        # transcript entries (same uuid) by the time it prints the turn's result.
        self.on_entry: Callable[[Json], None] = lambda msg: None

    def send(self, msg: Json) -> None:
        if msg.get("type") in ("assistant", "user") and msg.get("uuid") and not msg.get("isReplay"):
            self.on_entry(msg)
        # Compact separators, like the real CLI's JSON.stringify.
        self.raw(json.dumps(msg, ensure_ascii=False, separators=(",", ":")))

    def raw(self, line: str) -> None:
        try:
            self._stream.write(line.encode("utf-8") + b"\n")
            self._stream.flush()
        except BrokenPipeError:
            os._exit(1)  # the reader is gone; nothing left to say


async def open_stdin(limit: int) -> asyncio.StreamReader:
    """An async line reader on stdin, so control requests are read while a reply streams."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return reader
    # Files and terminals cannot go through connect_read_pipe (a tty would also turn
    # stdout non-blocking), so a thread feeds them in instead.
    threading.Thread(target=_feed_stdin, args=(loop, reader), daemon=True).start()
    return reader


def _feed_stdin(loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader) -> None:
    for line in iter(sys.stdin.buffer.readline, b""):
        loop.call_soon_threadsafe(reader.feed_data, line)
    loop.call_soon_threadsafe(reader.feed_eof)


def parse_line(line: bytes) -> Json:
    """A stdin line as a JSON object; anything else kills the process like the real CLI."""
    try:
        msg = json.loads(line)
    except ValueError as exc:
        die(1, f"Error parsing streaming input line: {exc}: {line[:200]!r}")
    if not isinstance(msg, dict):
        die(1, f"Error parsing streaming input line: not a JSON object: {line[:200]!r}")
    return msg


def prompt_text(msg: Json) -> str:
    """The text of a stdin ``user`` message: a string, or its text blocks joined."""
    message = msg.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        return "\n".join(texts)
    return ""
