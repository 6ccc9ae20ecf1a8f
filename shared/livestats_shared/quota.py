"""Per-principal quotas the operator sets, and the error a refused submission raises.

0 means "no limit" for every field. The gateway builds one `Quota` per principal (its defaults,
with the principal's overrides on top); the scheduler enforces the run counts atomically in
Redis, the spec limits are checked before anything is written.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from .errors import LivestatsError
from .spec import RunSpec


class Quota(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrent_runs: int = Field(0, ge=0, description="Runs of the principal holding worker slots at once.")
    queued_runs: int = Field(0, ge=0, description="Runs of the principal waiting for a slot.")
    submissions_per_minute: int = Field(0, ge=0, description="Submissions in any 60 s window.")
    max_concurrency: int = Field(0, ge=0, description="Largest `concurrency` of any phase.")
    max_calls: int = Field(0, ge=0, description="Largest number of calls in one run (all phases).")

    def spec_violations(self, spec: RunSpec) -> list[tuple[str, int, str]]:
        """(field path, value, message) for every spec figure over the limits."""
        out: list[tuple[str, int, str]] = []
        if self.max_calls and spec.planned_calls > self.max_calls:
            out.append(
                (
                    "phases",
                    spec.planned_calls,
                    f"the run plans {spec.planned_calls} calls; at most {self.max_calls} are allowed (quota max_calls)",
                )
            )
        for i, phase in enumerate(spec.phases):
            if self.max_concurrency and phase.concurrency > self.max_concurrency:
                out.append(
                    (
                        f"phases.{i}.concurrency",
                        phase.concurrency,
                        f"concurrency {phase.concurrency} is "
                        f"over the limit of {self.max_concurrency} (quota max_concurrency)",
                    )
                )
        return out


class QuotaOverride(BaseModel):
    """A principal's exceptions to the defaults; unset fields keep the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrent_runs: int | None = Field(None, ge=0)
    queued_runs: int | None = Field(None, ge=0)
    submissions_per_minute: int | None = Field(None, ge=0)
    max_concurrency: int | None = Field(None, ge=0)
    max_calls: int | None = Field(None, ge=0)

    def over(self, defaults: Quota) -> Quota:
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class QuotaExceeded(LivestatsError):
    """A submission refused by a run-count quota; retry after `retry_after_s`."""

    def __init__(self, principal: str, which: str, limit: int, retry_after_ms: float) -> None:
        self.principal = principal
        self.which = which
        self.limit = limit
        # Whole seconds, rounded up and at least 1: a client that waits that long is admitted
        # (rate) or likely to be (queue).
        self.retry_after_s = max(1, math.ceil(retry_after_ms / 1000))
        what = {
            "submissions_per_minute": f"{limit} submissions per minute",
            "queued_runs": f"{limit} queued runs",
        }.get(which, f"{which} {limit}")
        super().__init__(f"{principal} is at the quota of {what}; retry in {self.retry_after_s} s")
