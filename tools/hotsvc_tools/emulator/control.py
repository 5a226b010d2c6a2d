"""Answers to control requests: initialize, interrupt, get_context_usage, and errors."""

from __future__ import annotations

import os
from typing import Any

from .wire import TURN_INPUT_TOKENS, TURN_OUTPUT_TOKENS, Json, api_key_source, context_window


def control_response(request_id: Any, response: Json | None) -> Json:
    body: Json = {"subtype": "success", "request_id": request_id}
    if response is not None:
        body["response"] = response
    return {"type": "control_response", "response": body}


def control_error(request_id: Any, error: str) -> Json:
    return {
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    }


def initialize_response(model: str) -> Json:
    return {
        "commands": [],
        "agents": [],
        "output_style": "default",
        "available_output_styles": ["default"],
        "models": [
            {
                "value": "default",
                "resolvedModel": model,
                "displayName": "Default (recommended)",
                "description": "The emulator's scripted model",
            }
        ],
        "account": {
            "tokenSource": "none",
            "apiKeySource": api_key_source(),
            "apiProvider": "firstParty",
        },
        "pid": os.getpid(),
    }


def context_usage(model: str, billed_turns: int) -> Json:
    system = 3000
    messages = (TURN_INPUT_TOKENS + TURN_OUTPUT_TOKENS) * billed_turns
    window = context_window(model)
    total = system + messages
    return {
        "categories": [
            {"name": "System prompt", "tokens": system},
            {"name": "Messages", "tokens": messages},
            {"name": "Free space", "tokens": window - total},
        ],
        "totalTokens": total,
        "maxTokens": window,
        "rawMaxTokens": window,
        "percentage": round(100 * total / window, 2),
        "model": model,
        "memoryFiles": [],
        "mcpTools": [],
        "agents": [],
    }
