"""Loaded by the gateway under test when the bench sets BENCH_OBJCOUNTS=<file>: a thread that
every BENCH_OBJCOUNTS_S seconds appends {"t", "rss_kb", "objects", "types": {name: count}} to
<file>, counting the live garbage-collected objects by type (objgraph-style). A leak shows as a
type whose count keeps growing while the workload does not; allocator high-water does not.

BENCH_PROFILE=<file>: the gateway runs under cProfile (its main thread, the event loop) and
writes the statistics to <file> when it exits (pstats format: `python -m pstats <file>`), in
thread CPU time. The profiler slows it down: read shares of time, not figures."""

from __future__ import annotations

import atexit
import cProfile
import gc
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _count(out: Path, period_s: float) -> None:
    t0 = time.monotonic()
    while True:
        time.sleep(period_s)
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        line: dict[str, object] = {
            "t": round(time.monotonic() - t0, 1),
            "rss_kb": _rss_kb(),
            "objects": sum(types.values()),
        }
        line["types"] = dict(types.most_common(60))
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")


if os.environ.get("BENCH_OBJCOUNTS"):
    threading.Thread(
        target=_count,
        args=(Path(os.environ["BENCH_OBJCOUNTS"]), float(os.environ.get("BENCH_OBJCOUNTS_S", "10"))),
        name="bench-objcounts",
        daemon=True,
    ).start()


if os.environ.get("BENCH_PROFILE"):
    # CPU time, not wall time: on a shared machine a process waiting for a core would blame
    # whatever it was running then (a socket write that woke the reader, most often).
    _profile = cProfile.Profile(time.thread_time)
    _profile.enable()

    def _dump_profile() -> None:
        _profile.disable()
        _profile.dump_stats(os.environ["BENCH_PROFILE"])

    atexit.register(_dump_profile)
