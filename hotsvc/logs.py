"""Log lines that carry the session, turn, profile and principal they are about as fields.

Where the service learns them it binds them to the current context (`bind`): the
authentication of a call (principal), a session's own task and a stream once attached
(session_id, profile), each turn (turn_id). Tasks started from there inherit them; a
filter on the handler copies them onto every record. `--log-format json` writes one
object a line with those fields; `text` appends them as `key=value`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import IO

FIELDS = ("session_id", "turn_id", "profile", "principal")

# Never mutated: each bind sets a new mapping, so no context sees another's change.
_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "hotsvc_log_fields", default=MappingProxyType({})
)


def bind(**fields: str) -> contextvars.Token[Mapping[str, str]]:
    """Add `fields` (names from FIELDS) to this context's log lines from now on."""
    return _bound.set(MappingProxyType({**_bound.get(), **{k: v for k, v in fields.items() if v}}))


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """`fields` on the log lines written inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _bound.reset(token)


def current() -> Mapping[str, str]:
    return _bound.get()


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (a record's own `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def fields_of(record: logging.LogRecord) -> dict[str, str]:
    return {name: value for name in FIELDS if (value := getattr(record, name, ""))}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, RFC 3339), level, logger, message, the fields."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if found := fields_of(record):
            pairs = " ".join(f"{name}={value}" for name, value in found.items())
            first, newline, rest = text.partition("\n")  # after the message, before a traceback
            text = f"{first} [{pairs}]{newline}{rest}"
        return text


def resolve_format(log_format: str, stream: IO[str]) -> str:
    """`--log-format`, or its default: text for a person at a terminal, else json."""
    return log_format or ("text" if stream.isatty() else "json")


def configure(level: str, log_format: str, stream: IO[str] = sys.stderr) -> str:
    """The root logger writes to `stream` in `log_format` (see resolve_format); returns
    the format chosen."""
    chosen = resolve_format(log_format, stream)
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return chosen
