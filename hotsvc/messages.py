"""Protocol events and session state to hotsession.v1 messages."""

from __future__ import annotations

import time

from google.protobuf import struct_pb2
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc import protocol
from hotsvc.launcher import SpawnStats
from hotsvc.manager import SessionManager, Start
from hotsvc.session import Session, TurnStarted

START = {
    Start.WARM: pb.SESSION_START_WARM,
    Start.COLD: pb.SESSION_START_COLD,
    Start.ATTACHED: pb.SESSION_START_ATTACHED,
    Start.RESUMED: pb.SESSION_START_RESUMED,
}


def opened(session: Session, start: Start, include_last_result: bool) -> pb.PromptResponse:
    response = pb.PromptResponse(
        session_id=session.id,
        opened=pb.SessionOpened(session_id=session.id, start=START[start],
                                pid=_pid(session), profile=session.profile.name),
    )
    if include_last_result and session.last_result is not None:
        response.opened.last_turn_id = session.last_turn_id
        _fill_result(response.opened.last_result, session.last_result)
    return response


def heartbeat(session: Session) -> pb.PromptResponse:
    return pb.PromptResponse(session_id=session.id,
                             heartbeat=pb.Heartbeat(turn_running=session.busy))


def go_away(session_id: str, time_left: float, reason: str) -> pb.PromptResponse:
    response = pb.PromptResponse(session_id=session_id, go_away=pb.GoAway(reason=reason))
    response.go_away.time_left.FromNanoseconds(int(time_left * 1e9))
    return response


def _pid(session: Session) -> int:
    return session.process.pid if session.live and session.process else 0


def event_response(event: protocol.Event, session_id: str, turn_id: str,
                   include_raw_json: bool) -> pb.PromptResponse | None:
    """The response for one turn event, or None for events callers don't see."""
    response = pb.PromptResponse(session_id=session_id, turn_id=turn_id)
    match event:
        case TurnStarted(text=text):
            response.turn_started.text = text
        case protocol.TextDelta(text=text, index=index):
            response.text_delta.text = text
            response.text_delta.block_index = index
        case protocol.AssistantMessage():
            _fill_assistant(response.assistant, event)
        case protocol.ToolResult(tool_use_id=tool_use_id, content=content, is_error=is_error):
            response.tool_result.tool_use_id = tool_use_id
            response.tool_result.content = content
            response.tool_result.is_error = is_error
        case protocol.ApiRetry():
            response.progress.subtype = event.subtype
            retry = response.progress.api_retry
            retry.attempt = event.attempt
            retry.max_retries = event.max_retries
            retry.retry_delay_ms = event.retry_delay_ms
            retry.error_status = event.error_status
            retry.error = event.error
        case protocol.SystemEvent(subtype=subtype, status=status):  # incl. hotsvc's own
            response.progress.subtype = subtype
            if status:
                response.progress.status.status = status
        case protocol.Result():
            _fill_result(response.result, event)
        case _:
            return None  # stream bookkeeping, echoed user text, unknown types
    if include_raw_json:
        response.raw_json = event.line
    return response


def _fill_assistant(message: pb.AssistantMessage, event: protocol.AssistantMessage) -> None:
    message.message_id = event.message_id
    message.model = event.model
    message.parent_tool_use_id = event.parent_tool_use_id
    message.error = event.error
    for block in event.content:
        out = message.content.add()
        match block:
            case protocol.TextBlock(text=text):
                out.text.text = text
            case protocol.ThinkingBlock(thinking=thinking):
                out.thinking.thinking = thinking
            case protocol.ToolUseBlock(id=tool_id, name=name, input=tool_input):
                out.tool_use.id = tool_id
                out.tool_use.name = name
                out.tool_use.input.CopyFrom(_struct(tool_input))


def _struct(value: protocol.JsonObject) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def _fill_result(message: pb.TurnResult, event: protocol.Result) -> None:
    message.text = event.text
    message.is_error = event.is_error
    message.subtype = event.subtype
    message.stop_reason = event.stop_reason
    message.duration_ms = event.duration_ms
    message.num_turns = event.num_turns
    message.total_cost_usd = event.total_cost_usd
    message.api_error_status = event.api_error_status
    message.errors.extend(event.errors)
    usage = message.usage
    usage.input_tokens = event.usage.input_tokens
    usage.output_tokens = event.usage.output_tokens
    usage.cache_creation_input_tokens = event.usage.cache_creation_input_tokens
    usage.cache_read_input_tokens = event.usage.cache_read_input_tokens


def pool_status(manager: SessionManager) -> pb.PoolStatusResponse:
    now = time.time()
    response = pb.PoolStatusResponse(
        active_sessions=manager.live_sessions,
        stopped_sessions=len(manager.sessions) - manager.live_sessions,
        max_sessions=manager.config.max_sessions,
        spawn_stats=_spawn_stats(manager.launcher.stats),
        draining=manager.draining,
    )
    for pool in manager.pools.values():
        response.pools.add(profile=pool.profile.name, pool_size=pool.size,
                           target_size=pool.target,
                           idle_pids=[p.pid for p in pool.idle_processes()])
        response.pool_size += pool.size
        response.target_size += pool.target
    for session in manager.sessions.values():
        row = response.sessions.add(
            session_id=session.id,
            state=_state(session),
            pid=_pid(session),
            turns=session.turns_completed,
            profile=session.profile.name,
            attached=session.attached,
        )
        row.age.FromNanoseconds(int((now - session.created_at) * 1e9))
        row.last_active_time.FromNanoseconds(int(session.last_active_at * 1e9))
    return response


def _state(session: Session) -> pb.SessionState.ValueType:
    if not session.live:
        return pb.SESSION_STATE_STOPPED
    if session.busy:
        return pb.SESSION_STATE_BUSY
    return pb.SESSION_STATE_ATTACHED if session.attached else pb.SESSION_STATE_IDLE


def _spawn_stats(stats: SpawnStats) -> pb.SpawnStats:
    message = pb.SpawnStats(
        spawned=stats.spawned, failed=stats.failed, in_flight=stats.in_flight,
        replaced=stats.replaced, warm_starts=stats.warm_starts, cold_starts=stats.cold_starts,
    )
    message.mean_spawn_time.FromNanoseconds(int(stats.mean_ready_seconds * 1e9))
    return message
