"""The seed's plain HTTP routes, kept for callers that speak neither gRPC nor Connect:

    POST /sessions/{id}/hot-prompt   {"prompt": "...", "profile": "..."}
        One turn in session {id}, which is created on first use (Ask with
        create_if_missing). Answers text/event-stream: one SSE event per PromptResponse,
        `event:` its kind (opened, turn_started, text_delta, ..., result), `data:` the
        PromptResponse as JSON; the last is the result. With `Accept: application/json`:
        one JSON object, the TurnResult's fields with sessionId and turnId.
    GET /hot/status
        PoolStatusResponse as JSON: {"poolSize", "targetSize", "activeSessions", ...}.

Errors before the first event answer a 4xx/5xx status with the google.rpc.Status as JSON
(hotsvc.http.errors); one after the stream began is an `error` event, then the end.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from hotsession.v1 import hotsession_pb2 as pb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hotsvc import errors
from hotsvc.grpc.api import HotSessionAPI
from hotsvc.http.auth import caller
from hotsvc.http.connect import stream
from hotsvc.http.errors import caller_error, http_status, json_body

# google.rpc.Code numbers of the HTTP errors Starlette raises itself.
INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED = 3, 5, 12
Events = AsyncGenerator[pb.PromptResponse, None]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def to_json(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON (camelCase), zero values included so every key is there."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def error_response(error: errors.ServiceError) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if isinstance(error, errors.Unauthenticated) else {}
    return JSONResponse(json_body(error), status_code=http_status(error), headers=headers)


class PlainRoutes:
    def __init__(self, api: HotSessionAPI, max_body_bytes: int) -> None:
        self._api = api
        self._max_body = max_body_bytes

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/sessions/{session_id}/hot-prompt", self.hot_prompt, methods=["POST"]),
                Route("/hot/status", self.hot_status, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    async def hot_status(self, request: Request) -> Response:
        try:
            status = await self._api.pool_status(pb.PoolStatusRequest(), caller())
        except Exception as exc:
            return error_response(caller_error(exc, "GET /hot/status"))
        return JSONResponse(to_json(status))

    async def hot_prompt(self, request: Request) -> Response:
        what = "POST /sessions/{id}/hot-prompt"
        try:
            principal = caller()
            ask = await self._ask_request(request)
            events = stream(
                lambda write, alive: self._api.streams.ask(ask, principal, write, alive), what
            )
            first = await anext(events)  # an open that fails answers with a status
        except Exception as exc:
            return error_response(caller_error(exc, what))
        if "application/json" in request.headers.get("accept", ""):
            return await self._one_object(first, events, what)
        return StreamingResponse(
            self._sse(first, events, what), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def _ask_request(self, request: Request) -> pb.AskRequest:
        body = await self._body(request)
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise errors.InvalidRequest(
                'the body must be a JSON object like {"prompt": "..."}', field="body"
            )
        prompt, profile = document.get("prompt"), document.get("profile", "")
        if not isinstance(prompt, str) or not isinstance(profile, str):
            raise errors.InvalidRequest(
                '"prompt" (and "profile", if given) must be strings: {"prompt": "..."}',
                field="prompt",
            )
        return pb.AskRequest(
            session_id=request.path_params["session_id"],
            create_if_missing=True,
            profile=profile,
            turn=pb.UserTurn(text=prompt),
        )

    async def _body(self, request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_body:
                raise errors.InvalidRequest(
                    f"the body is over the limit of {self._max_body} bytes (--max-turn-bytes)",
                    field="body",
                    metadata={"limit": self._max_body},
                )
        return bytes(body)

    async def _one_object(self, first: pb.PromptResponse, events: Events, what: str) -> Response:
        last = first
        try:
            async with contextlib.aclosing(events):
                async for response in events:
                    last = response
        except Exception as exc:
            return error_response(caller_error(exc, what))
        result = to_json(last.result)
        return JSONResponse({"sessionId": last.session_id, "turnId": last.turn_id, **result})

    async def _sse(self, first: pb.PromptResponse, events: Events, what: str) -> AsyncIterator[str]:
        # Closed with the response too when the client goes: that detaches the session.
        async with contextlib.aclosing(events):
            yield _event(first)
            try:
                async for response in events:
                    yield _event(response)
            except Exception as exc:
                error = caller_error(exc, what)
                yield f"event: error\ndata: {json.dumps(json_body(error))}\n\n"

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Unknown paths and methods, answered like every other error: a google.rpc.Status."""
        assert isinstance(exc, HTTPException)
        code = {404: NOT_FOUND, 405: UNIMPLEMENTED}.get(exc.status_code, INVALID_ARGUMENT)
        message = (
            f"{request.method} {request.url.path}: {exc.detail}; this service answers "
            "POST /sessions/{id}/hot-prompt, GET /hot/status and POST /hotsession.v1.HotSession/*"
        )
        return JSONResponse({"code": code, "message": message}, status_code=exc.status_code)


def _event(response: pb.PromptResponse) -> str:
    data = json_format.MessageToJson(response, indent=None)
    return f"event: {response.WhichOneof('event')}\ndata: {data}\n\n"
