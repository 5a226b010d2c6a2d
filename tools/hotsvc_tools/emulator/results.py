"""Result lines and what they bill: one result per turn, cost and usage per process.

Result lines keep the real CLI's field order: "type" is not first (CLI 2.1.330).
"""

from __future__ import annotations

from .reply import API_ERRORS, api_error_text
from .wire import (
    TURN_INPUT_TOKENS,
    TURN_OUTPUT_TOKENS,
    Json,
    context_window,
    ms_since,
    new_uuid,
    usage_block,
)

TURN_COST_USD = 0.000175


class Results:
    """One process's result lines; cost and modelUsage add up over its successful turns."""

    def __init__(self, session_id: str, model: str) -> None:
        self.session_id = session_id
        self.model = model
        self.billed_turns = 0

    def bill(self) -> None:
        self.billed_turns += 1

    def cost(self) -> float:
        return round(TURN_COST_USD * self.billed_turns, 6)

    def model_usage(self) -> Json:
        """Per-process totals, keyed by model, empty before the first billed turn."""
        if not self.billed_turns:
            return {}
        return {
            self.model: {
                "inputTokens": TURN_INPUT_TOKENS * self.billed_turns,
                "outputTokens": TURN_OUTPUT_TOKENS * self.billed_turns,
                "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0,
                "webSearchRequests": 0,
                "costUSD": self.cost(),
                "contextWindow": context_window(self.model),
                "maxOutputTokens": 64000,
            }
        }

    def success(self, text: str, started: float, num_turns: int, denials: list[Json]) -> Json:
        duration_ms = ms_since(started)
        return {
            "duration_api_ms": duration_ms,
            "stop_reason": "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": self.cost(),
            "usage": usage_block(TURN_INPUT_TOKENS * num_turns, TURN_OUTPUT_TOKENS * num_turns),
            "modelUsage": self.model_usage(),
            "permission_denials": denials,
            "terminal_reason": "completed",
            "fast_mode_state": "off",
            "is_error": False,
            "num_turns": num_turns,
            "subtype": "success",
            "api_error_status": None,
            "result": text,
            "ttft_ms": 1,
            "type": "result",
            "duration_ms": duration_ms,
            "uuid": new_uuid(),
            "ttft_stream_ms": 1,
            "time_to_request_ms": 0,
        }

    def interrupted(self, started: float) -> Json:
        # num_turns 2 and the diagnostic in "errors" are as recorded.
        return {
            "duration_api_ms": 0,
            "stop_reason": None,
            "session_id": self.session_id,
            "total_cost_usd": self.cost(),
            "usage": usage_block(0, 0),
            "modelUsage": self.model_usage(),
            "permission_denials": [],
            "terminal_reason": "aborted_streaming",
            "fast_mode_state": "off",
            "is_error": True,
            "num_turns": 2,
            "subtype": "error_during_execution",
            "errors": ["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"],
            "type": "result",
            "duration_ms": ms_since(started),
            "uuid": new_uuid(),
        }

    def api_error(self, status: int, started: float) -> Json:
        # As recorded: subtype "success" yet is_error, with the API's status and type.
        return {
            "duration_api_ms": 0,
            "stop_reason": "stop_sequence",
            "session_id": self.session_id,
            "total_cost_usd": self.cost(),
            "usage": usage_block(0, 0),
            "modelUsage": self.model_usage(),
            "permission_denials": [],
            "terminal_reason": "api_error",
            "fast_mode_state": "off",
            "is_error": True,
            "num_turns": 1,
            "subtype": "success",
            "api_error_status": status,
            "api_error_type": API_ERRORS[status][2],
            "result": api_error_text(status),
            "type": "result",
            "duration_ms": ms_since(started),
            "uuid": new_uuid(),
        }
