"""Pure conversions for the resource RPCs: Session, SessionMessage, SessionOptions."""

from __future__ import annotations

from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.claude.events import Usage
from hotsvc.claude.messages import Message, Role
from hotsvc.errors import InvalidRequest
from hotsvc.grpc.content import check_length, fill_block
from hotsvc.options import SessionOptions
from hotsvc.resources import SessionResource
from hotsvc.snapshot import SessionState

STATE = {
    SessionState.IDLE: pb.SESSION_STATE_IDLE,
    SessionState.BUSY: pb.SESSION_STATE_BUSY,
    SessionState.ATTACHED: pb.SESSION_STATE_ATTACHED,
    SessionState.STOPPED: pb.SESSION_STATE_STOPPED,
    SessionState.LOST: pb.SESSION_STATE_LOST,
}
ROLE = {Role.USER: pb.MESSAGE_ROLE_USER, Role.ASSISTANT: pb.MESSAGE_ROLE_ASSISTANT}
MAX_TOOL_CHARS = 256
MAX_PROMPT_CHARS = 64 * 1024


def options(message: pb.SessionOptions, field: str) -> SessionOptions:
    """The caller's options, their sizes checked (what they may set is the profile's)."""
    check_length(f"{field}.model", message.model)
    check_length(f"{field}.permission_mode", message.permission_mode)
    check_length(f"{field}.append_system_prompt", message.append_system_prompt, MAX_PROMPT_CHARS)
    for name in ("allowed_tools", "disallowed_tools"):
        for index, tool in enumerate(getattr(message, name)):
            check_length(f"{field}.{name}[{index}]", tool, MAX_TOOL_CHARS)
            if not tool.strip():
                raise InvalidRequest(f"{field}.{name}[{index}] is empty", field=f"{field}.{name}")
    return SessionOptions(
        model=message.model,
        append_system_prompt=message.append_system_prompt,
        allowed_tools=tuple(message.allowed_tools),
        disallowed_tools=tuple(message.disallowed_tools),
        max_turns=message.max_turns,
        permission_mode=message.permission_mode,
    )


def options_message(value: SessionOptions) -> pb.SessionOptions:
    return pb.SessionOptions(
        model=value.model,
        append_system_prompt=value.append_system_prompt,
        allowed_tools=value.allowed_tools,
        disallowed_tools=value.disallowed_tools,
        max_turns=value.max_turns,
        permission_mode=value.permission_mode,
    )


def session(resource: SessionResource) -> pb.Session:
    message = pb.Session(
        session_id=resource.id,
        owner=resource.owner,
        profile=resource.profile,
        state=STATE[resource.state],
        turns=resource.turns,
        model=resource.model,
        working_directory=resource.cwd,
        total_cost_usd=resource.cost_usd,
        pid=resource.pid,
        options=options_message(resource.options),
        replica_id=resource.replica_id,
    )
    message.create_time.FromNanoseconds(int(resource.created_at * 1e9))
    message.last_used_time.FromNanoseconds(int(resource.last_used_at * 1e9))
    fill_usage(message.usage, resource.usage)
    return message


def fill_usage(message: pb.Usage, usage: Usage) -> None:
    message.input_tokens = usage.input_tokens
    message.output_tokens = usage.output_tokens
    message.cache_creation_input_tokens = usage.cache_creation_input_tokens
    message.cache_read_input_tokens = usage.cache_read_input_tokens


def session_message(value: Message) -> pb.SessionMessage:
    message = pb.SessionMessage(uuid=value.uuid, role=ROLE[value.role], model=value.model)
    if value.created_at:
        message.create_time.FromNanoseconds(int(value.created_at * 1e9))
    for block in value.content:
        fill_block(message.content.add(), block)
    return message
