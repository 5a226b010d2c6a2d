"""Pure conversions between hotsession.v1 messages and the domain's values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.attachment import GoAway, Heartbeat, Rejected
from hotsvc.claude import events
from hotsvc.controls import ControlOutcome
from hotsvc.errors import InvalidRequest, ServiceError
from hotsvc.grpc.content import check_length, fill_block, struct
from hotsvc.grpc.resources import STATE, options
from hotsvc.grpc.status import code_of
from hotsvc.opening import OpenRequest
from hotsvc.permissions import Decision, PermissionAsk
from hotsvc.snapshot import Opened, SessionView, Snapshot, SpawnView, Start
from hotsvc.turn import TurnStarted

START = {
    Start.WARM: pb.SESSION_START_WARM,
    Start.COLD: pb.SESSION_START_COLD,
    Start.ATTACHED: pb.SESSION_START_ATTACHED,
    Start.RESUMED: pb.SESSION_START_RESUMED,
}

# No response is larger than gRPC clients accept by default (4 MiB): a long text delta
# becomes several events, raw_json past a limit is left out (raw_json_truncated), and the
# text of any event still too large is cut, saying so. Lines this short need no checks.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024
MAX_RAW_JSON_BYTES = 1024 * 1024
MAX_DELTA_CHARS = 64 * 1024
SMALL_TEXT_CHARS = 256 * 1024  # at most 1 MiB of UTF-8: no event from it can be too large
# A deny's message goes to Claude as the tool's error: a note, not a document.
MAX_DECISION_MESSAGE_CHARS = 16 * 1024
TRUNCATED = "\n[... {} characters cut by hotsvc: an event must fit in 4 MiB]"


def open_request(first: pb.PromptRequest | None) -> OpenRequest:
    """The `open` a Prompt stream must start with."""
    if first is None or first.WhichOneof("request") != "open":
        raise InvalidRequest(
            "the first request of a Prompt stream must be `open`: send "
            "open{} for a new session or open{session_id} to re-attach",
            field="open",
        )
    check_length("open.profile", first.open.profile)
    return OpenRequest(
        session_id=first.open.session_id,
        profile=first.open.profile,
        create_if_missing=first.open.create_if_missing,
        options=options(first.open.options, "open.options"),
    )


def ask_open(request: pb.AskRequest) -> OpenRequest:
    """What an Ask opens: a new session, or `session_id` (created when missing if asked)."""
    check_length("profile", request.profile)
    if request.create_if_missing and not request.session_id:
        raise InvalidRequest(
            "create_if_missing needs a session_id: the id to create the session under",
            field="session_id",
        )
    return OpenRequest(
        session_id=request.session_id,
        profile=request.profile,
        create_if_missing=request.create_if_missing,
        options=options(request.options, "options"),
    )


def opened(view: Opened, include_last_result: bool) -> pb.PromptResponse:
    response = pb.PromptResponse(
        session_id=view.session_id,
        opened=pb.SessionOpened(
            session_id=view.session_id, start=START[view.start], pid=view.pid, profile=view.profile
        ),
    )
    if include_last_result and view.last_result is not None:
        response.opened.last_turn_id = view.last_turn_id
        _fill_result(response.opened.last_result, view.last_result)
    return response


def progress(session_id: str, subtype: str, status: str) -> pb.PromptResponse:
    return pb.PromptResponse(
        session_id=session_id,
        progress=pb.Progress(subtype=subtype, status=pb.StatusUpdate(status=status)),
    )


def responses(
    event: events.Event, session_id: str, turn_id: str, include_raw_json: bool
) -> Iterator[pb.PromptResponse]:
    """The responses for one event (none for events callers don't see), each under 4 MiB."""
    if isinstance(event, events.TextDelta) and len(event.text) > MAX_DELTA_CHARS:
        for start in range(0, len(event.text), MAX_DELTA_CHARS):
            piece = events.TextDelta(event.text[start : start + MAX_DELTA_CHARS], event.index)
            yield from responses(piece, session_id, turn_id, include_raw_json=False)
        return
    response = event_response(event, session_id, turn_id, include_raw_json)
    if response is None:
        return
    if len(event.line) > SMALL_TEXT_CHARS or (
        isinstance(event, TurnStarted) and len(event.text) > SMALL_TEXT_CHARS
    ):
        _bound(response)
    yield response


def _bound(response: pb.PromptResponse) -> None:
    if len(response.raw_json.encode()) > MAX_RAW_JSON_BYTES:
        response.raw_json = ""
        response.raw_json_truncated = True
    excess = response.ByteSize() - MAX_RESPONSE_BYTES
    if excess <= 0:
        return
    # The largest texts an event carries: assistant text blocks, a tool's output, a result.
    texts: list[tuple[Any, str]] = [
        (response.result, "text"),
        (response.tool_result, "content"),
        (response.turn_started, "text"),
    ]
    texts += [(block.text, "text") for block in response.assistant.content]
    for holder, name in sorted(texts, key=lambda t: -len(getattr(*t))):
        text = getattr(holder, name)
        # Characters are 1-4 bytes: cutting `excess` characters frees at least as many bytes.
        keep = max(0, len(text) - excess - len(TRUNCATED) - 16)
        setattr(holder, name, text[:keep] + TRUNCATED.format(len(text) - keep))
        if (excess := response.ByteSize() - MAX_RESPONSE_BYTES) <= 0:
            return


def event_response(
    event: events.Event, session_id: str, turn_id: str, include_raw_json: bool
) -> pb.PromptResponse | None:
    """The response for one event, or None for events callers don't see."""
    response = pb.PromptResponse(session_id=session_id, turn_id=turn_id)
    match event:
        case TurnStarted(text=text):
            response.turn_started.text = text
        case events.TextDelta(text=text, index=index):
            response.text_delta.text = text
            response.text_delta.block_index = index
        case events.AssistantMessage():
            _fill_assistant(response.assistant, event)
        case events.ToolResult(tool_use_id=tool_use_id, content=content, is_error=is_error):
            response.tool_result.tool_use_id = tool_use_id
            response.tool_result.content = content
            response.tool_result.is_error = is_error
        case events.ApiRetry():
            response.progress.subtype = event.subtype
            retry = response.progress.api_retry
            retry.attempt = event.attempt
            retry.max_retries = event.max_retries
            retry.retry_delay_ms = event.retry_delay_ms
            retry.error_status = event.error_status
            retry.error = event.error
        case events.SystemEvent(subtype=subtype, status=status):  # incl. hotsvc's own
            response.progress.subtype = subtype
            if status:
                response.progress.status.status = status
        case events.Result():
            _fill_result(response.result, event)
        case Heartbeat(turn_running=running):
            response.heartbeat.turn_running = running
        case GoAway(time_left=time_left, reason=reason):
            response.go_away.reason = reason
            response.go_away.time_left.FromNanoseconds(int(time_left * 1e9))
        case Rejected(error=error):
            response.error.CopyFrom(stream_error(error))
        case ControlOutcome():
            _fill_control(response.control_result, event)
        case PermissionAsk():
            _fill_permission(response.permission_request, event)
        case _:
            return None  # stream bookkeeping, echoed user text, unknown types
    if include_raw_json:
        response.raw_json = event.line
    return response


def stream_error(error: ServiceError) -> pb.StreamError:
    """A refusal as an event, with what the RPC error's details would carry."""
    message = pb.StreamError(
        code=code_of(error).value[0],
        message=error.message,
        reason=error.reason,
        metadata=error.metadata,
    )
    if error.retry_after is not None:
        message.retry_delay.FromNanoseconds(int(error.retry_after * 1e9))
    return message


def _fill_assistant(message: pb.AssistantMessage, event: events.AssistantMessage) -> None:
    message.message_id = event.message_id
    message.model = event.model
    message.parent_tool_use_id = event.parent_tool_use_id
    message.error = event.error
    for block in event.content:
        fill_block(message.content.add(), block)


def _fill_control(message: pb.ControlResult, outcome: ControlOutcome) -> None:
    message.request_id = outcome.request_id
    message.subtype = outcome.subtype
    message.response.CopyFrom(struct(outcome.response))
    message.error = outcome.error
    message.error_code = outcome.error_code


def _fill_permission(message: pb.PermissionRequest, ask: PermissionAsk) -> None:
    message.request_id = ask.request_id
    message.tool_name = ask.tool_name
    message.input.CopyFrom(struct(ask.input))
    message.tool_use_id = ask.tool_use_id
    message.blocked_path = ask.blocked_path
    message.suggestions.extend(struct(s) for s in ask.suggestions)
    message.description = ask.description
    message.time_left.FromNanoseconds(int(ask.time_left * 1e9))


def permission_decision(message: pb.PermissionDecision) -> Decision:
    """A caller's PermissionDecision; the request_id is checked against the waiting ones
    by the session (hotsvc.permissions)."""
    field = "permission_decision"
    check_length(f"{field}.request_id", message.request_id)
    if not message.request_id:
        raise InvalidRequest(
            f"{field}.request_id is empty: answer the request_id of a `permission_request` event",
            field=f"{field}.request_id",
        )
    if len(message.message) > MAX_DECISION_MESSAGE_CHARS:
        raise InvalidRequest(
            f"{field}.message has {len(message.message)} characters, over the limit of "
            f"{MAX_DECISION_MESSAGE_CHARS}: say it in fewer words",
            field=f"{field}.message",
        )
    updated = (
        json_format.MessageToDict(message.updated_input)
        if message.HasField("updated_input")
        else None
    )
    return Decision(
        message.request_id,
        message.allow,
        updated,
        message.message,
        message.interrupt,
        tuple(message.apply_suggestions),
    )


def _fill_result(message: pb.TurnResult, event: events.Result) -> None:
    message.text = event.text
    message.is_error = event.is_error
    message.subtype = event.subtype
    message.stop_reason = event.stop_reason
    message.duration_ms = event.duration_ms
    message.num_turns = event.num_turns
    message.total_cost_usd = event.total_cost_usd
    message.api_error_status = event.api_error_status
    message.errors.extend(event.errors)
    message.durable = event.durable
    usage = message.usage
    usage.input_tokens = event.usage.input_tokens
    usage.output_tokens = event.usage.output_tokens
    usage.cache_creation_input_tokens = event.usage.cache_creation_input_tokens
    usage.cache_read_input_tokens = event.usage.cache_read_input_tokens


def pool_status(snapshot: Snapshot, now: float, show_pids: bool) -> pb.PoolStatusResponse:
    """The pools and the sessions; pids only for admins (a pid lets a tool in another
    session signal or inspect that process)."""
    response = pb.PoolStatusResponse(
        active_sessions=snapshot.live_sessions,
        stopped_sessions=snapshot.stopped_sessions,
        max_sessions=snapshot.max_sessions,
        spawn_stats=_spawn_stats(snapshot.spawns),
        draining=snapshot.draining,
    )
    for pool in snapshot.pools:
        response.pools.add(
            profile=pool.profile,
            pool_size=pool.size,
            target_size=pool.target,
            idle_pids=pool.idle_pids if show_pids else (),
        )
        response.pool_size += pool.size
        response.target_size += pool.target
    for session in snapshot.sessions:
        _fill_session(response.sessions.add(), session, now)
        if not show_pids:
            response.sessions[-1].pid = 0
    return response


def _fill_session(row: pb.SessionInfo, session: SessionView, now: float) -> None:
    row.session_id = session.id
    row.state = STATE[session.state]
    row.pid = session.pid
    row.turns = session.turns
    row.profile = session.profile
    row.attached = session.attached
    row.owner = session.owner
    row.rss_bytes = session.rss_bytes
    row.age.FromNanoseconds(int((now - session.created_at) * 1e9))
    row.last_active_time.FromNanoseconds(int(session.last_active_at * 1e9))


def _spawn_stats(stats: SpawnView) -> pb.SpawnStats:
    message = pb.SpawnStats(
        spawned=stats.spawned,
        failed=stats.failed,
        in_flight=stats.in_flight,
        replaced=stats.replaced,
        warm_starts=stats.warm_starts,
        cold_starts=stats.cold_starts,
    )
    message.mean_spawn_time.FromNanoseconds(int(stats.mean_ready_seconds * 1e9))
    return message
