"""The CLI's own questions to hotsvc (control requests it sends on stdout), answered.

Every request gets an answer, so the CLI never waits on us forever. Permission prompts
(`can_use_tool`) are hotsvc.permissions' to answer; every other kind is refused here.
"""

from __future__ import annotations

import logging

from hotsvc.claude import protocol
from hotsvc.claude.events import ControlRequest, JsonObject

log = logging.getLogger(__name__)

# Control request subtypes from the CLI that hotsvc refused, each logged once.
_REFUSED_SUBTYPES: set[str] = set()


def answer(session_id: str, request: ControlRequest) -> JsonObject:
    """The control response to `request` (not a `can_use_tool`) from the process of
    session `session_id`."""
    if request.subtype not in _REFUSED_SUBTYPES:
        _REFUSED_SUBTYPES.add(request.subtype)
        log.info(
            "refusing Claude Code's %r control requests (first in session %s)",
            request.subtype,
            session_id,
        )
    # An empty success would count as a real answer (to a dialog, say): refuse.
    return protocol.control_error(
        request.request_id, f"hotsvc does not handle {request.subtype!r} requests"
    )
