"""classify(): which single reason a finished FPF call gets, and what the UI may show of it."""

from __future__ import annotations

import re
import signal

import orjson
import pytest
from livestats_shared.events import FailureReason, TokenUsage
from livestats_worker.fpf import ProcessResult
from livestats_worker.output import EXCERPT_CHARS, RETRYABLE, classify

# Every backslash in an excerpt starts one whole escape; '…' may mark a cut at either end.
_WHOLE_ESCAPES = re.compile(r"…?(?:[^\\]|\\x[0-9a-f]{2}|\\[nrt]|\\u[0-9a-f]{4}|\\U[0-9a-f]{8})*…?")


def ended(
    stdout: bytes = b"",
    *,
    exit_code: int | None = 0,
    signal_number: int | None = None,
    stderr: bytes = b"",
    overflow: bool = False,
    timed_out: bool = False,
    spawn_error: str | None = None,
) -> ProcessResult:
    return ProcessResult(
        exit_code=exit_code,
        signal=signal_number,
        stdout=stdout,
        stderr_tail=stderr,
        overflow=overflow,
        timed_out=timed_out,
        spawn_error=spawn_error,
        duration_s=1.25,
        pid=4242,
    )


def json_answer(size: int, usage: object = None) -> bytes:
    """A JSON object of exactly `size` bytes, newline included."""
    doc: dict[str, object] = {"id": "a1", "answer": ""}
    if usage is not None:
        doc["usage"] = usage
    doc["answer"] = "x" * (size - len(orjson.dumps(doc)) - 1)
    out = orjson.dumps(doc) + b"\n"
    assert len(out) == size
    return out


def assert_displayable(excerpt: str) -> None:
    assert len(excerpt) <= EXCERPT_CHARS
    assert excerpt.isprintable(), excerpt


def test_a_381_byte_json_answer_is_a_success():
    verdict = classify(ended(json_answer(381)), mode="json", min_bytes=0)

    assert verdict.ok
    assert verdict.reason is None
    assert verdict.size == 381


def test_json_mode_ignores_min_bytes_so_small_answers_are_never_retried():
    verdict = classify(ended(json_answer(381)), mode="json", min_bytes=3000)

    assert verdict.ok


def test_a_success_excerpt_shows_the_start_of_the_answer():
    verdict = classify(ended(b'{"answer": "forty-two"}\n'), mode="json", min_bytes=0)

    assert verdict.excerpt == '{"answer": "forty-two"}\\n'


def test_valid_json_with_a_nonzero_exit_code_is_an_exit_code_failure():
    result = ended(json_answer(381), exit_code=3, stderr=b"warning: quota low\n")

    verdict = classify(result, mode="json", min_bytes=0)

    assert not verdict.ok
    assert verdict.reason is FailureReason.EXIT_CODE
    assert verdict.excerpt == "exit code 3: warning: quota low"
    assert verdict.usage is None


def test_an_exit_code_failure_shows_the_end_of_a_long_stderr():
    stderr = b"Traceback (most recent call last):\n" + b"  frame\n" * 1000 + b"ValueError: boom\n"

    verdict = classify(ended(b"", exit_code=1, stderr=stderr), mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.EXIT_CODE
    assert verdict.excerpt.startswith("exit code 1: …")
    assert verdict.excerpt.endswith("ValueError: boom")
    assert_displayable(verdict.excerpt)


def test_a_spawn_error_outranks_everything_and_is_not_retried():
    result = ended(exit_code=None, timed_out=True, spawn_error="cannot start 'fpf': [Errno 2] No such file")

    verdict = classify(result, mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.SPAWN_ERROR
    assert verdict.excerpt == "cannot start 'fpf': [Errno 2] No such file"
    assert verdict.reason not in RETRYABLE


def test_a_timeout_outranks_overflow_and_the_signal_we_sent():
    result = ended(b"x" * 100, exit_code=None, signal_number=signal.SIGKILL, overflow=True, timed_out=True)

    verdict = classify(result, mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.TIMEOUT
    assert verdict.excerpt == "no exit within the call timeout; killed after 1.2 s"


def test_an_overflow_outranks_the_signal_we_sent():
    result = ended(b'{"answer": "' + b"a" * 1000, exit_code=None, signal_number=signal.SIGTERM, overflow=True)

    verdict = classify(result, mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.TOO_LARGE
    assert verdict.excerpt.startswith('more than 1012 bytes of output; killed: {"answer": "aaa')
    assert verdict.size == 1012
    assert_displayable(verdict.excerpt)


def test_death_by_a_signal_is_killed_and_names_the_signal():
    result = ended(json_answer(381), exit_code=None, signal_number=signal.SIGABRT, stderr=b"abort\n")

    verdict = classify(result, mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.KILLED
    assert verdict.excerpt == "killed by SIGABRT: abort"


def test_an_unknown_signal_number_is_still_named():
    verdict = classify(ended(exit_code=None, signal_number=99), mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.KILLED
    assert verdict.excerpt == "killed by signal 99"


def test_an_unknown_exit_status_is_an_exit_code_failure():
    verdict = classify(ended(json_answer(381), exit_code=None), mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.EXIT_CODE
    assert verdict.excerpt == "unknown exit status"


def test_an_exit_code_outranks_empty_output():
    verdict = classify(ended(b"", exit_code=1), mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.EXIT_CODE
    assert verdict.excerpt == "exit code 1"


@pytest.mark.parametrize("mode", ["json", "text"])
@pytest.mark.parametrize(
    ("stdout", "excerpt"),
    [(b"", "no output"), (b" \n\t\r\n", "only whitespace (5 bytes)")],
)
def test_no_output_or_only_whitespace_is_empty(mode, stdout, excerpt):
    verdict = classify(ended(stdout), mode=mode, min_bytes=0)

    assert verdict.reason is FailureReason.EMPTY
    assert verdict.excerpt == excerpt


@pytest.mark.parametrize("mode", ["json", "text"])
def test_output_that_is_not_utf8_is_not_utf8_in_either_mode(mode):
    verdict = classify(ended("café".encode("latin-1") + b"\n"), mode=mode, min_bytes=0)

    assert verdict.reason is FailureReason.NOT_UTF8
    assert verdict.excerpt == "invalid UTF-8 at byte 3: caf\\xe9\\n"


def test_binary_output_is_escaped_into_a_short_printable_excerpt():
    stdout = b"\xff\xfe\x00\x1b[31m\x07" + bytes(range(256)) * 40

    verdict = classify(ended(stdout), mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.NOT_UTF8
    assert verdict.excerpt.startswith("invalid UTF-8 at byte 0: \\xff\\xfe\\x00\\x1b[31m\\x07\\x00\\x01")
    assert verdict.excerpt.endswith("…")
    assert_displayable(verdict.excerpt)
    assert _WHOLE_ESCAPES.fullmatch(verdict.excerpt.split(": ", 1)[1])


def test_unicode_controls_and_separators_are_escaped_but_letters_are_kept():
    verdict = classify(ended('"\u00e9t\u00e9\u2028\u202e\U000e0001"'.encode()), mode="json", min_bytes=0)

    assert verdict.ok
    assert verdict.excerpt == '"\u00e9t\u00e9\\u2028\\u202e\\U000e0001"'


@pytest.mark.parametrize(
    "stdout",
    [
        pytest.param(json_answer(381)[:190], id="truncated"),
        pytest.param(b"I'm sorry, I can't do that.\n", id="prose"),
        pytest.param(b'{"answer": 1}\n{"answer": 2}\n', id="two-documents"),
        pytest.param(b"{'answer': 1}", id="single-quotes"),
    ],
)
def test_json_mode_output_that_does_not_parse_is_invalid_json(stdout):
    verdict = classify(ended(stdout), mode="json", min_bytes=0)

    assert verdict.reason is FailureReason.INVALID_JSON
    assert_displayable(verdict.excerpt)


def test_invalid_json_excerpt_gives_the_parser_error_and_the_start_of_the_output():
    verdict = classify(ended(b"I'm sorry."), mode="json", min_bytes=0)

    assert verdict.excerpt.startswith("unexpected character")
    assert verdict.excerpt.endswith(": I'm sorry.")


def test_text_mode_output_shorter_than_min_bytes_is_too_small():
    verdict = classify(ended(b"a" * 99), mode="text", min_bytes=100)

    assert verdict.reason is FailureReason.TOO_SMALL
    assert verdict.excerpt.startswith("99 bytes, fewer than the 100 required: aaa")


def test_text_mode_accepts_exactly_min_bytes_of_any_text():
    verdict = classify(ended(b"not json " * 10 + b"0123456789"), mode="text", min_bytes=100)

    assert verdict.ok
    assert verdict.size == 100


def test_text_mode_reports_no_usage_even_for_a_json_answer():
    verdict = classify(ended(json_answer(381, {"input_tokens": 1, "output_tokens": 2})), mode="text", min_bytes=0)

    assert verdict.ok
    assert verdict.usage is None


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param({"input_tokens": 12, "output_tokens": 300}, TokenUsage(input_tokens=12, output_tokens=300)),
        pytest.param(
            {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16},
            TokenUsage(input_tokens=7, output_tokens=9),
            id="openai-style",
        ),
        pytest.param(
            {"input_tokens": 1, "output_tokens": 2, "prompt_tokens": 50, "completion_tokens": 60},
            TokenUsage(input_tokens=1, output_tokens=2),
            id="our-names-win",
        ),
        pytest.param({"input_tokens": 0, "output_tokens": 0}, TokenUsage(), id="zeros"),
        pytest.param("300 tokens", None, id="not-an-object"),
        pytest.param({"input_tokens": 12}, None, id="one-count-missing"),
        pytest.param({"input_tokens": None, "output_tokens": 3}, None, id="null"),
        pytest.param(
            {"input_tokens": 2**53 - 2, "output_tokens": 1}, TokenUsage(input_tokens=2**53 - 2, output_tokens=1)
        ),
    ],
)
def test_usage_is_read_when_well_formed_and_left_out_when_not_reported(usage, expected):
    verdict = classify(ended(json_answer(381, usage)), mode="json", min_bytes=0)

    assert verdict.ok
    assert verdict.usage == expected


@pytest.mark.parametrize(
    "raw_usage",
    [
        pytest.param(b'{"input_tokens": -1, "output_tokens": 3}', id="negative"),
        pytest.param(b'{"input_tokens": 18446744073709551615, "output_tokens": 3}', id="2^64-1"),
        pytest.param(b'{"input_tokens": 18446744073709551616, "output_tokens": 3}', id="2^64"),
        pytest.param(b'{"input_tokens": 9223372036854775807, "output_tokens": 9223372036854775807}', id="2^63-1-twice"),
        pytest.param(b'{"input_tokens": 4503599627370496, "output_tokens": 4503599627370496}', id="sum-over-2^53"),
        pytest.param(b'{"input_tokens": NaN, "output_tokens": 3}', id="nan"),
        pytest.param(b'{"input_tokens": Infinity, "output_tokens": 3}', id="infinity"),
        pytest.param(b'{"input_tokens": 1e308, "output_tokens": 3}', id="1e308"),
        pytest.param(b'{"input_tokens": 1.5, "output_tokens": 3}', id="float"),
        pytest.param(b'{"input_tokens": "12", "output_tokens": 3}', id="string"),
        pytest.param(b'{"input_tokens": true, "output_tokens": 3}', id="bool"),
    ],
)
def test_absurd_usage_fails_the_attempt_with_invalid_usage(raw_usage):
    verdict = classify(ended(b'{"answer": "x", "usage": ' + raw_usage + b"}"), mode="json", min_bytes=0)

    assert not verdict.ok
    assert verdict.reason is FailureReason.INVALID_USAGE
    assert verdict.usage is None
    assert "usage" in verdict.excerpt


def test_nan_outside_the_usage_is_still_invalid_json():
    verdict = classify(
        ended(b'{"answer": NaN, "usage": {"input_tokens": 1, "output_tokens": 2}}'), mode="json", min_bytes=0
    )

    assert verdict.reason is FailureReason.INVALID_JSON


@pytest.mark.parametrize("stdout", [b'{"answer": "no usage"}', b"[1, 2, 3]", b'"just a string"', b"42"])
def test_any_json_document_is_a_success_with_or_without_usage(stdout):
    verdict = classify(ended(stdout), mode="json", min_bytes=0)

    assert verdict.ok
    assert verdict.usage is None


def test_every_excerpt_fits_the_ui_whatever_the_inputs():
    long_error = "cannot start '" + "/very/long/path\n" * 100 + "'"
    results = [
        ended(exit_code=None, spawn_error=long_error),
        ended(b"x", exit_code=None, timed_out=True, stderr=b"\x00\xff" * 3000),
        ended(b"\x1b" * 5000, exit_code=None, overflow=True),
        ended(b"", exit_code=2, stderr="é".encode() * 2048),
        ended(b"\xf0\x9f\x98\x80" * 2000 + b"\xff"),
        ended(b"{" * 5000),
        ended("\u2028".encode() * 5000),
    ]
    for result in results:
        for mode in ("json", "text"):
            assert_displayable(classify(result, mode=mode, min_bytes=10**6).excerpt)


def test_retryable_reasons_are_all_but_spawn_errors_and_cancellation():
    assert set(FailureReason) - RETRYABLE == {FailureReason.SPAWN_ERROR, FailureReason.CANCELLED}


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be"):
        classify(ended(b"{}"), mode="yaml", min_bytes=0)  # type: ignore[arg-type]
