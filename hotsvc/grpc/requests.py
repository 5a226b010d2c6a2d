"""Request parsing that never fails silently, and the servicer's registration with it.

grpcio answers a request that fails to deserialize (say, invalid UTF-8 in a string field)
with UNKNOWN when it is a call's first message, and treats it as a half-close later in a
stream, dropping it and everything after. Here a request that does not parse becomes a
`Malformed` value the servicer turns into INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor, empty_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from hotsvc.errors import InvalidRequest
from hotsvc.grpc.handlers import MAKERS

LENGTH_DELIMITED = 2


@dataclass(frozen=True)
class Malformed:
    """A request that did not parse; `error` says which field and why."""

    error: InvalidRequest


def parse_or_explain(kind: type[Message]) -> Callable[[bytes], Message | Malformed]:
    message: descriptor.Descriptor = kind.DESCRIPTOR  # type: ignore[assignment]  # upb's

    def parse(data: bytes) -> Message | Malformed:
        try:
            return kind.FromString(data)
        except DecodeError:
            return Malformed(_explain(message, data))

    return parse


def _explain(message: descriptor.Descriptor, data: bytes) -> InvalidRequest:
    if (field := bad_utf8_field(message, data)) is not None:
        return InvalidRequest(
            f"{field} is not valid UTF-8: protobuf strings must be UTF-8 encoded text; send "
            "binary data in a bytes field (e.g. an image or document block)",
            field=field,
        )
    return InvalidRequest(
        f"the request is not a valid {message.full_name} message: check the client's "
        "generated code matches hotsession.v1",
        field="request",
    )


def bad_utf8_field(message: descriptor.Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field in `data` that is not UTF-8, e.g. "turn.text".

    The bytes are read as unknown fields of an empty message, which keeps them raw, and
    matched to `message`'s fields by number.
    """
    try:
        raw = UnknownFieldSet(empty_pb2.Empty.FromString(data))
    except DecodeError:
        return None
    seen: collections.Counter[str] = collections.Counter()
    for index in range(len(raw)):
        item = raw[index]
        field = message.fields_by_number.get(item.field_number)
        if field is None or item.wire_type != LENGTH_DELIMITED:
            continue
        path = prefix + field.name
        if field.is_repeated:
            path += f"[{seen[field.name]}]"
            seen[field.name] += 1
        if field.type == field.TYPE_STRING:
            try:
                item.data.decode("utf-8")
            except UnicodeDecodeError:
                return path
        elif field.message_type is not None and (
            found := bad_utf8_field(field.message_type, item.data, path + ".")
        ):
            return found
    return None


def add_servicer(
    servicer: Any, service: descriptor.ServiceDescriptor, server: grpc.aio.Server
) -> None:
    """Register `servicer`'s methods for `service`, parsing requests with parse_or_explain."""
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = MAKERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=parse_or_explain(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
