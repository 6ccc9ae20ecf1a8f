"""Every Redis key, stream name, cap and TTL livestats uses. Nobody formats a key elsewhere.

Per-run keys share the Redis Cluster hash tag `{<run_id>}` so the publish script, which
touches the stream and the stats hash together, stays on one slot.
"""

from __future__ import annotations

import re

from .ids import validate_run_id

PREFIX = "livestats"

# Run index: sorted set of run ids scored by creation time (epoch ms).
RUNS_INDEX = f"{PREFIX}:runs"


# Per-principal run indexes: the same entries as RUNS_INDEX, one sorted set per owner and one
# per team, so a user's `GET /api/runs` reads only runs they may see (written beside RUNS_INDEX).
def runs_by_owner(owner: str) -> str:
    return f"{PREFIX}:runs:owner:{owner}"


def runs_by_team(team: str) -> str:
    return f"{PREFIX}:runs:team:{team}"


# Set once the per-principal indexes hold every run of RUNS_INDEX (the gateway backfills at start).
RUNS_VISIBILITY_MARK = f"{PREFIX}:runs:visibility-indexed"


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

# When each token was last used: hash of token id -> epoch ms. Each gateway process writes a
# token's entry at most once a minute (TOKEN_LAST_USED_EVERY_S), not per request.
AUTH_TOKENS_LAST_USED = f"{PREFIX}:auth:tokens:last-used"
TOKEN_LAST_USED_EVERY_S = 60  # seconds

# Browser sessions (gateway `POST /api/session`). Keyed by SHA-256 of the session id, so nothing
# in Redis is a usable cookie. A hash: token_id, token_digest, principal, created_ms, expires_ms;
# its TTL is the idle expiry, renewed on use, never past `expires_ms` (the absolute expiry).
AUTH_SESSION_PREFIX = f"{PREFIX}:auth:session:"
# A session renews its idle TTL at most this often per gateway process.
SESSION_TOUCH_EVERY_S = 60  # seconds


def auth_session(session_digest: str) -> str:
    """Hash of one browser session (see AUTH_SESSION_PREFIX)."""
    return AUTH_SESSION_PREFIX + _auth_id(session_digest)


def auth_token_sessions(token_id: str) -> str:
    """Set of the session digests opened with token `token_id`: revoking the token deletes them.
    Expires with the longest session in it."""
    return f"{PREFIX}:auth:token:{_auth_id(token_id)}:sessions"


_AUTH_ID = re.compile(r"[a-z0-9_-]{1,64}")


def _auth_id(value: str) -> str:
    # A SHA-256 in hex, or a token id (12 hex characters; `settings` for the admin token):
    # checked, since it becomes part of a key name.
    if not _AUTH_ID.fullmatch(value):
        raise ValueError(f"not a token id or digest: {value[:70]!r}")
    return value


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


# -- Fair-share scheduler (docs/scheduling.md) ------------------------------------------------
# Every scheduler key of a queue starts with `sched_prefix(queue)` and lives beside arq's queue on
# one server: the scheduler's scripts move jobs in arq's queue and reach the pending list of
# whichever principal's turn it is, so (like arq itself) they are not Cluster-safe. The scripts
# build their keys with the `sched_*` layout below from the prefix (tests check both agree).
SCHED_PARK_S = 30 * 24 * 3600  # seconds: score offset of a job parked in arq's queue until dispatched
SCHED_WORKER_TTL_INTERVALS = 3  # worker heartbeats a slot advertisement outlives
SCHED_HOLD_GRACE_S = 300  # seconds past a run's timeout before its slot is presumed lost (worker killed)
SCHED_RESERVE_TTL_S = 30  # seconds a quota reservation lasts while a submission is recorded
SCHED_RATE_WINDOW_S = 60  # seconds: the window of "submissions per minute"
LOCAL_PRINCIPAL = "-"  # who submitted a run without an owner (operator CLI): never a token name


def sched_prefix(queue_name: str) -> str:
    return f"{PREFIX}:sched:{queue_name}"


def sched_pending(queue_name: str, principal: str) -> str:
    """List of the principal's run ids waiting for a slot, oldest first."""
    return f"{sched_prefix(queue_name)}:pending:{principal}"


def sched_reserved(queue_name: str, principal: str) -> str:
    """Sorted set: run ids admitted but not yet pending, scored by reservation expiry (epoch ms)."""
    return f"{sched_prefix(queue_name)}:reserved:{principal}"


def sched_submissions(queue_name: str, principal: str) -> str:
    """Sorted set: run ids submitted in the rate window, scored by submission time (epoch ms)."""
    return f"{sched_prefix(queue_name)}:subs:{principal}"


def sched_key(queue_name: str, name: str) -> str:
    """The queue-wide scheduler structures (one comment each in docs/scheduling.md):
    `ring` zset principal -> turn last served (principals with pending runs only);
    `served` hash principal -> turn last served; `turn` counter;
    `inflight` zset run id -> slot hold deadline (epoch ms), dispatched and not finished;
    `owner` hash run id -> principal (pending or in flight); `hold` hash run id -> hold ms;
    `running` hash principal -> runs in flight; `limits` hash principal -> concurrent-run limit
    (0 = none); `gap` hash principal -> smoothed ms between the principal's dispatches;
    `last` hash principal -> epoch ms of its last dispatch;
    `workers` zset worker name -> advertisement expiry (epoch ms); `slots` hash worker -> slots."""
    if name not in SCHED_KEYS:
        raise ValueError(f"no scheduler key {name!r}")
    return f"{sched_prefix(queue_name)}:{name}"


SCHED_KEYS = frozenset(
    ("ring", "served", "turn", "inflight", "owner", "hold", "running", "limits", "gap", "last", "workers", "slots")
)
