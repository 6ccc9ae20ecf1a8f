"""`python -m bench.containment_cost [--calls N]`: what the marker sweep costs (docs/processes.md).

Prints the time of one /proc scan on this host (with its process count and load), and the
median wall time of a trivial call (`true`) run by run_fpf without and with a call marker, so
the sweep's share of a call's overhead is measured, not guessed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from livestats_worker import procscan
from livestats_worker.children import call_marker
from livestats_worker.fpf import run_fpf


async def _call(marked: bool) -> float:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if marked:
        env["LIVESTATS_CALL"] = call_marker("bench", "generate", 0, 1)
    started = time.perf_counter()
    result = await run_fpf(["true"], env=env, timeout_s=30, max_output_bytes=1024, kill_grace_s=1)
    assert result.exit_code == 0
    return time.perf_counter() - started


async def main(calls: int) -> None:
    scans = []
    for _ in range(calls):
        started = time.perf_counter()
        procscan.marked_pids(lambda value: False)
        scans.append(time.perf_counter() - started)
    processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
    plain = [await _call(False) for _ in range(calls)]
    marked = [await _call(True) for _ in range(calls)]
    print(f"host: {processes} processes, load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"/proc scan: median {statistics.median(scans) * 1000:.1f} ms over {calls}")
    print(f"call `true` without marker: median {statistics.median(plain) * 1000:.1f} ms")
    print(f"call `true` with marker (group kill + sweep): median {statistics.median(marked) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    asyncio.run(main(parser.parse_args().calls))
