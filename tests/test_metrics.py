"""/metrics through a live server: scraped over HTTP after real turns, parsed with
prometheus-client's own parser, the counters moved by exactly what happened; the names
match docs/operations.md, the Grafana dashboard and the alert rules (promtool)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import (
    DEADLINE,
    EOF,
    Conversation,
    Live,
    StartService,
    bearer,
    eventually,
    hotsvc_token,
    pid_alive,
    pool_refilled,
)
from tests.test_permissions import LocalModel, asked, decide, start, tool_results

REPO = Path(__file__).resolve().parent.parent
OPERATIONS = REPO / "docs" / "operations.md"
DASHBOARD = REPO / "deploy" / "grafana" / "hotsvc.json"
ALERTS = REPO / "deploy" / "prometheus" / "hotsvc-alerts.yml"
ALERT_TESTS = REPO / "tests" / "prometheus" / "hotsvc-alerts.test.yml"
METRICS = "127.0.0.1:0"
SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass
class Scrape:
    text: str
    families: dict[str, list[Sample]]  # family name -> its samples
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value (0 when the series does not exist yet)."""
        for family in self.families.values():
            for sample in family:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return 0.0

    def moved(self, before: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - before.value(name, **labels)


async def scrape(live: Live) -> Scrape:
    """GET /metrics as Prometheus would, in a thread (the scrape needs this event loop)."""
    server = live.service.telemetry.metrics_server
    assert server is not None, "the service has no --metrics-listen"

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=DEADLINE) as r:
            return r.headers["Content-Type"], r.read().decode()

    content_type, text = await asyncio.to_thread(get)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    families, types = {}, {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
        types[family.name] = family.type
    return Scrape(text, families, types)


class Counted(Conversation):
    """A Prompt stream that counts the messages each way, as the server should."""

    sent = 0
    received = 0

    async def send(self, request: pb.PromptRequest) -> None:
        await super().send(request)
        self.sent += 1

    async def read(self) -> pb.PromptResponse:
        response = await super().read()
        self.received += 1
        return response

    async def finish(self) -> grpc.StatusCode:
        await self.call.done_writing()
        while await self.call.read() is not EOF:
            self.received += 1
        return await self.call.code()


async def test_counters_move_by_what_happened(start_service: StartService) -> None:
    live = await start_service(pool_size=1, metrics_listen=METRICS)
    before = await scrape(live)
    results: list[pb.TurnResult] = []
    streams: list[Counted] = []

    first = Counted(live.stub)
    streams.append(first)
    opened = await first.open()
    assert opened.start == pb.SESSION_START_WARM
    results += [await first.ask("Remember 3"), await first.ask("What number?")]
    assert await first.finish() == grpc.StatusCode.OK

    again = Counted(live.stub)  # its process still runs: attached
    streams.append(again)
    assert (await again.open(session_id=opened.session_id)).start == pb.SESSION_START_ATTACHED
    results.append(await again.ask("What number?"))
    assert await again.finish() == grpc.StatusCode.OK

    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    resumed = Counted(live.stub)  # a new process, --resume
    streams.append(resumed)
    assert (await resumed.open(session_id=opened.session_id)).start == pb.SESSION_START_RESUMED
    results.append(await resumed.ask("What number?"))
    assert await resumed.finish() == grpc.StatusCode.OK
    assert [r.text for r in results] == ["OK", "3", "3", "3"]
    await pool_refilled(live.stub, 1)

    after = await scrape(live)
    profile = {"profile": "default"}
    starts = {
        s: after.moved(before, "hotsvc_session_starts_total", start=s)
        for s in ("warm", "cold", "attached", "resumed")
    }
    assert starts == {"warm": 1, "cold": 0, "attached": 1, "resumed": 1}
    assert after.moved(before, "hotsvc_turns_total", subtype="success", **profile) == 4
    assert after.moved(before, "hotsvc_turn_seconds_count", **profile) == 4
    assert after.moved(before, "hotsvc_turn_first_token_seconds_count", **profile) == 4
    assert after.moved(before, "hotsvc_tokens_total", kind="input", **profile) == sum(
        r.usage.input_tokens for r in results
    )
    assert after.moved(before, "hotsvc_tokens_total", kind="output", **profile) == sum(
        r.usage.output_tokens for r in results
    )
    # Claude Code's cost is per process and cumulative: each process's last figure.
    cost = results[2].total_cost_usd + results[3].total_cost_usd
    assert abs(after.moved(before, "hotsvc_cost_usd_total", **profile) - cost) < 1e-9
    assert after.moved(before, "hotsvc_resumes_total", outcome="ok") == 1
    # The refill after the warm start, and the resume.
    assert after.moved(before, "hotsvc_spawns_total", outcome="ok", **profile) == 2
    assert after.moved(before, "hotsvc_spawn_seconds_count") == 2

    prompt = {"grpc_service": "hotsession.v1.HotSession", "grpc_method": "Prompt"}
    bidi = {**prompt, "grpc_type": "bidi_stream"}
    assert after.moved(before, "grpc_server_started_total", **bidi) == 3
    assert after.moved(before, "grpc_server_handled_total", grpc_code="OK", **bidi) == 3
    assert after.moved(before, "grpc_server_handling_seconds_count", **bidi) == 3
    assert after.moved(before, "grpc_server_msg_received_total", **bidi) == sum(
        s.sent for s in streams
    )
    assert after.moved(before, "grpc_server_msg_sent_total", **bidi) == sum(
        s.received for s in streams
    )
    close = {"grpc_method": "CloseSession", "grpc_type": "unary"}
    assert after.moved(before, "grpc_server_handled_total", grpc_code="OK", **close) == 1
    assert after.moved(before, "grpc_server_msg_received_total", **close) == 1
    assert after.moved(before, "grpc_server_msg_sent_total", **close) == 1

    # Gauges, from the snapshot: the session idle (no stream), the pool full again.
    assert after.value("hotsvc_sessions", state="idle") == 1
    assert after.value("hotsvc_sessions", state="stopped") == 0
    assert after.value("hotsvc_pool_idle", **profile) == 1
    assert after.value("hotsvc_pool_target", **profile) == 1
    assert after.value("hotsvc_child_rss_bytes") > 10 * 1024 * 1024  # two live processes
    assert after.value("hotsvc_max_sessions") == 0
    assert after.value("hotsvc_session_memory_budget_bytes") == 250 * 1024 * 1024

    # Cardinality: no session id, turn id or principal anywhere in the exposition.
    assert opened.session_id not in after.text
    labels = {name for samples in after.families.values() for s in samples for name in s.labels}
    assert not labels & {"session_id", "session", "turn_id", "principal", "owner"}, labels
    documented(after)


async def test_watchdog_kill_and_idle_eviction(start_service: StartService) -> None:
    live = await start_service(
        metrics_listen=METRICS, turn_inactivity_timeout=2.0, idle_timeout=0.5
    )
    before = await scrape(live)
    hung = Conversation(live.stub)  # stays attached: never idle
    await hung.open()
    assert (await hung.ask("hang now")).subtype == "watchdog_timeout"

    idle = Conversation(live.stub)
    opened = await idle.open()
    assert (await idle.ask("Remember 1")).text == "OK"
    await idle.finish()  # unattached and idle past 0.5 s: its process is ended
    await dead(opened.pid)

    after = await scrape(live)
    assert after.moved(before, "hotsvc_watchdog_kills_total") == 1
    assert after.moved(before, "hotsvc_turns_total", subtype="watchdog_timeout") == 1
    assert evictions(after, before) == {"idle": 1, "capacity": 0, "recycle": 0}
    # Both without a process: the killed one resumes on its next turn, the idle one on open.
    assert after.value("hotsvc_sessions", state="stopped") == 2
    await hung.finish()


async def test_capacity_eviction(start_service: StartService) -> None:
    live = await start_service(metrics_listen=METRICS, max_sessions=1, open_queue_timeout=5.0)
    before = await scrape(live)
    idle = Conversation(live.stub)
    opened = await idle.open()
    assert (await idle.ask("Remember 2")).text == "OK"
    await idle.finish()
    newcomer = Conversation(live.stub)  # the one slot is the idle session's: it gives way
    assert (await newcomer.open()).start == pb.SESSION_START_COLD
    await dead(opened.pid)
    after = await scrape(live)
    assert evictions(after, before) == {"idle": 0, "capacity": 1, "recycle": 0}
    assert after.value("hotsvc_max_sessions") == 1
    await newcomer.finish()


async def test_recycling_counts_as_an_eviction(start_service: StartService) -> None:
    live = await start_service(metrics_listen=METRICS, recycle_after_turns=1)
    before = await scrape(live)
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 4")).text == "OK"
    await dead(opened.pid)
    after = await scrape(live)
    assert evictions(after, before) == {"idle": 0, "capacity": 0, "recycle": 1}
    await talk.finish()


async def test_permission_prompts_are_counted_by_decision(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    # The real CLI asks (can_use_tool); the caller allows one write and denies another,
    # and an Ask, which cannot answer, is denied by hotsvc.
    live = await start(start_service, local_model, tmp_path / "workspaces", metrics_listen=METRICS)
    before = await scrape(live)
    talk = Conversation(live.stub)
    await talk.open()
    await decide(talk, (await asked(talk, "write file yes.txt")).request_id, allow=True)
    assert not tool_results(await talk.until_result())[0].is_error
    await decide(talk, (await asked(talk, "write file no.txt")).request_id, allow=False)
    assert tool_results(await talk.until_result())[0].is_error
    await talk.finish()
    call = live.stub.Ask(
        pb.AskRequest(turn=pb.UserTurn(text="write file asked.txt")), timeout=DEADLINE
    )
    assert tool_results([event async for event in call])[0].is_error

    after = await scrape(live)
    # Exactly one per prompt, under its decision, and nothing under any other.
    assert decisions(after, before) == {"allow": 1, "deny": 1, "not_interactive": 1}
    documented(after)


async def dead(pid: int) -> None:
    async def gone() -> bool:
        return not pid_alive(pid)

    await eventually(gone, f"pid {pid} exits")


def decisions(after: Scrape, before: Scrape) -> dict[str, float]:
    """hotsvc_permission_requests_total's moves, by decision (those that moved)."""
    moves = {
        s.labels["decision"]: s.value - before.value(s.name, **s.labels)
        for s in after.families["hotsvc_permission_requests"]
    }
    return {decision: moved for decision, moved in moves.items() if moved}


def evictions(after: Scrape, before: Scrape) -> dict[str, float]:
    return {
        reason: after.moved(before, "hotsvc_evictions_total", reason=reason)
        for reason in ("idle", "capacity", "recycle")
    }


async def test_refused_calls_are_counted_by_reason(
    start_service: StartService, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    token = await hotsvc_token(tokens, "alice")
    live = await start_service(auth_tokens=tokens, metrics_listen=METRICS)
    before = await scrape(live)
    for metadata in ((), bearer("not-a-token"), bearer("not-a-token")):
        try:
            await live.stub.PoolStatus(pb.PoolStatusRequest(), metadata=metadata)
            raise AssertionError("a call without a valid token was served")
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    await live.stub.PoolStatus(pb.PoolStatusRequest(), metadata=bearer(token))

    after = await scrape(live)
    assert after.moved(before, "hotsvc_auth_failures_total", reason="missing") == 1
    assert after.moved(before, "hotsvc_auth_failures_total", reason="token") == 2
    status = {"grpc_method": "PoolStatus", "grpc_type": "unary"}
    assert (
        after.moved(before, "grpc_server_handled_total", grpc_code="Unauthenticated", **status) == 3
    )
    assert after.moved(before, "grpc_server_handled_total", grpc_code="OK", **status) == 1
    assert after.moved(before, "grpc_server_started_total", **status) == 4
    assert "alice" not in after.text


async def test_max_streams_refuses_one_more_stream(start_service: StartService) -> None:
    live = await start_service(max_streams=1, metrics_listen=METRICS)
    held = Conversation(live.stub)
    await held.open()
    before = await scrape(live)
    extra = Conversation(live.stub)
    try:
        await extra.open()
        raise AssertionError("a second stream was attached past --max-streams 1")
    except grpc.aio.AioRpcError as refused:
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams" in str(refused.details())
    after = await scrape(live)
    bidi = {"grpc_method": "Prompt", "grpc_type": "bidi_stream"}
    assert (
        after.moved(before, "grpc_server_handled_total", grpc_code="ResourceExhausted", **bidi) == 1
    )
    assert await held.finish() == grpc.StatusCode.OK
    again = Conversation(live.stub)  # the one stream is free again
    await again.open()
    assert await again.finish() == grpc.StatusCode.OK


# -- names: the docs, the dashboard and the alert rules ----------------------------------


def documented(scrape: Scrape) -> None:
    """Every hotsvc_ and grpc_server_ metric is listed in docs/operations.md with its
    labels, the doc lists nothing /metrics lacks, and the dashboard and the alert rules
    use only names /metrics has."""
    ours = {
        (family + "_total" if scrape.types[family] == "counter" else family): family
        for family in scrape.families
        if family.startswith(("hotsvc_", "grpc_server_"))
    }
    rows = {
        m[1]: set(re.findall(r"`([a-z_]+)`", m[2]))
        for m in re.finditer(
            r"^\| `([a-z_]+)` \| [a-z]+ \| ([^|]*) \|", OPERATIONS.read_text(), re.M
        )
    }
    assert set(ours) <= set(rows), f"not in docs/operations.md: {sorted(set(ours) - set(rows))}"
    assert set(rows) <= set(ours), f"in the docs, not in /metrics: {sorted(set(rows) - set(ours))}"
    for name, listed in rows.items():
        found = {label for s in scrape.families[ours[name]] for label in s.labels} - {"le"}
        assert found <= listed, f"{name}: labels {sorted(found - listed)} not in the docs"
    for where, used in (
        (DASHBOARD, names_in(dashboard_exprs())),
        (ALERTS, names_in([ALERTS.read_text()])),
    ):
        unknown = {n for n in used if n not in ours and base(n) not in ours}
        assert used and not unknown, f"{where.name} uses names /metrics lacks: {sorted(unknown)}"


def names_in(texts: Iterable[str]) -> set[str]:
    return {m for t in texts for m in re.findall(r"\b(?:hotsvc|grpc_server)_[a-z_]+\b", t)}


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", ())]
    assert len(exprs) >= 10, "the dashboard has lost its panels"
    return exprs


def test_the_alert_rules_load_and_fire_as_their_tests_expect() -> None:
    for args, where in (
        (["check", "rules", str(ALERTS)], REPO),
        (["test", "rules", ALERT_TESTS.name], ALERT_TESTS.parent),
    ):
        done = subprocess.run(
            ["promtool", *args], cwd=where, capture_output=True, text=True, timeout=DEADLINE
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout, done.stdout
