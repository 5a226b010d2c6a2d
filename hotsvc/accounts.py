"""The account a Claude Code child (and every tool it runs) runs under.

- By default, the service's own.
- `--child-user NAME` (hotsvc as root): every child runs as that account, with its
  primary and supplementary groups; the workspaces belong to it. The service's files stay
  out of its reach.
- `--session-uids FIRST-LAST` (hotsvc as root): each live session's processes run under a
  uid of their own from the range, with a group of the same number and no other groups,
  so sessions cannot write to each other's pipes, signal or trace each other, or read each
  other's workspaces (0700, owned by the uid while the session runs). The range must be
  unused: no account, no group, no process of anyone else (hotsvc kills what runs under
  it). A uid goes back to the range only once no process runs under it any more; before
  that, the top directories of the session's workspace and home go back to the service,
  so a later session given the same uid cannot enter them.

Both switch accounts with util-linux `setpriv` right before exec. The switch clears the
kernel's parent-death signal, so a second `setpriv --pdeathsig` (hotsvc.claude.launch)
comes after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from hotsvc.errors import CapacityExhausted
from hotsvc.profiles import ConfigError
from hotsvc.workspaces import chown_tree

log = logging.getLogger(__name__)

SETPRIV = shutil.which("setpriv") or "setpriv"
# World-writable places a session's tools may leave files in, emptied of the uid's.
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")
# How long a returned uid may take to be free of processes before it is set aside.
DRAIN_SECONDS = 5.0
_DRAIN_STEP = 0.02


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str = ""  # an account name: its supplementary groups too (--child-user)
    home: str = ""  # its home directory, for HOME

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid

    def argv(self) -> list[str]:
        """What runs the rest of a command line under this identity."""
        groups = "--init-groups" if self.user else "--clear-groups"
        return [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", groups, "--"]


def parse_range(text: str) -> range:
    """`FIRST-LAST` (inclusive) as a range of uids; ConfigError when it is not one."""
    first, sep, last = text.partition("-")
    try:
        uids = range(int(first), int(last) + 1)
    except ValueError:
        uids = range(0)
    if not sep or not uids or uids.start < 1 or uids.stop - 1 > 2**32 - 2:
        raise ConfigError(
            f"--session-uids {text!r} is not a uid range: give FIRST-LAST, e.g. "
            "200000-200999, a range of uids no account or group uses"
        )
    return uids


class Accounts:
    """Hands out identities for children, and takes per-session uids back."""

    def __init__(self, child_user: str = "", session_uids: str = "") -> None:
        self.fixed: Identity | None = None
        self.uids = range(0)
        if child_user and session_uids:
            raise ConfigError(
                "--child-user and --session-uids are alternatives: give one (the uid range "
                "also keeps sessions apart from each other)"
            )
        if (child_user or session_uids) and os.geteuid() != 0:
            flag = "--child-user" if child_user else "--session-uids"
            raise ConfigError(f"{flag} needs hotsvc to run as root (setpriv switches accounts)")
        if child_user:
            self.fixed = _account(child_user)
        elif session_uids:
            self.uids = parse_range(session_uids)
            _check_unused(self.uids)
        self._free = list(self.uids)  # lowest first
        self._draining: set[int] = set()  # returned, processes may still run under them
        self._owning = asyncio.Lock()  # ownership changes of one directory never interleave

    @property
    def enabled(self) -> bool:
        return self.fixed is not None or bool(self.uids)

    @property
    def per_session(self) -> bool:
        return bool(self.uids)

    @property
    def in_use(self) -> int:
        """Session uids handed out and not yet free again (draining ones included)."""
        return len(self.uids) - len(self._free)

    def acquire(self) -> Identity | None:
        """The identity for a new child: None (the service's own), the child user, or a
        free uid of the range (CapacityExhausted when none is)."""
        if not self.uids:
            return self.fixed
        self._reclaim()
        if not self._free:
            raise CapacityExhausted(
                f"all {len(self.uids)} session uids (--session-uids) are in use: widen the "
                "range, or cap live processes below it with --max-sessions",
                metadata={"sessionUids": len(self.uids)},
            )
        uid = self._free.pop(0)
        return Identity(uid, uid)

    async def hand_over(self, path: Path, identity: Identity | None) -> None:
        """Make `path` (a workspace or a session's home) the child's: created if missing
        (0700), and the whole tree owned by the child's uid when it runs under a session
        uid (a resume may run under another uid than the last process)."""
        async with self._owning:
            await asyncio.to_thread(_hand_over, path, identity)

    async def release(self, identity: Identity | None, dirs: Iterable[Path]) -> None:
        """A child that ran as `identity` has exited and its cage was emptied: give `dirs`
        back to the service and, once nothing runs under the uid, the uid to the range."""
        if identity is None or identity.uid not in self.uids:
            return
        async with self._owning:
            for path in dirs:
                try:
                    take_back(path, identity.uid)
                except OSError as exc:  # removed meanwhile (DeleteSession), say
                    log.info("%s not taken back from uid %d: %s", path, identity.uid, exc)
        self._draining.add(identity.uid)
        for _ in range(int(DRAIN_SECONDS / _DRAIN_STEP)):
            if not kill_all(identity.uid):
                break
            await asyncio.sleep(_DRAIN_STEP)
        await asyncio.to_thread(remove_leftovers, range(identity.uid, identity.uid + 1))
        self._reclaim()
        if identity.uid in self._draining:
            log.error(
                "uid %d still runs processes %.0fs after its session's child ended; it "
                "stays out of the range until they are gone",
                identity.uid,
                DRAIN_SECONDS,
            )

    def _reclaim(self) -> None:
        for uid in sorted(self._draining):
            if not processes_of(uid):
                self._draining.discard(uid)
                self._free.append(uid)
        self._free.sort()

    def sweep(self, roots: Iterable[Path]) -> int:
        """At start-up: end every process under a range uid (an earlier run's), and take
        back from the uids the directories under `roots` they still own. Returns how many
        processes were ended."""
        if not self.uids:
            return 0
        ended = 0
        for process in _processes():
            if any(uid in self.uids for uid in process.info["uids"][:3]):
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL)
                    ended += 1
        remove_leftovers(self.uids)
        for root in roots:
            with contextlib.suppress(FileNotFoundError):
                for entry in root.iterdir():
                    owner = entry.lstat().st_uid
                    if owner in self.uids:
                        take_back(entry, owner)
        return ended


def _hand_over(path: Path, identity: Identity | None) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if identity is not None and os.lstat(path).st_uid != identity.uid:
        chown_tree(path, *identity.owner)
        os.chmod(path, 0o700)


def remove_leftovers(uids: range, dirs: Iterable[str] = SHARED_TMP) -> None:
    """What tools under `uids` left in the world-writable directories (files, FIFOs,
    sockets, directories at their top level): whoever gets a uid next must not find them."""
    for top in dirs:
        with contextlib.suppress(OSError), os.scandir(top) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid not in uids:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


def take_back(path: Path, uid: int) -> None:
    """The top directory back to the service (0700) if `uid` owns it: whatever lies
    inside stays out of reach of whoever has the uid next."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if info.st_uid == uid and stat.S_ISDIR(info.st_mode):
        os.chown(path, os.geteuid(), os.getegid(), follow_symlinks=False)
        os.chmod(path, 0o700)


def _processes() -> list[psutil.Process]:
    """Every live (non-zombie) process, with `uids` in its info."""
    return [
        p
        for p in psutil.process_iter(["uids", "status"])
        if p.info["uids"] is not None and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def processes_of(uid: int) -> list[psutil.Process]:
    """Live processes with `uid` as their real, effective or saved uid."""
    return [p for p in _processes() if uid in p.info["uids"][:3]]


def kill_all(uid: int) -> list[psutil.Process]:
    """SIGKILL every process under `uid`; returns those that were still there."""
    found = processes_of(uid)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    return found


def _account(name: str) -> Identity:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"--child-user {name!r}: no such account; create it (e.g. useradd --system "
            f"--create-home {name}) or name another"
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(f"--child-user {name!r} is root: name an unprivileged account")
    return Identity(entry.pw_uid, entry.pw_gid, name, entry.pw_dir)


def _check_unused(uids: range) -> None:
    for what, ids in (
        ("account", {(e.pw_uid, e.pw_name) for e in pwd.getpwall()}),
        ("group", {(e.gr_gid, e.gr_name) for e in grp.getgrall()}),
    ):
        taken = sorted((i, name) for i, name in ids if i in uids)
        if taken:
            number, name = taken[0]
            raise ConfigError(
                f"--session-uids {uids.start}-{uids.stop - 1} includes {number}, the {what} "
                f"{name!r}: choose a range no account or group uses"
            )
