"""`livestats migrate [--dry-run] [--force]`: bring a database to key layout 2 in place
(docs/keys.md, "Migration"), from layout 1 or from layout 2 with another partition count.

In order:
1. Refuse (unless `--force`) while anything could still write the old names: a run whose
   worker still heartbeats, a worker advertising slots on the queue, or a livestats worker or
   gateway connected to the telemetry server (CLIENT LIST names every livestats connection).
2. Mark the layout record `migrating`: every process refuses to start until the end.
3. RENAMENX every per-run key to its layout 2 name under LIVESTATS_PARTITIONS, and every
   layout 1 auth key to its `{auth}` name. A key keeps its TTL. A new name already taken is
   never overwritten: the key is reported and the record is left unwritten.
4. Write the record last (version 2, P): processes may start again.
Re-running after an interruption finishes the work: a renamed key is not found under its old
name again. A run of it on a migrated database changes nothing. RENAME needs both names on one
server: migrate a Cluster's database before resharding it, or re-partition a single server.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from livestats_shared import keys, layout
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import validate_run_id
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .config import CliConfig
from .exit_codes import EXIT_ERROR, EXIT_OK
from .queue_client import queue_client

_BATCH = 500  # keys renamed per pipeline
# A run counts as live if its last heartbeat is as recent as the gateway's stall rule allows:
# two of its heartbeat intervals plus the gateway's default margin (GatewayConfig.stall_margin_s).
_STALL_MARGIN_S = 3.0
_DEFAULT_HEARTBEAT_S = 5.0  # GatewayConfig.default_run_heartbeat_s, for runs that state none
_WRITERS = ("livestats.worker", "livestats.gateway")  # client names of processes that write keys


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "migrate", help="upgrade the database to this version's key layout (stop workers and gateways first)"
    )
    s.add_argument("--dry-run", action="store_true", help="say what would be renamed; change nothing")
    s.add_argument("--force", action="store_true", help="migrate even while workers or gateways seem to be running")


@dataclass
class Tally:
    runs: set[str] = field(default_factory=set)
    run_keys: int = 0  # renamed (or, dry run, to rename)
    auth_keys: int = 0
    vanished: int = 0  # gone between SCAN and RENAME (expired)
    unrecognised: list[str] = field(default_factory=list)  # under livestats:run:* but not a run key
    conflicts: list[str] = field(default_factory=list)  # old name -> taken new name


async def run(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    return await migrate(redis, config, dry_run=args.dry_run, force=args.force)


async def migrate(
    redis: Redis, config: CliConfig, *, dry_run: bool, force: bool, say: Callable[[str], None] = print
) -> int:
    """The command; also what `livestats up` runs on its own embedded server. Raises
    layout.UnknownLayout for a database of a layout this version does not know."""
    partitions = keys.partitions()
    record = await layout.read_record(redis)
    if record and "migrating" not in record and record.get("version") != str(keys.LAYOUT_VERSION):
        raise layout.UnknownLayout(record.get("version", ""))
    if not force:
        reasons = await _live_writers(redis, config, record, say)
        if reasons:
            say("\n".join(("refused: something may still write the old key names:", *(f"  {r}" for r in reasons))))
            say("stop every worker and gateway (or wait for their runs to end); --force if they are gone")
            return EXIT_ERROR
    done_before = _recorded(record, partitions)
    if not dry_run and not done_before:
        await redis.hset(keys.LAYOUT, "migrating", str(partitions))  # type: ignore[misc]
    tally = await _move(redis, dry_run=dry_run)
    verb = "would rename" if dry_run else "renamed"
    say(f"{verb} {tally.run_keys} keys of {len(tally.runs)} runs and {tally.auth_keys} auth keys")
    for key in tally.unrecognised[:10]:
        say(f"  left as it is (not a run's key): {key}")
    if tally.vanished:
        say(f"  {tally.vanished} keys expired before they could be renamed")
    if tally.conflicts:
        say(f"not finished: {len(tally.conflicts)} keys have a new name that is already taken (nothing overwritten):")
        for line in tally.conflicts[:20]:
            say(f"  {line}")
        say("remove or rename the keys in the way, then run `livestats migrate` again")
        return EXIT_ERROR
    target = f"layout {keys.LAYOUT_VERSION} with {partitions} partitions"
    if dry_run:
        say(f"dry run: nothing changed; the database would then be recorded as {target}")
        return EXIT_OK
    if done_before and not tally.run_keys and not tally.auth_keys:
        say(f"the database already uses {target}: nothing to do")
        return EXIT_OK
    async with redis.pipeline(transaction=True) as pipe:  # one key: one slot
        pipe.hset(keys.LAYOUT, mapping={"version": keys.LAYOUT_VERSION, "partitions": partitions})
        pipe.hdel(keys.LAYOUT, "migrating")
        await pipe.execute()
    say(f"the database now uses {target}; workers and gateways can start")
    return EXIT_OK


def _recorded(record: dict[str, str], partitions: int) -> bool:
    """The record says the migration to `partitions` is done."""
    try:
        return layout.check(record, partitions) is not None
    except layout.LayoutError:
        return False


async def _move(redis: Redis, *, dry_run: bool) -> Tally:
    tally = Tally()
    async for batch in _batches(redis, tally):
        if dry_run:
            async with redis.pipeline(transaction=False) as pipe:
                for _, new in batch:
                    pipe.exists(new)
                taken = await pipe.execute()
            tally.conflicts += [f"{old} -> {new}" for (old, new), t in zip(batch, taken, strict=True) if t]
            _count(tally, [old for (old, _), t in zip(batch, taken, strict=True) if not t])
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for old, new in batch:
                pipe.renamenx(old, new)
            results = await pipe.execute(raise_on_error=False)
        renamed = []
        for (old, new), result in zip(batch, results, strict=True):
            if isinstance(result, ResponseError):
                if "no such key" not in str(result).lower():
                    raise result
                tally.vanished += 1  # expired since SCAN saw it (or another migrate took it)
            elif result:
                renamed.append(old)
            else:
                tally.conflicts.append(f"{old} -> {new}")
        _count(tally, renamed)
    return tally


def _count(tally: Tally, old_names: list[str]) -> None:
    for old in old_names:
        parsed = keys.parse_run_key(old)
        if parsed is None:
            tally.auth_keys += 1
        else:
            tally.run_keys += 1
            tally.runs.add(parsed[0])


async def _batches(redis: Redis, tally: Tally) -> AsyncIterator[list[tuple[str, str]]]:
    """(old name, new name) of every key not under its layout 2 name, a batch at a time. Keys
    renamed meanwhile may be listed again by SCAN under their new names: they are in place."""
    batch: list[tuple[str, str]] = []
    for pattern in (keys.RUN_KEYS_PATTERN, keys.LEGACY_AUTH_PATTERN):
        async for raw in redis.scan_iter(match=pattern, count=1000):
            old = raw.decode(errors="replace")
            new = _new_name(old)
            if new is None:
                tally.unrecognised.append(old)
            elif new != old:
                batch.append((old, new))
            if len(batch) >= _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _new_name(old: str) -> str | None:
    parsed = keys.parse_run_key(old)
    if parsed is not None:
        run_id, kind = parsed
        return keys.run_keys(run_id)[kind]
    return keys.auth_key_from_legacy(old)


async def _live_writers(
    redis: Redis, config: CliConfig, record: dict[str, str], say: Callable[[str], None]
) -> list[str]:
    """Why it is not safe to rename now (empty: safe)."""
    reasons = await _heartbeating_runs(redis, record)
    async with queue_client(redis, config) as queue:
        now_ms = int(time.time() * 1000)
        workers = await queue.zrangebyscore(keys.sched_key(config.queue_name, "workers"), now_ms, "+inf")
    reasons += [f"worker {w.decode(errors='replace')} advertises slots on queue {config.queue_name}" for w in workers]
    try:
        clients = await redis.client_list()
    except ResponseError as exc:  # an ACL without CLIENT LIST: the other checks stand
        say(f"note: connected clients not checked ({exc})")
        return reasons
    for client in clients:
        name = client.get("name", "")
        if name.startswith(_WRITERS):
            reasons.append(f"{name} is connected from {client.get('addr', '?')}")
    return reasons


async def _heartbeating_runs(redis: Redis, record: dict[str, str]) -> list[str]:
    """Active runs whose worker still heartbeats, whatever layout their stats hash is under."""
    members = await redis.zrange(keys.RUNS_ACTIVE, 0, -1)
    run_ids = [validate_run_id(m.decode()) for m in members if _is_run_id(m)]
    counts = {keys.partitions()}
    if record.get("partitions", "").isdigit():
        counts.add(int(record["partitions"]))
    live: list[str] = []
    now_ms = int(time.time() * 1000)
    for run_id in run_ids:
        names = [keys.legacy_run_key(run_id, "stats"), *(keys.run_key_under(run_id, "stats", p) for p in counts)]
        for name in names:
            values = await cast(
                Awaitable[list[bytes | None]],
                redis.hmget(name, ["status", "heartbeat_ts", "started_ts", "heartbeat_s"]),
            )
            if values[0] is None:
                continue
            heartbeat_ts, started_ts, heartbeat_s = (_number(v) for v in values[1:])
            last = max(heartbeat_ts or 0, started_ts or 0)
            allowed_ms = (2 * (heartbeat_s or _DEFAULT_HEARTBEAT_S) + _STALL_MARGIN_S) * 1000
            if values[0] == b"running" and now_ms - last <= allowed_ms:
                live.append(f"run {run_id} is running and its worker heartbeated {(now_ms - last) / 1000:.1f} s ago")
            break
    return live


def _number(raw: bytes | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None  # not written by livestats: no sign of life


def _is_run_id(member: bytes) -> bool:
    try:
        validate_run_id(member.decode(errors="replace"))
    except InvalidRunId:
        return False
    return True
