"""Child processes that cannot outlive their parent.

A process started in its own session (so a terminal's Ctrl-C reaches only its parent, which
then stops the children in order) is no longer killed with its parent's terminal. If the parent
is SIGKILLed or OOM-killed, Linux's PR_SET_PDEATHSIG still takes the child down with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Resolved once, here: the function handed to Popen runs between fork and exec, where it must
# do as little as possible (no imports, no allocation-heavy work).
_PRCTL = _load_prctl()


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when the thread that started it dies.

    Spawn from a long-lived thread (the main thread, or the event loop's): the kernel ties the
    signal to the creating thread, not the process. Returns None where unsupported.
    """
    if _PRCTL is None:
        return None
    prctl, signum = _PRCTL, int(sig)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)

    return preexec
