"""Mid-session controls: a caller's `control` request relayed to Claude Code's own control
protocol (set_model, set_permission_mode, get_context_usage, ...), answered by one
`control_result` event.

Ordering: a control is not a turn. It is relayed at once, even while a turn runs (the
CLI answers control requests mid-turn; that is how interrupts work), and never waits
behind queued turns. So a set_model sent while a turn runs applies from that turn's next
model request on; to change one particular turn, send the control before it, or after the
previous turn's result. A session without a process resumes one first.

Only the subtypes in the profile's `controls` pass; setting a permission mode above the
profile's `max_permission_mode` is refused. A CLI that does not know a subtype answers
with an error: 2.1.330 gives the code "unsupported_request", 2.1.197 only the text
"Unsupported control request subtype: ...", so both become that code. Either way the
caller gets a `control_result` with the error and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import ClassVar

from hotsvc.claude.events import Event, JsonObject
from hotsvc.claude.process import ControlError, ProcessGone
from hotsvc.errors import InvalidRequest, ServiceError, StoreUnavailable
from hotsvc.options import SessionOptions, check_permission_mode, effective
from hotsvc.profiles import Profile
from hotsvc.session import Session
from hotsvc.settings import ServiceConfig
from hotsvc.store import SessionStore

log = logging.getLogger(__name__)

UNSUPPORTED = "unsupported_request"
UNSUPPORTED_TEXT = "Unsupported control request subtype:"
# get_context_usage counts tokens with the API (25 calls on 2.1.330): not instant.
CONTROL_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ControlOutcome(Event):
    """The answer to one control request: the CLI's response, or its error."""

    visible: ClassVar[bool] = True

    request_id: str
    subtype: str
    response: JsonObject = field(default_factory=dict)
    error: str = ""
    error_code: str = ""


def check(profile: Profile, subtype: str, params: JsonObject) -> None:
    """INVALID_ARGUMENT for a subtype outside the profile's `controls`; PERMISSION_DENIED
    for a permission mode beyond its consent."""
    if subtype not in profile.controls:
        allowed = ", ".join(profile.controls) or "none"
        raise InvalidRequest(
            f"control.subtype {subtype[:64]!r} is not allowed by profile {profile.name!r}; "
            f"its controls: {allowed}",
            field="control.subtype",
            metadata={"subtype": subtype[:64], "allowed": allowed},
        )
    if subtype == "set_permission_mode":
        check_permission_mode(str(params.get("mode", "")), profile, "control.params.mode")


def error_code(error: ControlError) -> str:
    if error.code:
        return error.code
    return UNSUPPORTED if error.error.startswith(UNSUPPORTED_TEXT) else ""


class Controls:
    """Relays controls and keeps what they change (model, permission mode) as the
    session's options, so a resumed process starts with them."""

    def __init__(self, config: ServiceConfig, store: SessionStore) -> None:
        self._config = config
        self._store = store

    async def relay(
        self, session: Session, request_id: str, subtype: str, params: JsonObject
    ) -> ControlOutcome:
        """Send the control and wait (bounded) for Claude Code's answer; never raises for
        what the CLI or the process does."""
        failed = ControlOutcome(request_id, subtype)
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_SECONDS):
                await session.ensure_process()
                process = session.process
                if process is None:
                    raise ProcessGone("the session has no process")
                fields = {k: v for k, v in params.items() if k != "subtype"}
                response = await process.request(subtype, **fields)
        except ControlError as exc:
            return replace(failed, error=exc.error, error_code=error_code(exc))
        except ProcessGone as exc:
            return replace(failed, error=f"Claude Code exited: {exc}", error_code="process_exited")
        except TimeoutError:
            return replace(
                failed,
                error=f"Claude Code did not answer within {CONTROL_TIMEOUT_SECONDS:g}s",
                error_code="timeout",
            )
        except ServiceError as exc:  # no process could be resumed
            return replace(failed, error=exc.message, error_code=exc.reason.lower())
        await self._remember(session, subtype, params)
        return replace(failed, response=response)

    async def _remember(self, session: Session, subtype: str, params: JsonObject) -> None:
        options = session.options
        if subtype == "set_model":
            options = replace(options, model=str(params.get("model") or ""))
            session.model = options.model
        elif subtype == "set_permission_mode":
            options = replace(options, permission_mode=str(params.get("mode") or ""))
        else:
            return
        self._apply(session, options)
        try:
            await self._store.set_options(session.id, options, session.forked_from)
        except StoreUnavailable as exc:  # the live process has it; only a resume would not
            log.warning("session %s: %s not recorded in the store: %s", session.id, subtype, exc)

    def _apply(self, session: Session, options: SessionOptions) -> None:
        base = self._config.profile(session.profile.name)
        session.options = options
        if base is not None:
            session.profile = effective(base, options)
