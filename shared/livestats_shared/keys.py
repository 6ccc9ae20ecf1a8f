"""Every Redis key, stream name, cap and TTL livestats uses. Nobody formats a key elsewhere.

Per-run keys share the Redis Cluster hash tag `{<run_id>}` so the publish script, which
touches the stream and the stats hash together, stays on one slot.
"""

from __future__ import annotations

from .ids import validate_run_id

PREFIX = "livestats"

# Run index: sorted set of run ids scored by creation time (epoch ms).
RUNS_INDEX = f"{PREFIX}:runs"
# Run index feed: a stream with one entry per lifecycle change of any run (queued, started,
# phase changes, finished), for `/ws/runs` and `redis-cli XREAD ... STREAMS livestats:runs:feed $`.
RUNS_FEED = f"{PREFIX}:runs:feed"
RUNS_FEED_MAXLEN = 10_000  # entries (approximate trim)
# Runs that have started and not yet finished: sorted set of run ids scored by start time
# (epoch ms). The gateway's stall monitor scans it for runs whose heartbeats stopped.
RUNS_ACTIVE = f"{PREFIX}:runs:active"

# Stall-monitor leader lease: a string holding the holder's token; only the holder scans.
STALL_LEADER = f"{PREFIX}:gateway:stall-leader"
# Lease TTL in stall-check intervals: the holder renews every interval, so it can miss two.
STALL_LEASE_INTERVALS = 3  # intervals

# API tokens: hash of token id -> JSON TokenRecord (principal, scopes, SHA-256 of the token;
# never the token). Written by `livestats token create|revoke`, read by the gateway per request.
AUTH_TOKENS = f"{PREFIX}:auth:tokens"

# arq queue for run jobs, and the function name the worker registers.
JOB_QUEUE = f"{PREFIX}:queue"
RUN_JOB = "execute_run"

# Per-run event stream cap (approximate, XADD MAXLEN ~). ~250 bytes/event -> ~60 MB at the cap.
RUN_STREAM_MAXLEN = 250_000  # entries
# Finished runs (stream, stats, cancel flag) expire after this long; index entries are pruned too.
RUN_RETENTION_S = 30 * 24 * 3600  # seconds
# A cancel request outlives any run that could still be queued for it.
CANCEL_FLAG_TTL_S = 7 * 24 * 3600  # seconds


def run_events(run_id: str) -> str:
    """Stream of the run's events (the source of truth)."""
    return f"{PREFIX}:run:{{{validate_run_id(run_id)}}}:events"


def run_stats(run_id: str) -> str:
    """Hash with the run's live snapshot, updated in the same script as the stream."""
    return f"{PREFIX}:run:{{{validate_run_id(run_id)}}}:stats"


def run_lifecycle(run_id: str) -> str:
    """Hash with the run's lifecycle state (owner epoch, open calls and phases), written only by
    the publish script and checked by it before every write (publish/gate.py has the layout)."""
    return f"{PREFIX}:run:{{{validate_run_id(run_id)}}}:lifecycle"


def run_cancel(run_id: str) -> str:
    """Set when someone asks to cancel the run; value is the requester's reason."""
    return f"{PREFIX}:run:{{{validate_run_id(run_id)}}}:cancel"
