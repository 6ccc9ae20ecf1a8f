"""`python -m livestats_worker` / `livestats-worker`: run one worker until SIGINT/SIGTERM.

`livestats-worker --check`: exit 0 if the worker on this host is healthy (health.py), else 1
with the reason on stderr; the container image's health check.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import WorkerConfig
from .health import check
from .serve import run_until_signalled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="livestats-worker", description="Run a livestats worker.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the running worker (its heartbeat and Redis connection, via LIVESTATS_METRICS_PORT) and exit",
    )
    args = parser.parse_args(argv)
    if args.check:
        health = check(WorkerConfig())
        print(health.reason, file=sys.stdout if health.ok else sys.stderr)
        sys.exit(0 if health.ok else 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_until_signalled(WorkerConfig())


if __name__ == "__main__":
    main()
