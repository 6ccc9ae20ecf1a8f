"""Exit codes of `report`, `export` and `replay` (the same numbers main.py documents)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # the command ran but could not do all of its work (e.g. entries skipped)
EXIT_BAD_INPUT = 2  # bad arguments or an unusable input file
