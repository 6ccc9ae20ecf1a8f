"""Gateway settings, read once at start from LIVESTATS_GATEWAY_* environment variables."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from livestats_shared import keys, queue_server
from livestats_shared.fpf_env import EnvPatterns
from livestats_shared.publish.replicas import DEFAULT_TIMEOUT_MS, REPLICAS_HELP, TIMEOUT_HELP, ReplicaAck
from livestats_shared.quota import Quota, QuotaOverride
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DESCRIPTORS_RESERVED = 100  # kept for Redis connections, files and logs when no cap is set


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVESTATS_GATEWAY_", extra="ignore", populate_by_name=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("LIVESTATS_GATEWAY_REDIS_URL", "LIVESTATS_REDIS_URL", "REDIS_URL"),
    )
    # arq's queue and the scheduler, as the workers read it (queue_server.py); unset: `redis_url`.
    queue_redis_url: str | None = Field(
        None, validation_alias=AliasChoices("LIVESTATS_GATEWAY_QUEUE_REDIS_URL", "LIVESTATS_QUEUE_REDIS_URL")
    )
    # Must match the workers' queue: POST /api/runs enqueues there.
    queue_name: str = Field(
        keys.JOB_QUEUE, validation_alias=AliasChoices("LIVESTATS_GATEWAY_QUEUE_NAME", "LIVESTATS_QUEUE_NAME")
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # -- processes (docs/deploy.md, "Every core: gateway processes") ---------------------------------
    processes: int | None = Field(
        None, ge=1, le=1_024, description="Processes sharing the port (SO_REUSEPORT). None: one per usable core."
    )
    metrics_port_base: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Process i also serves /metrics, /readyz and /healthz (nothing else) on this port + i.",
    )

    # -- security ------------------------------------------------------------------------------
    tokens_file: Path | None = Field(None, description="JSON token records (`livestats token create --file`).")
    admin_token: SecretStr | None = Field(
        None, min_length=32, description="A fixed token for principal `admin` (e.g. a deployment secret)."
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins besides the gateway's own (`https://ui.example.com`)."
    )
    max_streams_per_principal: int = Field(500, ge=1, description="Open WebSockets + SSE streams per principal.")
    auth_recheck_s: float = Field(15.0, gt=0, description="Open streams re-check their token or session this often.")
    cookie_secure: bool = Field(
        False,
        description="Always use the Secure `__Host-livestats_session` cookie (behind a TLS-terminating proxy "
        "that does not pass the scheme on); otherwise each request's own scheme decides.",
    )
    session_idle_s: float = Field(12 * 3600, gt=0, description="A browser session unused this long ends.")
    session_max_s: float = Field(7 * 24 * 3600, gt=0, description="A browser session ends this long after login.")
    # The operator's rule for a spec's `env` (docs/processes.md): the same variable the workers
    # read, so one setting configures both; the worker re-checks whatever the gateway let through.
    spec_env_allow: EnvPatterns = Field(
        default_factory=list,
        validation_alias=AliasChoices("LIVESTATS_GATEWAY_SPEC_ENV_ALLOW", "LIVESTATS_SPEC_ENV_ALLOW"),
    )

    # -- quotas (docs/scheduling.md) ------------------------------------------------------------
    # JSON in the environment: LIVESTATS_GATEWAY_QUOTA='{"concurrent_runs": 4, ...}' and
    # LIVESTATS_GATEWAY_QUOTA_OVERRIDES='{"alice": {"queued_runs": 500}}'. 0 = no limit.
    quota: Quota = Field(
        default_factory=lambda: Quota(
            concurrent_runs=8, queued_runs=200, submissions_per_minute=120, max_concurrency=64, max_calls=10_000
        ),
        description="Every principal's quota unless overridden.",
    )
    quota_overrides: dict[str, QuotaOverride] = Field(
        default_factory=dict, description="Per principal: the fields that differ from `quota`."
    )

    # -- connections (docs/connections.md) -----------------------------------------------------
    header_timeout_s: float = Field(10.0, gt=0, description="A request's headers must arrive within this.")
    body_timeout_s: float = Field(30.0, gt=0, description="A request's body must arrive within this.")
    keep_alive_s: float = Field(5.0, gt=0, description="Idle time between requests on one connection.")
    max_connections: int | None = Field(
        None,
        ge=10,
        description="Open connections; at the cap a new one closes the oldest idle one. "
        "None: the process's descriptor limit less `DESCRIPTORS_RESERVED`.",
    )
    replays_per_principal: int = Field(4, ge=1, description="History replays one principal runs at once.")
    lists_per_principal: int = Field(2, ge=1, description="`GET /api/runs` one principal runs at once.")

    # -- publishing (stall marks, cancels, ingest): the variables the workers read -------------
    publish_replicas: int = Field(
        0,
        ge=0,
        validation_alias=AliasChoices("LIVESTATS_GATEWAY_PUBLISH_REPLICAS", "LIVESTATS_PUBLISH_REPLICAS"),
        description=REPLICAS_HELP,
    )
    publish_replica_timeout_ms: int = Field(
        DEFAULT_TIMEOUT_MS,
        ge=1,
        lt=10_000,
        validation_alias=AliasChoices(
            "LIVESTATS_GATEWAY_PUBLISH_REPLICA_TIMEOUT_MS", "LIVESTATS_PUBLISH_REPLICA_TIMEOUT_MS"
        ),
        description=TIMEOUT_HELP,
    )

    # -- fan-out -------------------------------------------------------------------------------
    read_count: int = Field(1_000, ge=1, description="XREAD COUNT per stream per read.")
    read_block_ms: int = Field(5_000, ge=10, description="Longest XREAD block; adding a stream wakes it.")
    # 2 ms: a lower latency p99 than 5 ms, as many deliveries to 1,000 clients, and less CPU
    # than 1 ms (commit 2d1b378; bench/results). It only delays events that arrive during the pause.
    fanout_linger_ms: float = Field(
        2.0, ge=0, le=100, description="Pause after each read with events, so the next read batches more."
    )
    # 250: a large replay reaches the client sooner than with pages of 2,000 (redis-py reads a
    # large reply in 64 KB pieces, and the client waits for whole pages): commit 82e2962, bench/results.
    replay_page: int = Field(250, ge=10, description="XRANGE page size when replaying history.")
    frame_max_events: int = Field(500, ge=1, description="Most events in one replayed frame.")
    client_queue_bytes: int = Field(8 << 20, ge=64 << 10, description="Per-client send queue; beyond it: 4008.")
    client_message_max_bytes: int = Field(4_096, ge=64, description="Largest message a client may send.")
    heartbeat_s: float = Field(5.0, gt=0, description="Application heartbeat (server time) to every client.")
    ws_ping_interval_s: float = Field(20.0, gt=0, description="WebSocket protocol pings.")
    ws_ping_timeout_s: float = Field(20.0, gt=0)
    ws_compression: bool = Field(False, description="permessage-deflate: saves bandwidth, costs CPU per client.")

    # -- run index -----------------------------------------------------------------------------
    index_limit: int = Field(200, ge=1, le=5_000, description="Runs sent to a /ws/runs client on connect.")
    index_refresh_s: float = Field(1.0, gt=0, description="How often running runs' progress is re-read.")

    # -- stalled runs --------------------------------------------------------------------------
    stall_check_interval_s: float = Field(1.0, gt=0)
    stall_margin_s: float = Field(3.0, ge=0, description="Added to two heartbeat intervals.")
    default_run_heartbeat_s: float = Field(5.0, gt=0, description="For runs that do not state theirs.")

    # -- REST ----------------------------------------------------------------------------------
    events_page_max: int = Field(5_000, ge=1, description="Largest `limit` on GET /api/runs/{id}/events.")
    runs_page_max: int = Field(500, ge=1, description="Largest `limit` on GET /api/runs.")
    analysis_runs_max: int = Field(200, ge=1, description="Most runs one comparison or calibration reads.")
    # The operator's price table (pricing.py), shared with the worker: the same un-prefixed
    # variables configure both.
    prices_file: str | None = Field(None, validation_alias="LIVESTATS_PRICES_FILE")
    prices: str | None = Field(None, validation_alias="LIVESTATS_PRICES", description="The table as inline JSON.")
    # The strata the operator wants covered by estimation samples (estimation.DeclaredStrata, JSON).
    estimation_strata: str | None = Field(None, description='e.g. {"category": ["implementation", "testing"]}')
    ingest_max_events: int = Field(1_000, ge=1, description="Most events in one POST /api/runs/{id}/events.")
    ingest_max_skew_s: float = Field(
        900.0, gt=0, description="An ingested event's `ts` must be within this many seconds of the gateway's clock."
    )
    shutdown_grace_s: float = Field(5.0, ge=0, description="On SIGTERM, how long open streams get to close.")

    def replica_ack(self) -> ReplicaAck:
        return ReplicaAck(self.publish_replicas, self.publish_replica_timeout_ms)

    @model_validator(mode="after")
    def _queue_server_can_work(self) -> GatewayConfig:
        queue_server.resolve(self.redis_url, self.queue_redis_url)  # a Cluster for arq stops the start here
        return self

    @property
    def queue_url(self) -> str:
        """The server of arq's queue and the scheduler."""
        return queue_server.resolve(self.redis_url, self.queue_redis_url)

    def quota_for(self, principal: str) -> Quota:
        override = self.quota_overrides.get(principal)
        return self.quota if override is None else override.over(self.quota)

    def process_count(self) -> int:
        """`processes`, or one per core this process may run on (its CPU affinity, which a
        container's cpuset narrows; not `os.cpu_count()`, which counts the whole machine)."""
        if self.processes is not None:
            return self.processes
        if hasattr(os, "sched_getaffinity"):  # Linux
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1

    def connection_cap(self) -> int:
        """`max_connections`, or what the descriptor limit leaves after Redis, files and logs."""
        if self.max_connections is not None:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(10, soft - DESCRIPTORS_RESERVED)
