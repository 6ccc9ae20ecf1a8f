"""The worker as child subreaper reaps the orphans re-parented to it, and never the children
asyncio waits for (docs/processes.md, "Reaping")."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from livestats_worker import children
from livestats_worker.containment import Containment
from livestats_worker.fpf import run_fpf

ORPHAN = """
import os, sys, time
middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        with open(sys.argv[1], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(1.0)  # long enough for the middle and the leader to exit: then it is ours
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
"""


def stat_of(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


async def test_an_orphan_that_exits_on_its_own_is_reaped_and_asyncio_keeps_its_exit_statuses(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    seen_as_our_zombie = False
    async with Containment():
        assert children.subreaper() is True
        result = await run_fpf(
            [sys.executable, "-c", ORPHAN, str(pid_file)],
            env=dict(os.environ),
            timeout_s=30,
            max_output_bytes=1024,
            kill_grace_s=1,
        )
        assert result.exit_code == 0
        orphan = int(pid_file.read_text())
        codes = []
        for _ in range(200):  # calls keep ending while the orphan exits and is reaped
            ended = await run_fpf(["sh", "-c", "exit 3"], env={}, timeout_s=30, max_output_bytes=1024, kill_grace_s=1)
            codes.append(ended.exit_code)
            state = stat_of(orphan)
            if state == ("Z", os.getpid()):
                seen_as_our_zombie = True  # re-parented to us, exited, waiting to be reaped
            if seen_as_our_zombie and state is None:
                break
            await asyncio.sleep(0.1)
    assert seen_as_our_zombie
    assert stat_of(orphan) is None  # reaped by the orphan reaper, not left a zombie
    assert set(codes) == {3}  # asyncio got every status of its own children
