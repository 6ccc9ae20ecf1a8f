"""What a user submits: a run of phases, each a batch of FPF calls."""

from __future__ import annotations

import math
import re
from typing import Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .events import CATEGORY_PATTERN, Complexity, PhasePlan
from .fpf_env import ENV_NAME, reserved
from .ids import MODEL_PATTERN

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SPEC_BYTES = 1 << 20  # a run spec as JSON, bytes
TAG_PATTERN = r"^[a-z0-9][a-z0-9._:-]{0,39}$"


class PhaseEstimate(TypedDict):
    category: str | None
    complexity: Complexity | None
    deliverables: int | None
    predicted_tokens: int | None
    model: str | None


class PhaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no "1" -> 1, false -> 0.0

    name: str = Field(
        description="Phase name, e.g. generate, evaluate, compare.",
        json_schema_extra={"pattern": f"^{_NAME.pattern}$"},  # documents the validator below
    )
    calls: int = Field(ge=1, le=100_000, description="FPF calls in this phase.")
    concurrency: int = Field(4, ge=1, le=256, description="Calls running at once.")
    output: Literal["json", "text"] = Field(
        "json", description="json: the answer must parse as JSON (any size). text: min_bytes applies."
    )
    min_bytes: int = Field(0, ge=0, le=10_000_000, description="text mode only: smallest usable answer.")
    call_timeout_s: float = Field(120.0, gt=0, le=3600, description="Per-attempt timeout.")
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts per call, first one included.")
    predicted_tokens: int | None = Field(None, ge=0, description="Predicted tokens per call, if known.")
    category: str | None = Field(
        None, pattern=CATEGORY_PATTERN, description="Kind of work: implementation, refactoring, testing, ..."
    )
    complexity: Complexity | None = Field(None, description="low, medium, high or maintenance.")
    deliverables: int | None = Field(None, ge=1, le=100_000, description="Number of deliverables of the phase.")
    is_test: bool = Field(False, description="A test phase: its estimation sample is kept out of summaries.")
    model: str | None = Field(
        None,
        pattern=MODEL_PATTERN,
        description="The model this phase's FPF is set up with: prices and compares calls whose answer names none.",
    )
    prompt: str = Field(
        "Phase {phase}, item {call}.",
        max_length=100_000,
        description="Prompt file content; {phase}, {call} and {run_id} are substituted.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for FPF: only keys the operator allows "
        "(LIVESTATS_SPEC_ENV_ALLOW; none by default), never LIVESTATS_* or the worker's per-call FPF_* keys.",
        json_schema_extra={"propertyNames": {"pattern": f"^{ENV_NAME.pattern}$"}},
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("phase name must be 1-64 characters of letters, digits, '_', '.', '-'")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        # The operator's allowlist is applied where it is known (fpf_env.check_spec_env: the
        # gateway, `livestats submit`, the worker); names and the worker's own keys are checked here.
        bad = [k for k in v if not ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"not environment variable names: {bad}")
        owned = [k for k in v if reserved(k)]
        if owned:
            raise ValueError(f"set by the worker itself, a run spec cannot set them: {owned}")
        nul = [k for k, val in v.items() if "\0" in val]
        if nul:
            raise ValueError(f"environment values cannot contain NUL bytes: {nul}")
        return v

    def estimate(self) -> PhaseEstimate:
        """The estimation fields its phase events carry; predicted tokens for the whole phase."""
        return PhaseEstimate(
            category=self.category,
            complexity=self.complexity,
            deliverables=self.deliverables,
            predicted_tokens=None if self.predicted_tokens is None else self.predicted_tokens * self.calls,
            model=self.model,
        )

    @model_validator(mode="after")
    def _min_bytes_needs_text(self) -> PhaseSpec:
        if self.output == "json" and self.min_bytes:
            raise ValueError("min_bytes applies to output='text' only; a JSON answer has no minimum size")
        return self


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no "1" -> 1, false -> 0.0

    name: str = Field("run", min_length=1, max_length=200)
    phases: list[PhaseSpec] = Field(min_length=1, max_length=100)
    timeout_s: float = Field(600.0, gt=0, le=86_400, description="Whole-run deadline.")
    retry_budget_ratio: float = Field(
        0.2, ge=0, le=10, description="Retries allowed as a share of planned calls (0.2 = 20%)."
    )
    retry_budget_min: int = Field(3, ge=0, description="Retries allowed however small the run.")
    backoff_base_s: float = Field(0.5, ge=0, le=60, description="First retry delay; doubles per attempt.")
    backoff_max_s: float = Field(30.0, ge=0, le=600)
    tags: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Labels to find and compare runs by (e.g. provider-eval, nightly).",
        json_schema_extra={"items": {"pattern": TAG_PATTERN}},
    )
    external: bool = Field(
        False,
        description="No worker executes it: an external producer (a shell orchestrator, `livestats watch`) "
        "publishes its events with POST /api/runs/{id}/events.",
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not re.fullmatch(TAG_PATTERN, t)]
        if bad:
            raise ValueError(f"tags must match {TAG_PATTERN}: {bad}")
        return v

    @field_validator("phases")
    @classmethod
    def _unique_phases(cls, v: list[PhaseSpec]) -> list[PhaseSpec]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError("phase names must be unique within a run")
        return v

    @model_validator(mode="after")
    def _bounded_size(self) -> RunSpec:
        # The spec travels in the run.queued event and the arq job: keep both reasonable.
        size = len(self.model_dump_json())
        if size > MAX_SPEC_BYTES:
            raise ValueError(f"spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES} are accepted")
        return self

    @property
    def planned_calls(self) -> int:
        return sum(p.calls for p in self.phases)

    @property
    def retry_budget(self) -> int:
        return max(self.retry_budget_min, math.ceil(self.retry_budget_ratio * self.planned_calls))

    def plan(self) -> list[PhasePlan]:
        return [PhasePlan(name=p.name, calls=p.calls, is_test=p.is_test, **p.estimate()) for p in self.phases]
