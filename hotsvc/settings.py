"""Every setting, defined once: its flag, its HOTSVC_* variable, its default and its help.

`hotsvc serve --help`, the environment variables and the README's configuration table
are generated from the dataclass fields below (hotsvc.flags), the TOML profiles' keys from
Profile's (hotsvc.profiles), so they cannot disagree. A field without `setting(...)` metadata is
internal: not a flag, not in the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hotsvc import memory
from hotsvc.profiles import (
    DEFAULT_PROFILE,
    ConfigError,
    Profile,
    setting,
)

ENV_PREFIX = "HOTSVC_"
STORE_SCHEMES = ("sqlite:", "postgresql://", "postgres://")


def default_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """A per-user state directory (XDG Base Directory), never the working directory: the
    sessions' Claude Code may read whatever lies under the directory it runs in."""
    state_home = environ.get("XDG_STATE_HOME", "")
    if not Path(state_home).is_absolute():  # unset, empty or relative: the spec says ignore
        state_home = str(Path.home() / ".local" / "state")
    return Path(state_home) / "hotsvc"


@dataclass(frozen=True)
class ServiceConfig:
    listen: str = setting(
        "127.0.0.1:50051",
        "HOST:PORT to serve on; port 0 picks a free one (printed as "
        "`hotsvc listening on HOST:PORT`)",
    )
    claude_cmd: tuple[str, ...] = setting(
        ("claude",), "the Claude Code command, split like a shell would", shown_default="`claude`"
    )
    local_model: str = setting(
        "never",
        "`auto`: run the CLI against the local scripted model when there are no "
        "credentials and no `--claude-cmd` (`make run` passes `auto`); `always`; `never`",
        choices=("auto", "always", "never"),
    )
    config: Path | None = setting(None, "TOML file of `[profiles.NAME]` tables")
    data_dir: Path | None = setting(
        default_data_dir(),
        "the default session store's SQLite file, each child's TMPDIR (`tmp/`, emptied at "
        "start-up) and the local model's CLI config; must not lie inside a session's "
        "working directory",
        shown_default="`$XDG_STATE_HOME/hotsvc` (else `~/.local/state/hotsvc`)",
    )
    store: str = setting(
        "",
        "the session store: `sqlite:PATH` (one host) or `postgresql://USER@HOST/DB` (shared "
        "by a fleet; a password is best in PGPASSWORD or ~/.pgpass, not the URL)",
        shown_default="`sqlite:<data-dir>/registry.sqlite3`",
    )
    replica_id: str = setting(
        "",
        "this replica's name in a shared store: leases and child processes are per replica",
        shown_default="host name (`:`port in a shared store)",
    )
    lease_seconds: float = setting(
        15.0,
        "a replica holds each session it runs for this long, renewed meanwhile; a replica "
        "gone this long has its sessions taken over",
        above=0,
    )
    recover_store: bool = setting(
        False,
        "a damaged SQLite store is moved aside (kept, with a timestamp) and an empty "
        "one started, logging the sessions lost; without it hotsvc refuses to start on it",
    )
    max_sessions: int = setting(
        None,  # resolved in __post_init__: from the memory available at start
        "cap on live processes, warm ones included; 0 = no cap",
        minimum=0,
        shown_default="available memory / `--session-memory-mb` (printed at start)",
    )
    session_memory_mb: int = setting(
        250,
        "the memory one session's Claude Code process is budgeted, for the default "
        "`--max-sessions`",
        minimum=1,
    )
    max_streams: int = setting(
        1000,
        "streams (Prompt, Ask, their HTTP forms) attached at once; past it "
        "RESOURCE_EXHAUSTED (0 = no cap)",
        minimum=0,
    )
    open_queue_timeout: float = setting(
        10.0,
        "how long an open waits in line for a session slot at `--max-sessions` "
        "before RESOURCE_EXHAUSTED",
        above=0,
    )
    open_timeout: float = setting(
        30.0,
        "a Prompt stream must send its `open` within this many seconds, else DEADLINE_EXCEEDED",
        above=0,
    )
    max_concurrent_spawns: int = setting(
        0,
        "Claude Code processes starting at once (pool refills, cold spawns, resumes); the "
        "rest wait in a fair line, told their place; 0 = the number of cores",
        minimum=0,
        shown_default="0 (the core count)",
    )
    max_turn_chars: int = setting(1024 * 1024, "longest accepted turn text", minimum=1)
    max_image_bytes: int = setting(
        5 * 1024 * 1024,
        "largest image block a turn may carry (the Messages API refuses images over 5 MB)",
        minimum=1,
    )
    max_document_bytes: int = setting(
        16 * 1024 * 1024, "largest document block (PDF or text) a turn may carry", minimum=1
    )
    max_turn_bytes: int = setting(
        24 * 1024 * 1024,
        "largest turn, its text and content blocks together (the Messages API takes "
        "requests up to 32 MB, base64 included); the gRPC and HTTP receive limits follow it",
        minimum=1024,
    )
    http_listen: str = setting(
        "",
        "HOST:PORT to also serve the API over HTTP/1.1 and HTTP/2 (the Connect protocol, "
        "JSON or protobuf; `POST /sessions/{id}/hot-prompt` and `GET /hot/status`), with "
        "the same TLS and authentication; port 0 picks a free one (printed as `hotsvc "
        "http listening on HOST:PORT`); empty = off",
    )
    http_cors_origins: tuple[str, ...] = setting(
        (),
        "browser origins allowed to call the HTTP face (CORS, e.g. "
        "`https://app.example.com`; comma-separated; `*` for any), so a page using "
        "connect-web can call it; none by default (same-origin only)",
    )
    shutdown_grace: float = setting(10.0, "seconds running turns get on SIGTERM", minimum=0)
    log_level: str = setting("INFO", "logging level")
    log_format: str = setting(
        "",
        "`text`, or `json`: one object a line, a session's or turn's `session_id`, "
        "`turn_id`, `profile` and `principal` as fields",
        choices=("text", "json"),
        shown_default="`text` on a TTY, else `json`",
    )
    metrics_listen: str = setting(
        "",
        "HOST:PORT to serve Prometheus metrics on (`/metrics`; no ids or principals in "
        "them, no authentication); port 0 picks a free one (printed as `hotsvc metrics "
        "listening on HOST:PORT`); empty = off (`make run` serves 127.0.0.1:9464)",
    )
    otel: bool = setting(
        False,
        "OpenTelemetry traces of every RPC and turn, exported over OTLP as the standard "
        "`OTEL_EXPORTER_OTLP_*`/`OTEL_SERVICE_NAME` variables say; needs "
        "`pip install 'hotsvc[otel]'`",
    )
    grpc_keepalive_interval: float = setting(
        60.0,
        "seconds between keepalive pings on an idle gRPC connection, so a caller gone "
        "without a word is noticed and its streams end",
        above=0,
    )
    grpc_keepalive_timeout: float = setting(
        20.0, "a keepalive ping unanswered this long closes the connection", above=0
    )
    grpc_min_ping_interval: float = setting(
        10.0,
        "the shortest interval at which callers may send keepalive pings; more often "
        "closes their connection (too_many_pings)",
        above=0,
    )
    grpc_max_receive_bytes: int = setting(
        0,
        "largest request message accepted over gRPC; 0 = `--max-turn-bytes` plus 1 MiB, "
        "so an oversized turn is told the turn limit",
        minimum=0,
    )
    event_loop: str = setting(
        "uvloop",
        "the event loop `hotsvc serve` runs on: `uvloop` (libuv; measured to cut the "
        "service's CPU per hot turn, see docs/benchmarks.md) or `asyncio` (the standard one)",
        choices=("uvloop", "asyncio"),
    )
    containment: str = setting(
        "auto",
        "how every process a child starts is ended with it: `cgroup` (a cgroup v2 per "
        "child, under the service's own), `tree` (the process tree, hotsvc as subreaper), "
        "`auto`: cgroup where the service may create cgroups, else tree",
        choices=("auto", "cgroup", "tree"),
    )
    idle_timeout: float = setting(
        900.0,
        "end an unattached idle session's process after this many seconds, freeing its "
        "memory; the conversation resumes on the next open (0 = off)",
        group="session lifecycle",
        minimum=0,
    )
    recycle_after_turns: int = setting(
        0,
        "replace a session's process (by resume) after this many turns (0 = off)",
        group="session lifecycle",
        minimum=0,
    )
    recycle_after_seconds: float = setting(
        0.0, "... or once its process is this old (0 = off)", group="session lifecycle", minimum=0
    )
    recycle_above_rss_mb: int = setting(
        0,
        "... or once its process holds this much resident memory (0 = off)",
        group="session lifecycle",
        minimum=0,
    )
    turn_inactivity_timeout: float = setting(
        600.0,
        "a turn with no output this long is interrupted, then killed",
        group="session lifecycle",
        above=0,
    )
    tool_timeout: float = setting(
        1800.0,
        "while a tool runs (a tool_use without its tool_result), a turn may be silent "
        "this long before it is interrupted, then killed; meanwhile `tool_running` progress "
        "events come every heartbeat interval",
        group="session lifecycle",
        above=0,
    )
    heartbeat_interval: float = setting(
        30.0,
        "seconds of silence before a `heartbeat` event, for proxies with idle timeouts",
        group="session lifecycle",
        above=0,
    )
    on_disconnect: str = setting(
        "interrupt",
        "what happens to a running turn whose caller went away; its result is kept for re-attach",
        group="session lifecycle",
        choices=("interrupt", "finish"),
    )
    transcript_sync_timeout: float = setting(
        2.0,
        "a turn's result waits at most this long for its transcript (and the session "
        "store) to hold the turn; past it the result says durable=false",
        group="session lifecycle",
        minimum=0,
    )
    transcript_retention_days: int = setting(
        0,
        "days Claude Code keeps a session's transcript after its last use before deleting "
        "it (sessions older than that cannot resume); 0 = never delete",
        group="session lifecycle",
        minimum=0,
    )
    max_pending_turns: int = setting(
        16,
        "turns a session queues behind the running one; past it a turn is refused "
        "with RESOURCE_EXHAUSTED and the stream stays",
        group="session lifecycle",
        minimum=1,
    )
    max_line_bytes: int = setting(
        64 * 1024 * 1024,
        "longest stdout line read from Claude Code; longer ones are dropped and logged",
        group="session lifecycle",
        minimum=1024,
    )
    tls_cert: Path | None = setting(
        None, "PEM certificate (chain) to serve TLS with; needs --tls-key", group="security"
    )
    tls_key: Path | None = setting(None, "PEM private key of --tls-cert", group="security")
    tls_client_ca: Path | None = setting(
        None,
        "PEM CA bundle: require client certificates signed by it (mTLS); a verified "
        "certificate's URI SAN, else DNS SAN, else subject CN is the principal",
        group="security",
    )
    auth_tokens: Path | None = setting(
        None,
        "bearer token file, lines `PRINCIPAL SHA256HEX [admin]` (`hotsvc token` adds "
        "them); read again on SIGHUP",
        group="security",
    )
    jwt_public_key: Path | None = setting(
        None,
        "PEM public key (RSA, P-256 or Ed25519) that signs accepted JWT bearer tokens; "
        "`sub` is the principal",
        group="security",
    )
    jwt_issuer: str = setting("", "the `iss` accepted JWTs carry (required)", group="security")
    jwt_audience: str = setting("", "the `aud` accepted JWTs carry (required)", group="security")
    jwt_admin_claim: str = setting(
        "",
        "CLAIM=VALUE making a JWT's principal an admin, e.g. `roles=hotsvc-admin` "
        "(a dotted path reaches nested claims; the claim may be a value, a list or a "
        "space-separated string)",
        group="security",
    )
    insecure_no_auth: bool = setting(
        False,
        "allow listening beyond loopback with no authentication (every caller is `local`)",
        group="security",
    )
    max_sessions_per_principal: int = setting(
        0,
        "sessions one principal may hold, live or stopped, until it deletes some (0 = no limit)",
        group="security",
        minimum=0,
    )
    turns_per_minute_per_principal: int = setting(
        0,
        "turns one principal may send a minute (a token bucket, bursts up to this); 0 = no limit",
        group="security",
        minimum=0,
    )
    audit_log: Path | None = setting(
        None,
        "append one JSON line per security-relevant event (authentication, sessions "
        "opened/attached/closed, refusals) to this file; never a token or prompt text",
        group="security",
    )
    keep_workspaces: bool = setting(
        False,
        "keep a session's workspace when DeleteSession removes the session (logged)",
        group="security",
    )
    child_user: str = setting(
        "",
        "run every Claude Code process (and its tools) as this account, which owns the "
        "workspaces (hotsvc as root; util-linux setpriv)",
        group="security",
    )
    session_uids: str = setting(
        "",
        "FIRST-LAST: run each live session's processes under a uid of its own from this "
        "range of unused uids (own group, no login, no home), its workspace 0700 and "
        "owned by it; needs hotsvc as root and a workspace_root",
        group="security",
    )
    # Internal: not flags.
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for every child
    ready_timeout: float = 60.0  # a warm process must answer `initialize` within this
    max_sessions_chosen: str = ""  # how the default --max-sessions was chosen, if it was

    def __post_init__(self) -> None:
        warm = sum(profile.pool_bounds()[0] for profile in self.profiles.values())
        if self.max_sessions is None or (self.max_sessions_chosen and warm > self.max_sessions):
            cap, chosen = memory.default_max_sessions(self.session_memory_mb, warm)
            object.__setattr__(self, "max_sessions", cap)  # frozen: set once, here
            object.__setattr__(self, "max_sessions_chosen", chosen)
        if self.max_sessions and warm > self.max_sessions:
            # Health would never become SERVING: it waits for the pools to fill.
            raise ConfigError(
                f"the warm pools want {warm} idle processes but --max-sessions allows "
                f"{self.max_sessions} live ones: lower --pool-size (or the profiles' "
                "pool_size) or raise --max-sessions"
            )

    @property
    def interrupt_on_disconnect(self) -> bool:
        return self.on_disconnect == "interrupt"

    def profile(self, name: str) -> Profile | None:
        return self.profiles.get(name or DEFAULT_PROFILE)
