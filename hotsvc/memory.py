"""The default `--max-sessions`: as many sessions as the memory available at start holds.

Each session keeps a Claude Code process of 150-200 MB; without a cap, abandoned sessions
pile up until the host runs out. The room is what the kernel reports available, or less
when hotsvc runs in a cgroup (a container, a systemd unit with MemoryMax=) whose limit
leaves less.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Room:
    bytes: int
    source: str  # what limited it, for the line printed at start


def available(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> Room:
    """The memory new processes may use now: the least of the host's available memory
    and what this process's cgroup limits (and their ancestors') leave."""
    room = Room(int(psutil.virtual_memory().available), "available memory")
    for limit, usage, where in _cgroup_limits(proc_cgroup, root):
        if limit - usage < room.bytes:
            room = Room(max(0, limit - usage), f"the memory limit of cgroup {where}")
    return room


def _cgroup_limits(proc_cgroup: Path, root: Path) -> list[tuple[int, int, str]]:
    """(limit, usage, cgroup) for every memory limit over this process, v2 or v1."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: memory.max, up to the root
            base, limit_file, usage_file = root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1's memory controller
            base, limit_file, usage_file = root / "memory", "limit_in_bytes", "usage_in_bytes"
            limit_file, usage_file = f"memory.{limit_file}", f"memory.{usage_file}"
        else:
            continue
        where = Path(path)
        for directory in (where, *where.parents):
            limit = _number(base / directory.relative_to("/") / limit_file)
            usage = _number(base / directory.relative_to("/") / usage_file)
            if limit is not None and usage is not None and limit < 1 << 60:  # "max"
                found.append((limit, usage, str(directory)))
    return found


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # absent, or "max"
        return None


def default_max_sessions(
    session_memory_mb: int, warm: int, room: Room | None = None
) -> tuple[int, str]:
    """The cap, and the line saying how it was chosen (printed at start)."""
    room = room or available()
    fits = room.bytes // (session_memory_mb * MIB)
    cap = max(fits, warm, 1)
    raised = f" (raised to the warm pools' {cap})" if cap > fits else ""
    return cap, (
        f"--max-sessions {cap}{raised}: {room.source} {room.bytes / (1024 * MIB):.1f} GiB "
        f"/ --session-memory-mb {session_memory_mb}; pass --max-sessions to choose "
        "(0 = no cap)"
    )
