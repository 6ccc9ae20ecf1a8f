"""`livestats token create|revoke|list`: API tokens, in Redis (live: the gateway reads them per
request, so a revoke takes effect at once, browser sessions included) or in a file (`--file`,
LIVESTATS_GATEWAY_TOKENS_FILE: a running gateway re-reads it when it changes, so a revoke takes
effect within its re-check interval). A token is printed once, at creation; only its SHA-256 is
kept. `--expires-in 30d` gives it an expiry; `list` shows expiries and last-used times (kept in
Redis for every token, file tokens included).

The gateway's LIVESTATS_GATEWAY_ADMIN_TOKEN (id `settings`) cannot be revoked from here: a
running process cannot see its environment change. `revoke settings` refuses and says how."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import orjson
from livestats_shared.auth import (
    SETTINGS_TOKEN_ID,
    InvalidTokenFile,
    Scope,
    TokenRecord,
    TokenStore,
    load_token_file,
    new_token,
    save_token_file,
)
from redis.asyncio import Redis

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EXIT_REFUSED = 2
SETTINGS_REFUSAL = (
    f"error: token `{SETTINGS_TOKEN_ID}` is the gateway's LIVESTATS_GATEWAY_ADMIN_TOKEN, which a running gateway "
    "read once at start and cannot see change. To revoke or rotate it, change (or unset) the variable and restart "
    "every gateway; its browser sessions end then. For an admin token you can revoke at run time, use "
    "`livestats token create NAME --scope admin` (Redis) or `--file` instead."
)


def duration_s(text: str) -> float:
    """`90s`, `15m`, `12h`, `30d` in seconds (argparse type: a bad value is a usage error)."""
    match = re.fullmatch(r"([1-9][0-9]{0,8})([smhd])", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 12h or 30d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("token", help="create, revoke and list API tokens")
    verbs = p.add_subparsers(dest="verb", required=True)
    c = verbs.add_parser("create", help="create a token for a principal and print it (once)")
    c.add_argument("principal", help="who the token speaks for (a-z, 0-9, '.', '_', '-')")
    c.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        required=True,
        help="read: see own/team runs; submit: also start and cancel them; admin: everything (repeatable)",
    )
    c.add_argument("--team", action="append", default=[], help="also see runs shared with this team (repeatable)")
    c.add_argument("--note", default="", help="a reminder of what the token is for")
    c.add_argument(
        "--expires-in",
        type=duration_s,
        metavar="DURATION",
        help="refuse the token after this long (90s, 15m, 12h, 30d); default: valid until revoked",
    )
    r = verbs.add_parser("revoke", help="revoke a token by its id (the 12 hex characters after `lsk_`)")
    r.add_argument("token_id")
    verbs.add_parser("list", help="list tokens (ids and principals; never the tokens)")
    for verb in (c, r, verbs.choices["list"]):
        verb.add_argument("--file", type=Path, help="a token file instead of Redis")
        verb.add_argument("--json", action="store_true", help="print machine-readable output")


def needs_redis(args: argparse.Namespace) -> bool:
    # `list --file` too: last-used times are kept in Redis, for file tokens as well.
    return args.file is None or args.verb == "list"


def run_on_file(args: argparse.Namespace) -> int:
    """The verbs against a token file. Returns an exit code."""
    records = load_token_file(args.file)
    if args.verb == "create":
        record, token = new_token(args.principal, args.scope, args.team, args.note, expires_in_s=args.expires_in)
        save_token_file(args.file, [*records, record])
        return _created(args, record, token)
    if args.verb == "revoke":
        if args.token_id == SETTINGS_TOKEN_ID:
            print(SETTINGS_REFUSAL, file=sys.stderr)
            return EXIT_REFUSED
        kept = [r for r in records if r.id != args.token_id]
        save_token_file(args.file, kept)
        return _revoked(args, len(kept) < len(records))
    raise ValueError(f"token {args.verb} --file needs Redis")  # needs_redis sent it there


async def run_on_redis(redis: Redis, args: argparse.Namespace) -> int:
    store = TokenStore(redis)
    if args.verb == "create":
        record, token = await store.create(
            args.principal, args.scope, args.team, args.note, expires_in_s=args.expires_in
        )
        return _created(args, record, token)
    if args.verb == "revoke":
        if args.token_id == SETTINGS_TOKEN_ID:
            print(SETTINGS_REFUSAL, file=sys.stderr)
            return EXIT_REFUSED
        return _revoked(args, await store.revoke(args.token_id))
    try:
        records = load_token_file(args.file) if args.file is not None else await store.list()
    except (OSError, InvalidTokenFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return _listed(args, records, await store.last_used())


def _created(args: argparse.Namespace, record: TokenRecord, token: str) -> int:
    if args.json:
        print(orjson.dumps({"token": token, **_public(record)}).decode())
    else:
        print(token)
        print(
            f"(token {record.id} for {record.principal}, scopes {','.join(sorted(record.scopes))}; "
            "shown once, keep it secret)",
            file=sys.stderr,
        )
    return 0


def _revoked(args: argparse.Namespace, existed: bool) -> int:
    if args.json:
        print(orjson.dumps({"token_id": args.token_id, "revoked": existed}).decode())
    elif existed:
        print(f"revoked {args.token_id}")
    else:
        print(f"error: no token {args.token_id}", file=sys.stderr)
    return 0 if existed else 3


def _listed(args: argparse.Namespace, records: list[TokenRecord], last_used: dict[str, int]) -> int:
    if args.json:
        print(orjson.dumps([{**_public(r), "last_used_ms": last_used.get(r.id)} for r in records]).decode())
        return 0
    now_ms = int(time.time() * 1000)
    for r in records:
        teams = f" teams {','.join(sorted(r.teams))}" if r.teams else ""
        used = last_used.get(r.id)
        when = "never used" if used is None else f"used {_ago(now_ms - used)} ago"
        expiry = "" if r.expires_ms is None else f", expire{'d' if r.expires_ms <= now_ms else 's'} {_at(r.expires_ms)}"
        print(f"{r.id}  {r.principal:<20} {','.join(sorted(r.scopes)):<18}{teams}  {when}{expiry}  {r.note}")
    return 0


def _ago(ms: int) -> str:
    seconds = max(0, ms // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _at(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch_ms / 1000))


def _public(record: TokenRecord) -> dict[str, object]:
    return record.model_dump(mode="json", exclude={"digest"})
