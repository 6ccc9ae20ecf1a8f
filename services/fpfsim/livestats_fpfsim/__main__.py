"""livestats-fpf-sim: a stand-in for FPF, for tests and load runs.

Usage: livestats-fpf-sim PROMPT_FILE   (or: python -m livestats_fpfsim PROMPT_FILE)

Reads the prompt file and prints one small JSON answer on stdout:
    {"id", "model": "fpf-sim-1", "phase", "call", "answer", "usage": {"input_tokens", "output_tokens"}}

Environment (an empty value counts as unset):
    FPF_SIM_LATENCY_MS     mean delay before answering, ms (200)
    FPF_SIM_JITTER_MS      the delay varies uniformly by up to this much, ms (50)
    FPF_SIM_FAIL_RATE      share of calls that exit 1 with a message on stderr (0)
    FPF_SIM_HANG_RATE      share of calls that never answer (0)
    FPF_SIM_GARBAGE_RATE   share of calls that print non-JSON text and exit 0 (0)
    FPF_SIM_FAIL_FIRST     attempts 1..N of every call fail, to force retries (0)
    FPF_SIM_BEHAVIOUR      force one behaviour: ok fail hang garbage empty binary truncated huge
                           exit_json crash hang_with_child ignore_term orphan_child
                           max_tokens (a whole answer whose stop_reason says it was cut short) (ok)
    FPF_SIM_HUGE_BYTES     output size of the `huge` behaviour, bytes (10 MiB)
    FPF_SIM_OUTPUT_TOKENS  reported output tokens (300)
    FPF_SIM_MODEL          the model the answer names (fpf-sim-1)
    FPF_SIM_TOKEN_JITTER   relative variation of the output tokens (0.2)
    FPF_SIM_TEXT_BYTES     answer with this many bytes of plain text instead of JSON
    FPF_SIM_SEED           seed; combined with FPF_PHASE, FPF_CALL and FPF_ATTEMPT
Set by the worker: FPF_RUN_ID, FPF_PHASE, FPF_CALL, FPF_ATTEMPT (1-based).

Exit status: 0 answered, 1 simulated failure, 3 `exit_json`, 2 bad arguments, environment or prompt file.
"""

from __future__ import annotations

import os
import sys

from .config import ConfigError, SimConfig
from .sim import run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_PROG = "livestats-fpf-sim"


def main() -> None:
    """Console entry point: run one simulated call and exit with its status."""
    sys.exit(_main(sys.argv[1:], os.environ))


def _main(args: Sequence[str], env: Mapping[str, str]) -> int:
    if list(args) in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(args) != 1:
        _error(f"expected exactly one argument, the prompt file; got {len(args)}")
        return 2
    try:
        config = SimConfig(env)
    except ConfigError as exc:
        _error(str(exc))
        return 2
    try:
        with open(args[0], "rb") as prompt_file:
            prompt = prompt_file.read()
    except OSError as exc:
        _error(f"cannot read prompt file {args[0]!r}: {exc.strerror or exc}")
        return 2
    return run(config, prompt)


def _error(message: str) -> None:
    sys.stderr.write(f"{_PROG}: {message}\n(see {_PROG} --help)\n")


if __name__ == "__main__":
    main()
