"""Text from runs (names, excerpts, reasons) on a terminal: anything a producer wrote could hold
escape sequences that move the cursor, retitle the window or hide text. Control characters
(C0, DEL, C1) are shown escaped (`\\x1b`, `\\n`), so what is printed is exactly what is stored."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe(text: object) -> str:
    """`text` as a string with every control character escaped."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), str(text))
