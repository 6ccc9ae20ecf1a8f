"""`python -m livestats_worker.reaper TAG`: outlives its worker to kill the worker's calls.

The worker starts it with the read end of a pipe as stdin and keeps the write end. When the
worker exits, however it exits (SIGKILL and the OOM killer included), the kernel closes the
write end; the reaper then SIGKILLs every process carrying a marker of worker TAG, re-scanning
until none is left, and exits. It ignores SIGINT and SIGTERM: a stop signal sent to the worker's
whole service must not end it before the worker is gone (SIGKILL still does).
"""

from __future__ import annotations

import logging
import signal
import sys

from .children import kill_marked
from .containment import owned_by

GIVE_UP_S = 10.0  # seconds of killing and re-scanning before reporting survivors


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m livestats_worker.reaper WORKER_TAG  (stdin: a pipe from the worker)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s livestats.reaper: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tag = argv[1]
    while sys.stdin.buffer.read(4096):
        continue  # the worker never writes; anything read is ignored until EOF
    swept = kill_marked(owned_by(tag), within_s=GIVE_UP_S)
    if swept.killed:
        logging.warning("worker %s is gone; killed %d processes of its calls: %s", tag, len(swept.killed), swept.killed)
    if swept.survivors:
        logging.error("processes of worker %s still alive after %.0f s: %s", tag, GIVE_UP_S, swept.survivors)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
