"""The FPF simulator as a real process: its answer, its knobs, and how it refuses bad ones."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from proc_util import pids_with_env

SIM = [sys.executable, "-m", "livestats_fpfsim"]
PROMPT = "Compare answers A and B for item 12; explain which is better.\n"


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT)
    return path


def sim_env(**env: object) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FPF_")}
    base.update(FPF_SIM_LATENCY_MS="0", FPF_SIM_JITTER_MS="0")
    base.update({k: str(v) for k, v in env.items()})
    return base


def simulate(*args: object, timeout: float = 10, **env: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SIM, *map(str, args)], env=sim_env(**env), capture_output=True, timeout=timeout, check=False
    )


def test_the_answer_is_one_381_byte_json_object_naming_the_call(prompt_file):
    done = simulate(prompt_file, FPF_PHASE="evaluate", FPF_CALL=12, FPF_ATTEMPT=2, FPF_SIM_TOKEN_JITTER=0)

    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 381
    assert done.stdout.endswith(b"}\n")
    answer = json.loads(done.stdout)
    assert set(answer) == {"id", "model", "stop_reason", "phase", "call", "answer", "usage"}
    assert (answer["model"], answer["phase"], answer["call"]) == ("fpf-sim-1", "evaluate", 12)
    assert answer["answer"].startswith("Simulated answer to: Compare answers A and B for item 12; explain")
    assert answer["usage"] == {"input_tokens": math.ceil(len(PROMPT) / 4), "output_tokens": 300}


def test_output_tokens_vary_by_at_most_the_token_jitter(prompt_file):
    counts = set()
    for call in range(8):
        done = simulate(
            prompt_file, FPF_SIM_SEED="s", FPF_CALL=call, FPF_SIM_OUTPUT_TOKENS=1000, FPF_SIM_TOKEN_JITTER=0.1
        )
        counts.add(json.loads(done.stdout)["usage"]["output_tokens"])

    assert len(counts) > 1
    assert all(900 <= count <= 1100 for count in counts)


def test_the_same_seed_call_and_attempt_reproduce_the_same_answer(prompt_file):
    first = simulate(prompt_file, FPF_SIM_SEED="run-1", FPF_CALL=3, FPF_ATTEMPT=1)
    again = simulate(prompt_file, FPF_SIM_SEED="run-1", FPF_CALL=3, FPF_ATTEMPT=1, PYTHONHASHSEED=123)
    next_attempt = simulate(prompt_file, FPF_SIM_SEED="run-1", FPF_CALL=3, FPF_ATTEMPT=2)
    next_call = simulate(prompt_file, FPF_SIM_SEED="run-1", FPF_CALL=4, FPF_ATTEMPT=1)
    other_seed = simulate(prompt_file, FPF_SIM_SEED="run-2", FPF_CALL=3, FPF_ATTEMPT=1)

    assert first.stdout == again.stdout
    assert len({first.stdout, next_attempt.stdout, next_call.stdout, other_seed.stdout}) == 4


def test_without_a_seed_every_run_differs(prompt_file):
    assert simulate(prompt_file).stdout != simulate(prompt_file).stdout


def test_fail_first_fails_the_early_attempts_then_answers(prompt_file):
    outcomes = [simulate(prompt_file, FPF_SIM_FAIL_FIRST=2, FPF_ATTEMPT=attempt) for attempt in (1, 2, 3)]

    assert [done.returncode for done in outcomes] == [1, 1, 0]
    assert outcomes[1].stderr == b"fpf-sim: simulated failure on attempt 2\n"
    assert outcomes[1].stdout == b""
    assert json.loads(outcomes[2].stdout)["model"] == "fpf-sim-1"


def test_fail_first_outranks_a_forced_behaviour(prompt_file):
    first = simulate(prompt_file, FPF_SIM_FAIL_FIRST=1, FPF_SIM_BEHAVIOUR="empty", FPF_ATTEMPT=1)
    second = simulate(prompt_file, FPF_SIM_FAIL_FIRST=1, FPF_SIM_BEHAVIOUR="empty", FPF_ATTEMPT=2)

    assert (first.returncode, second.returncode, second.stdout) == (1, 0, b"")


def test_the_fail_rate_is_applied_per_call_and_reproducibly(prompt_file):
    def codes() -> list[int]:
        return [
            simulate(prompt_file, FPF_SIM_SEED="rate", FPF_SIM_FAIL_RATE=0.5, FPF_CALL=call).returncode
            for call in range(10)
        ]

    first = codes()

    assert set(first) == {0, 1}
    assert codes() == first


def test_a_garbage_rate_of_one_prints_text_that_is_not_json(prompt_file):
    done = simulate(prompt_file, FPF_SIM_GARBAGE_RATE=1)

    assert done.returncode == 0
    assert done.stdout.startswith(b"I'm sorry")
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stdout)


def test_a_hang_rate_of_one_never_answers(prompt_file):
    with pytest.raises(subprocess.TimeoutExpired):
        simulate(prompt_file, FPF_SIM_HANG_RATE=1, timeout=1)


def test_latency_delays_the_answer(prompt_file):
    started = time.monotonic()
    done = simulate(prompt_file, FPF_SIM_LATENCY_MS=400, FPF_SIM_JITTER_MS=0)

    assert done.returncode == 0
    assert time.monotonic() - started >= 0.4


@pytest.mark.parametrize("size", [0, 1, 4000])
def test_text_bytes_answers_with_exactly_that_much_plain_text(prompt_file, size):
    done = simulate(prompt_file, FPF_SIM_TEXT_BYTES=size)

    assert done.returncode == 0
    assert len(done.stdout) == size
    if size:
        assert done.stdout.endswith(b"\n")
        assert done.stdout[:-1].decode("ascii").isprintable()


def test_huge_prints_exactly_huge_bytes_of_one_json_document(prompt_file):
    done = simulate(prompt_file, FPF_SIM_BEHAVIOUR="huge", FPF_SIM_HUGE_BYTES=300_000)

    assert len(done.stdout) == 300_000
    assert json.loads(done.stdout)["model"] == "fpf-sim-1"


@pytest.mark.parametrize(
    ("behaviour", "returncode", "check"),
    [
        ("empty", 0, lambda out: out == b""),
        ("binary", 0, lambda out: out.startswith(b"\xff\xfe") and len(out) == 512),
        ("truncated", 0, lambda out: out.startswith(b'{"id": "sim-') and 150 < len(out) < 200),
        ("exit_json", 3, lambda out: json.loads(out)["model"] == "fpf-sim-1"),
        ("fail", 1, lambda out: out == b""),
    ],
)
def test_forced_behaviours(prompt_file, behaviour, returncode, check):
    done = simulate(prompt_file, FPF_SIM_BEHAVIOUR=behaviour)

    assert done.returncode == returncode
    assert check(done.stdout), done.stdout[:100]


def test_crash_dies_from_sigabrt_without_leaving_a_core_file(prompt_file, tmp_path):
    done = subprocess.run(
        [*SIM, str(prompt_file)],
        env=sim_env(FPF_SIM_BEHAVIOUR="crash"),
        cwd=tmp_path,
        capture_output=True,
        timeout=10,
        check=False,
    )

    assert done.returncode == -signal.SIGABRT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompt.txt"]


def wait_for_pids(marker: str, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(pids := pids_with_env("FPF_RUN_ID", marker)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} processes, saw {pids}")
        time.sleep(0.01)
    return pids


def test_hang_with_child_keeps_its_child_in_its_own_process_group(prompt_file, marker):
    with subprocess.Popen(
        [*SIM, str(prompt_file)],
        env=sim_env(FPF_SIM_BEHAVIOUR="hang_with_child", FPF_RUN_ID=marker),
        start_new_session=True,
    ) as leader:
        pids = wait_for_pids(marker, 2)
        groups = {os.getpgid(pid) for pid in pids}
        os.killpg(leader.pid, signal.SIGKILL)

    assert len(pids) == 2
    assert groups == {leader.pid}


def test_ignore_term_survives_sigterm(prompt_file, marker):
    with subprocess.Popen(
        [*SIM, str(prompt_file)], env=sim_env(FPF_SIM_BEHAVIOUR="ignore_term", FPF_RUN_ID=marker)
    ) as leader:
        deadline = time.monotonic() + 10
        while not _ignores_sigterm(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        leader.terminate()
        time.sleep(0.2)  # an absence (no exit) has no event to wait for: give SIGTERM a moment
        still_running = leader.poll() is None
        leader.kill()

    assert still_running
    assert leader.returncode == -signal.SIGKILL


def test_orphan_child_answers_and_leaves_its_child_running_in_its_group(prompt_file, marker, tmp_path):
    answer = tmp_path / "answer.json"
    # The orphan inherits stdout: a file rather than a pipe, so nothing waits for it to close.
    with answer.open("wb") as stdout:
        leader = subprocess.Popen(
            [*SIM, str(prompt_file)],
            env=sim_env(FPF_SIM_BEHAVIOUR="orphan_child", FPF_RUN_ID=marker),
            stdout=stdout,
            start_new_session=True,
        )
        returncode = leader.wait(timeout=10)
    orphans = pids_with_env("FPF_RUN_ID", marker)

    assert returncode == 0
    assert json.loads(answer.read_bytes())["model"] == "fpf-sim-1"
    assert len(orphans) == 1
    assert os.getpgid(orphans[0]) == leader.pid


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FPF_SIM_FAIL_RATE", "often"),
        ("FPF_SIM_FAIL_RATE", "1.5"),
        ("FPF_SIM_HANG_RATE", "-0.1"),
        ("FPF_SIM_GARBAGE_RATE", "nan"),
        ("FPF_SIM_LATENCY_MS", "-1"),
        ("FPF_SIM_JITTER_MS", "inf"),
        ("FPF_SIM_FAIL_FIRST", "1.5"),
        ("FPF_SIM_FAIL_FIRST", "-1"),
        ("FPF_SIM_OUTPUT_TOKENS", "many"),
        ("FPF_SIM_TOKEN_JITTER", "2"),
        ("FPF_SIM_TEXT_BYTES", "-5"),
        ("FPF_SIM_HUGE_BYTES", "10MB"),
        ("FPF_SIM_BEHAVIOUR", "explode"),
        ("FPF_ATTEMPT", "0"),
        ("FPF_CALL", "seven"),
    ],
)
def test_an_invalid_variable_exits_2_naming_it(prompt_file, variable, value):
    done = simulate(prompt_file, **{variable: value})

    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.startswith(f"livestats-fpf-sim: {variable} must ".encode())
    assert repr(value).encode() in done.stderr


def test_rates_that_add_up_to_more_than_one_exit_2(prompt_file):
    done = simulate(prompt_file, FPF_SIM_FAIL_RATE=0.6, FPF_SIM_HANG_RATE=0.5)

    assert done.returncode == 2
    assert b"must not exceed 1" in done.stderr


def test_empty_variables_count_as_unset(prompt_file):
    done = simulate(prompt_file, FPF_SIM_FAIL_RATE="", FPF_SIM_BEHAVIOUR=" ", FPF_ATTEMPT="")

    assert done.returncode == 0
    assert json.loads(done.stdout)["model"] == "fpf-sim-1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["/nonexistent/prompt.txt"], b"cannot read prompt file '/nonexistent/prompt.txt'", id="missing"),
        pytest.param(["/"], b"cannot read prompt file '/': Is a directory", id="directory"),
        pytest.param([], b"expected exactly one argument", id="no-argument"),
        pytest.param(["a", "b"], b"expected exactly one argument", id="two-arguments"),
    ],
)
def test_a_bad_prompt_argument_exits_2(args, message):
    done = simulate(*args)

    assert done.returncode == 2
    assert done.stdout == b""
    assert message in done.stderr


def test_help_lists_every_variable():
    done = simulate("--help")

    assert done.returncode == 0
    for name in ("FPF_SIM_LATENCY_MS", "FPF_SIM_BEHAVIOUR", "FPF_SIM_SEED", "FPF_SIM_TEXT_BYTES", "FPF_ATTEMPT"):
        assert name.encode() in done.stdout
