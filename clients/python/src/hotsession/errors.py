"""Errors as the helper raises them, with the gRPC status and the google.rpc details decoded.

    try:
        await client.get_session(session_id)
    except ServiceError as exc:
        print(exc.code, exc.reason, exc.metadata, exc.retry_delay)

`retrying(call)` retries UNAVAILABLE and RESOURCE_EXHAUSTED after the RetryInfo delay
hotsvc sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_status import rpc_status

from hotsession.v1 import hotsession_pb2 as pb

__all__ = [
    "ControlFailedError",
    "FieldViolation",
    "HotSessionError",
    "ServiceError",
    "SessionClosedError",
    "TurnFailedError",
    "retrying",
]


class HotSessionError(Exception):
    """The Prompt stream failed or broke the protocol."""


class SessionClosedError(HotSessionError):
    """The session's stream ended before the turn got its result."""


class TurnFailedError(HotSessionError):
    """A turn ended with `is_error`; the result says why (e.g. subtype "interrupted")."""

    def __init__(self, result: pb.TurnResult) -> None:
        detail = f": {result.text}" if result.text else ""
        super().__init__(f"turn failed ({result.subtype or 'error'}){detail}")
        self.result = result


class ControlFailedError(HotSessionError):
    """A control was refused by hotsvc (`error` event) or by Claude Code (`control_result`
    with an error; `code` is e.g. "unsupported_request" for a subtype the CLI lacks)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(HotSessionError):
    """A call hotsvc refused: its status code, message and google.rpc details.

    `reason` is ErrorInfo's stable name (e.g. "SESSION_NOT_FOUND"), `metadata` the figures
    the message quotes, `retry_delay` RetryInfo's delay in seconds (None when a retry
    cannot help), `field_violations` BadRequest's, `quota_subjects` QuotaFailure's.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay: float | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        quota_subjects: tuple[str, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}{f' ({reason})' if reason else ''}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.retry_delay = retry_delay
        self.field_violations = field_violations
        self.quota_subjects = quota_subjects

    @property
    def retryable(self) -> bool:
        """UNAVAILABLE or RESOURCE_EXHAUSTED: waiting `retry_delay` and retrying can work."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ServiceError:
        """Decode a failed call's status and its `grpc-status-details-bin` details."""
        call = cast(grpc.Call, error)
        code, message = call.code(), str(call.details() or "")
        kwargs: dict[str, object] = {}
        try:
            status = rpc_status.from_call(call)
        except ValueError:  # a trailer that disagrees with the call's own status
            status = None
        violations: list[FieldViolation] = []
        subjects: list[str] = []
        for packed in status.details if status is not None else ():
            for kind in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.RetryInfo,
                error_details_pb2.BadRequest,
                error_details_pb2.QuotaFailure,
            ):
                if not packed.Is(kind.DESCRIPTOR):
                    continue
                detail = kind()
                packed.Unpack(detail)
                if kind is error_details_pb2.ErrorInfo:
                    kwargs.update(reason=detail.reason, metadata=dict(detail.metadata))
                elif kind is error_details_pb2.RetryInfo:
                    kwargs["retry_delay"] = detail.retry_delay.ToNanoseconds() / 1e9
                elif kind is error_details_pb2.BadRequest:
                    violations += [
                        FieldViolation(v.field, v.description) for v in detail.field_violations
                    ]
                else:
                    subjects += [v.subject for v in detail.violations]
        return cls(
            code,
            message,
            field_violations=tuple(violations),
            quota_subjects=tuple(subjects),
            **kwargs,  # type: ignore[arg-type]
        )

    @classmethod
    def from_stream_error(cls, error: pb.StreamError) -> ServiceError:
        """A refusal that left the stream open (an `error` event)."""
        code = next((c for c in grpc.StatusCode if c.value[0] == error.code), None)
        return cls(
            code or grpc.StatusCode.UNKNOWN,
            error.message,
            error.reason,
            dict(error.metadata),
            error.retry_delay.ToNanoseconds() / 1e9 if error.HasField("retry_delay") else None,
        )


T = TypeVar("T")


async def retrying(
    call: Callable[[], Awaitable[T]],
    attempts: int = 4,
    backoff: float = 0.2,
    max_delay: float = 30.0,
) -> T:
    """Await `call()` until it succeeds or fails in a way no retry can fix.

    UNAVAILABLE and RESOURCE_EXHAUSTED are retried after the RetryInfo delay hotsvc sent
    (or `backoff`, doubling); `attempts` counts the first. Bound the whole with
    `asyncio.timeout()`.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except grpc.RpcError as exc:
            failure = ServiceError.from_rpc_error(exc)
            if attempt == attempts or not failure.retryable:
                raise failure from exc
        except ServiceError as exc:
            failure = exc
            if attempt == attempts or not failure.retryable:
                raise
        wait = failure.retry_delay if failure.retry_delay else backoff * 2 ** (attempt - 1)
        await asyncio.sleep(min(wait, max_delay))
    raise AssertionError("unreachable")  # the loop returns or raises
