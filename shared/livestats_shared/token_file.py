"""A token file that a running gateway re-reads when it changes, so that `livestats token revoke
ID --file F` (or an operator's edit) takes effect without a restart.

Each look costs one `stat`: the file is re-read when its inode, size or modification time
changes (`save_token_file` replaces the file, so every save is a new inode). A file that turns
malformed is not half-trusted: its tokens are all refused until it is fixed (fail closed), and
the error is logged once per change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from .errors import LivestatsError

log = logging.getLogger("livestats.auth")
R = TypeVar("R")
_Signature = tuple[int, int, int] | None  # (inode, size, mtime ns); None: no file


class WatchedTokenFile(Generic[R]):
    def __init__(self, path: Path, load: Callable[[Path], Sequence[R]]) -> None:
        self.path = path
        self._load = load
        self._signature: _Signature = self._stat()
        # Read at start with no fallback: a malformed file stops the start (fail fast).
        self._records: tuple[R, ...] = tuple(load(path))

    def records(self) -> tuple[R, ...]:
        """The file's records as of now (the same tuple object until the file changes)."""
        signature = self._stat()
        if signature != self._signature:
            self._signature = signature
            self._records = self._reload()
        return self._records

    def _reload(self) -> tuple[R, ...]:
        try:
            records = tuple(self._load(self.path))
        except LivestatsError as exc:
            log.error("token file %s is malformed; refusing all of its tokens until it is fixed: %s", self.path, exc)
            return ()
        log.info("token file %s re-read: %d tokens", self.path, len(records))
        return records

    def _stat(self) -> _Signature:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)
