"""What a caller asks for when it opens a session, checked before anything happens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hotsvc.errors import InvalidRequest, clip
from hotsvc.options import SessionOptions


@dataclass(frozen=True)
class OpenRequest:
    session_id: str = ""  # empty: a new session
    profile: str = ""
    # With session_id: create the session under that id when it does not exist.
    create_if_missing: bool = False
    # The caller's Claude Code options for a new session (the profile's caller_may_set).
    options: SessionOptions = field(default_factory=SessionOptions)


def check_session_id(session_id: str) -> None:
    """Session ids are canonical UUIDs: one spelling per session."""
    try:
        canonical = str(uuid.UUID(session_id)) == session_id
    except ValueError:
        canonical = False
    if not canonical:
        raise InvalidRequest(
            f"session_id {clip(session_id)!r} is not a UUID; leave it empty to open a new "
            "session, or pass the id from SessionOpened (ids are canonical UUIDs: lowercase "
            "8-4-4-4-12 hex digits, e.g. 123e4567-e89b-12d3-a456-426614174000)",
            field="session_id",
            metadata={"sessionId": clip(session_id)},
        )
