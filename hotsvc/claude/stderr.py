"""The last lines of a child's stderr, kept for the errors that quote it.

Bounded both ways: a fixed number of lines, and a line that never ends is dropped rather
than buffered.
"""

from __future__ import annotations

import collections
import logging

log = logging.getLogger(__name__)

TAIL_LINES = 20
LINE_LIMIT = 64 * 1024


class StderrTail:
    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial = b""  # after the last newline

    def feed(self, data: bytes | bytearray) -> None:
        *lines, rest = (self._partial + bytes(data)).split(b"\n")
        # An absurdly long stderr line: the tail loses it, nothing else.
        self._partial = rest if len(rest) <= LINE_LIMIT else b""
        for raw in lines:
            if text := raw.decode(errors="replace").rstrip():
                self._lines.append(text)
                log.debug("pid %d stderr: %s", self._pid, text)

    def end(self) -> None:
        """The pipe closed: a last line without its newline counts too."""
        self.feed(b"\n")

    def text(self) -> str:
        return "\n".join(self._lines)
