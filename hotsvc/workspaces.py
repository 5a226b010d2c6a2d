"""A working directory of its own for each session (a profile's `workspace_root`).

Each process spawned for such a profile (a warm one too, so a first turn stays warm) gets
a new directory under the root, filled from the profile's `workspace_template`. The
process holds it until a session takes it; from then on it is the session's for as long
as the session exists: every resume runs there (the store records it as the session's
cwd), and DeleteSession removes it (unless --keep-workspaces). CloseSession keeps it: a
closed conversation resumes, in the same directory. A warm process that ends without a
session removes its own.

The root is 0711 (its entries cannot be listed by other accounts) and each workspace
0700, owned by the account its processes run under (hotsvc.accounts).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from hotsvc.tmpdirs import remove_tree

log = logging.getLogger(__name__)


def root_of(workspace_root: str) -> Path | None:
    """The resolved root a profile's `workspace_root` names, None when unset."""
    return Path(workspace_root).expanduser().resolve() if workspace_root else None


class Workspaces:
    """Makes, hands over and removes per-session working directories."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep

    def make(
        self, workspace_root: str, template: str, session_id: str, owner: tuple[int, int] | None
    ) -> Path:
        """A new, empty directory for `session_id`'s first process: the template's files
        copied in, all of it owned by `owner` (uid, gid) when given. Never one that
        existed before, even for a session id used before (--keep-workspaces)."""
        root = root_of(workspace_root)
        assert root is not None
        root.mkdir(parents=True, exist_ok=True)
        if os.stat(root).st_uid == os.geteuid():
            os.chmod(root, 0o711)
        path = Path(tempfile.mkdtemp(prefix=f"{session_id[:8]}-", dir=root))
        try:
            if template:
                shutil.copytree(template, path, symlinks=True, dirs_exist_ok=True)
                os.chmod(path, 0o700)  # copytree gives it the template's mode
            if owner is not None:
                chown_tree(path, *owner)
        except BaseException:
            remove_tree(path)
            raise
        return path

    def copy(self, source: Path, workspace_root: str, session_id: str) -> Path:
        """A new workspace holding a copy of `source` (a fork's: the files its
        conversation refers to); the spawn hands it to the child's account."""
        path = self.make(workspace_root, "", session_id, None)
        try:
            if source.is_dir():
                shutil.copytree(source, path, symlinks=True, dirs_exist_ok=True)
                os.chmod(path, 0o700)
        except BaseException:
            remove_tree(path)
            raise
        return path

    @staticmethod
    def owns(workspace_root: str, path: str | Path) -> bool:
        """Whether `path` is a workspace under this root (and so hotsvc's to remove)."""
        root = root_of(workspace_root)
        return root is not None and bool(path) and Path(path).resolve().parent == root

    def remove(self, path: Path, why: str, used: bool = True) -> None:
        """Remove a workspace; one a session used stays with --keep-workspaces (logged)."""
        if self.keep and used:
            log.info("kept workspace %s (%s; --keep-workspaces)", path, why)
            return
        remove_tree(path)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """`chown -R uid:gid top`, symlinks themselves not followed."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for directory, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)
