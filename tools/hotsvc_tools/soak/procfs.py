"""Processes, the session each runs, and their memory, read from /proc."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable
from pathlib import Path


def _live_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name; None if gone or a zombie."""
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return fields
    return None


def descendants(root: int) -> set[int]:
    """Live (non-zombie) processes below `root`."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _live_stat(int(entry.name))):
            parents[int(fields[1])].append(int(entry.name))
    found: set[int] = set()
    frontier = [root]
    while frontier:
        for child in parents.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    return _live_stat(pid) is not None


def cmdline(pid: int) -> list[str]:
    """The argv of a process; [] if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def session_of(pid: int) -> str:
    """The session a Claude Code process runs, from its argv (for a leak report)."""
    argv = cmdline(pid)
    for flag in ("--resume", "--session-id"):
        if flag in argv[:-1]:
            return f"{flag} {argv[argv.index(flag) + 1]}"
    return "?"


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def total_rss_mb(pids: Iterable[int]) -> float:
    return sum(rss_mb(pid) for pid in pids)
