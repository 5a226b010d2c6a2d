"""Where and as whom a child runs: its working directory, its account, its TMPDIR and
(under --session-uids) its home, made ready before the spawn and given back after exit.

A child for a new session gets a new workspace when its profile has a `workspace_root`
(hotsvc.workspaces), held by the process until a session takes it; a resume runs in the
session's own directory (made again if this host lacks it, e.g. in a fleet). Under a
session uid, the workspace and the session's home are handed to that uid first and taken
back when the child is gone (hotsvc.accounts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hotsvc.accounts import Accounts, Identity
from hotsvc.claude import launch
from hotsvc.errors import SpawnFailed
from hotsvc.profiles import Profile
from hotsvc.settings import ServiceConfig
from hotsvc.tmpdirs import ChildTmpDirs
from hotsvc.workspaces import Workspaces

log = logging.getLogger(__name__)


@dataclass
class Place:
    cwd: str
    tmpdir: Path
    identity: Identity | None = None
    workspace: Path | None = None  # made for this child: its own until a session takes it
    home: Path | None = None  # the session's home (--session-uids)

    def setpriv(self) -> list[str]:
        return self.identity.argv() if self.identity is not None else []


class Placement:
    def __init__(
        self,
        config: ServiceConfig,
        accounts: Accounts,
        workspaces: Workspaces,
        tmpdirs: ChildTmpDirs,
    ) -> None:
        self._config = config
        self.accounts = accounts
        self.workspaces = workspaces
        self._tmpdirs = tmpdirs

    async def prepare(self, profile: Profile, session_id: str, cwd: str) -> Place:
        """Everything a child of `session_id` needs before it starts; `cwd` is the
        session's directory for a resume or a fork, "" for a new session."""
        identity = self.accounts.acquire()
        place = Place(cwd, Path(), identity)
        handed: list[Path] = []  # given to the identity: taken back if this fails
        try:
            if cwd:
                if self.workspaces.owns(profile.workspace_root, cwd):
                    handed.append(Path(cwd))
                    await self.accounts.hand_over(Path(cwd), identity)
            elif profile.workspace_root:
                place.workspace = await asyncio.to_thread(
                    self.workspaces.make,
                    profile.workspace_root,
                    profile.workspace_template,
                    session_id,
                    identity.owner if identity is not None else None,
                )
                place.cwd = str(place.workspace)
            else:
                place.cwd = profile.cwd or os.getcwd()
            if self.accounts.per_session and self._config.data_dir is not None:
                place.home = launch.session_home(self._config.data_dir, place.cwd)
                handed.append(place.home)
                await self.accounts.hand_over(place.home, identity)
            place.tmpdir = self._tmpdirs.make(session_id)
            if identity is not None:
                os.chown(place.tmpdir, *identity.owner)
        except OSError as exc:
            await self._undo(place, handed)
            raise SpawnFailed(
                f"cannot prepare the directories of a Claude Code process for profile "
                f"{profile.name}: {exc}",
                metadata={"profile": profile.name},
            ) from exc
        except BaseException:
            await self._undo(place, handed)
            raise
        return place

    async def _undo(self, place: Place, handed: list[Path]) -> None:
        with contextlib.suppress(OSError):
            if place.workspace is not None:
                await asyncio.to_thread(
                    self.workspaces.remove, place.workspace, "its spawn failed", False
                )
            if place.tmpdir != Path():
                await self._tmpdirs.remove(place.tmpdir)
        await self.accounts.release(place.identity, handed)

    async def release(self, place: Place, unclaimed: Path | None) -> None:
        """The child is gone (its cage emptied): its TMPDIR goes, a workspace no session
        took goes, and its account's hold on the session's directories ends. Never
        raises: it runs as the launcher ends a process."""
        try:
            await self._tmpdirs.remove(place.tmpdir)
            if unclaimed is not None:
                await asyncio.to_thread(
                    self.workspaces.remove, unclaimed, "its process ended unused", False
                )
        except OSError as exc:
            log.warning("a child's directories were not all removed: %s", exc)
        dirs = [Path(place.cwd)] + ([place.home] if place.home is not None else [])
        await self.accounts.release(place.identity, dirs)
