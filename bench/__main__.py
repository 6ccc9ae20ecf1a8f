"""`python -m bench [--quick] [--soak-s N] [--only latency,fanout,...]`: start a Valkey server
per design, the livestats gateway and the alternatives (each its own process), measure, print a
Markdown table and write bench/results/{quick,full}.json (+ .md). See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from . import capacity, delivery, replica_ack, scaling
from .procs import ROOT, machine
from .report import markdown
from .suite import DESIGNS, Bench, Settings

CASES = {
    "latency": delivery.latency,
    "fanout": delivery.fanout,
    "commands": delivery.commands,
    "replay": capacity.replay,
    "ingest": capacity.ingest,
    "memory": capacity.memory,
    "soak": capacity.soak,
    "replica_ack": replica_ack.case,
    "processes": scaling.processes,
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter windows; a 20 s soak (< 2 min)")
    parser.add_argument("--soak-s", type=float, help="soak length in seconds (default 600, quick 20)")
    parser.add_argument("--only", help=f"comma-separated cases of {', '.join(CASES)}")
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated subset of designs")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a setting (suite.py)"
    )
    parser.add_argument("--report", type=Path, metavar="JSON", help="only print the table of a results file")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/{quick,full}.json)")
    return parser.parse_args(argv)


def save(result: dict[str, object], out: Path) -> None:
    """Write the results (after every case too: a crash late in a long run keeps the rest)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    os.replace(tmp, out)


async def run(args: argparse.Namespace, command: str, out: Path) -> dict[str, object]:
    settings = Settings.make(args.quick, args.soak_s)
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(settings, name):
            raise SystemExit(f"--set {item}: no setting {name!r}")
        setattr(settings, name, type(getattr(settings, name))(value))
    cases = args.only.split(",") if args.only else list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    names = tuple(d for d in DESIGNS if d in args.designs.split(","))
    # Server logs and data stay here after the run (.run/ is ignored by git), for a post-mortem.
    workdir = ROOT / ".run" / "bench"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    bench = Bench(settings, workdir)
    try:
        bench.start(names)
        result: dict[str, object] = {
            "command": command,
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(next(iter(bench.designs.values())).url),
            "settings": vars(settings),
            "results": {},
        }
        t0 = time.monotonic()
        for case in cases:
            if case == "soak" and "livestats" not in bench.designs:
                continue
            c0 = time.monotonic()
            print(f"-- {case} ...", file=sys.stderr, flush=True)
            result["results"][case] = await CASES[case](bench)  # type: ignore[index]
            print(f"   {case}: {time.monotonic() - c0:.0f} s", file=sys.stderr, flush=True)
            result["duration_s"] = time.monotonic() - t0
            save(result, out)
        result["duration_s"] = time.monotonic() - t0
    finally:
        bench.stop()
    return result


def main() -> None:
    args = parse(sys.argv[1:])
    if args.report:
        print(markdown(orjson.loads(args.report.read_bytes())), end="")
        return
    command = "make bench" + (" ARGS=" + shlex.quote(" ".join(sys.argv[1:])) if sys.argv[1:] else "")
    out = args.out or RESULTS / ("quick.json" if args.quick else "full.json")
    result = asyncio.run(run(args, command, out))
    table = markdown(result)
    save(result, out)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"results: {out} (+ .md), {result['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
