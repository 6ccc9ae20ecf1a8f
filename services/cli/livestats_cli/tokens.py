"""`livestats token create|revoke|list`: API tokens, in Redis (live: the gateway reads them per
request, so a revoke takes effect at once) or in a file (`--file`, read when a gateway starts
with LIVESTATS_GATEWAY_TOKENS_FILE). A token is printed once, at creation; only its SHA-256 is
kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
from livestats_shared.auth import Scope, TokenRecord, TokenStore, load_token_file, new_token, save_token_file
from redis.asyncio import Redis


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
    r = verbs.add_parser("revoke", help="revoke a token by its id (the 12 hex characters after `lsk_`)")
    r.add_argument("token_id")
    verbs.add_parser("list", help="list tokens (ids and principals; never the tokens)")
    for verb in (c, r, verbs.choices["list"]):
        verb.add_argument("--file", type=Path, help="a token file instead of Redis")
        verb.add_argument("--json", action="store_true", help="print machine-readable output")


def needs_redis(args: argparse.Namespace) -> bool:
    return args.file is None


def run_on_file(args: argparse.Namespace) -> int:
    """The verbs against a token file. Returns an exit code."""
    records = load_token_file(args.file)
    if args.verb == "create":
        record, token = new_token(args.principal, args.scope, args.team, args.note)
        save_token_file(args.file, [*records, record])
        return _created(args, record, token)
    if args.verb == "revoke":
        kept = [r for r in records if r.id != args.token_id]
        save_token_file(args.file, kept)
        return _revoked(args, len(kept) < len(records))
    return _listed(args, records)


async def run_on_redis(redis: Redis, args: argparse.Namespace) -> int:
    store = TokenStore(redis)
    if args.verb == "create":
        record, token = await store.create(args.principal, args.scope, args.team, args.note)
        return _created(args, record, token)
    if args.verb == "revoke":
        return _revoked(args, await store.revoke(args.token_id))
    return _listed(args, await store.list())


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


def _listed(args: argparse.Namespace, records: list[TokenRecord]) -> int:
    if args.json:
        print(orjson.dumps([_public(r) for r in records]).decode())
    for r in [] if args.json else records:
        teams = f" teams {','.join(sorted(r.teams))}" if r.teams else ""
        print(f"{r.id}  {r.principal:<20} {','.join(sorted(r.scopes)):<18}{teams}  {r.note}")
    return 0


def _public(record: TokenRecord) -> dict[str, object]:
    return record.model_dump(mode="json", exclude={"digest"})
