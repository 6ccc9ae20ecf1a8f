"""`python -m livestats_worker` / `livestats-worker`: run one worker until SIGINT/SIGTERM."""

from __future__ import annotations

import logging

from .config import WorkerConfig
from .serve import run_until_signalled


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_until_signalled(WorkerConfig())


if __name__ == "__main__":
    main()
