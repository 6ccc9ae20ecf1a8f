"""The simulator's knobs: FPF_SIM_* variables, plus the FPF_* call identity the worker sets.

An empty variable counts as unset. Anything else that does not parse, or is out of range,
raises `ConfigError`, which the CLI turns into exit status 2.
"""

from __future__ import annotations

import math

from livestats_shared.errors import LivestatsError

# `typing` costs ~5 ms to import and this process is spawned hundreds of times per run, so
# names needed only for annotations are imported for the type checker alone (mypy treats any
# constant named TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_MODEL = "fpf-sim-1"
BEHAVIOURS = frozenset(
    {
        "ok",
        "fail",
        "hang",
        "garbage",
        "empty",
        "binary",
        "truncated",
        "huge",
        "exit_json",
        "crash",
        "hang_with_child",
        "ignore_term",
        "orphan_child",
        "max_tokens",
    }
)


class ConfigError(LivestatsError):
    """An environment variable holds a value the simulator cannot use."""


class SimConfig:
    """Everything the simulator reads from its environment, validated."""

    __slots__ = (
        "attempt",
        "behaviour",
        "call",
        "fail_first",
        "fail_rate",
        "garbage_rate",
        "hang_rate",
        "huge_bytes",
        "jitter_ms",
        "latency_ms",
        "model",
        "output_tokens",
        "phase",
        "run_id",
        "seed",
        "text_bytes",
        "token_jitter",
    )

    def __init__(self, env: Mapping[str, str]) -> None:
        self.latency_ms = _float(env, "FPF_SIM_LATENCY_MS", 200.0, 0.0, None)
        self.jitter_ms = _float(env, "FPF_SIM_JITTER_MS", 50.0, 0.0, None)
        self.fail_rate = _float(env, "FPF_SIM_FAIL_RATE", 0.0, 0.0, 1.0)
        self.hang_rate = _float(env, "FPF_SIM_HANG_RATE", 0.0, 0.0, 1.0)
        self.garbage_rate = _float(env, "FPF_SIM_GARBAGE_RATE", 0.0, 0.0, 1.0)
        # One uniform draw picks among fail/hang/garbage/ok, so each rate is exact only if they fit in 1.
        if self.fail_rate + self.hang_rate + self.garbage_rate > 1.0 + 1e-9:
            raise ConfigError(
                "FPF_SIM_FAIL_RATE + FPF_SIM_HANG_RATE + FPF_SIM_GARBAGE_RATE must not exceed 1, got "
                f"{self.fail_rate} + {self.hang_rate} + {self.garbage_rate}"
            )
        self.fail_first = _int(env, "FPF_SIM_FAIL_FIRST", 0, 0)
        self.output_tokens = _int(env, "FPF_SIM_OUTPUT_TOKENS", 300, 0)
        self.model = _get(env, "FPF_SIM_MODEL") or DEFAULT_MODEL
        self.token_jitter = _float(env, "FPF_SIM_TOKEN_JITTER", 0.2, 0.0, 1.0)
        self.huge_bytes = _int(env, "FPF_SIM_HUGE_BYTES", 10 * 1024 * 1024, 0)
        self.text_bytes: int | None = (
            _int(env, "FPF_SIM_TEXT_BYTES", 0, 0) if _get(env, "FPF_SIM_TEXT_BYTES") is not None else None
        )
        self.seed = _get(env, "FPF_SIM_SEED")
        behaviour = _get(env, "FPF_SIM_BEHAVIOUR") or "ok"
        if behaviour not in BEHAVIOURS:
            raise ConfigError(f"FPF_SIM_BEHAVIOUR must be one of {', '.join(sorted(BEHAVIOURS))}; got {behaviour!r}")
        self.behaviour = behaviour
        self.attempt = _int(env, "FPF_ATTEMPT", 1, 1)
        self.call: int | None = _int(env, "FPF_CALL", 0, 0) if _get(env, "FPF_CALL") is not None else None
        self.phase = _get(env, "FPF_PHASE")
        self.run_id = _get(env, "FPF_RUN_ID")


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float | None) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{name} must be a finite number {bounds}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {raw!r}")
    return value
