"""Worker settings, read once at start from LIVESTATS_* environment variables."""

from __future__ import annotations

import functools
import os
import socket
import sys
from pathlib import Path

from livestats_shared import keys, queue_server
from livestats_shared.fpf_env import EnvPatterns
from livestats_shared.pricing import PriceTable, load_price_table
from livestats_shared.publish.replicas import DEFAULT_TIMEOUT_MS, REPLICAS_HELP, TIMEOUT_HELP, ReplicaAck
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerConfig(BaseSettings):
    # env_ignore_empty: an empty variable means the default (the image sets LIVESTATS_FPF_COMMAND
    # empty unless built with a real FPF).
    model_config = SettingsConfigDict(
        env_prefix="LIVESTATS_", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("LIVESTATS_REDIS_URL", "REDIS_URL")
    )
    # arq's queue and the scheduler (queue_server.py); unset: on the telemetry server above.
    queue_redis_url: str | None = Field(None, validation_alias=AliasChoices("LIVESTATS_QUEUE_REDIS_URL"))
    queue_name: str = keys.JOB_QUEUE
    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    max_runs: int = Field(10, ge=1, description="Runs one worker process executes at once.")
    # arq's job timeout: the hard ceiling of any run on this worker. A spec may ask for less.
    run_timeout_s: float = Field(600.0, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    # argv of the FPF command; "{prompt_file}" is replaced by the prompt file's path (appended
    # if absent). JSON list in the environment, e.g. LIVESTATS_FPF_COMMAND='["fpf", "--json"]'.
    fpf_command: list[str] = Field(default_factory=lambda: [sys.executable, "-m", "livestats_fpfsim"])
    # The FPF environment is the operator's (docs/processes.md). Glob patterns, as a JSON list or
    # comma-separated. Spec `env` keys a run may set; the gateway reads the same variable.
    spec_env_allow: EnvPatterns = Field(default_factory=list)
    # Worker variables passed through to FPF, besides PATH, HOME, LANG, LC_*, TMPDIR (always).
    fpf_env: EnvPatterns = Field(default_factory=lambda: ["FPF_*"])
    # Keys whose values are cut out of excerpts, besides *KEY*, *TOKEN*, *SECRET*, *PASSWORD*.
    fpf_secret_env: EnvPatterns = Field(default_factory=list)
    kill_grace_s: float = Field(2.0, ge=0, description="SIGTERM to SIGKILL, for a call's process group.")
    max_output_bytes: int = Field(1 << 20, ge=1024, description="Larger answers fail as too_large.")
    work_dir: Path | None = Field(None, description="Where prompt files are written (default: temp dir).")
    outbox_capacity: int = Field(100_000, ge=100, description="Events buffered while Redis is away.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="On SIGTERM, how long running runs may finish.")
    flush_timeout_s: float = Field(5.0, ge=0, description="How long a finishing run waits for its events.")
    # LIVESTATS_PUBLISH_REPLICAS / _REPLICA_TIMEOUT_MS: the same variables the gateway and the CLI read.
    publish_replicas: int = Field(0, ge=0, description=REPLICAS_HELP)
    publish_replica_timeout_ms: int = Field(DEFAULT_TIMEOUT_MS, ge=1, lt=10_000, description=TIMEOUT_HELP)
    # Prometheus exposition of this process (GET /metrics); 0 = off, so several workers can run
    # on one host without a port each. Compose and the tests set it.
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Label allowlists: phase and model names come from run specs, so anything not listed is
    # reported as `other` and a spec cannot create new series. JSON lists in the environment.
    metrics_phases: list[str] = Field(default_factory=lambda: ["generate", "evaluate", "compare"])
    # Added to the models the operator configured anyway (model_labels.py): FPF_MODEL below and
    # the price table's models.
    metrics_models: list[str] = Field(default_factory=list)
    # The worker's own FPF_MODEL (FPF inherits it): the model of calls whose phase names none.
    fpf_model: str = Field("", validation_alias=AliasChoices("FPF_MODEL", "fpf_model"))
    # The operator's price table (livestats_shared.pricing): LIVESTATS_PRICES_FILE, or the JSON
    # inline in LIVESTATS_PRICES. The gateway reads the same two variables.
    prices_file: str | None = None
    prices: str | None = None

    @model_validator(mode="after")
    def _queue_server_can_work(self) -> WorkerConfig:
        queue_server.resolve(self.redis_url, self.queue_redis_url)  # a Cluster for arq stops the start here
        return self

    @property
    def queue_url(self) -> str:
        """The server of arq's queue and the scheduler."""
        return queue_server.resolve(self.redis_url, self.queue_redis_url)

    @model_validator(mode="after")
    def _priced_models_are_metric_labels(self) -> WorkerConfig:
        # A model the operator prices is one they care about: its cost and calls get their own
        # `model` label without listing it twice. A bad table stops the start here.
        priced = load_price_table(self.prices_file, self.prices).models
        self.metrics_models = [*self.metrics_models, *(m for m in priced if m not in self.metrics_models)]
        return self

    def replica_ack(self) -> ReplicaAck:
        return ReplicaAck(self.publish_replicas, self.publish_replica_timeout_ms)

    def price_table(self) -> PriceTable:
        return _price_table(self.prices_file, self.prices)


@functools.cache
def _price_table(path: str | None, inline: str | None) -> PriceTable:
    """Read once per process (the table is versioned by date: a change means a restart)."""
    return load_price_table(path, inline)
