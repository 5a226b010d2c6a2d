"""The HTTP face (`--http-listen`), driven by the real curl binary and the real CLI:
HotSession over Connect (unary JSON, the server-streaming Ask, errors with details), the
seed's `POST /sessions/{id}/hot-prompt` (JSON and SSE) and `GET /hot/status`, bearer
tokens over TLS, and Prompt over Connect with connectrpc's own client over h2c."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyqwest
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1.hotsession_connect import HotSessionClient

from hotsvc.grpc.server import Service
from hotsvc.localmodel import LocalModelServer
from hotsvc.localmodel.script import slow_words
from hotsvc.profiles import ConfigError
from tests.conftest import (
    DEADLINE,
    REAL_CLAUDE,
    Live,
    ServerProcess,
    StartService,
    hotsvc_token,
    make_config,
)
from tests.pki import Authority

LocalModel = tuple[LocalModelServer, dict[str, str]]
CURL = shutil.which("curl")
SERVICE = "hotsession.v1.HotSession"


@dataclass
class Reply:
    version: str  # e.g. HTTP/1.1, HTTP/2
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def curl(*args: str, data: bytes | None = None, cwd: Path | None = None) -> Reply:
    """One request with the real curl; the body from `data` if given."""
    assert CURL is not None, "curl is missing: run `make setup-dev` (apt-get install curl)"
    proc = await asyncio.create_subprocess_exec(
        CURL,
        "-sS",
        "-N",
        "-D",
        "/dev/stderr",
        *(("--data-binary", "@-") if data is not None else ()),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    async with asyncio.timeout(DEADLINE):
        out, err = await proc.communicate(data)
    assert proc.returncode == 0, err.decode()
    head = err.decode().strip().split("\r\n\r\n")[-1].splitlines()  # the last response's
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    version, status = head[0].split()[:2]
    return Reply(version, int(status), {k.lower(): v for k, v in headers.items()}, out)


def envelope(message: dict[str, Any]) -> bytes:
    """A Connect streaming request: one frame, flags 0, JSON."""
    payload = json.dumps(message).encode()
    return b"\0" + struct.pack(">I", len(payload)) + payload


def frames(body: bytes) -> list[tuple[int, Any]]:
    """A Connect streaming response: (flags, JSON) per frame; flags 2 ends the stream."""
    found, at = [], 0
    while at < len(body):
        flags, size = body[at], struct.unpack(">I", body[at + 1 : at + 5])[0]
        found.append((flags, json.loads(body[at + 5 : at + 5 + size])))
        at += 5 + size
    return found


def sse(body: bytes) -> list[tuple[str, Any]]:
    """Server-sent events as (event, data as JSON)."""
    events = []
    for chunk in body.decode().split("\n\n"):
        if not chunk.strip():
            continue
        fields = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def error_info(details: list[dict[str, Any]]) -> Any:
    """The ErrorInfo among Connect error details."""
    for detail in details:
        if detail["type"] == "google.rpc.ErrorInfo":
            value = detail["value"]
            return error_details_pb2.ErrorInfo.FromString(
                base64.b64decode(value + "=" * (-len(value) % 4))
            )
    raise AssertionError(f"no ErrorInfo in {details}")


async def start_http(
    start_service: StartService, local_model: LocalModel, **kwargs: Any
) -> tuple[Live, str]:
    _, env = local_model
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),), child_env=env, http_listen="127.0.0.1:0", **kwargs
    )
    assert live.service.http is not None
    return live, live.service.http.address


async def test_connect_unary_and_ask_run_the_memory_test_with_curl(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, address = await start_http(start_service, local_model, pool_size=1)
    base = f"http://{address}/{SERVICE}"

    status = await curl("-H", "content-type: application/json", "-d", "{}", f"{base}/PoolStatus")
    assert (status.status, status.headers["content-type"]) == (200, "application/json")
    assert status.json()["targetSize"] == 1

    session_id = str(uuid.uuid4())

    async def ask(text: str, **request: Any) -> list[tuple[int, Any]]:
        reply = await curl(
            "-H",
            "content-type: application/connect+json",
            f"{base}/Ask",
            data=envelope({"sessionId": session_id, "turn": {"text": text}, **request}),
        )
        assert reply.status == 200
        return frames(reply.body)

    first = await ask("Remember 42", createIfMissing=True)
    assert first[0] == (0, {"sessionId": session_id, "opened": first[0][1]["opened"]})
    assert first[-2][1]["result"]["text"] == "OK"
    assert first[-1] == (2, {})  # the end of the stream, no error
    second = await ask("What number?")
    events = [next(k for k in data if k not in ("sessionId", "turnId")) for _, data in second[:-1]]
    assert events[0] == "opened" and events[-1] == "result" and events.count("result") == 1
    assert "textDelta" in events
    assert second[-2][1]["result"]["text"] == "42"

    # Errors carry the gRPC status's code, message and details.
    bad = await curl(
        "-H",
        "content-type: application/json",
        "-d",
        '{"sessionId": "nope"}',
        f"{base}/GetSession",
    )
    assert bad.status == 400
    assert bad.json()["code"] == "invalid_argument"
    assert "is not a UUID" in bad.json()["message"]
    assert error_info(bad.json()["details"]).reason == "INVALID_REQUEST"
    stream_error = frames(
        (
            await curl(
                "-H",
                "content-type: application/connect+json",
                f"{base}/Ask",
                data=envelope({"sessionId": session_id, "turn": {"text": " "}}),
            )
        ).body
    )
    ((flags, end),) = stream_error
    assert (flags, end["error"]["code"]) == (2, "invalid_argument")
    assert "turn.text is empty" in end["error"]["message"]

    messages = await curl(
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps({"sessionId": session_id}),
        f"{base}/GetSessionMessages",
    )
    said = [m["content"][0]["text"]["text"] for m in messages.json()["messages"]]
    assert said == ["Remember 42", "OK", "What number?", "42"]


async def test_hot_prompt_runs_the_memory_test_as_json_and_as_sse(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, address = await start_http(start_service, local_model)
    session_id = str(uuid.uuid4())
    url = f"http://{address}/sessions/{session_id}/hot-prompt"

    first = await curl("-H", "accept: application/json", "-d", '{"prompt": "Remember 42"}', url)
    assert (first.status, first.headers["content-type"]) == (200, "application/json")
    result = first.json()
    assert (result["sessionId"], result["text"], result["isError"]) == (session_id, "OK", False)
    assert result["usage"]["outputTokens"] != "0" and result["totalCostUsd"] > 0
    assert int(result["durationMs"]) > 0 and result["turnId"]

    streamed = await curl("-d", '{"prompt": "What number?"}', url)
    assert streamed.status == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse(streamed.body)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "opened" and kinds[-1] == "result" and kinds.count("result") == 1
    assert "text_delta" in kinds
    assert events[0][1]["opened"]["sessionId"] == session_id
    assert events[-1][1]["result"]["text"] == "42"
    assert all(data["sessionId"] == session_id for _, data in events)

    status = await curl(f"http://{address}/hot/status")
    shape = status.json()
    assert status.status == 200
    assert {"poolSize", "targetSize", "activeSessions", "maxSessions", "sessions"} <= set(shape)
    assert shape["activeSessions"] == 1 and shape["sessions"][0]["sessionId"] == session_id


async def test_bad_http_input_gets_a_status_as_json(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, address = await start_http(start_service, local_model)
    good_id = str(uuid.uuid4())

    async def refused(path: str, body: str, status: int) -> dict[str, Any]:
        reply = await curl("-d", body, f"http://{address}{path}")
        assert (reply.status, reply.headers["content-type"]) == (status, "application/json")
        document: dict[str, Any] = reply.json()
        return document

    not_json = await refused(f"/sessions/{good_id}/hot-prompt", "Remember 42", 400)
    assert not_json["code"] == 3  # INVALID_ARGUMENT, as on gRPC
    (info,) = [d for d in not_json["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert (info["reason"], info["metadata"]["field"]) == ("INVALID_REQUEST", "body")
    no_prompt = await refused(f"/sessions/{good_id}/hot-prompt", '{"text": "hi"}', 400)
    assert '"prompt"' in no_prompt["message"]
    bad_id = await refused("/sessions/nope/hot-prompt", '{"prompt": "hi"}', 400)
    assert "is not a UUID" in bad_id["message"]
    unknown = await refused("/nowhere", "{}", 404)
    assert unknown["code"] == 5 and "GET /hot/status" in unknown["message"]


async def test_tokens_and_tls_guard_the_http_face(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    tokens = tmp_path / "tokens"
    token = await hotsvc_token(tokens, "alice")
    _, address = await start_http(
        start_service,
        local_model,
        auth_tokens=tokens,
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        credentials=ca.credentials(),
    )
    url = f"https://{address}"  # 127.0.0.1, a name on the server's certificate
    tls = ("--cacert", str(ca.ca_path))

    anonymous = await curl(*tls, f"{url}/hot/status")
    assert (anonymous.status, anonymous.headers["www-authenticate"]) == (401, "Bearer")
    assert anonymous.json()["code"] == 16 and "Bearer TOKEN" in anonymous.json()["message"]
    connect = await curl(
        *tls, "-H", "content-type: application/json", "-d", "{}", f"{url}/{SERVICE}/PoolStatus"
    )
    assert (connect.status, connect.json()["code"]) == (401, "unauthenticated")

    bearer = ("-H", f"authorization: Bearer {token}")
    reply = await curl(
        *tls,
        *bearer,
        "-H",
        "accept: application/json",
        "-d",
        '{"prompt": "Remember 42"}',
        f"{url}/sessions/{uuid.uuid4()}/hot-prompt",
    )
    assert (reply.version, reply.status, reply.json()["text"]) == ("HTTP/2", 200, "OK")
    mine = await curl(*tls, *bearer, "--http1.1", f"{url}/hot/status")
    assert (mine.version, mine.status) == ("HTTP/1.1", 200)
    assert [s["owner"] for s in mine.json()["sessions"]] == ["alice"]


async def test_cors_lets_an_allowed_browser_origin_call_with_a_token(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    token = await hotsvc_token(tokens, "alice")
    app = "https://app.example.com"
    _, address = await start_http(
        start_service, local_model, auth_tokens=tokens, http_cors_origins=(app,), pool_size=1
    )
    pool_status = f"http://{address}/{SERVICE}/PoolStatus"

    def preflight(origin: str) -> tuple[str, ...]:
        return (
            "-X",
            "OPTIONS",
            "-H",
            f"origin: {origin}",
            "-H",
            "access-control-request-method: POST",
            "-H",
            "access-control-request-headers: authorization,content-type,connect-protocol-version",
            pool_status,
        )

    # The preflight carries no credentials: answered before authentication.
    allowed = await curl(*preflight(app))
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == app
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = await curl(*preflight("https://evil.example.com"))
    assert refused.status == 400 and "access-control-allow-origin" not in refused.headers

    call = ("-H", f"origin: {app}", "-H", "content-type: application/json", "-d", "{}")
    anonymous = await curl(*call, pool_status)
    assert (anonymous.status, anonymous.json()["code"]) == (401, "unauthenticated")
    answered = await curl(*call, "-H", f"authorization: Bearer {token}", pool_status)
    assert answered.status == 200 and answered.json()["targetSize"] == 1
    assert answered.headers["access-control-allow-origin"] == app


async def test_http_with_only_client_certificates_is_refused(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    config = make_config(
        http_listen="127.0.0.1:0",
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        tls_client_ca=ca.ca_path,
    )
    with pytest.raises(ConfigError, match="cannot read their names"):
        Service(config)


async def test_prompt_over_connect_on_http2(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, address = await start_http(start_service, local_model)
    http = pyqwest.Client(pyqwest.HTTPTransport(http_version=pyqwest.HTTPVersion.HTTP2))
    client = HotSessionClient(f"http://{address}", http_client=http)
    requests: asyncio.Queue[pb.PromptRequest | None] = asyncio.Queue()

    async def written() -> Any:
        while (request := await requests.get()) is not None:
            yield request

    await requests.put(pb.PromptRequest(open=pb.OpenSession()))
    results = []
    async with asyncio.timeout(DEADLINE):
        async for event in client.prompt(written()):
            if event.HasField("opened"):
                await requests.put(pb.PromptRequest(turn=pb.UserTurn(text="Remember 42")))
            elif event.HasField("result"):
                results.append(event.result.text)
                if len(results) == 1:
                    await requests.put(pb.PromptRequest(turn=pb.UserTurn(text="What number?")))
                else:
                    await requests.put(None)  # half-close: the RPC ends OK
    assert results == ["OK", "42"]


async def test_hotsvc_serve_drains_an_http_stream_on_sigterm() -> None:
    """`hotsvc serve --http-listen`: the HTTP server runs in the service and stops in its
    ordered shutdown, after the running turn had its grace."""
    args = ("--pool-size", "0", "--http-listen", "127.0.0.1:0", "--shutdown-grace", "20")
    async with ServerProcess(*args) as server:
        assert server.proc is not None and server.proc.stdout is not None
        line = (await server.proc.stdout.readline()).decode()
        assert line.startswith("hotsvc http listening on "), line
        address = line.rsplit(" ", 1)[1].strip()
        assert CURL is not None
        prompt = await asyncio.create_subprocess_exec(
            CURL,
            "-sSN",
            "-d",
            '{"prompt": "please be slow"}',
            f"http://{address}/sessions/{uuid.uuid4()}/hot-prompt",
            stdout=asyncio.subprocess.PIPE,
        )
        assert prompt.stdout is not None
        async with asyncio.timeout(DEADLINE):
            while not (await prompt.stdout.readline()).startswith(b"event: text_delta"):
                pass
            server.proc.send_signal(signal.SIGTERM)
            rest = await prompt.stdout.read()
            assert await prompt.wait() == 0
            assert await server.proc.wait() == 0
        events = sse(rest.split(b"\n\n", 1)[1])  # from the next whole event on
        kinds = [kind for kind, _ in events]
        assert "go_away" in kinds and kinds[-1] == "result"
        assert events[-1][1]["result"]["text"] == "".join(slow_words())
