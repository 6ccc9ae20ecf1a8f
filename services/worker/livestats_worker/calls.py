"""One call of a phase: attempts, classification, retries, and the events that describe them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livestats_shared.errors import LivestatsError
from livestats_shared.events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    EventData,
    FailureReason,
    TokenUsage,
)
from livestats_shared.fpf_env import CALL_MARKER, SpecEnvRefused, check_spec_env, matches, reserved
from livestats_shared.pricing import PriceTable
from livestats_shared.spec import PhaseSpec, RunSpec

from .children import Sweep, call_marker
from .config import WorkerConfig
from .fpf import run_fpf
from .metrics import CallLabels, WorkerMetrics
from .output import RETRYABLE, CallVerdict, classify
from .redact import Redactor
from .retry import RetryBudget, backoff_delay

Emit = Callable[[EventData], None]


class SpawnFailed(LivestatsError):
    """The FPF command cannot be started at all: every call would fail the same way."""


@dataclass
class CallContext:
    """What every call of one phase shares."""

    config: WorkerConfig
    run_id: str
    phase: PhaseSpec
    prompt_dir: Path
    base_env: Mapping[str, str]
    budget: RetryBudget
    backoff_base_s: float
    backoff_max_s: float
    emit: Emit
    pids: set[int]  # live child pids, for heartbeats
    metrics: WorkerMetrics
    labels: CallLabels  # this phase's metric labels
    prices: PriceTable  # the operator's price table: each attempt is priced when it ends
    reported_tokens: int | None = None  # sum of the usage the phase's answers reported, if any
    # Awaited before each attempt starts a process: raises if the run is no longer this worker's.
    before_attempt: Callable[[], Awaitable[None]] | None = None
    redactor: Redactor = field(init=False)  # cuts the secrets of base_env out of excerpts

    def __post_init__(self) -> None:
        self.redactor = Redactor.for_env(self.base_env, self.config.fpf_secret_env)


def fpf_argv(command: list[str], prompt_file: Path) -> list[str]:
    if any("{prompt_file}" in part for part in command):
        return [part.replace("{prompt_file}", str(prompt_file)) for part in command]
    return [*command, str(prompt_file)]


def render_prompt(template: str, **values: object) -> str:
    """Substitute {phase}, {call}, {run_id} and nothing else: prompts are full of literal braces
    (JSON examples), which str.format would reject or misread."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def phase_env(operator: Mapping[str, str], run_id: str, phase: PhaseSpec) -> dict[str, str]:
    """The spec's `env`, then the operator's variables (which win: the worker refuses a spec that
    sets one, see app.py), then what the worker sets for the phase."""
    env = {**phase.env, **operator}
    env.update({"FPF_RUN_ID": run_id, "FPF_PHASE": phase.name, "FPF_OUTPUT_MODE": phase.output})
    return env


async def run_call(ctx: CallContext, index: int) -> bool:
    """Run call `index` until it succeeds or runs out of attempts. True if it succeeded.

    Raises RetryBudgetExhausted (the run must stop) or SpawnFailed; CancelledError passes
    through after the attempt's process group is dead and a `cancelled` failure is recorded.
    """
    phase = ctx.phase
    prompt_file = ctx.prompt_dir / f"{phase.name}-{index}.txt"
    prompt_file.write_text(render_prompt(phase.prompt, phase=phase.name, call=index, run_id=ctx.run_id))
    try:
        attempt = 1
        while True:
            succeeded, retry_reason = await _attempt(ctx, index, attempt, prompt_file)
            if retry_reason is None:
                return succeeded
            attempt += 1
            delay = backoff_delay(attempt, ctx.backoff_base_s, ctx.backoff_max_s)
            ctx.metrics.retries.labels(ctx.labels.phase, ctx.labels.model, retry_reason.value).inc()
            ctx.emit(CallRetrying(phase=phase.name, call=index, attempt=attempt, reason=retry_reason, delay_s=delay))
            await asyncio.sleep(delay)
    finally:
        prompt_file.unlink(missing_ok=True)


async def _attempt(ctx: CallContext, index: int, attempt: int, prompt_file: Path) -> tuple[bool, FailureReason | None]:
    """One attempt and its events. Returns (succeeded, reason to retry for, or None if done)."""
    if ctx.before_attempt is not None:
        await ctx.before_attempt()
    phase = ctx.phase
    marker = call_marker(ctx.run_id, phase.name, index, attempt)
    env = {**ctx.base_env, "FPF_CALL": str(index), "FPF_ATTEMPT": str(attempt), CALL_MARKER: marker}
    predicted = phase.predicted_tokens if attempt == 1 else None
    metrics, labels = ctx.metrics, ctx.labels
    if predicted:
        metrics.tokens_predicted.labels(labels.phase, labels.model).inc(predicted)
    started = time.monotonic()
    spawned = False
    swept: list[Sweep] = []

    def on_spawn(pid: int) -> None:
        nonlocal spawned
        spawned = True
        ctx.pids.add(pid)
        ctx.emit(CallStarted(phase=phase.name, call=index, attempt=attempt, pid=pid, predicted_tokens=predicted))

    metrics.in_flight.inc()
    try:
        result = await run_fpf(
            fpf_argv(ctx.config.fpf_command, prompt_file),
            env=env,
            timeout_s=phase.call_timeout_s,
            max_output_bytes=ctx.config.max_output_bytes,
            kill_grace_s=ctx.config.kill_grace_s,
            on_spawn=on_spawn,
            on_exit=ctx.pids.discard,
            on_swept=swept.append,
        )
    except asyncio.CancelledError:
        # run_fpf has killed the process group and swept the marker before re-raising; record
        # the attempt's end so in_flight returns to zero and the stream says what happened to it.
        if spawned:
            elapsed = round(time.monotonic() - started, 3)
            note = _cancel_note(swept[0] if swept else None)
            _emit_failure(ctx, index, attempt, note, FailureReason.CANCELLED, None, elapsed, final=True)
            metrics.kills.labels("cancelled").inc()
            metrics.call_ended(labels, FailureReason.CANCELLED, elapsed)
        raise
    finally:
        metrics.in_flight.dec()
    if result.timed_out or result.overflow:
        metrics.kills.labels("timeout" if result.timed_out else "output_overflow").inc()

    verdict = classify(result, mode=phase.output, min_bytes=phase.min_bytes, redact=ctx.redactor.bytes)
    duration = round(result.duration_s, 3)
    spend = _spend(ctx, verdict)
    metrics.call_ended(labels, verdict.reason, result.duration_s)
    metrics.usage(labels, verdict.usage)
    metrics.cost(labels, spend.model, spend.cost_nusd)
    if not spawned:
        ctx.emit(CallStarted(phase=phase.name, call=index, attempt=attempt, pid=None, predicted_tokens=predicted))
    if verdict.ok:
        if verdict.usage is not None:
            ctx.reported_tokens = (ctx.reported_tokens or 0) + verdict.usage.total_tokens
        ctx.emit(
            CallSucceeded(
                phase=phase.name,
                call=index,
                attempt=attempt,
                duration_s=duration,
                bytes=verdict.size,
                **spend.fields(),
            )
        )
        return True, None

    reason = verdict.reason
    assert reason is not None
    will_retry = reason in RETRYABLE and attempt < phase.max_attempts
    if will_retry and not ctx.budget.try_take():
        _emit_failure(ctx, index, attempt, verdict.excerpt, reason, result.exit_code, duration, final=True, spend=spend)
        raise ctx.budget.exhausted()
    final = not will_retry
    _emit_failure(ctx, index, attempt, verdict.excerpt, reason, result.exit_code, duration, final=final, spend=spend)
    if reason is FailureReason.SPAWN_ERROR:
        raise SpawnFailed(f"cannot start the FPF command: {verdict.excerpt}")
    return False, reason if will_retry else None


def _emit_failure(
    ctx: CallContext,
    index: int,
    attempt: int,
    excerpt: str,
    reason: FailureReason,
    exit_code: int | None,
    duration: float,
    *,
    final: bool,
    spend: Spend | None = None,
) -> None:
    ctx.emit(
        CallFailed(
            phase=ctx.phase.name,
            call=index,
            attempt=attempt,
            reason=reason,
            excerpt=excerpt,
            exit_code=exit_code,
            duration_s=duration,
            final=final,
            **(spend.fields() if spend is not None else {}),
        )
    )


@dataclass(frozen=True)
class Spend:
    """What an attempt used and cost, as its event records it."""

    usage: TokenUsage | None
    model: str | None
    stop_reason: str | None
    cost_nusd: int | None

    def fields(self) -> dict[str, Any]:
        return {"usage": self.usage, "model": self.model, "stop_reason": self.stop_reason, "cost_nusd": self.cost_nusd}


def _spend(ctx: CallContext, verdict: CallVerdict) -> Spend:
    """The attempt's model (as its answer stated, else the phase's) and its cost at the price in
    effect now; no usage, or no price for the model: no cost (unknown, never 0)."""
    model = verdict.model or ctx.phase.model
    cost = None
    if verdict.usage is not None:
        u = verdict.usage
        now_ms = time.time_ns() // 1_000_000
        cost = ctx.prices.cost_nusd(model, now_ms, u.input_tokens, u.output_tokens, u.cached_input_tokens)
    return Spend(verdict.usage, model, verdict.stop_reason, cost)


def _cancel_note(sweep: Sweep | None) -> str:
    """Says "killed" only when a re-scan after the SIGKILLs found none of the call's processes."""
    stopped = "run stopped while this call was running"
    if sweep is None:
        return f"{stopped}; its process group was killed"
    if sweep.verified:
        return f"{stopped}; its processes were killed (a re-scan found none left)"
    pids = ", ".join(map(str, sweep.survivors[:5]))
    return f"{stopped}; SIGKILL sent, but {len(sweep.survivors)} of its processes were still alive: {pids}"


# Always passed through: what a program needs to start and to find its files and locale.
BASE_FPF_ENV = ("PATH", "HOME", "LANG", "LC_*", "TMPDIR")


def operator_env(config: WorkerConfig, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What of the worker's environment FPF receives: BASE_FPF_ENV and the operator's
    LIVESTATS_FPF_ENV patterns, never a key the worker sets itself (LIVESTATS_*: settings and
    secrets such as the Redis URL)."""
    patterns = (*BASE_FPF_ENV, *config.fpf_env)
    return {k: v for k, v in environ.items() if matches(k, patterns) and not reserved(k) and k != "REDIS_URL"}


def env_refused_here(spec: RunSpec, config: WorkerConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why this worker refuses the spec's `env`, or None: the shared rule with this worker's
    allowlist, and no key the operator passes to FPF (the operator's value would win)."""
    try:
        check_spec_env(spec.phases, config.spec_env_allow)
    except SpecEnvRefused as exc:
        return str(exc)
    own = operator_env(config, environ)
    clashes = [f"phase {p.name!r}: {k} is set by the operator" for p in spec.phases for k in p.env if k in own]
    return "; ".join(clashes) or None
