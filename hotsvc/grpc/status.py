"""ServiceErrors as gRPC statuses a client can act on without parsing the message.

The status code and message are what every gRPC client sees. Alongside them, in the
standard `grpc-status-details-bin` trailer (google.rpc.Status, read with e.g.
`grpc_status.rpc_status.from_call`), every error carries:

- google.rpc.ErrorInfo: `reason` (a stable UPPER_SNAKE name, see hotsvc.errors.REASONS),
  `domain` "hotsession.v1", and `metadata` with the figures the message quotes
  (sessionId, profile, maxSessions, liveProcesses, field, limit, length, ...);
- google.rpc.BadRequest for INVALID_ARGUMENT: the field to fix and what is wrong with it;
- google.rpc.RetryInfo where a retry can succeed (RESOURCE_EXHAUSTED, UNAVAILABLE): how
  long to wait first;
- google.rpc.QuotaFailure for a principal past its quota: the subject (`principal:NAME`)
  and which quota.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import (  # type: ignore[import-untyped]  # .pyi files, but no py.typed
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status

from hotsvc import errors
from hotsvc.attachment import StreamEnded
from hotsvc.grpc.requests import Malformed

log = logging.getLogger(__name__)

DOMAIN = "hotsession.v1"

CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.SessionNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ProfileNotFound: grpc.StatusCode.NOT_FOUND,
    errors.SessionBusy: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CapacityExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Draining: grpc.StatusCode.UNAVAILABLE,
    errors.SpawnFailed: grpc.StatusCode.UNAVAILABLE,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.HeldElsewhere: grpc.StatusCode.UNAVAILABLE,
    errors.SessionClosed: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
    errors.OpenTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.TranscriptLost: grpc.StatusCode.DATA_LOSS,
}


def code_of(error: errors.ServiceError) -> grpc.StatusCode:
    """The status code of an error kind (or of its nearest known base class)."""
    for kind in type(error).__mro__:
        if kind in CODES:
            return CODES[kind]
    return grpc.StatusCode.INTERNAL


def rich_status(error: errors.ServiceError) -> status_pb2.Status:
    """The google.rpc.Status for `error`: its code, its message as is, and the details."""
    code = code_of(error)
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    ]
    if isinstance(error, errors.InvalidRequest):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message
                    )
                ]
            )
        )
    if isinstance(error, errors.QuotaExceeded):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.subject, description=error.message
                    )
                ]
            )
        )
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=_CODE_NUMBERS[code], message=error.message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def grpc_status(error: errors.ServiceError) -> grpc.Status:
    """What the servicer aborts with: code, message and the details trailer."""
    return rpc_status.to_status(rich_status(error))


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    code: code_pb2.Code.Value(code.name) for code in grpc.StatusCode
}


Servicer = TypeVar("Servicer")
Handler = Callable[[Servicer, Any, Any], Awaitable[Any]]


def service_error(exc: BaseException) -> errors.ServiceError | None:
    """The caller's error inside `exc`, also from a task group's ExceptionGroup."""
    if isinstance(exc, errors.ServiceError):
        return exc
    if isinstance(exc, StreamEnded):
        return exc.error
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := service_error(inner)) is not None:
                return found
    return None


def maps_errors(method: Handler[Servicer]) -> Handler[Servicer]:
    """The one place where errors become statuses: a ServiceError its own, anything else
    INTERNAL with an incident id that the log has too (never a traceback or class name)."""

    @functools.wraps(method)
    async def handle(self: Servicer, request: Any, context: Any) -> Any:
        try:
            if isinstance(request, Malformed):
                raise request.error
            return await method(self, request, context)
        except Exception as exc:
            error = service_error(exc)
            if error is None:
                incident = uuid.uuid4().hex[:12]
                log.exception("incident %s: %s failed", incident, method.__name__)
                error = errors.Internal(
                    f"hotsvc failed this request (incident {incident}); "
                    "the service's log has the details; retry, or "
                    "report the incident id"
                )
            await context.abort_with_status(grpc_status(error))

    return handle
