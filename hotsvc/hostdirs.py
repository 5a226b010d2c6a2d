"""The service's directories when children run under other accounts (hotsvc.accounts).

A child running as another account must reach its TMPDIR (`<data-dir>/tmp/...`), its
workspace and, under --session-uids, its home (`<data-dir>/homes/...`), and nothing else
of hotsvc's: so the data directory and those roots are 0711 (entered, not listed), each
child's own entry 0700 and its account's, and everything else in the data directory
(the registry first) is the service's alone. Start-up checks that each of those paths,
and the Claude Code executable the children run, can be reached at all (every parent
searchable by others) and names the one that cannot.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from hotsvc.accounts import Accounts
from hotsvc.layout import cli_config_dir
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig
from hotsvc.workspaces import chown_tree

# Entries of the data directory children enter (each child only its own entry below).
SHARED_ROOTS = ("tmp", "homes")


def check(config: ServiceConfig, accounts: Accounts) -> None:
    """ConfigError for a layout children under other accounts cannot work in."""
    if not accounts.enabled:
        return
    if accounts.per_session:
        if config.data_dir is None:
            raise ConfigError("--session-uids needs a --data-dir (the sessions' homes live there)")
        if bare := sorted(p.name for p in config.profiles.values() if not p.workspace_root):
            raise ConfigError(
                f"--session-uids: profiles {', '.join(bare)} have no workspace_root; each "
                "session's directory must be its own to belong to its uid (give "
                "--workspace-root, or the profiles' workspace_root)"
            )
    roots = [Path(p.workspace_root) for p in config.profiles.values() if p.workspace_root]
    if config.data_dir is not None:
        roots.append(config.data_dir)
    for root in roots:
        _check_reachable(root.absolute())
    if found := shutil.which(config.claude_cmd[0]):  # a missing one fails at its spawn
        for cli in {Path(found).absolute(), Path(found).resolve()}:  # its link, its file
            _check_reachable(cli)
    if accounts.fixed is not None and not accounts.per_session:
        for profile in config.profiles.values():
            _check_cli_dir(config, cli_config_dir(config, profile), accounts.fixed.uid)


def prepare(config: ServiceConfig, accounts: Accounts) -> None:
    """Make the data directory what children under other accounts may enter, no more;
    run again once the store has created its files."""
    if not accounts.enabled or config.data_dir is None:
        return
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)
    for name in SHARED_ROOTS:
        (data_dir / name).mkdir(exist_ok=True)
    for entry in data_dir.iterdir():
        if entry.name in SHARED_ROOTS:
            os.chmod(entry, 0o711)
        elif not entry.is_symlink():
            mode = entry.lstat().st_mode
            os.chmod(entry, stat.S_IMODE(mode) & 0o700)


def _check_reachable(path: Path) -> None:
    for parent in [*reversed(path.parents)][1:]:
        try:
            mode = os.stat(parent).st_mode
        except FileNotFoundError:
            return  # made by hotsvc, as root: 0755 parents
        if not mode & stat.S_IXOTH:
            raise ConfigError(
                f"{parent} is not searchable by other accounts (mode "
                f"{stat.S_IMODE(mode):o}), so children under --child-user/--session-uids "
                f"cannot reach {path}: chmod o+x {parent}, or choose a path elsewhere"
            )


def _check_cli_dir(config: ServiceConfig, path: Path, uid: int) -> None:
    """The child user's CLI config directory must be its own; one hotsvc made (in the data
    directory) is handed to it."""
    path = path.absolute()
    if not path.exists() and path.parent.is_dir():
        path.mkdir(mode=0o700)
        os.chown(path, uid, -1)
        return
    if not path.exists():
        raise ConfigError(
            f"Claude Code's config directory {path} cannot be made: {path.parent} does not "
            f"exist; create --child-user {config.child_user!r}'s home, or set "
            "CLAUDE_CONFIG_DIR to a directory of its own"
        )
    if path.stat().st_uid == uid:
        return
    if config.data_dir is not None and path.is_relative_to(config.data_dir.absolute()):
        chown_tree(path, uid, -1)  # hotsvc's own (the local model's), now the child's
        return
    raise ConfigError(
        f"Claude Code's config directory {path} does not belong to --child-user "
        f"{config.child_user!r}, which must write its transcripts there: chown -R "
        f"{config.child_user} {path}, or point CLAUDE_CONFIG_DIR elsewhere"
    )
