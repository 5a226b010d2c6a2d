"""hotsvc's Prometheus metrics: counters the domain increments where it observes an event,
and gauges read from `SessionManager.snapshot()` at scrape time.

The counters are process-wide (one hotsvc per process in production), like any
prometheus-client instrumentation; the gauges belong to one service
(hotsvc.exposition.SnapshotCollector). `--metrics-listen` serves both, with the gRPC ones
(hotsvc.grpc.metrics), on `/metrics`.

Labels carry bounded values only: profiles, outcomes, reasons, result subtypes. Never a
session id, a turn id or a principal: a series per session would grow without end.
docs/operations.md lists every name and label (tests/test_metrics.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from hotsvc.claude.events import Usage

# No `_created` series: go-grpc-prometheus has none, and dashboards don't use them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in 0.26

# The process-wide counters and histograms (the gRPC interceptor's too).
REGISTRY = CollectorRegistry()

# Longer than go-grpc-prometheus's defaults at the top: a turn may run for minutes.
TURN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SPAWN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

SPAWNS = Counter(
    "hotsvc_spawns_total",
    "Claude Code processes started, by profile and outcome (ok, failed)",
    ["profile", "outcome"],
    registry=REGISTRY,
)
SPAWN_SECONDS = Histogram(
    "hotsvc_spawn_seconds",
    "time from spawning a process to it being ready (a warm one: answering initialize)",
    buckets=SPAWN_BUCKETS,
    registry=REGISTRY,
)
SESSION_STARTS = Counter(
    "hotsvc_session_starts_total",
    "sessions opened or attached, by where the process came from: warm (the pool), cold "
    "(spawned for it), attached (its live process), resumed (a new process, --resume)",
    ["start"],
    registry=REGISTRY,
)
TURNS = Counter(
    "hotsvc_turns_total",
    "turns that ended, by profile and result subtype (success, error_max_turns, "
    "interrupted, watchdog_timeout, process_exited, ...)",
    ["profile", "subtype"],
    registry=REGISTRY,
)
TURN_SECONDS = Histogram(
    "hotsvc_turn_seconds",
    "a turn's latency: from the session taking it off its queue to its result",
    ["profile"],
    buckets=TURN_BUCKETS,
    registry=REGISTRY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "hotsvc_turn_first_token_seconds",
    "from the session taking a turn off its queue to its first text",
    ["profile"],
    buckets=FIRST_TOKEN_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "hotsvc_tokens_total",
    "tokens the turns used, by profile and kind (input, output, cache_creation_input, "
    "cache_read_input)",
    ["profile", "kind"],
    registry=REGISTRY,
)
COST = Counter(
    "hotsvc_cost_usd_total",
    "what the turns cost in US dollars, as Claude Code reports it",
    ["profile"],
    registry=REGISTRY,
)
EVICTIONS = Counter(
    "hotsvc_evictions_total",
    "session processes ended to free memory; the conversations stay resumable. reason: "
    "idle (--idle-timeout), capacity (room for an open at --max-sessions), recycle "
    "(--recycle-after-*)",
    ["reason"],
    registry=REGISTRY,
)
WATCHDOG_KILLS = Counter(
    "hotsvc_watchdog_kills_total",
    "processes killed because a turn stayed silent and did not answer an interrupt",
    registry=REGISTRY,
)
RESUMES = Counter(
    "hotsvc_resumes_total",
    "conversations resumed in a new process, by outcome (ok, failed, lost)",
    ["outcome"],
    registry=REGISTRY,
)
PERMISSION_REQUESTS = Counter(
    "hotsvc_permission_requests_total",
    "Claude Code's permission prompts (can_use_tool), by decision",
    ["decision"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "hotsvc_auth_failures_total",
    "calls refused as UNAUTHENTICATED, by reason (missing, malformed, token, jwt, unexpected)",
    ["reason"],
    registry=REGISTRY,
)

STARTS = ("warm", "cold", "attached", "resumed")
EVICTION_REASONS = ("idle", "capacity", "recycle")
RESUME_OUTCOMES = ("ok", "failed", "lost")
AUTH_REASONS = ("missing", "malformed", "token", "jwt", "unexpected")
# allow/deny: the caller's answer (a deny with interrupt too); the rest: hotsvc denied it
# for want of one (hotsvc.permissions), or the CLI withdrew the prompt.
PERMISSION_DECISIONS = (
    "allow",
    "deny",
    "timeout",
    "no_stream",
    "not_interactive",
    "profile",
    "withdrawn",
)
TOKEN_KINDS = ("input", "output", "cache_creation_input", "cache_read_input")

# Series that exist from the start at 0, so rate() sees their first increment.
for _start in STARTS:
    SESSION_STARTS.labels(_start)
for _reason in EVICTION_REASONS:
    EVICTIONS.labels(_reason)
for _outcome in RESUME_OUTCOMES:
    RESUMES.labels(_outcome)
for _reason in AUTH_REASONS:
    AUTH_FAILURES.labels(_reason)
for _decision in PERMISSION_DECISIONS:
    PERMISSION_REQUESTS.labels(_decision)


def prepare(profiles: Iterable[str]) -> None:
    """Create the per-profile series at 0 for the configured profiles."""
    for profile in profiles:
        for outcome in ("ok", "failed"):
            SPAWNS.labels(profile, outcome)
        COST.labels(profile)
        for kind in TOKEN_KINDS:
            TOKENS.labels(profile, kind)


# -- what the domain reports ------------------------------------------------------------


def spawned(profile: str, seconds: float) -> None:
    SPAWNS.labels(profile, "ok").inc()
    SPAWN_SECONDS.observe(seconds)


def spawn_failed(profile: str) -> None:
    SPAWNS.labels(profile, "failed").inc()


def session_started(start: str) -> None:
    """`start`: a hotsvc.snapshot.Start value."""
    SESSION_STARTS.labels(start).inc()


def turn_finished(
    profile: str, subtype: str, seconds: float, first_token_seconds: float | None
) -> None:
    TURNS.labels(profile, subtype or "unknown").inc()
    TURN_SECONDS.labels(profile).observe(seconds)
    if first_token_seconds is not None:
        FIRST_TOKEN_SECONDS.labels(profile).observe(first_token_seconds)


def turn_usage(profile: str, usage: Usage, cost_usd: float) -> None:
    """A finished turn's own tokens and cost (not the process's running totals)."""
    for kind, count in zip(
        TOKEN_KINDS,
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
        ),
        strict=True,
    ):
        if count > 0:
            TOKENS.labels(profile, kind).inc(count)
    if cost_usd > 0:
        COST.labels(profile).inc(cost_usd)


def evicted(reason: str) -> None:
    """`reason`: one of EVICTION_REASONS."""
    EVICTIONS.labels(reason).inc()


def watchdog_killed() -> None:
    WATCHDOG_KILLS.inc()


def resumed(outcome: str) -> None:
    """`outcome`: one of RESUME_OUTCOMES."""
    RESUMES.labels(outcome).inc()


def permission_requested(decision: str) -> None:
    """The permission bridge's hook: one of Claude Code's `can_use_tool` prompts was
    answered (or withdrawn). `decision`: one of PERMISSION_DECISIONS, never the tool's
    input or the principal."""
    PERMISSION_REQUESTS.labels(decision if decision in PERMISSION_DECISIONS else "other").inc()


def auth_failed(reason: str) -> None:
    """`reason`: the Unauthenticated error's `credential` (one of AUTH_REASONS)."""
    AUTH_FAILURES.labels(reason if reason in AUTH_REASONS else "other").inc()
