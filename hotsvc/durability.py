"""A `result` means the turn is durable; a conversation that cannot be restored says so.

After each turn, before its result goes out: the session's transcript is seen to hold the
turn's last entry (hotsvc.claude.filewatch; bounded by --transcript-sync-timeout, past it
the result says `durable: false`), and its new lines are copied to the session store with
the turn's record (count, usage, cost) in one transaction, so neither a SIGKILL nor the
loss of the host (with a shared store) loses it. A turn with no transcript entries (an
error, a process that died) has its record stored alone. Before a
process resumes a conversation, the transcript comes back from the store if the file is
missing or shorter; with no transcript anywhere, a session that had turns is lost.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from hotsvc.claude import launch
from hotsvc.claude.events import Result
from hotsvc.claude.filewatch import wait_until_holds
from hotsvc.claude.transcripts import transcript_path
from hotsvc.errors import ServiceError
from hotsvc.profiles import Profile
from hotsvc.settings import ServiceConfig
from hotsvc.store import SessionStore, TranscriptCopy, TurnRecord
from hotsvc.store.transcripts import size_of

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Written:
    """Where a turn's transcript entries land, to be found there before its result goes out."""

    path: Path
    marker: str  # the uuid of its last entry
    offset: int  # the transcript's size before the turn (size_of)


class Durability:
    def __init__(self, config: ServiceConfig, store: SessionStore) -> None:
        self._config = config
        self._store = store
        self._copy = TranscriptCopy(store)
        self._timeout = config.transcript_sync_timeout

    def path(self, session_id: str, profile: Profile, cwd: str) -> Path:
        """Where the session's CLI keeps its transcript."""
        env = launch.child_environment(self._config, profile, cwd)
        return transcript_path(env, cwd, session_id)

    async def keep(
        self, session_id: str, result: Result, turn: TurnRecord, written: Written | None
    ) -> Result:
        """Store a finished turn's record `turn`, with its transcript entries when it wrote
        any (`written`); the result as it goes out (durable once they are stored)."""
        if written is None:
            await self._record(session_id, turn)
            return result
        return dataclasses.replace(result, durable=await self._settle(session_id, written, turn))

    async def _settle(self, session_id: str, written: Written, turn: TurnRecord) -> bool:
        """Whether the turn is now saved, on disk and in the store, with its record."""
        path = written.path
        # A UUID is unique enough to find as it is, however the line is spaced.
        saved = await wait_until_holds(path, written.marker.encode(), written.offset, self._timeout)
        if not saved:
            log.warning(
                "session %s: the transcript did not show the turn within %gs; its "
                "result goes out with durable=false",
                session_id,
                self._timeout,
            )
            await self._record(session_id, turn)
            return False
        try:
            await self._copy.push(session_id, path, turn)
        except (ServiceError, OSError) as exc:
            log.warning("session %s: the turn is on disk but not in the store: %s", session_id, exc)
            return False
        return True

    async def _record(self, session_id: str, turn: TurnRecord) -> None:
        """Store a turn's record alone (a turn that wrote no transcript entries)."""
        try:
            await self._store.touch(session_id, turn)
        except ServiceError as exc:  # the next turn's record carries the count again
            log.warning("session %s: turn not recorded in the store: %s", session_id, exc)

    async def restore(self, session_id: str, path: Path) -> bool:
        """Bring the transcript back from the store when the file lacks lines; True when
        there is a conversation to resume."""
        try:
            if await self._copy.restore(session_id, path):
                log.info("session %s: transcript restored from the store", session_id)
        except ServiceError as exc:
            log.warning("session %s: could not read the stored transcript: %s", session_id, exc)
        return _has_content(path)

    async def restorable(self, session_id: str, path: Path) -> bool:
        """Whether a resume would find the conversation (on this host or in the store)."""
        if _has_content(path):
            return True
        try:
            return await self._copy.stored_lines(session_id) > 0
        except ServiceError:
            return False

    def forget(self, session_id: str) -> None:
        self._copy.forget(session_id)


def _has_content(path: Path) -> bool:
    return size_of(path) > 0
