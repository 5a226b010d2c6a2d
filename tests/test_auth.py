"""Authentication through a live server: bearer tokens from `hotsvc token`, JWTs signed in
the test, TLS and mTLS with certificates made in the test, and the start-up refusals."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hotsession.client import HotSessionClient
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.localmodel import LocalModelServer
from tests.conftest import (
    BIN,
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    Live,
    Metadata,
    ServerProcess,
    StartService,
    bearer,
    eventually,
    hotsvc_token,
    refusal,
)
from tests.pki import Authority, key_pem, public_pem


async def pool_status(stub: pb_grpc.HotSessionAsyncStub, metadata: Metadata) -> Any:
    return await stub.PoolStatus(pb.PoolStatusRequest(), metadata=metadata, timeout=DEADLINE)


async def unauthenticated(stub: pb_grpc.HotSessionAsyncStub, metadata: Metadata) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await pool_status(stub, metadata)
    got = refusal(failed.value)
    assert (got.code, got.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    return got


# -- bearer tokens ---------------------------------------------------------------------


async def test_hotsvc_token_appends_a_digest_and_prints_the_token_once(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    alice = await hotsvc_token(tokens, "alice")
    root = await hotsvc_token(tokens, "root", admin=True)
    assert tokens.stat().st_mode & 0o777 == 0o600
    text = tokens.read_text()
    assert alice not in text and root not in text
    assert text.splitlines() == [
        f"alice {hashlib.sha256(alice.encode()).hexdigest()}",
        f"root {hashlib.sha256(root.encode()).hexdigest()} admin",
    ]
    assert len(alice) >= 40 and alice != root


async def test_no_or_bad_token_is_unauthenticated(
    start_service: StartService, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    alice = await hotsvc_token(tokens, "alice")
    live = await start_service(auth_tokens=tokens)

    missing = await unauthenticated(live.stub, ())
    assert "authorization: Bearer TOKEN" in missing.message
    assert "hotsvc token" in missing.message
    wrong = await unauthenticated(live.stub, bearer(alice + "x"))
    assert "unknown bearer token" in wrong.message and alice not in wrong.message
    await unauthenticated(live.stub, (("authorization", f"Basic {alice}"),))

    # A stream is refused before it can open anything.
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await Conversation(live.stub).open()
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await pool_status(live.stub, bearer(alice))).sessions == []

    # Probes and grpcurl's `list` need no credentials.
    health = health_pb2_grpc.HealthStub(live.channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    listing = reflection_pb2_grpc.ServerReflectionStub(live.channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=DEADLINE
    )
    services = [s.name async for r in listing for s in r.list_services_response.service]
    assert "hotsession.v1.HotSession" in services


async def test_the_owner_is_the_principal_not_the_owner_metadata(
    start_service: StartService, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    alice = await hotsvc_token(tokens, "alice")
    live = await start_service(auth_tokens=tokens)
    talk = Conversation(live.stub, metadata=(*bearer(alice), ("hotsvc-owner", "bob")))
    opened = await talk.open()
    (row,) = (await pool_status(live.stub, bearer(alice))).sessions
    assert (row.session_id, row.owner) == (opened.session_id, "alice")


async def test_sighup_reloads_the_token_file_and_a_bad_file_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    tokens, audit = tmp_path / "tokens", tmp_path / "audit.jsonl"
    alice = await hotsvc_token(tokens, "alice")
    args = ("--pool-size", "0", "--auth-tokens", str(tokens), "--audit-log", str(audit))
    async with ServerProcess(*args) as server, server.channel() as channel:
        assert server.proc is not None
        stub = pb_grpc.HotSessionStub(channel)
        await pool_status(stub, bearer(alice))
        bob = await hotsvc_token(tokens, "bob")
        await unauthenticated(stub, bearer(bob))  # not before the service reads it again

        server.proc.send_signal(signal.SIGHUP)
        await audited(audit, "tokens.reloaded")
        await pool_status(stub, bearer(bob))

        tokens.write_text(f"bob {hashlib.sha256(bob.encode()).hexdigest()}\nnot a valid line\n")
        server.proc.send_signal(signal.SIGHUP)
        (failed,) = await audited(audit, "tokens.reload_failed")
        assert "line 2" in failed["error"]
        await pool_status(stub, bearer(alice))  # the old table, alice included, still holds
        await pool_status(stub, bearer(bob))


async def audited(path: Path, event: str) -> list[dict[str, Any]]:
    """Wait for the audit log to hold `event`; its records."""

    def found() -> list[dict[str, Any]]:
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if r["event"] == event]

    async def written() -> bool:
        return bool(found())

    await eventually(written, f"the audit log records {event}")
    return found()


# -- JWT -------------------------------------------------------------------------------

ISSUER, AUDIENCE = "https://idp.example", "hotsvc"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "iat": now, "exp": now + 300} | {
        k: v for k, v in overrides.items() if v is not None
    }


def hs256_with_public_key(payload: dict[str, Any], public_key: bytes) -> str:
    """The algorithm-confusion attack: an HMAC "signed" with the server's public key."""

    def part(data: bytes) -> bytes:
        return urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + b"."
        + part(json.dumps(payload).encode())
    )
    mac = hmac.new(public_key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + part(mac)).decode()


async def jwt_service(
    start_service: StartService, tmp_path: Path, key: CertificateIssuerPrivateKeyTypes
) -> Live:
    public = tmp_path / "jwt.pub.pem"
    public.write_bytes(public_pem(key))
    return await start_service(
        jwt_public_key=public,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_admin_claim="realm.roles=hotsvc-admin",
    )


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    ],
)
async def test_jwt_signed_by_the_key_is_a_principal(
    start_service: StartService, tmp_path: Path, algorithm: str, make_key: Any
) -> None:
    key = make_key()
    live = await jwt_service(start_service, tmp_path, key)
    carol = bearer(jwt.encode(claims(), key_pem(key), algorithm=algorithm))
    admin = bearer(
        jwt.encode(
            claims(sub="dana", realm={"roles": ["viewer", "hotsvc-admin"]}),
            key_pem(key),
            algorithm=algorithm,
        )
    )
    opened = await Conversation(live.stub, metadata=carol).open()
    (row,) = (await pool_status(live.stub, carol)).sessions
    assert (row.session_id, row.owner) == (opened.session_id, "carol")
    assert [r.owner for r in (await pool_status(live.stub, admin)).sessions] == ["carol"]
    # Not an admin: a role elsewhere, or none.
    other = claims(sub="erin", roles=["hotsvc-admin"])
    assert (
        await pool_status(live.stub, bearer(jwt.encode(other, key_pem(key), algorithm)))
    ).sessions == []


async def test_jwts_that_must_be_refused(start_service: StartService, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    live = await jwt_service(start_service, tmp_path, key)
    signing_key = key_pem(key)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    refused = {
        "wrong issuer": jwt.encode(claims(iss="https://evil.example"), signing_key, "RS256"),
        "wrong audience": jwt.encode(claims(aud="other-service"), signing_key, "RS256"),
        "expired": jwt.encode(claims(exp=int(time.time()) - 3600), signing_key, "RS256"),
        "no exp": jwt.encode(
            {k: v for k, v in claims().items() if k != "exp"}, signing_key, "RS256"
        ),
        "other key": jwt.encode(claims(), key_pem(stranger), "RS256"),
        "alg none": jwt.encode(claims(), "", algorithm="none"),
        "HS256 with the public key": hs256_with_public_key(claims(), public_pem(key)),
        "not a JWT": "garbage",
    }
    for case, token in refused.items():
        got = await unauthenticated(live.stub, bearer(token))
        assert "RS256 JWT issued by https://idp.example for audience hotsvc" in got.message, case
        assert got.metadata == {"credential": "jwt"}, case
    assert (
        await pool_status(live.stub, bearer(jwt.encode(claims(), signing_key, "RS256")))
    ).sessions == []


# -- TLS and mTLS ----------------------------------------------------------------------


async def test_mtls_certificate_identities_are_principals(
    start_service: StartService, tmp_path: Path
) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    uri = ca.issue("svc", "svc-cn", [x509.UniformResourceIdentifier("spiffe://example/svc")])
    dns = ca.issue("dns", "dns-cn", [x509.DNSName("batch.example")])
    cn = ca.issue("cn", "plain-cn")
    live = await start_service(
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        tls_client_ca=ca.ca_path,
        credentials=ca.credentials(uri),
    )
    for identity, principal in (
        (uri, "spiffe://example/svc"),
        (dns, "batch.example"),
        (cn, "plain-cn"),
    ):
        async with grpc.aio.secure_channel(live.address, ca.credentials(identity)) as channel:
            stub = pb_grpc.HotSessionStub(channel)
            opened = await Conversation(stub).open()
            rows = (await pool_status(stub, ())).sessions
            assert [(r.session_id, r.owner) for r in rows] == [(opened.session_id, principal)]

    # No certificate, or one from another CA: the handshake itself fails.
    other = Authority(tmp_path / "other", name="other CA").issue("mallory", "mallory")
    for credentials in (
        ca.credentials(),
        grpc.ssl_channel_credentials(ca.ca, other.key, other.cert),
    ):
        async with grpc.aio.secure_channel(live.address, credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await pool_status(pb_grpc.HotSessionStub(channel), ())
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_to_a_tls_port_fails(start_service: StartService, tmp_path: Path) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    tokens = tmp_path / "tokens"
    alice = await hotsvc_token(tokens, "alice")
    live = await start_service(
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        auth_tokens=tokens,
        credentials=ca.credentials(),
    )
    assert (await pool_status(live.stub, bearer(alice))).sessions == []
    async with grpc.aio.insecure_channel(live.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await pool_status(pb_grpc.HotSessionStub(channel), bearer(alice))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


# -- start-up refusals -----------------------------------------------------------------


async def serve_fails(
    *args: str, state: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run `hotsvc serve` expecting it to refuse to start; its stderr."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "hotsvc"),
        "serve",
        "--claude-cmd",
        "true",
        *args,
        cwd=cwd,
        env={**os.environ, "XDG_STATE_HOME": str(state), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        out, err = await proc.communicate()
    assert proc.returncode != 0 and not out, f"it started: {out.decode()}"
    return err.decode()


async def test_non_loopback_without_auth_refuses_to_start(tmp_path: Path) -> None:
    message = await serve_fails("--listen", "0.0.0.0:0", state=tmp_path / "state")
    for flag in ("--auth-tokens", "--jwt-public-key", "--tls-client-ca", "--insecure-no-auth"):
        assert flag in message, message
    assert "0.0.0.0:0 is not loopback" in message


async def test_insecure_no_auth_starts_with_a_warning(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "hotsvc"),
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--insecure-no-auth",
        "--pool-size",
        "0",
        "--claude-cmd",
        "true",
        "--data-dir",
        str(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(DEADLINE):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("hotsvc listening on 0.0.0.0:"), line
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            _, err = await proc.communicate()
    assert "WARNING" in err.decode() and "--insecure-no-auth" in err.decode()


async def test_hotsvc_files_inside_a_session_directory_refuse_to_start(tmp_path: Path) -> None:
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    # As a new user would: started in a project directory with `--data-dir .hotsvc`.
    message = await serve_fails("--data-dir", ".hotsvc", cwd=work, state=state)
    assert f"the data directory (--data-dir) {work / '.hotsvc'} lies inside {work}," in message
    assert "(--cwd, or the profile's cwd;" in message

    elsewhere = ("--cwd", str(work), "--data-dir", str(tmp_path / "data"))
    tokens = work / "tokens"
    tokens.touch()
    message = await serve_fails(*elsewhere, "--auth-tokens", str(tokens), state=state)
    assert f"the token file (--auth-tokens) {tokens} lies inside {work}" in message
    message = await serve_fails(*elsewhere, "--audit-log", str(work / "a.log"), state=state)
    assert f"the audit log (--audit-log) {work / 'a.log'} lies inside {work}" in message
    transcripts = work / "claude"
    message = await serve_fails(
        *elsewhere, state=state, env={"CLAUDE_CONFIG_DIR": str(transcripts)}
    )
    assert "Claude Code config and transcripts (CLAUDE_CONFIG_DIR, else ~/.claude) " in message
    assert f"{transcripts} lies inside {work}" in message


async def test_the_default_data_dir_is_the_users_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with ServerProcess("--pool-size", "0", env={"XDG_STATE_HOME": str(state)}) as server:
        async with server.channel() as channel:
            opened = await Conversation(pb_grpc.HotSessionStub(channel)).open()
        assert opened.session_id
        assert (state / "hotsvc" / "registry.sqlite3").exists()


# -- the conversation over TLS, with the real CLI --------------------------------------

LocalModel = tuple[LocalModelServer, dict[str, str]]


async def test_memory_over_tls_with_a_bearer_token(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    _, env = local_model
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    tokens = tmp_path / "tokens"
    alice = await hotsvc_token(tokens, "alice")
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),),
        child_env=env,
        pool_size=1,
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        auth_tokens=tokens,
        credentials=ca.credentials(),
    )
    async with (
        HotSessionClient(live.address, token=alice, tls=ca.credentials()) as client,
        await client.open_session() as session,
    ):
        assert await session.ask("Remember 42") == "OK"
        assert await session.ask("What number?") == "42"
        (row,) = (await client.pool_status()).sessions
        assert (row.session_id, row.owner) == (session.session_id, "alice")


async def test_memory_over_mtls(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    _, env = local_model
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    client = ca.issue("alice", "alice")
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),),
        child_env=env,
        pool_size=1,
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        tls_client_ca=ca.ca_path,
        credentials=ca.credentials(client),
    )
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert opened.start == pb.SESSION_START_WARM
    assert (await talk.ask("Remember 42")).text == "OK"
    assert (await talk.ask("What number?")).text == "42"
    assert await talk.finish() == grpc.StatusCode.OK
    (row,) = (await live.status()).sessions
    assert (row.session_id, row.owner, row.turns) == (opened.session_id, "alice", 2)
