"""When a session's process should be replaced between turns (it resumes in a new one)."""

from __future__ import annotations

import time

import psutil

from hotsvc.claude.process import ClaudeProcess
from hotsvc.settings import ServiceConfig


def recycle_reason(
    process: ClaudeProcess | None, config: ServiceConfig, turns: int, untrusted: int
) -> str:
    """Why `process`, which ran `turns` turns and whose stdout carried `untrusted` results
    that were not its turns', should be replaced before the next turn; "" to keep it."""
    if process is None or not process.alive:
        return ""
    if untrusted:
        return "its stdout carried a result that was not its turn's"
    if config.recycle_after_turns and turns >= config.recycle_after_turns:
        return f"{turns} turns"
    age = time.monotonic() - process.started_at
    if config.recycle_after_seconds and age >= config.recycle_after_seconds:
        return f"{age:.0f}s old"
    if config.recycle_above_rss_mb:
        rss_mb = resident_mb(process.pid)
        if rss_mb >= config.recycle_above_rss_mb:
            return f"{rss_mb} MB resident"
    return ""


def resident_mb(pid: int) -> int:
    """Resident memory of `pid` in MB, 0 if it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss // (1024 * 1024)
    except psutil.Error:
        return 0
