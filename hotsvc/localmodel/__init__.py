"""A local, scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI
runs offline in tests and demos. Its replies come from a script, not from Claude.

The server (http.server, threads) is imported on first use, so importing the script alone
(`hotsvc.localmodel.script`, as the stand-in CLI does at every spawn) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .script import DISCLAIMER, MODEL_NAME, reply_for

if TYPE_CHECKING:
    from .server import (
        COUNT_TOKENS_PATH,
        DEFAULT_SLOW_DELAY,
        MESSAGES_PATH,
        LocalModelServer,
        RecordedRequest,
    )

_FROM_SERVER = {
    "COUNT_TOKENS_PATH",
    "DEFAULT_SLOW_DELAY",
    "MESSAGES_PATH",
    "LocalModelServer",
    "RecordedRequest",
}

__all__ = [
    "COUNT_TOKENS_PATH",
    "DEFAULT_SLOW_DELAY",
    "DISCLAIMER",
    "MESSAGES_PATH",
    "MODEL_NAME",
    "LocalModelServer",
    "RecordedRequest",
    "reply_for",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_SERVER:
        return getattr(importlib.import_module(".server", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
