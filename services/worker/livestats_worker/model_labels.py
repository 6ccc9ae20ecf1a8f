"""Which model names the worker's metrics may use as the `model` label.

Model names come from run specs, so a name is a label only if the operator named it (anything
else is `other`: a spec cannot create series). By default the allowlist is what the operator
already configured, so `model` means something without a separate list:
- `LIVESTATS_METRICS_MODELS` (JSON list), for names nothing else below mentions;
- every model of the operator's price table (`LIVESTATS_PRICES_FILE` / `LIVESTATS_PRICES`):
  WorkerConfig adds them to `metrics_models` when it reads the table;
- `FPF_MODEL` in the worker's environment: FPF inherits it, so it is the model of every call
  whose phase names no other (and such a call is labelled with it).
"""

from __future__ import annotations

from collections.abc import Iterable


def model_allowlist(configured: Iterable[str], default_model: str) -> frozenset[str]:
    """`configured`: LIVESTATS_METRICS_MODELS with the priced models; `default_model`: FPF_MODEL."""
    named = set(configured)
    if default_model:
        named.add(default_model)
    return frozenset(named)
