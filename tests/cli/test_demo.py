"""The bundled demo succeeds, with retries that recover its failures, and the failing demo
(`make run ARGS=--demo-failing`) fails: checked over 20 seeds of the simulator's own decision
function, with the worker's retry rules (max_attempts per call, the run's retry budget)."""

from __future__ import annotations

from dataclasses import dataclass

from livestats_cli.up import demo_spec
from livestats_fpfsim.config import SimConfig
from livestats_fpfsim.sim import _choose, _rng
from livestats_shared.spec import RunSpec

SEEDS = range(20)


@dataclass
class Outcome:
    outcome: str
    reason: str
    retries: int
    recovered: int  # calls whose first attempt failed and a later one succeeded


def simulate(spec: RunSpec, seed: int) -> Outcome:
    """What the worker would conclude: each attempt's behaviour as the simulator picks it for
    this seed (every behaviour the demo can draw fails retryably), retried while attempts and
    the run's retry budget last."""
    retries = recovered = given_up = 0
    for phase in spec.phases:
        for call in range(phase.calls):
            for attempt in range(1, phase.max_attempts + 1):
                env = {**phase.env, "FPF_SIM_SEED": str(seed), "FPF_PHASE": phase.name}
                env |= {"FPF_CALL": str(call), "FPF_ATTEMPT": str(attempt)}
                config = SimConfig(env)
                if _choose(config, _rng(config)) == "ok":
                    recovered += attempt > 1
                    break
                if attempt == phase.max_attempts:
                    given_up += 1
                elif retries == spec.retry_budget:
                    return Outcome("failed", "retry_budget_exhausted", retries, recovered)
                else:
                    retries += 1
    if given_up:
        return Outcome("failed", "calls_given_up", retries, recovered)
    return Outcome("succeeded", "completed", retries, recovered)


def test_the_demo_succeeds_in_at_least_19_of_20_seeds_with_visible_retries():
    results = [simulate(demo_spec(), seed) for seed in SEEDS]
    succeeded = [r for r in results if r.outcome == "succeeded"]
    assert len(succeeded) >= 19, [(r.outcome, r.reason) for r in results]
    # Not a run without incident: every success shows retries and failures that recovered.
    assert all(r.retries >= 3 and r.recovered >= 3 for r in succeeded), succeeded


def test_the_failing_demo_fails_in_at_least_19_of_20_seeds_on_its_retry_budget():
    results = [simulate(demo_spec(failing=True), seed) for seed in SEEDS]
    failed = [r for r in results if (r.outcome, r.reason) == ("failed", "retry_budget_exhausted")]
    assert len(failed) >= 19, [(r.outcome, r.reason) for r in results]


def test_the_simulation_tells_a_failing_spec_from_a_working_one():
    """Positive control: a spec whose calls always fail is seen to fail, one that never fails to succeed."""
    base = demo_spec().model_dump()
    always = {**base, "phases": [{**p, "env": {"FPF_SIM_FAIL_RATE": "1"}} for p in base["phases"]]}
    assert simulate(RunSpec.model_validate(always), 0).outcome == "failed"
    never = {**base, "phases": [{**p, "env": {"FPF_SIM_LATENCY_MS": "1"}} for p in base["phases"]]}
    assert simulate(RunSpec.model_validate(never), 0) == Outcome("succeeded", "completed", 0, 0)
