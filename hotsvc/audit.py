"""`--audit-log FILE`: one JSON object per line for every security-relevant event.

Events (`event` key), each with `time` (UTC, ISO 8601) and the fields listed:

| event | fields |
| --- | --- |
| `auth.ok` | principal, admin, via (`token`, `jwt`, `mtls`, `none`), peer, method |
| `auth.denied` | peer, method, reason |
| `session.opened` | principal, session, profile |
| `session.attached` | principal, session |
| `session.closed` | principal, session, owner |
| `session.denied` | principal, session, action |
| `quota.refused` | principal, quota (`sessions`, `turns`), limit |
| `tokens.reloaded` / `tokens.reload_failed` | file, principals / error |
| `permission.asked` / `.allowed` / `.denied` | principal, session, tool, input_digest, |
| | reason (`caller`, `timeout`, `no_stream`, `not_interactive`, `withdrawn`, `profile`) |

Never a token, a JWT, a prompt's text or a tool's input: callers pass names, ids and
digests only. Writing never blocks the event loop: lines go through a queue to the
stdlib's QueueListener thread, whose WatchedFileHandler reopens the file when logrotate
moves it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import logging.handlers
import os
import queue
from collections.abc import Mapping
from pathlib import Path

Field = str | int | float | bool | None


class AuditLog:
    """Records events to `path`; with `path` None every call is a no-op."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener: logging.handlers.QueueListener | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Principals, peers and session ids are nobody else's business: 0600 from the start.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._listener.start()

    @property
    def enabled(self) -> bool:
        return self._listener is not None

    def record(self, event: str, **fields: Field) -> None:
        if self._listener is None:
            return
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"time": now, "event": event, **fields}, ensure_ascii=False)
        self._queue.put_nowait(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def permission(
        self,
        outcome: str,
        *,
        principal: str,
        session: str,
        tool: str,
        tool_input: Mapping[str, object],
        reason: str = "",
    ) -> None:
        """`permission.asked`, `.allowed` or `.denied`: the tool and a digest of its input
        (the input itself may hold anything a prompt held), and why when hotsvc answered."""
        self.record(
            f"permission.{outcome}",
            principal=principal,
            session=session,
            tool=tool,
            input_digest=input_digest(tool_input),
            **({"reason": reason} if reason else {}),
        )

    def close(self) -> None:
        """Write what is queued and close the file."""
        if self._listener is not None:
            self._listener.stop()
            for handler in self._listener.handlers:
                handler.close()
            self._listener = None


def input_digest(tool_input: Mapping[str, object]) -> str:
    """SHA-256 of the input's canonical JSON: equal inputs match, nothing is revealed."""
    canonical = json.dumps(tool_input, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
