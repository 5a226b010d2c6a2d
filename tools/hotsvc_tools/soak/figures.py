"""What a soak is asked to do (Options) and what it saw (Figures)."""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Options:
    sessions: int = 160
    concurrency: int = 16  # clients at once
    turns: int = 10  # per session, over one or more streams
    max_sessions: int = 10
    pool_size: int = 2
    hangs: int = 4  # turns that hang (each costs the watchdog's ~12 s: silence, interrupt)
    seed: int = 0  # 0: a random seed, printed
    time_limit: float = 300.0
    # Service RSS may grow this much from the end of the first half to the end of the
    # second: past it, memory is held per session or per turn.
    growth_limit_mb: float = 24.0
    work_dir: Path | None = None  # None: a temporary directory
    verbose: bool = False


@dataclass
class Figures:
    """What happened, as counted by the clients and sampled from /proc."""

    sessions: int = 0
    streams: int = 0
    disconnects: int = 0
    closes: int = 0
    turns_sent: int = 0
    turns_accepted: int = 0  # on streams that were not cancelled
    results: int = 0
    results_lost_to_disconnects: int = 0
    interrupts: int = 0
    sent_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    results_by_subtype: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    opened_by_start: collections.Counter[str] = field(default_factory=collections.Counter)
    resumed_in_turn: int = 0
    spawn_stats: str = ""
    service_rss_mb: list[float] = field(default_factory=lambda: [0.0, 0.0])  # after each half
    service_peak_mb: float = 0.0
    service_final_mb: float = 0.0
    children_peak_mb: float = 0.0
    children_final_mb: float = 0.0
    children_peak: int = 0
    leaked: set[int] = field(default_factory=set)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str, echo: bool = False) -> None:
        """Record a failure; `echo` also prints it at once (--verbose, during the run)."""
        self.failures.append(message)
        if echo:
            print("FAILURE:", message, file=sys.stderr)
