"""The shipped fleet deployment files: the Kubernetes manifests use flags and variables
hotsvc has, with values it accepts; the Kubernetes balancer is the shipped HAProxy config;
HAProxy's hand-written HTTP/2 health check is a well-formed gRPC Health/Check and tells a
serving replica from one that only listens. (The nginx and HAProxy configs serve a fleet
in tests/test_fleet.py.)"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import hpack
import pytest
import yaml
from grpc_health.v1 import health_pb2

from hotsvc import settings
from hotsvc.cli import build_parser
from hotsvc_tools.balancers import HAProxy, free_port
from hotsvc_tools.paths import REPO
from hotsvc_tools.rendering import (
    HAPROXY_CFG,
    NGINX_CONF,
    RenderError,
    haproxy_for_kubernetes,
    render_haproxy,
    render_nginx,
)
from tests.conftest import DEADLINE, eventually

KUBERNETES = REPO / "deploy" / "kubernetes"
REPLICAS_HOST = "hotsvc-replicas.default.svc.cluster.local:50051"


def documents(name: str) -> dict[str, dict[str, Any]]:
    """The manifests of one file, by kind."""
    found = list(yaml.safe_load_all((KUBERNETES / name).read_text()))
    by_kind = {doc["kind"]: doc for doc in found}
    assert len(by_kind) == len(found), "one of each kind per file"
    return by_kind


def test_the_deployment_runs_hotsvc_with_settings_it_has() -> None:
    manifests = documents("hotsvc.yaml")
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["hotsvc", "serve"]
    # Secrets and the downward API are given values of the right shape.
    stand_ins = {
        "HOTSVC_STORE": "postgresql://hotsvc@postgres.example.internal/hotsvc",
        "HOTSVC_REPLICA_ID": "hotsvc-7d9f8-abcde",
    }
    environ = {}
    for variable in container["env"]:
        name = variable["name"]
        environ[name] = stand_ins.get(name, variable.get("value", "secret"))
    known = {settings.env_of(f, spec) for f, spec, _ in settings._all_specs()}
    unknown = {n for n in environ if n.startswith(settings.ENV_PREFIX)} - known
    assert not unknown, f"variables hotsvc does not read: {unknown}"
    # As `hotsvc serve` would parse them (argparse exits on an unknown flag).
    args = build_parser(environ).parse_args(["serve", *container["args"]])
    config = settings.from_args(args)
    assert config.store.startswith("postgresql://")
    assert config.replica_id == "hotsvc-7d9f8-abcde"
    assert str(config.auth_tokens) == "/etc/hotsvc/tokens"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/hotsvc" in mounts and str(config.data_dir).startswith("/var/lib/hotsvc/")
    assert container["workingDir"] in mounts  # the sessions' cwd, the same on every pod

    # Probes: the standard gRPC health service on the port hotsvc listens on.
    port = int(config.listen.rsplit(":", 1)[1])
    metrics_port = int(config.metrics_listen.rsplit(":", 1)[1])
    assert container["ports"] == [
        {"name": "grpc", "containerPort": port},
        {"name": "metrics", "containerPort": metrics_port},
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe
    # Drain: the preStop pause, then SIGTERM's grace, all within the pod's grace period.
    (_, pause) = container["lifecycle"]["preStop"]["exec"]["command"]
    assert float(pause) + config.shutdown_grace < pod["terminationGracePeriodSeconds"]
    # A balancer routes on the session header only to pods that are ready.
    service = manifests["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert f"{service['metadata']['name']}.default.svc.cluster.local:{port}" == REPLICAS_HOST


async def test_the_kubernetes_balancer_is_the_shipped_haproxy_config(tmp_path: Path) -> None:
    manifests = documents("balancer.yaml")
    shipped = manifests["ConfigMap"]["data"]["haproxy.cfg"]
    assert shipped == haproxy_for_kubernetes(HAPROXY_CFG.read_text(), REPLICAS_HOST, 10)
    assert (
        manifests["Service"]["spec"]["selector"]
        == (manifests["Deployment"]["spec"]["selector"]["matchLabels"])
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(shipped)
    check = await asyncio.create_subprocess_exec(
        "haproxy",
        "-c",
        "-f",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await check.communicate()
    assert check.returncode == 0, out.decode()


async def test_haproxy_checks_replicas_with_grpc_health(tmp_path: Path) -> None:
    """The shipped check reads the gRPC answer: a replica that listens but is not
    SERVING (its warm pool never fills) is down, not just one that refuses connections."""
    serving = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotsvc.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--pool-size",
        "0",
        "--claude-cmd",
        "sleep 600",
        "--data-dir",
        str(tmp_path / "serving"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    # A warm process that never answers `initialize`: health stays NOT_SERVING.
    starting = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotsvc.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--pool-size",
        "1",
        "--claude-cmd",
        "sleep 600",
        "--data-dir",
        str(tmp_path / "starting"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    balancer = HAProxy(tmp_path / "haproxy", f"127.0.0.1:{free_port()}")
    try:
        addresses = []
        for proc in (serving, starting):
            assert proc.stdout is not None
            async with asyncio.timeout(DEADLINE):
                line = (await proc.stdout.readline()).decode()
            addresses.append(line.rsplit(" ", 1)[1].strip())
        dead = f"127.0.0.1:{free_port()}"
        await balancer.start(
            [("serving", addresses[0]), ("starting", addresses[1]), ("dead", dead)]
        )

        async def settled() -> bool:  # every replica decided: no "UP 1/2", no check under way
            states = await balancer.servers()
            return all(s in ("UP", "DOWN") and "INI" not in c for s, c in states.values())

        await eventually(settled, "HAProxy has checked every replica to a verdict")
        states = await balancer.servers()
        assert states["serving"] == ("UP", "L7OK"), states
        # Connected, asked, and no SERVING came back: a layer 7 failure, not layer 4.
        assert states["starting"][0] == "DOWN" and states["starting"][1].startswith("L7"), states
        assert states["dead"] == ("DOWN", "L4CON"), states
    finally:
        await balancer.stop()
        for proc in (serving, starting):
            proc.kill()
            await proc.wait()


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """HTTP/2 frames: (type, flags, stream, payload)."""
    found = []
    while data:
        length = int.from_bytes(data[:3], "big")
        kind, flags = data[3], data[4]
        stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        found.append((kind, flags, stream, data[9 : 9 + length]))
        data = data[9 + length :]
    return found


def test_haproxys_health_check_is_a_grpc_health_check() -> None:
    lines = [line.split() for line in HAPROXY_CFG.read_text().splitlines()]
    sent = b"".join(
        bytes.fromhex(words[2]) for words in lines if words[:2] == ["tcp-check", "send-binary"]
    )
    (expected,) = [words[3] for words in lines if words[:3] == ["tcp-check", "expect", "binary"]]
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert sent.startswith(preface)
    settings_frame, headers, body = frames(sent[len(preface) :])
    assert settings_frame == (0x4, 0, 0, b"")  # SETTINGS, empty
    assert headers[:3] == (0x1, 0x4, 1)  # HEADERS, END_HEADERS, stream 1
    decoded = hpack.Decoder().decode(headers[3], raw=True)
    assert {k.decode(): v.decode() for k, v in decoded} == {
        ":method": "POST",
        ":scheme": "http",
        ":path": "/grpc.health.v1.Health/Check",
        ":authority": "hotsvc",
        "content-type": "application/grpc",
        "te": "trailers",
    }
    assert body[:3] == (0x0, 0x1, 1)  # DATA, END_STREAM, stream 1

    def message(payload: bytes) -> bytes:  # one uncompressed gRPC length-prefixed message
        assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == len(payload) - 5
        return payload[5:]

    request = health_pb2.HealthCheckRequest.FromString(message(body[3]))
    assert request == health_pb2.HealthCheckRequest(service="")
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert message(bytes.fromhex(expected)) == serving.SerializeToString()


def test_rendering_refuses_a_config_it_does_not_recognise(tmp_path: Path) -> None:
    upstreams = [("replica-1", "127.0.0.1:1"), ("replica-2", "127.0.0.1:2")]
    nginx = render_nginx(NGINX_CONF.read_text(), "127.0.0.1:9", upstreams, tmp_path / "log")
    assert "listen 127.0.0.1:9 http2;" in nginx
    assert [line.split()[1] for line in nginx.splitlines() if line.strip().startswith("server 1")]
    haproxy = render_haproxy(HAPROXY_CFG.read_text(), "127.0.0.1:9", upstreams, tmp_path / "s")
    assert "    server replica-2 127.0.0.1:2\n" in haproxy
    with pytest.raises(RenderError, match="listen"):
        render_nginx(NGINX_CONF.read_text().replace(" http2;", ";"), "x:1", upstreams, tmp_path)
    split = HAPROXY_CFG.read_text().replace("    server replica-2", "\n    server replica-2")
    with pytest.raises(RenderError, match="not one block"):
        render_haproxy(split, "x:1", upstreams, tmp_path / "s")
