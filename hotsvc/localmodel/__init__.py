"""A local, scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI
runs offline in tests and demos. Its replies come from a script, not from Claude."""

from .script import DISCLAIMER, MODEL_NAME, reply_for
from .server import (
    COUNT_TOKENS_PATH,
    DEFAULT_SLOW_DELAY,
    MESSAGES_PATH,
    LocalModelServer,
    RecordedRequest,
)

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
