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


def run_cancel(run_id: str) -> str:
    """Set when someone asks to cancel the run; value is the requester's reason."""
    return f"{PREFIX}:run:{{{validate_run_id(run_id)}}}:cancel"
