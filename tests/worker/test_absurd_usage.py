"""An FPF answer with an absurd usage figure fails only its own attempt (`invalid_usage`), shown
like any other failure; its neighbours are written and the snapshot equals the fold."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from helpers import wait_finished
from livestats_shared.control import submit_run
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.stats import PRODUCER_PREFIX, RunSnapshot, fold

# What call 1 answers; every other call answers a sane usage.
ABSURD = {
    "2^64-1": '{"input_tokens": 18446744073709551615, "output_tokens": 1}',
    "2^63-1-twice": '{"input_tokens": 9223372036854775807, "output_tokens": 9223372036854775807}',
    "negative": '{"input_tokens": -1, "output_tokens": 1}',
    "nan": '{"input_tokens": NaN, "output_tokens": 1}',
    "infinity": '{"input_tokens": Infinity, "output_tokens": 1}',
    "1e308": '{"input_tokens": 1e308, "output_tokens": 1}',
}


def fpf_answering(tmp_path: Path, usage: str) -> list[str]:
    script = tmp_path / "fpf.py"
    script.write_text(
        "import os\n"
        f"usage = {usage!r} if os.environ['FPF_CALL'] == '1' else '{{\"input_tokens\": 10, \"output_tokens\": 20}}'\n"
        'print(\'{"answer": "ok", "usage": \' + usage + \'}\')\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return [sys.executable, str(script)]


@pytest.mark.parametrize("case", list(ABSURD))
async def test_an_absurd_usage_fails_only_its_attempt_with_invalid_usage(
    redis, publisher, start_worker, queue_name, tmp_path, case
):
    await start_worker(fpf_command=fpf_answering(tmp_path, ABSURD[case]))
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=3, concurrency=3, max_attempts=1)])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    finished = (await wait_finished(redis, run_id, 60)).payload()
    assert (finished.outcome.value, finished.reason) == ("failed", "calls_given_up")

    events = await read_events(redis, run_id)
    failures = [e.payload() for e in events if e.type == "call.failed"]
    assert [(f.call, f.reason.value, f.final) for f in failures] == [(1, "invalid_usage", True)]
    assert "usage" in failures[0].excerpt
    h = await read_stats_hash(redis, run_id)
    assert {k: v for k, v in h.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)
    snap = RunSnapshot.from_hash(run_id, h)
    assert (snap.successful_calls, snap.calls_given_up, snap.input_tokens, snap.output_tokens) == (2, 1, 20, 40)
