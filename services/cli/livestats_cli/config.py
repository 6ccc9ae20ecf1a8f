"""CLI settings, from LIVESTATS_* environment variables (REDIS_URL also accepted)."""

from __future__ import annotations

from pathlib import Path

from livestats_shared import keys, queue_server
from livestats_shared.fpf_env import EnvPatterns
from livestats_shared.publish.replicas import DEFAULT_TIMEOUT_MS, REPLICAS_HELP, TIMEOUT_HELP, ReplicaAck
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .local_auth import LOCAL_TOKEN_TTL_S, local_url, read_password


class CliConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVESTATS_", extra="ignore", populate_by_name=True)

    # Unset: `livestats up` starts the embedded server; other commands use the default below.
    redis_url: str | None = Field(None, validation_alias=AliasChoices("LIVESTATS_REDIS_URL", "REDIS_URL"))
    # arq's queue and the scheduler (queue_server.py); unset: the telemetry server above.
    queue_redis_url: str | None = Field(None, validation_alias=AliasChoices("LIVESTATS_QUEUE_REDIS_URL"))
    queue_name: str = keys.JOB_QUEUE
    data_dir: Path = Field(Path(".run"), description="Embedded server data and process logs.")
    embedded_port: int = Field(6399, ge=1, le=65535, description="Preferred port of the embedded server.")
    # The same variable the gateway reads, so it means one thing whoever starts the gateway.
    gateway_port: int = Field(8000, ge=1, le=65535, description="Preferred port of the gateway `up` starts.")
    # Commands that go through the gateway's REST API (`watch`): where it is, and the bearer token.
    # Set: submit, cancel, runs and tail go through the gateway too (`watch` always does, by
    # default to http://127.0.0.1:8000).
    gateway_url: str | None = Field(None, description="The gateway, for commands that use its API.")
    token: str | None = Field(None, description="Bearer token sent to the gateway (LIVESTATS_TOKEN).")
    local_token_ttl_s: float = Field(
        LOCAL_TOKEN_TTL_S, gt=0, description="`up`'s admin token expires this long after its last renewal."
    )
    # `submit` through Redis checks a spec's env as the gateway and the workers do (LIVESTATS_SPEC_ENV_ALLOW).
    spec_env_allow: EnvPatterns = Field(default_factory=list)
    # What the CLI publishes (submit, cancel, replay) waits for replicas as the services do.
    publish_replicas: int = Field(0, ge=0, description=REPLICAS_HELP)
    publish_replica_timeout_ms: int = Field(DEFAULT_TIMEOUT_MS, ge=1, lt=10_000, description=TIMEOUT_HELP)

    def replica_ack(self) -> ReplicaAck:
        return ReplicaAck(self.publish_replicas, self.publish_replica_timeout_ms)

    @property
    def url(self) -> str:
        # The embedded server's password, which `up` keeps in the data dir (local_auth.py).
        return self.redis_url or local_url(self.embedded_port, read_password(self.data_dir))

    @property
    def queue_url(self) -> str:
        """The server of arq's queue and the scheduler (ValueError if that cannot work)."""
        return queue_server.resolve(self.url, self.queue_redis_url)
