"""`livestats status`: one run's snapshot, the same whether it was read from Redis or a gateway."""

from __future__ import annotations

import sys

from livestats_shared.stats import RunSnapshot

from .terminal import safe


def show(snap: RunSnapshot, *, as_json: bool) -> None:
    if as_json:
        print(snap.model_dump_json())
        return
    why = f" ({safe(snap.reason)}{': ' + safe(snap.detail) if snap.detail else ''})" if snap.reason else ""
    lines = [
        f"{snap.run_id} '{safe(snap.name)}': {snap.status}{why}",
        f"  calls {snap.calls_done}/{snap.planned_calls} done, ok {snap.successful_calls}, "
        f"failed attempts {snap.failed_attempts}, given up {snap.calls_given_up}, retries {snap.retries}, "
        f"in flight {snap.in_flight}",
    ]
    if snap.input_tokens or snap.output_tokens or snap.models:
        lines.append(f"  tokens in {snap.input_tokens:,} out {snap.output_tokens:,}, cost {_cost(snap)}")
    for ph in snap.phases:
        lines.append(f"  {safe(ph.name)}: {ph.done}/{ph.planned} ({ph.given_up} given up) {ph.state or 'pending'}")
    if snap.last_error:
        lines.append(f"  last error: {safe(snap.last_error['reason'])} {safe(snap.last_error['excerpt'][:80])}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _cost(snap: RunSnapshot) -> str:
    """The run's cost: unknown while any attempt's model has no price (never shown as $0)."""
    if snap.cost_usd is not None:
        return f"${snap.cost_usd:.4f}"
    priced = f"at least ${snap.cost_nusd / 1e9:.4f}, " if snap.cost_nusd else ""
    return f"unknown ({priced}{snap.unpriced_attempts} attempts unpriced)"
