"""Errors on the HTTP face, carrying what the gRPC status carries.

Connect clients get a ConnectError with the same code, message and google.rpc details
(ErrorInfo, BadRequest, RetryInfo, QuotaFailure) as gRPC clients. The plain routes answer
an HTTP status and a JSON body that is the google.rpc.Status in its standard JSON form:
`{"code": 3, "message": "...", "details": [{"@type": "type.googleapis.com/google.rpc.
ErrorInfo", "reason": ..., "metadata": {...}}, ...]}`.
Anything that is not a ServiceError becomes INTERNAL with an incident id, as on gRPC:
exception texts never reach a caller.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import json_format
from protobuf.wkt import Any as PyAny

from hotsvc import errors
from hotsvc.grpc.status import code_of, rich_status, service_error

log = logging.getLogger(__name__)

# HTTP statuses of gRPC codes, as Connect and Google's HTTP mapping have them.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def caller_error(exc: BaseException, what: str) -> errors.ServiceError:
    """The error to tell the caller: the ServiceError inside `exc`, else INTERNAL with an
    incident id that the log has too."""
    if (found := service_error(exc)) is not None:
        return found
    incident = uuid.uuid4().hex[:12]
    log.error("incident %s: %s failed", incident, what, exc_info=exc)
    return errors.Internal(
        f"hotsvc failed this request (incident {incident}); the service's log has the "
        "details; retry, or report the incident id"
    )


def connect_error(error: errors.ServiceError) -> ConnectError:
    status = rich_status(error)
    # connectrpc packs only its own runtime's messages; google.protobuf ones go in as Any.
    details = [ErrorDetail(PyAny(type_url=d.type_url, value=d.value)) for d in status.details]
    name = code_of(error).name
    return ConnectError(Code[name.replace("CANCELLED", "CANCELED")], error.message, details)


def http_status(error: errors.ServiceError) -> int:
    return HTTP_STATUS[code_of(error)]


def json_body(error: errors.ServiceError) -> dict[str, Any]:
    """The google.rpc.Status of `error` in its standard JSON form."""
    return json_format.MessageToDict(rich_status(error))
