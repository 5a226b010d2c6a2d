"""Each Claude Code child's own TMPDIR, under hotsvc's state, gone when the child is.

The CLI keeps its scratch in $TMPDIR: `cc-socks/<pid>.sock`, `claude-<uid>/<project>/
<session>/...` and, with its sandbox, `claude-host-*`, `claude-http-*.sock`,
`srt-mux-*.sock`, `claude-empty-*`; it leaves much of it behind, even on a clean exit, and
all of it when killed. So no child uses the system's: each gets a fresh directory under
one root, removed by the launcher once the child has exited, and the root is emptied at
start-up of whatever a killed service left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class ChildTmpDirs:
    """Per-child temporary directories under `root`.

    `root` None (the in-memory registry, in tests) is a private directory in the system's
    temporary directory, owned by this service and removed by close(). A real root must
    be short: the CLI binds unix sockets under it, and a socket path over 107 bytes is
    silently skipped.
    """

    def __init__(self, root: Path | None, shared: bool = False) -> None:
        self._given = root.absolute() if root is not None else None  # children have other cwds
        self._root: Path | None = None
        # Children under other accounts (hotsvc.accounts) enter the root, each to its own
        # directory: 0711, entered but not listed.
        self._shared = shared

    @property
    def root(self) -> Path:
        assert self._root is not None, "ChildTmpDirs.open() first"
        return self._root

    def open(self) -> int:
        """Create the root, emptied of what a previous run left; returns how many went."""
        if self._given is None:
            self._root = Path(tempfile.mkdtemp(prefix="hotsvc-"))
            if self._shared:
                os.chmod(self._root, 0o711)
            return 0
        self._given.mkdir(parents=True, exist_ok=True)
        self._root = self._given
        leftovers = list(self._given.iterdir())
        for path in leftovers:
            remove_tree(path)
        return len(leftovers)

    def make(self, session_id: str) -> Path:
        """A new empty directory (mode 0700) for one child of `session_id`."""
        return Path(tempfile.mkdtemp(prefix=f"{session_id[:8]}-", dir=self.root))

    async def remove(self, path: Path) -> None:
        """Delete a child's directory, off the event loop (a tool may have filled it)."""
        await asyncio.to_thread(remove_tree, path)

    def close(self) -> None:
        """Remove the root if it is this service's private one (a data dir's stays)."""
        if self._root is not None and self._given is None:
            remove_tree(self._root)


def remove_tree(path: Path) -> None:
    """Remove a file or a directory tree that may hold read-only directories; one
    already gone is fine."""
    if not path.is_dir() or path.is_symlink():
        path.unlink(missing_ok=True)
        return
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        # A tool may have left read-only directories (Go's module cache does): ours to empty.
        _open_up(path)
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.warning("cannot fully remove %s, a child's temporary directory", path)


def _open_up(top: Path) -> None:
    """u+rwx on every directory under `top`, top-down, so rmtree can list and empty them."""
    pending = [str(top)]
    while pending:
        directory = pending.pop()
        with contextlib.suppress(OSError):
            os.chmod(directory, os.stat(directory).st_mode | stat.S_IRWXU)
            with os.scandir(directory) as entries:
                pending += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
