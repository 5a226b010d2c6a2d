"""Transcript copies in the store: chunks of lines, compressed when it pays, and the
helper that mirrors a CLI transcript file into the store and back.

Each append is one chunk row: the lines, newline-terminated, zlib-compressed unless that
saves less than a tenth (measured on the real CLI's transcripts: JSON lines that repeat
the session id, cwd, version and message envelope compress about 4x per turn).
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotsvc.store.base import SessionStore, TurnRecord

RAW = 0
ZLIB = 1
INLINE_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Chunk:
    codec: int
    data: bytes
    raw_bytes: int


def encode(lines: Sequence[bytes]) -> Chunk:
    raw = b"".join(line + b"\n" for line in lines)
    packed = zlib.compress(raw, 6)
    if len(packed) < len(raw) * 0.9:
        return Chunk(ZLIB, packed, len(raw))
    return Chunk(RAW, raw, len(raw))


def decode(codec: int, data: bytes) -> bytes:
    if codec == ZLIB:
        return zlib.decompress(data)
    if codec == RAW:
        return data
    raise ValueError(f"unknown transcript codec {codec}")


@dataclass
class _Cursor:
    offset: int  # bytes of the file already in the store
    lines: int  # lines of the file already in the store
    inode: int


class TranscriptCopy:
    """Keeps the store's copy of session transcripts up to date with the files.

    `push` after a durable turn appends only what is new in the file (it remembers how
    far each file was copied, so a turn costs one read of the new bytes and one insert);
    `restore` before `--resume` writes the store's copy when the file is missing or
    holds fewer lines. Lines must not be rewritten in place (the CLI only appends).
    """

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._cursors: dict[str, _Cursor] = {}

    async def push(self, session_id: str, path: Path, turn: TurnRecord | None = None) -> int:
        """Copy the lines the store lacks from `path`; returns the lines now stored.
        A last line without its newline (still being written) waits for the next push.
        With `turn`, the session's record takes it in the same transaction."""
        known = self._cursors.get(session_id)
        if known is None:
            stored = await self._store.transcript_lines(session_id)
            known = await asyncio.to_thread(_skip_lines, path, stored)
        # A turn's new lines are a few KB just written (in the page cache): read on the loop,
        # which costs less than a thread's round trip; anything larger off it.
        if size_of(path) - known.offset <= INLINE_READ_BYTES:
            lines, cursor = _read_new(path, known)
        else:
            lines, cursor = await asyncio.to_thread(_read_new, path, known)
        first = cursor.lines - len(lines)
        if lines:
            stored = await self._store.append_transcript(session_id, lines, first, turn)
        else:
            stored = first
            if turn is not None:
                await self._store.touch(session_id, turn)
        self._cursors[session_id] = cursor
        return stored

    async def restore(self, session_id: str, path: Path) -> bool:
        """Write the stored transcript to `path` if that holds fewer lines; True if written."""
        content = await self._store.transcript(session_id)
        written = await asyncio.to_thread(_restore, path, content)
        if written:
            self._cursors.pop(session_id, None)
        return written

    async def stored_lines(self, session_id: str) -> int:
        return await self._store.transcript_lines(session_id)

    def forget(self, session_id: str) -> None:
        self._cursors.pop(session_id, None)


def size_of(path: Path) -> int:
    """A transcript file's size in bytes; 0 before it exists."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return 0


def _skip_lines(path: Path, count: int) -> _Cursor:
    """A cursor past the first `count` lines of `path` (those the store has)."""
    offset = seen = 0
    try:
        with path.open("rb") as file:
            while seen < count and (line := file.readline()).endswith(b"\n"):
                offset += len(line)
                seen += 1
    except FileNotFoundError:
        pass
    return _Cursor(offset, seen, _inode(path))


def _read_new(path: Path, cursor: _Cursor) -> tuple[list[bytes], _Cursor]:
    try:
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())
            if stat.st_ino != cursor.inode or stat.st_size < cursor.offset:
                # Replaced or truncated (e.g. restored): start over from the line count.
                cursor = _Cursor(0, 0, stat.st_ino)
            file.seek(cursor.offset)
            data = file.read()
    except FileNotFoundError:
        return [], cursor
    complete = data[: data.rfind(b"\n") + 1]
    lines = complete.splitlines()
    return lines, _Cursor(cursor.offset + len(complete), cursor.lines + len(lines), cursor.inode)


def _restore(path: Path, content: bytes) -> bool:
    try:
        have = path.read_bytes().count(b"\n")
    except FileNotFoundError:
        have = 0
    if not content or content.count(b"\n") <= have:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.restoring")
    temporary.write_bytes(content)
    os.replace(temporary, path)  # never a half-written transcript under the real name
    return True
