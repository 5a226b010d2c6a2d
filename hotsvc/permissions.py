"""Permission prompts decided by the caller (a profile's `permission_prompts = "caller"`).

Claude Code run with `--permission-prompt-tool stdio` asks before every tool use that its
own rules (allowed_tools, disallowed_tools, permission_mode) leave open: a `can_use_tool`
control request, which it waits on with no timeout of its own. The session's `Permissions`
passes each one to the stream attached to the session as a `permission_request` event and
answers the CLI with the caller's `PermissionDecision`. It answers "deny", with a message
saying why, when nobody can: no stream attached, a stream that cannot answer (Ask and the
HTTP routes: one request in, events out), or no answer within `permission_timeout`. The
turn goes on either way (Claude reads the message as the tool's error).

Requests still waiting are sent again to a stream that re-attaches. A request the CLI
withdraws (`control_cancel_request`, e.g. when the turn is interrupted) is forgotten and
answered with nothing. A caller may accept the CLI's `suggestions` with an allow, but only
those whose destination is `session`: the others write `.claude/settings.local.json` or
user settings, lasting rules a caller could grant itself, unless the profile sets
`caller_may_persist_permissions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hotsvc import metrics
from hotsvc.audit import AuditLog
from hotsvc.claude.events import ControlRequest, Event, JsonObject
from hotsvc.errors import InvalidRequest, clip
from hotsvc.principal import Principal

log = logging.getLogger(__name__)

# The one destination whose rules end with the session's process (nothing on disk).
SESSION_DESTINATION = "session"


@dataclass(frozen=True, slots=True)
class PermissionAsk(Event):
    """A `can_use_tool` request as the caller sees it: the `permission_request` event."""

    request_id: str
    tool_name: str
    input: JsonObject
    tool_use_id: str = ""
    blocked_path: str = ""
    suggestions: tuple[JsonObject, ...] = ()
    description: str = ""
    time_left: float = 0.0  # seconds until the no-answer deny


@dataclass(frozen=True)
class Decision:
    """A caller's answer (`PermissionDecision`); `interrupt` denies and stops the turn."""

    request_id: str
    allow: bool
    updated_input: JsonObject | None = None
    message: str = ""
    interrupt: bool = False
    apply_suggestions: tuple[int, ...] = ()


class Asker(Protocol):
    """The stream attached to the session, as far as permission prompts go."""

    principal: Principal
    interactive: bool  # False: it cannot send a decision (Ask, HTTP routes)

    @property
    def attached(self) -> bool: ...

    def notify(self, turn_id: str, event: Event) -> None: ...


@dataclass
class _Pending:
    request: ControlRequest
    turn_id: str
    expires_at: float  # monotonic
    source: object  # the process that asked
    answer: asyncio.Future[Decision | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def event(self) -> PermissionAsk:
        return ask_of(self.request, max(0.0, self.expires_at - time.monotonic()))


def ask_of(request: ControlRequest, time_left: float) -> PermissionAsk:
    """The caller's view of a `can_use_tool` request (its raw line goes along as raw_json)."""
    body = request.request
    tool_input = body.get("input")
    suggestions = body.get("permission_suggestions")
    return PermissionAsk(
        request.request_id,
        str(body.get("tool_name") or ""),
        dict(tool_input) if isinstance(tool_input, Mapping) else {},
        tool_use_id=str(body.get("tool_use_id") or ""),
        blocked_path=str(body.get("blocked_path") or ""),
        suggestions=tuple(dict(s) for s in suggestions or () if isinstance(s, Mapping))
        if isinstance(suggestions, Sequence)
        else (),
        description=str(body.get("description") or ""),
        time_left=time_left,
        line=request.line,
    )


class Permissions:
    """One session's permission prompts: those waiting for the caller, and the answers."""

    def __init__(
        self,
        session_id: str,
        owner: str,
        audit: AuditLog,
        timeout: float,
        may_persist: bool = False,
    ) -> None:
        self._session_id = session_id
        self._owner = owner
        self._audit = audit
        self._timeout = timeout
        self._may_persist = may_persist
        self._pending: dict[str, _Pending] = {}

    def waiting(self) -> list[tuple[str, PermissionAsk]]:
        """(turn id, event) of every request still waiting, oldest first: for a stream
        that re-attaches."""
        return [(p.turn_id, p.event()) for p in self._pending.values() if not p.answer.done()]

    async def ask(
        self,
        request: ControlRequest,
        asker: Asker | None,
        turn_id: str,
        source: object = None,
        relay: bool = True,
    ) -> JsonObject | None:
        """The answer to one `can_use_tool` request from process `source`: the caller's,
        or a deny saying why there is none (`relay` False: the profile relays none). None
        when the CLI withdrew the request (send nothing)."""
        tool, tool_input = ask_of(request, 0.0).tool_name, request.request.get("input") or {}
        principal = asker.principal.name if asker is not None else self._owner
        self._record("asked", principal, tool, tool_input, "")
        if not relay:
            return self._deny(
                request,
                principal,
                "profile",
                f"hotsvc does not relay permission prompts for this session; allow {tool} "
                "in the session's profile (allowed_tools or permission_mode), or use a "
                'profile with permission_prompts = "caller"',
            )
        if asker is None or not asker.attached:
            return self._deny(
                request,
                principal,
                "no_stream",
                f"hotsvc denied {tool}: no caller is attached to session {self._session_id} "
                "to answer this permission request",
            )
        if not asker.interactive:
            return self._deny(
                request,
                principal,
                "not_interactive",
                f"hotsvc denied {tool}: the caller's request (Ask or the HTTP route) cannot "
                "answer permission requests; use a Prompt stream, or allow the tool in the "
                "session's profile",
            )
        pending = _Pending(request, turn_id, time.monotonic() + self._timeout, source)
        self._pending[request.request_id] = pending
        try:
            asker.notify(turn_id, pending.event())
            async with asyncio.timeout(self._timeout):
                decision = await asyncio.shield(pending.answer)
        except TimeoutError:
            return self._deny(
                request,
                principal,
                "timeout",
                f"hotsvc denied {tool}: the caller did not answer the permission request "
                f"within {self._timeout:g}s",
            )
        finally:
            self._pending.pop(request.request_id, None)
            if not pending.answer.done():
                pending.answer.cancel()
        if decision is None:  # withdrawn by the CLI
            self._record("denied", principal, tool, tool_input, "withdrawn")
            return None
        return self._answer(pending, decision, principal)

    def decide(self, decision: Decision, principal: Principal) -> None:
        """A caller's decision for a waiting request; InvalidRequest for any other (the
        stream stays)."""
        pending = self._pending.get(decision.request_id)
        if pending is None or pending.answer.done():
            raise InvalidRequest(
                f"no permission request {clip(decision.request_id)!r} is waiting in session "
                f"{self._session_id}: it was answered, denied for want of an answer, "
                "withdrawn by Claude Code, or never asked; answer the request_id of a "
                "`permission_request` event once",
                field="permission_decision.request_id",
                metadata={"requestId": clip(decision.request_id)},
            )
        offered = len(ask_of(pending.request, 0.0).suggestions)
        if bad := [i for i in decision.apply_suggestions if i >= offered]:
            raise InvalidRequest(
                f"permission_decision.apply_suggestions {bad} are out of range: request "
                f"{clip(decision.request_id)!r} offered {offered} suggestions (0-based)",
                field="permission_decision.apply_suggestions",
                metadata={"requestId": clip(decision.request_id)},
            )
        pending.answer.set_result(decision)

    def cancel(self, request_id: str) -> None:
        """The CLI withdrew the request: stop waiting, answer nothing."""
        pending = self._pending.get(request_id)
        if pending is not None and not pending.answer.done():
            pending.answer.set_result(None)

    def cancel_all(self, source: object) -> None:
        """Process `source` is gone: nothing waits on its requests' answers any more."""
        for request_id, pending in list(self._pending.items()):
            if pending.source is source:
                self.cancel(request_id)

    # -- answers -------------------------------------------------------------------

    def _answer(self, pending: _Pending, decision: Decision, principal: str) -> JsonObject:
        request = pending.request
        tool = str(request.request.get("tool_name") or "")
        tool_input = request.request.get("input") or {}
        if decision.interrupt or not decision.allow:
            body: JsonObject = {
                "behavior": "deny",
                "message": decision.message or f"The caller denied {tool}.",
            }
            if decision.interrupt:
                body["interrupt"] = True
            self._record("denied", principal, tool, tool_input, "caller")
            return body
        # Always with updatedInput: CLI 2.1.197 refuses an allow without it.
        updated = decision.updated_input if decision.updated_input is not None else tool_input
        body = {"behavior": "allow", "updatedInput": updated}
        suggestions = ask_of(request, 0.0).suggestions
        chosen = [suggestions[i] for i in dict.fromkeys(decision.apply_suggestions)]
        kept = [
            s for s in chosen if self._may_persist or s.get("destination") == SESSION_DESTINATION
        ]
        if len(kept) < len(chosen):
            log.info(
                "session %s: dropped %d permission suggestions that would persist beyond the "
                "session (the profile does not set caller_may_persist_permissions)",
                self._session_id,
                len(chosen) - len(kept),
            )
        if kept:
            body["updatedPermissions"] = kept
        self._record("allowed", principal, tool, updated, "caller")
        return body

    def _deny(
        self, request: ControlRequest, principal: str, reason: str, message: str
    ) -> JsonObject:
        tool = str(request.request.get("tool_name") or "")
        log.info(
            "session %s: permission request %s for %s denied (%s)",
            self._session_id,
            request.request_id,
            tool,
            reason,
        )
        self._record("denied", principal, tool, request.request.get("input") or {}, reason)
        return {"behavior": "deny", "message": message}

    def _record(
        self, outcome: str, principal: str, tool: str, tool_input: object, reason: str
    ) -> None:
        """Audit one step of a prompt; an answer (any but "asked") is also counted, once,
        here where every path to one passes, so the audit log and the metric agree."""
        if outcome != "asked":
            # A caller's answer is allow/deny; hotsvc's own denies say why (the reason).
            decision = "allow" if outcome == "allowed" else "deny" if reason == "caller" else reason
            metrics.permission_requested(decision)
        self._audit.permission(
            outcome,
            principal=principal,
            session=self._session_id,
            tool=tool,
            tool_input=tool_input if isinstance(tool_input, Mapping) else {},
            reason=reason,
        )
