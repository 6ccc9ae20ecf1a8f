"""Every Redis key, stream name, cap and TTL livestats uses. Nobody formats a key elsewhere.

Key layout 2 (docs/keys.md). Per-run keys carry their run's *partition* as the Redis Cluster
hash tag, `livestats:run:{p<N>}:<run_id>:<kind>`, N = crc32(run_id) % LIVESTATS_PARTITIONS: the
publish script touches the stream, stats and lifecycle hashes of one run together (one slot),
and a gateway reading many runs' streams on a Cluster needs at most one blocking read per
partition instead of one per run. Auth keys share the tag `{auth}`, so the transactions that
write a session and its token's session set stay on one slot. The layout is recorded in Redis
at `LAYOUT` (layout.py); `livestats migrate` renames layout 1 keys (the `LEGACY_*` names below).
"""

from __future__ import annotations

import functools
import os
import re
import zlib

from .ids import validate_run_id

PREFIX = "livestats"

# -- Key layout (docs/keys.md) ----------------------------------------------------------------
# Hash: `version` (LAYOUT_VERSION), `partitions` (P); while `livestats migrate` works, also
# `migrating` (the partition count it moves to), which every process refuses to start on.
LAYOUT = f"{PREFIX}:layout"
LAYOUT_VERSION = 2
PARTITIONS_ENV = "LIVESTATS_PARTITIONS"
PARTITIONS_DEFAULT = 16  # partitions: a Cluster gateway's reader holds at most this many groups
PARTITIONS_MAX = 16_384  # partitions: a Cluster has this many hash slots, more cannot spread further


@functools.cache
def partitions() -> int:
    """P, the number of run partitions: `LIVESTATS_PARTITIONS`, read once per process (every
    process on one database must agree; layout.ensure checks it against the recorded P)."""
    raw = os.environ.get(PARTITIONS_ENV, "").strip()
    if not raw:
        return PARTITIONS_DEFAULT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= PARTITIONS_MAX:
        raise ValueError(f"{PARTITIONS_ENV} must be a whole number from 1 to {PARTITIONS_MAX}, not {raw[:40]!r}")
    return value


def partition_of(run_id: str) -> int:
    """The run's partition: crc32 of its id (UTF-8; ids are ASCII) modulo P."""
    return zlib.crc32(validate_run_id(run_id).encode()) % partitions()


def partition_tag(partition: int) -> str:
    """The Cluster hash tag of partition `partition`: every per-run key of its runs holds it."""
    return f"{{p{partition}}}"


@functools.lru_cache(maxsize=4096)  # every chunk of a run formats the same names
def _run_base(run_id: str) -> str:
    rid = validate_run_id(run_id)
    return f"{PREFIX}:run:{partition_tag(partition_of(rid))}:{rid}"


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

# Every auth key starts with AUTH_PREFIX: one hash tag, so a session and its token's session set
# are written in one MULTI/EXEC on a Cluster too.
AUTH_PREFIX = f"{PREFIX}:{{auth}}"

# API tokens: hash of token id -> JSON TokenRecord (principal, scopes, SHA-256 of the token;
# never the token). Written by `livestats token create|revoke`, read by the gateway per request.
AUTH_TOKENS = f"{AUTH_PREFIX}:tokens"

# When each token was last used: hash of token id -> epoch ms. Each gateway process writes a
# token's entry at most once a minute (TOKEN_LAST_USED_EVERY_S), not per request.
AUTH_TOKENS_LAST_USED = f"{AUTH_PREFIX}:tokens:last-used"
TOKEN_LAST_USED_EVERY_S = 60  # seconds

# Browser sessions (gateway `POST /api/session`). Keyed by SHA-256 of the session id, so nothing
# in Redis is a usable cookie. A hash: token_id, token_digest, principal, created_ms, expires_ms;
# its TTL is the idle expiry, renewed on use, never past `expires_ms` (the absolute expiry).
AUTH_SESSION_PREFIX = f"{AUTH_PREFIX}:session:"
# A session renews its idle TTL at most this often per gateway process.
SESSION_TOUCH_EVERY_S = 60  # seconds


def auth_session(session_digest: str) -> str:
    """Hash of one browser session (see AUTH_SESSION_PREFIX)."""
    return AUTH_SESSION_PREFIX + _auth_id(session_digest)


def auth_token_sessions(token_id: str) -> str:
    """Set of the session digests opened with token `token_id`: revoking the token deletes them.
    Expires with the longest session in it."""
    return f"{AUTH_PREFIX}:token:{_auth_id(token_id)}:sessions"


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
    return f"{_run_base(run_id)}:events"


def run_stats(run_id: str) -> str:
    """Hash with the run's live snapshot, updated in the same script as the stream."""
    return f"{_run_base(run_id)}:stats"


def run_lifecycle(run_id: str) -> str:
    """Hash with the run's lifecycle state (owner epoch, open calls and phases), written only by
    the publish script and checked by it before every write (publish/gate.py has the layout)."""
    return f"{_run_base(run_id)}:lifecycle"


def run_cancel(run_id: str) -> str:
    """Set when someone asks to cancel the run; value is the requester's reason."""
    return f"{_run_base(run_id)}:cancel"


RUN_KEY_KINDS = ("events", "stats", "lifecycle", "cancel")  # every per-run key, by its last part


def run_keys(run_id: str) -> dict[str, str]:
    """Every key of one run by kind (`livestats keys RUN_ID`, the migration)."""
    base = _run_base(run_id)
    return {kind: f"{base}:{kind}" for kind in RUN_KEY_KINDS}


def run_key_under(run_id: str, kind: str, partitions: int) -> str:
    """A run's key as a database laid out with another partition count names it (the
    migration reads a database before re-partitioning it)."""
    if kind not in RUN_KEY_KINDS:
        raise ValueError(f"no per-run key {kind!r}")
    rid = validate_run_id(run_id)
    return f"{PREFIX}:run:{partition_tag(zlib.crc32(rid.encode()) % partitions)}:{rid}:{kind}"


# The per-run key names `livestats migrate` looks for: layout 1 (`{<run_id>}` as the tag) and
# layout 2 under any partition count (re-partitioning). Run ids hold no ':', '{' or '}'.
RUN_KEYS_PATTERN = f"{PREFIX}:run:*"  # SCAN MATCH
_ID = r"[a-z0-9][a-z0-9_-]{0,63}"  # ids.validate_run_id's pattern
_RUN_KEY = re.compile(
    PREFIX + r":run:(?:\{(?P<v1>" + _ID + r")\}|\{p(?P<p>[0-9]{1,5})\}:(?P<v2>" + _ID + r"))"
    r":(?P<kind>" + "|".join(RUN_KEY_KINDS) + r")"
)


def parse_run_key(key: str) -> tuple[str, str] | None:
    """(run id, kind) of a per-run key of layout 1 or 2, or None for any other name."""
    found = _RUN_KEY.fullmatch(key)
    if found is None:
        return None
    return found["v1"] or found["v2"], found["kind"]


# -- Layout 1 (before the partitions), for `livestats migrate` only -----------------------------
# Per-run keys were tagged with the run id: `livestats:run:{<run_id>}:<kind>`.
LEGACY_AUTH_PREFIX = f"{PREFIX}:auth"  # auth keys had no hash tag: `livestats:auth:...`
LEGACY_AUTH_PATTERN = f"{LEGACY_AUTH_PREFIX}:*"  # SCAN MATCH
LEGACY_AUTH_TOKENS = f"{LEGACY_AUTH_PREFIX}:tokens"
LEGACY_AUTH_TOKENS_LAST_USED = f"{LEGACY_AUTH_PREFIX}:tokens:last-used"


def legacy_run_key(run_id: str, kind: str) -> str:
    """A run's key in layout 1."""
    if kind not in RUN_KEY_KINDS:
        raise ValueError(f"no per-run key {kind!r}")
    return f"{PREFIX}:run:{{{validate_run_id(run_id)}}}:{kind}"


def auth_key_from_legacy(key: str) -> str | None:
    """The layout 2 name of a layout 1 auth key (same suffix, under AUTH_PREFIX), or None."""
    if not key.startswith(LEGACY_AUTH_PREFIX + ":"):
        return None
    return AUTH_PREFIX + key[len(LEGACY_AUTH_PREFIX) :]


# Keys only layout 1 wrote (every token use wrote the last-used hash). A database without a
# layout record is also layout 1 if a recent run in the index, feed or active set has its keys
# under `legacy_run_key` names (layout.legacy_marker looks): the index and feed kept their names.
LEGACY_MARKERS = (LEGACY_AUTH_TOKENS, LEGACY_AUTH_TOKENS_LAST_USED)


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
