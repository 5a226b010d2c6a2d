"""What a caller is told when a conversation cannot go on as asked: the process exited
mid-turn, or the transcript is gone for good. One place for the wording, so every path
that meets one of these says the same thing and says what to do next."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hotsvc.claude.events import ProcessExited, Result
from hotsvc.errors import TranscriptLost
from hotsvc.turn import hotsvc_result

log = logging.getLogger(__name__)


def transcript_lost(session_id: str, turns: int) -> TranscriptLost:
    return TranscriptLost(
        f"session {session_id} cannot go on: its transcript is gone (not on this host, not "
        f"in the session store), so its {turns} turns cannot be resumed; delete it "
        "and open a new session",
        metadata={"sessionId": session_id, "turns": turns},
    )


async def exit_result(
    session_id: str,
    pid: int,
    exited: ProcessExited,
    *,
    closed: bool,
    turns: int,
    restorable: Callable[[], Awaitable[bool]],
) -> Result:
    """The result of a turn whose process `pid` exited before the turn's own `result`;
    `restorable` tells whether the conversation can resume (asked only when it matters)."""
    if closed:
        return hotsvc_result("session_closed", f"session {session_id} was closed mid-turn")
    tail = exited.stderr_tail or "(no stderr)"
    if "is already in use" in tail:  # --session-id of a session that has a transcript
        return hotsvc_result(
            "session_id_in_use",
            f"Claude Code refused session id {session_id}, which already has a transcript: {tail}",
        )
    # The turn failed: what the CLI said is worth more than DEBUG now.
    log.warning("pid %d exited with %s mid-turn; stderr tail:\n%s", pid, exited.returncode, tail)
    if await restorable():
        after = "the next turn resumes the conversation"
    elif turns == 0:
        after = "nothing was saved yet; the next turn starts the conversation"
    else:
        after = "its transcript is gone, so the conversation cannot be resumed"
    return hotsvc_result(
        "process_exited",
        f"Claude Code (pid {pid}) exited with code {exited.returncode} "
        f"during the turn; {after}. stderr tail:\n{tail}",
    )
