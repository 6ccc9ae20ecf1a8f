"""`python -m livestats_gateway` / `livestats-gateway`: serve until SIGINT/SIGTERM."""

from __future__ import annotations

from .config import GatewayConfig
from .serve import run_until_signalled


def main() -> None:
    run_until_signalled(GatewayConfig())


if __name__ == "__main__":
    main()
