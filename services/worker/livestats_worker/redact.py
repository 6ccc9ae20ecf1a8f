"""Secrets the operator passes to FPF never travel back: they are cut out of excerpts (the
output that reaches the submitter in `call.failed`) before anything is published or logged.

A value counts as a secret when its key matches a secret pattern: `*KEY*`, `*TOKEN*`, `*SECRET*`,
`*PASSWORD*` (case-insensitive) and whatever the operator adds (LIVESTATS_FPF_SECRET_ENV).
Every occurrence is replaced by `[redacted:KEY]`, and so is a piece of one at either edge of the
data (4 bytes or more), where a cap or a tail window may have cut a secret in two.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

DEFAULT_SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*")
MIN_SECRET_BYTES = 4  # shorter values are not redacted: they would blank ordinary text, and reveal little


def is_secret(key: str, patterns: Iterable[str]) -> bool:
    upper = key.upper()
    return any(fnmatch.fnmatchcase(upper, pattern.upper()) for pattern in (*DEFAULT_SECRET_PATTERNS, *patterns))


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        found = {value.encode(): key for key, value in secrets.items() if len(value.encode()) >= MIN_SECRET_BYTES}
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(found.items(), key=lambda item: -len(item[0]))
        self.names = sorted(set(found.values()))

    @classmethod
    def for_env(cls, env: Mapping[str, str], patterns: Iterable[str]) -> Redactor:
        """A redactor for the values of `env` whose keys are secret by `patterns` (and the defaults)."""
        extra = tuple(patterns)
        return cls({key: value for key, value in env.items() if is_secret(key, extra)})

    def bytes(self, data: bytes) -> bytes:
        for secret, key in self._secrets:
            mark = f"[redacted:{key}]".encode()
            data = data.replace(secret, mark)
            data = _redact_edges(data, secret, mark)
        return data

    def text(self, text: str) -> str:
        return self.bytes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def _redact_edges(data: bytes, secret: bytes, mark: bytes) -> bytes:
    for size in range(len(secret) - 1, MIN_SECRET_BYTES - 1, -1):
        if data.endswith(secret[:size]):
            data = data[:-size] + mark
            break
    for size in range(len(secret) - 1, MIN_SECRET_BYTES - 1, -1):
        if data.startswith(secret[-size:]):
            data = mark + data[size:]
            break
    return data
