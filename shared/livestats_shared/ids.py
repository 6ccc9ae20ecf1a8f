"""Run ids: validated before they go anywhere near a Redis key, generated time-sortable."""

from __future__ import annotations

import re
import secrets
import time
from functools import lru_cache
from typing import NewType

from .errors import InvalidRunId

RunId = NewType("RunId", str)

# Lowercase letters, digits, '_' and '-': nothing that means something in a key, a glob or a URL
# ('{', '}', ':', '*', '?', '/', '.', whitespace). 64 characters at most.
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Principal and team names: safe in a key, a log line, a URL and a metric label.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# A model name as providers write them ("gpt-4o-mini", "claude-3-5-sonnet@20241022",
# "meta-llama/Llama-3.1-8B"): a metric label value and a stats-hash field part, so bounded.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def validate_run_id(value: object) -> RunId:
    """Return `value` as a RunId, or raise InvalidRunId."""
    if isinstance(value, str) and _is_valid(value):
        return RunId(value)
    raise InvalidRunId(value)


@lru_cache(maxsize=4096)  # every event of a run checks the same id: remember the answer
def _is_valid(value: str) -> bool:
    return _RUN_ID.fullmatch(value) is not None


def new_run_id() -> RunId:
    """A ULID-style id: 10 chars of epoch milliseconds, 8 random; sorts by creation time."""
    ms = int(time.time() * 1000)
    rand = secrets.randbits(40)
    chars = [_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -5, -5)]
    chars += [_CROCKFORD[(rand >> shift) & 31] for shift in range(35, -5, -5)]
    return RunId("".join(chars))
