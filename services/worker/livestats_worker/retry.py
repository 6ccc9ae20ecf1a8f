"""Per-call backoff and the run-wide retry budget that stops a retry storm."""

from __future__ import annotations

import random

from livestats_shared.errors import LivestatsError


class RetryBudgetExhausted(LivestatsError):
    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"retry budget exhausted: {used} retries used of {limit} allowed")


class RetryBudget:
    """Retries allowed for a whole run. One event loop owns it, so no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_take(self) -> bool:
        """Spend one retry; False once the budget is used up."""
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def exhausted(self) -> RetryBudgetExhausted:
        return RetryBudgetExhausted(self.used, self.limit)


def backoff_delay(next_attempt: int, base_s: float, max_s: float) -> float:
    """Exponential with equal jitter: half the step fixed, half random, so retries spread out."""
    step = min(max_s, base_s * 2.0 ** (next_attempt - 2))
    jitter: float = random.uniform(0, step / 2)
    return step / 2 + jitter
