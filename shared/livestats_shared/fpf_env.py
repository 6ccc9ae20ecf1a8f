"""The operator owns the FPF environment: what a run spec's `env` may set, decided by one rule
that the gateway, the CLI and the worker all apply (docs/processes.md, "The FPF environment").

A key is refused when the worker sets it itself (every `LIVESTATS_*` key and the per-call
`FPF_*` keys below), whatever the allowlist says, or when no pattern of the operator's
allowlist (`LIVESTATS_SPEC_ENV_ALLOW`, shell globs, empty by default) matches it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from .errors import LivestatsError

CALL_MARKER = "LIVESTATS_CALL"  # env key marking every process of one FPF call (docs/processes.md)
# Set by the worker on every call: a spec that could set them could impersonate another call.
WORKER_SET = frozenset({"FPF_RUN_ID", "FPF_PHASE", "FPF_CALL", "FPF_ATTEMPT", "FPF_OUTPUT_MODE", CALL_MARKER})
RESERVED_PATTERNS = ("LIVESTATS_*",)  # the worker's own settings, which may hold secrets
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")  # a portable environment variable name


def _split(value: object) -> object:
    """A JSON list, or comma-separated patterns (`FPF_SIM_*,FPF_MODEL`), as settings take them."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# A settings field of glob patterns: JSON list or comma-separated in the environment.
EnvPatterns = Annotated[list[str], NoDecode, BeforeValidator(_split)]


def matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether `key` matches one of the shell-glob `patterns` (case-sensitive, like env names)."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def reserved(key: str) -> bool:
    """Keys the worker sets itself: no spec may set them, whatever the allowlist says."""
    return key in WORKER_SET or matches(key, RESERVED_PATTERNS)


def env_refusal(key: str, allow: Sequence[str]) -> str | None:
    """Why a run spec may not set `key`, or None if it may."""
    if reserved(key):
        return f"{key} is set by the worker itself; a run spec cannot set it"
    if not matches(key, allow):
        shown = ",".join(allow) or "nothing"
        return f"{key} is not allowed by the operator (LIVESTATS_SPEC_ENV_ALLOW allows {shown})"
    return None


@dataclass(frozen=True)
class EnvRefusal:
    phase_index: int
    phase: str
    key: str
    reason: str


class SpecEnvRefused(LivestatsError, ValueError):
    """A run spec sets environment variables the operator does not allow."""

    def __init__(self, refusals: Sequence[EnvRefusal]) -> None:
        self.refusals = tuple(refusals)
        super().__init__("; ".join(f"phase {r.phase!r}: {r.reason}" for r in self.refusals))


class _HasEnv(Protocol):  # PhaseSpec, which imports this module
    @property
    def name(self) -> str: ...
    @property
    def env(self) -> dict[str, str]: ...


def refused_env(phases: Sequence[_HasEnv], allow: Sequence[str]) -> list[EnvRefusal]:
    """Every key of every phase's `env` the rule refuses, in spec order."""
    found = []
    for index, phase in enumerate(phases):
        for key in phase.env:
            reason = env_refusal(key, allow)
            if reason is not None:
                found.append(EnvRefusal(index, phase.name, key, reason))
    return found


def check_spec_env(phases: Sequence[_HasEnv], allow: Sequence[str]) -> None:
    """Raise SpecEnvRefused naming every refused key; the one check every submission path runs."""
    refusals = refused_env(phases, allow)
    if refusals:
        raise SpecEnvRefused(refusals)
