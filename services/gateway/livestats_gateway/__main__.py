"""`python -m livestats_gateway` / `livestats-gateway` / `livestats gateway`: serve until
SIGINT/SIGTERM, as one process or as a supervisor of several (`--processes`)."""

from __future__ import annotations

import argparse
import sys

from .config import GatewayConfig
from .serve import run_until_signalled, serve_as_process
from .supervise import supervise


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _at_least_1(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _port(text: str) -> int:
    value = _whole(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def parser() -> argparse.ArgumentParser:
    """The gateway's flags (`livestats gateway` forwards its own copies); each overrides its
    variable, and every other setting is a LIVESTATS_GATEWAY_ variable."""
    p = argparse.ArgumentParser(prog="livestats-gateway", description="The livestats gateway.")
    p.add_argument(
        "--processes",
        type=_at_least_1,
        metavar="N",
        help="processes sharing the port (SO_REUSEPORT), under a supervisor that restarts one that dies "
        "(env LIVESTATS_GATEWAY_PROCESSES; default: one per usable core)",
    )
    p.add_argument(
        "--metrics-port-base",
        type=_port,
        metavar="PORT",
        help="process i also serves /metrics, /readyz and /healthz on PORT+i (env LIVESTATS_GATEWAY_METRICS_PORT_BASE)",
    )
    # Set by the supervisor on the processes it starts; not for people.
    p.add_argument("--process-index", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    flags = {"processes": args.processes, "metrics_port_base": args.metrics_port_base}
    config = GatewayConfig(**{k: v for k, v in flags.items() if v is not None})
    if args.process_index is not None:
        serve_as_process(config, args.process_index)
    elif config.process_count() == 1:
        run_until_signalled(config)
    else:
        sys.exit(supervise(config))


if __name__ == "__main__":
    main()
