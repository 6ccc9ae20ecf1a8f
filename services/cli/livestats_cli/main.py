"""The `livestats` command line.

Exit codes scripts can rely on (exit_codes.py):
    0  success (for `submit --wait` and `tail`: the run succeeded)
    1  the run ended but not `succeeded` (submit --wait, tail), or a service refused (watch)
    2  bad input: invalid spec, invalid run id, bad arguments (argparse's own usage errors too)
    3  no such run
    4  Redis unavailable
    5  the database's key layout is not this version's (run `livestats migrate`; docs/keys.md)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import orjson
from livestats_shared.auth import InvalidTokenFile
from livestats_shared.control import UnknownRun, cancel_run, submit_run
from livestats_shared.errors import InvalidRunId, PublishError
from livestats_shared.fpf_env import SpecEnvRefused, check_spec_env
from livestats_shared.history import iter_events, read_snapshot
from livestats_shared.ids import validate_run_id
from livestats_shared.layout import LayoutError, ensure
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import UNAVAILABLE, connect
from livestats_shared.sched import Scheduler
from livestats_shared.spec import RunSpec
from pydantic import ValidationError
from redis.asyncio import Redis

from . import analysis, export, keynames, migrate, remote, replay, report, runs, status_view, tail, tokens, watch
from .config import CliConfig
from .exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_LAYOUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_UNAVAILABLE,
)
from .follow import ProgressView, follow, report_invalid
from .gateway_client import GatewayClient, GatewayError, page_url
from .queue_client import queue_client
from .up import demo_spec, up

_UNREACHABLE: tuple[type[Exception], ...] = (*UNAVAILABLE, PublishError)
Handler = Callable[[Redis, CliConfig, argparse.Namespace], Awaitable[int]]


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one readable line on stderr and exit code 2 (argparse's usage block
    would bury the one line that matters)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    # Typed as the base class (the command modules take any parser); its subparsers are _Parser too.
    p: argparse.ArgumentParser = _Parser(prog="livestats", description="Real-time telemetry for LLM pipeline runs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", help="start server (embedded unless REDIS_URL), worker and a demo run")
    s.add_argument("--no-demo", action="store_true", help="start the stack without submitting the demo run")
    s.add_argument("--spec", help="submit this run spec instead of the bundled demo")
    s.add_argument(
        "--demo-failing", action="store_true", help="submit a demo run that fails (its retry budget runs out)"
    )
    s.add_argument("--exit-after-run", action="store_true", help="stop everything once the submitted run ends")
    s.add_argument(
        "--prometheus", action="store_true", help="also run Prometheus (the `prometheus` binary) scraping the stack"
    )

    sub.add_parser("worker", help="run one worker process (like `livestats-worker`)")
    s = sub.add_parser("gateway", help="run the gateway: WebSocket/SSE fan-out and REST API (like `livestats-gateway`)")
    # Passed on to the gateway program, which checks them (the CLI does not import services).
    s.add_argument(
        "--processes",
        metavar="N",
        help="processes sharing the port, under a supervisor that restarts one that dies "
        "(env LIVESTATS_GATEWAY_PROCESSES; default: one per usable core)",
    )
    s.add_argument(
        "--metrics-port-base",
        metavar="PORT",
        help="process i also serves /metrics, /readyz and /healthz on PORT+i (env LIVESTATS_GATEWAY_METRICS_PORT_BASE)",
    )

    s = sub.add_parser("submit", help="submit a run spec (JSON file, or - for stdin)")
    s.add_argument("spec", help="path to a run spec JSON file, or -")
    s.add_argument("--run-id", help="use this run id instead of a generated one")
    s.add_argument("--wait", action="store_true", help="follow the run and exit with its outcome")
    s.add_argument("--json", action="store_true", help="print machine-readable output")

    s = sub.add_parser("status", help="a run's current snapshot")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("events", help="a run's events as NDJSON")
    s.add_argument("run_id")
    s.add_argument("--follow", "-f", action="store_true", help="keep printing live events until the run ends")
    s.add_argument("--after", default="0-0", help="start after this stream id")

    s = sub.add_parser("cancel", help="cancel a queued or running run")
    s.add_argument("run_id")
    s.add_argument("--reason", default="cancelled from the command line")
    s.add_argument("--json", action="store_true", help="print {run_id, status}")

    runs.add_parser(sub)
    tail.add_parser(sub)
    watch.add_parser(sub)
    tokens.add_parser(sub)
    for command in (report, export, replay, keynames, migrate):
        command.add_parser(sub)
    # The same connection flags wherever they apply (they override LIVESTATS_* variables).
    for name, parser in sub.choices.items():
        if name in remote.COMMANDS or name == "watch":
            parser.add_argument("--gateway", help="through this gateway, not Redis (env LIVESTATS_GATEWAY_URL)")
            parser.add_argument("--token", help="bearer token for the gateway (env LIVESTATS_TOKEN)")
        if name == "report":
            parser.add_argument(
                "--gateway", help="--models/--calibrate/--runs through this gateway (env LIVESTATS_GATEWAY_URL)"
            )
            parser.add_argument("--token", help="bearer token for the gateway (env LIVESTATS_TOKEN)")
        if name not in ("worker", "gateway", "token", "watch"):
            parser.add_argument("--redis-url", help="Redis to use (env LIVESTATS_REDIS_URL or REDIS_URL)")
    return p


def _gateway_flags(args: argparse.Namespace) -> list[str]:
    flags = {"--processes": args.processes, "--metrics-port-base": args.metrics_port_base}
    return [part for flag, value in flags.items() if value is not None for part in (flag, value)]


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:
        # `livestats export ID | head -1`: the reader has what it wanted. Quiet, with the
        # shell's code for "killed by SIGPIPE"; stdout goes to /dev/null so that Python's own
        # flush at exit does not complain about the closed pipe either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(EXIT_BROKEN_PIPE)


def _main(argv: list[str] | None) -> None:
    args = _parser().parse_args(argv)
    flags = {"redis_url": "redis_url", "gateway_url": "gateway", "token": "token"}
    config = CliConfig(**{k: getattr(args, a) for k, a in flags.items() if getattr(args, a, None) is not None})
    if args.command in ("worker", "gateway"):
        # A separate service: run it as its own program rather than importing it.
        extra = [] if args.command == "worker" else _gateway_flags(args)
        os.execv(sys.executable, [sys.executable, "-m", f"livestats_{args.command}", *extra])
    if args.command == "up":
        try:
            spec = (
                None
                if args.no_demo
                else RunSpec.model_validate_json(Path(args.spec).read_text())
                if args.spec
                else demo_spec(failing=args.demo_failing)
            )
        except UnicodeDecodeError as exc:
            print(
                f"error: spec {args.spec} is not UTF-8 text: byte {exc.start} is {exc.object[exc.start]:#04x}",
                file=sys.stderr,
            )
            sys.exit(EXIT_BAD_INPUT)
        except (OSError, ValidationError) as exc:
            print(f"error: cannot use spec {args.spec}: {_one_line(exc)}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        sys.exit(asyncio.run(up(config, spec=spec, exit_after_run=args.exit_after_run, prometheus=args.prometheus)))
    if args.command == "watch":
        sys.exit(asyncio.run(watch.run(config, args)))
    if args.command == "token" and not tokens.needs_redis(args):
        try:
            sys.exit(tokens.run_on_file(args))
        except (OSError, InvalidTokenFile, ValidationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    if args.command == "report" and not analysis.wanted(args):
        if args.estimation is None:
            print("error: report needs --estimation FILE, or --models, --calibrate or --runs", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        sys.exit(report.run(args))  # a file in, a report out: no Redis
    if args.command == "report" and config.gateway_url is not None:
        sys.exit(asyncio.run(_report_through_gateway(config, args)))
    if args.command == "submit":
        try:
            raw = sys.stdin.buffer.read() if args.spec == "-" else Path(args.spec).read_bytes()
            args.spec_text = raw.decode("utf-8")
        except OSError as exc:
            print(f"error: cannot read spec: {exc}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except UnicodeDecodeError as exc:
            where = "stdin" if args.spec == "-" else args.spec
            print(f"error: spec {where} is not UTF-8 text: byte {exc.start} is {raw[exc.start]:#04x}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        if args.run_id is not None and config.gateway_url is not None:
            # The gateway names every run it creates; a chosen id would be silently dropped.
            print("error: --run-id cannot be used with a gateway, which chooses the run id itself", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    if config.gateway_url is not None and args.command in remote.COMMANDS:
        sys.exit(asyncio.run(remote.run(config, args)))
    handlers: dict[str, Handler] = {
        "submit": _submit,
        "status": _status,
        "events": _events,
        "cancel": _cancel,
        "runs": runs.run,
        "tail": tail.run,
        "token": lambda redis, _config, args: tokens.run_on_redis(redis, args),
        "export": export.run,
        "replay": replay.run,
        "report": analysis.on_redis,
        "keys": keynames.run,
        "migrate": migrate.run,
    }
    # `migrate` reads whatever layout the database has; every other command checks it first.
    check = args.command != "migrate"
    sys.exit(asyncio.run(_with_redis(handlers[args.command], config, args, check_layout=check)))


async def _report_through_gateway(config: CliConfig, args: argparse.Namespace) -> int:
    async with GatewayClient(config.gateway_url, config.token) as gateway:
        try:
            return await analysis.through_gateway(gateway, args)
        except GatewayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE if exc.status is None or exc.status >= 500 else EXIT_BAD_INPUT
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT


async def _with_redis(
    handler: Callable[[Redis, CliConfig, argparse.Namespace], Awaitable[int]],
    config: CliConfig,
    args: argparse.Namespace,
    *,
    check_layout: bool = True,
) -> int:
    redis = connect(config.url, "livestats.cli")
    try:
        if check_layout:
            await ensure(redis)  # names this process would use must be the database's
        return await handler(redis, config, args)
    except LayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LAYOUT
    except (InvalidRunId, ValidationError, SpecEnvRefused, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        raise  # our reader went away (an OSError, but not Redis's): main() ends quietly
    except UnknownRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except _UNREACHABLE as exc:
        print(f"error: Redis unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        await redis.aclose()


def _one_line(exc: Exception) -> str:
    """An error as one line: a ValidationError names each field at fault, without its URL."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


async def _submit(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    spec = RunSpec.model_validate_json(args.spec_text)
    check_spec_env(spec.phases, config.spec_env_allow)  # the operator's rule, as the gateway applies it
    async with Publisher(redis, replica_ack=config.replica_ack()) as publisher, queue_client(redis, config) as queue:
        run_id = await submit_run(redis, publisher, spec, queue=queue, run_id=args.run_id, queue_name=config.queue_name)
    page = page_url(config, run_id)
    print(orjson.dumps({"run_id": run_id, "page": page}).decode() if args.json else f"submitted run {run_id}\n  {page}")
    if not args.wait:
        return EXIT_OK
    view = ProgressView(run_id, sys.stderr if args.json else sys.stdout)
    async for event in follow(redis, run_id):
        view.update(event)
    view.close()
    outcome = view.snapshot().outcome
    if args.json:
        print(view.snapshot().model_dump_json())
    return EXIT_OK if outcome == "succeeded" else EXIT_RUN_FAILED


async def _status(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    snap = await read_snapshot(redis, validate_run_id(args.run_id))
    if snap is None:
        raise UnknownRun(args.run_id)
    status_view.show(snap, as_json=args.json)
    if not args.json and snap.status == "queued":
        async with queue_client(redis, config) as queue:
            place = await Scheduler(queue, config.queue_name).place(snap.run_id)
        if place is not None:
            print(f"  waiting: {place.reason}")
    return EXIT_OK


async def _events(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    run_id = validate_run_id(args.run_id)
    if await read_snapshot(redis, run_id) is None:
        raise UnknownRun(run_id)
    out = sys.stdout.buffer
    if args.follow:
        async for event in follow(redis, run_id, after=args.after):
            out.write(orjson.dumps(event.model_dump(mode="json")) + b"\n")
            out.flush()
        return EXIT_OK
    after = "-" if args.after == "0-0" else args.after
    async for event in iter_events(redis, run_id, after=after, on_invalid=report_invalid):
        out.write(orjson.dumps(event.model_dump(mode="json")) + b"\n")
    out.flush()
    return EXIT_OK


async def _cancel(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    async with Publisher(redis, replica_ack=config.replica_ack()) as publisher, queue_client(redis, config) as queue:
        status = await cancel_run(
            redis, publisher, args.run_id, queue=queue, reason=args.reason, queue_name=config.queue_name
        )
    print(orjson.dumps({"run_id": args.run_id, "status": status}).decode() if args.json else status)
    return EXIT_OK
