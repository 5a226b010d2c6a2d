"""What one finished turn adds to its session's record in the store."""

from __future__ import annotations

from hotsvc.claude.events import Result, Usage
from hotsvc.store.base import TurnRecord


class TurnTotals:
    """Turns as `TurnRecord`s whose usage and cost are this turn's own.

    Claude Code reports `usage` per turn but `total_cost_usd` per process, cumulative
    (measured with 2.1.330: 0.0122, 0.0245, 0.0372 over three turns), so a turn's cost is
    what its process reported minus what it had reported before.
    """

    def __init__(self) -> None:
        self._reported: dict[str, tuple[int, float]] = {}  # session → (pid, cumulative cost)

    def turn(
        self, session_id: str, pid: int, result: Result | None, last_used_at: float, turns: int
    ) -> TurnRecord:
        if result is None:
            return TurnRecord(last_used_at, turns)
        cost = 0.0
        if result.total_cost_usd > 0:  # hotsvc's own results (errors) report none
            last_pid, reported = self._reported.get(session_id, (0, 0.0))
            same_process = pid == last_pid and result.total_cost_usd >= reported
            cost = result.total_cost_usd - (reported if same_process else 0.0)
            self._reported[session_id] = (pid, result.total_cost_usd)
        return TurnRecord(last_used_at, turns, usage=result.usage or Usage(), cost_usd=cost)

    def forget(self, session_id: str) -> None:
        self._reported.pop(session_id, None)
