"""Progress of long commands (`export`, `replay`) on stderr, so stdout stays the data: shown on a
terminal, or anywhere with `--progress`; rewritten in place at most every REDRAW_S on a TTY,
one line per DRAW_S otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_S = 0.2  # seconds between redraws on a terminal
DRAW_S = 5.0  # seconds between lines in a log


class Progress:
    def __init__(self, label: str, total: int | None, *, forced: bool, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.enabled = forced or self.tty
        self.label = label
        self.total = total
        self.done = 0
        self._shown = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown >= (REDRAW_S if self.tty else DRAW_S):
            self._shown = now
            self._draw()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            if self.tty:
                self.out.write("\n")
                self.out.flush()

    def _draw(self) -> None:
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        line = f"{self.label}: {self.done:,}{of} events{share}"
        self.out.write(f"\r\x1b[2K{line}" if self.tty else f"{line}\n")
        self.out.flush()
