"""Errors a caller can act on; the gRPC layer maps each kind to its status code.

Each kind has a stable `reason` (sent as google.rpc.ErrorInfo.reason, so a client can
branch on it without parsing the message) and may carry `metadata`: the figures the
message quotes (session id, capacity, limits), as lowerCamelCase string pairs. Kinds a
retry can cure also say after how long (`retry_after`, sent as google.rpc.RetryInfo).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class ServiceError(Exception):
    """Base class: the message tells the caller what to do."""

    reason: ClassVar[str] = "SERVICE_ERROR"
    # Seconds after which the same request may succeed; None: retrying as is will not help.
    # A kind sets its usual delay; an error that knows better sets its own.
    retry_after: float | None = None

    def __init__(self, message: str, *, metadata: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {key: str(value) for key, value in (metadata or {}).items()}


class InvalidRequest(ServiceError):
    """The request itself is wrong; `field` names the part to fix (a google.rpc.BadRequest)."""

    reason = "INVALID_REQUEST"

    def __init__(
        self, message: str, *, field: str, metadata: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message, metadata={"field": field, **(metadata or {})})
        self.field = field


class SessionNotFound(ServiceError):
    reason = "SESSION_NOT_FOUND"


class ProfileNotFound(ServiceError):
    """The profile an `open` names is not configured."""

    reason = "PROFILE_NOT_FOUND"


class SessionBusy(ServiceError):
    """The session already has a stream attached."""

    reason = "SESSION_ATTACHED"


class SessionClosed(ServiceError):
    """The session was closed (CloseSession) while this stream was attached to it."""

    reason = "SESSION_CLOSED"


class CapacityExhausted(ServiceError):
    reason = "CAPACITY_EXHAUSTED"
    retry_after = 1.0  # a turn ends or a session closes, and its slot can be reclaimed


class Draining(ServiceError):
    """The service is shutting down and takes no new work."""

    reason = "DRAINING"
    retry_after = 1.0  # on another instance, or this one once restarted


class SpawnFailed(ServiceError):
    """Claude Code could not be started."""

    reason = "SPAWN_FAILED"
    retry_after = 2.0  # a start-up that timed out may succeed; a wrong command will not


class Unauthenticated(ServiceError):
    """No credentials, or credentials hotsvc does not accept; the message says how to
    authenticate, never what the credentials held."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """The caller may not use this session. The message is the same whether the session
    exists or not, so it tells nothing about other principals' sessions."""

    reason = "PERMISSION_DENIED"


class QuotaExceeded(ServiceError):
    """The caller's principal is past one of its quotas (a google.rpc.QuotaFailure);
    other principals are not affected."""

    reason = "QUOTA_EXCEEDED"

    def __init__(
        self,
        message: str,
        *,
        subject: str,
        retry_after: float,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.subject = subject  # QuotaFailure.Violation.subject, e.g. "principal:alice"
        self.retry_after = retry_after


class OpenTimeout(ServiceError):
    """A Prompt stream sent no `open` within --open-timeout."""

    reason = "OPEN_TIMEOUT"


class StoreUnavailable(ServiceError):
    """The session store (`--store`) cannot be reached or answered with an error."""

    reason = "STORE_UNAVAILABLE"
    retry_after = 1.0  # a database restart or a network blip passes


class StoreCorrupt(StoreUnavailable):
    """The SQLite store's file is damaged: hotsvc will not start on it as it is."""

    reason = "STORE_CORRUPT"


class HeldElsewhere(ServiceError):
    """Another live replica holds the session's lease; `replicaId` in the metadata names
    it, so a misrouted caller can retry through the load balancer."""

    reason = "SESSION_HELD_ELSEWHERE"
    retry_after = 1.0  # the balancer routes to the holder, or its lease expires


class TranscriptLost(ServiceError):
    """The session's conversation cannot be restored: its transcript is gone everywhere."""

    reason = "TRANSCRIPT_LOST"


class Internal(ServiceError):
    """A bug: the message names an incident id to find in the service's log, nothing more."""

    reason = "INTERNAL"


def clip(text: str, limit: int = 64) -> str:
    """`text` shortened for quoting in an error: status trailers have a size limit (8-16 KiB
    in most clients) past which the caller gets RESOURCE_EXHAUSTED instead of the error."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _kinds(base: type[ServiceError]) -> list[type[ServiceError]]:
    return [k for sub in base.__subclasses__() for k in (sub, *_kinds(sub))]


# Every reason a caller may see, for clients and tests to check against.
REASONS: frozenset[str] = frozenset(kind.reason for kind in _kinds(ServiceError))
