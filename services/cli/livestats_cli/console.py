"""What `livestats up` tells the person who ran it: printed while someone reads it, and kept in
`up.log` (timestamped) so the order of a shutdown can be read afterwards, even when the reader
of stdout (`make run | tee log`, then Ctrl-C: tee dies with the same SIGINT) is gone."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO


class Console:
    def __init__(self, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: TextIO = open(log_path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self._lost: set[int] = set()  # file descriptors whose reader went away

    def say(self, text: str, *, err: bool = False, secret: bool = False) -> None:
        """Print `text`; log it too unless it is `secret` (a token must not sit in a log file)."""
        if not secret and not self._log.closed:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            for line in text.strip("\n").splitlines():
                self._log.write(f"{stamp} {line}\n")
            self._log.flush()
        stream = sys.stderr if err else sys.stdout
        if stream.fileno() in self._lost:
            return
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            self.lost(stream)

    def lost_stdout(self) -> None:
        self.lost(sys.stdout)

    def lost(self, stream: TextIO) -> None:
        """The pipe behind `stream` is closed: send it to /dev/null from now on, so neither the
        rest of the shutdown nor Python's own flush at exit fails on it."""
        fd = stream.fileno()
        self._lost.add(fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def close(self) -> None:
        self._log.close()
