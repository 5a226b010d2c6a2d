"""Turn framing: which `result` on a process's stdout ends the running turn.

hotsvc runs the CLI with --replay-user-messages and gives each turn's user message a uuid.
A turn is what comes between the echo of its own message and the first genuine `result`
after it. A tool can write lines to the CLI's stdout (/proc/$PPID/fd/1), so any other
result is a late one of an earlier turn or a forgery: dropped, counted, and the process
replaced after the turn, since its stream can no longer be trusted.
"""

from __future__ import annotations

import logging
import uuid

from hotsvc.claude.events import Result, UserMessage

log = logging.getLogger(__name__)


class Framing:
    """The framing of one process's turns (a new process starts a new one)."""

    def __init__(self) -> None:
        self.turn_uuid = ""  # the uuid of the running turn's user message
        self.untrusted = 0  # results dropped on this process
        self.echoed = False  # its echo has come: it reached Claude; results now are its
        self._names_messages = False  # this CLI's results carry user_message_uuids

    def begin(self) -> str:
        """A new turn: the uuid to give its user message."""
        self.turn_uuid = str(uuid.uuid4())
        self.echoed = False
        return self.turn_uuid

    def is_echo(self, message: UserMessage) -> bool:
        """Whether `message` is the echo of the turn's own (then the turn has begun)."""
        if message.uuid != self.turn_uuid:
            return False
        self.echoed = True
        return True

    def ends_turn(self, result: Result, tools_running: bool, session_id: str) -> bool:
        """Whether `result` ends the running turn. A genuine one comes after the turn's
        own echo, once every tool has returned, and (CLI 2.1.330 on) names the turn's
        message."""
        if result.user_message_uuids:
            self._names_messages = True  # this CLI names them: a result that does not lies
        why = (
            "it came before the turn's own message was echoed"
            if not self.echoed
            else "a tool was still running"
            if tools_running
            else "it does not name the turn's message"
            if self._names_messages and self.turn_uuid not in result.user_message_uuids
            else ""
        )
        if why:
            self.untrusted += 1
            log.warning(
                "session %s: dropped a result that is not the running turn's: %s; "
                "the process will be replaced after the turn",
                session_id,
                why,
            )
        return not why
