"""Classify how one FPF call ended: a usable answer, or the single reason it is not.

Checks run in a fixed order and the first that fails names the reason: spawn error, timeout,
overflow, death by signal, non-zero exit, empty output, invalid UTF-8, then the mode's own
rule. A JSON answer has no minimum size: it only has to parse.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import orjson
from livestats_shared.events import MAX_SAFE_INT, FailureReason, TokenUsage
from livestats_shared.ids import MODEL_PATTERN

from .fpf import ProcessResult

EXCERPT_CHARS = 200  # longest excerpt, in characters, after escaping

# A command that cannot start will not start on the next attempt either, and a cancelled call
# belongs to a run that is over.
RETRYABLE: frozenset[FailureReason] = frozenset(FailureReason) - {
    FailureReason.SPAWN_ERROR,
    FailureReason.CANCELLED,
}

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Stop reasons that mean the model ran out of output tokens (Anthropic, OpenAI).
TRUNCATION_STOP_REASONS = frozenset({"max_tokens", "length"})
_MODEL = re.compile(MODEL_PATTERN.strip("^$"))


@dataclass(frozen=True)
class CallVerdict:
    ok: bool
    reason: FailureReason | None  # None exactly when ok
    excerpt: str  # at most EXCERPT_CHARS printable characters, safe to show in a UI
    usage: TokenUsage | None  # token counts the answer reported, if it reported them well-formed
    size: int  # bytes of stdout kept (at most max_output_bytes)
    model: str | None = None  # the model the answer says answered
    stop_reason: str | None = None  # why the answer says it stopped (end_turn, stop, max_tokens, ...)


def _unchanged(data: bytes) -> bytes:
    return data


def classify(
    result: ProcessResult,
    *,
    mode: Literal["json", "text"],
    min_bytes: int,
    redact: Callable[[bytes], bytes] = _unchanged,
) -> CallVerdict:
    """Decide whether `result` is a usable answer for a phase with this output `mode`.

    `min_bytes` applies in text mode only. Usage is read from a JSON object's "usage" field,
    as input_tokens/output_tokens or OpenAI's prompt_tokens/completion_tokens. Excerpts are
    built from `redact(output)`: the answer is judged as FPF wrote it, shown without secrets.
    """
    if mode not in ("json", "text"):
        raise ValueError(f"mode must be 'json' or 'text', not {mode!r}")
    out = result.stdout
    size = len(out)
    shown, err = redact(out), redact(result.stderr_tail).strip()
    if result.spawn_error is not None:
        spawn_error = redact(result.spawn_error.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
        return _failed(FailureReason.SPAWN_ERROR, _excerpt(spawn_error), size)
    if result.timed_out:
        prefix = f"no exit within the call timeout; killed after {result.duration_s:.1f} s"
        return _failed(FailureReason.TIMEOUT, _excerpt(prefix, err, tail=True), size)
    if result.overflow:
        return _failed(FailureReason.TOO_LARGE, _excerpt(f"more than {size} bytes of output; killed", shown), size)
    if result.signal is not None:
        prefix = f"killed by {_signal_name(result.signal)}"
        return _failed(FailureReason.KILLED, _excerpt(prefix, err, tail=True), size)
    if result.exit_code != 0:
        prefix = "unknown exit status" if result.exit_code is None else f"exit code {result.exit_code}"
        return _failed(FailureReason.EXIT_CODE, _excerpt(prefix, err, tail=True), size)
    if not out.strip():
        prefix = "no output" if size == 0 else f"only whitespace ({size} bytes)"
        return _failed(FailureReason.EMPTY, _excerpt(prefix, err, tail=True), size)
    try:
        out.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _failed(FailureReason.NOT_UTF8, _excerpt(f"invalid UTF-8 at byte {exc.start}", shown), size)

    if mode == "text":
        if size < min_bytes:
            prefix = f"{size} bytes, fewer than the {min_bytes} required"
            return _failed(FailureReason.TOO_SMALL, _excerpt(prefix, shown), size)
        return CallVerdict(ok=True, reason=None, excerpt=_excerpt("", shown), usage=None, size=size)
    try:
        doc = orjson.loads(out)
    except orjson.JSONDecodeError as exc:
        doc = _lenient_json(out)  # NaN, Infinity or a 2^64 integer: orjson refuses them
        if doc is None:
            return _failed(FailureReason.INVALID_JSON, _excerpt(str(exc), shown), size)
    try:
        usage = _usage(doc)
    except ValueError as exc:
        return _failed(FailureReason.INVALID_USAGE, _excerpt(str(exc), shown), size)
    if isinstance(doc, _Lenient):
        # Parsed only by the lenient reader, and the usage was not the reason: not JSON.
        return _failed(FailureReason.INVALID_JSON, _excerpt("NaN, Infinity or an out-of-range number", shown), size)
    model, stop_reason = _model(doc), _stop_reason(doc)
    if stop_reason in TRUNCATION_STOP_REASONS:
        # A cut-short answer is a partial deliverable: a failed attempt (retried), whose tokens
        # were still spent and priced.
        prefix = f"the answer was cut short (stop reason {stop_reason})"
        return CallVerdict(False, FailureReason.TRUNCATED, _excerpt(prefix, shown), usage, size, model, stop_reason)
    return CallVerdict(True, None, _excerpt("", shown), usage, size, model, stop_reason)


def _failed(reason: FailureReason, excerpt: str, size: int) -> CallVerdict:
    return CallVerdict(ok=False, reason=reason, excerpt=excerpt, usage=None, size=size)


def _model(doc: object) -> str | None:
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) and _MODEL.fullmatch(model) else None


def _stop_reason(doc: object) -> str | None:
    """Anthropic's `stop_reason`, OpenAI's `finish_reason` (top level or in the first choice)."""
    if not isinstance(doc, dict):
        return None
    reason = doc.get("stop_reason", doc.get("finish_reason"))
    choices = doc.get("choices")
    if reason is None and isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
    return reason[:64] if isinstance(reason, str) and reason.isprintable() else None


class _Lenient(dict):  # type: ignore[type-arg]
    """A document only Python's json module reads (it takes NaN, Infinity and any integer)."""


def _lenient_json(out: bytes) -> _Lenient | None:
    try:
        doc = json.loads(out)
    except (ValueError, RecursionError):
        return None
    return _Lenient(doc) if isinstance(doc, dict) else None


def _usage(doc: object) -> TokenUsage | None:
    """The usage the answer reports; None when it reports none (no object, or a figure left out
    or null). Raises ValueError for a figure that is there but not a count in [0, 2^53-1]
    (negative, fractional, NaN, Infinity, 2^64-1, a string, `true`): the attempt fails
    `invalid_usage` rather than letting an absurd figure reach the run's counters."""
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return None
    input_tokens = usage["input_tokens"] if "input_tokens" in usage else usage.get("prompt_tokens")
    output_tokens = usage["output_tokens"] if "output_tokens" in usage else usage.get("completion_tokens")
    if input_tokens is None or output_tokens is None:
        return None
    for name, value in (("input", input_tokens), ("output", output_tokens)):
        # bool is an int subclass, and `true` is not a token count.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAFE_INT:
            raise ValueError(f"usage {name} tokens {value!r} is not a count in [0, 2^53-1]")
    if input_tokens + output_tokens > MAX_SAFE_INT:
        raise ValueError(f"usage total {input_tokens + output_tokens} is over 2^53-1")
    details = usage.get("prompt_tokens_details")
    cached = usage.get("cached_input_tokens", details.get("cached_tokens") if isinstance(details, dict) else None)
    # A cached figure that is not a count within the input is ignored: it only changes the price.
    valid = isinstance(cached, int) and not isinstance(cached, bool) and 0 <= cached <= input_tokens
    return TokenUsage(
        input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached if valid else 0
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _excerpt(prefix: str, data: bytes = b"", *, tail: bool = False) -> str:
    """`prefix`, then as much of `data` (its start, or its end if `tail`) as fits, all escaped."""
    head = _fit(_escaped(prefix), EXCERPT_CHARS, tail=False)
    room = EXCERPT_CHARS - len(head) - (2 if head else 0)
    if not data or room < 8:
        return head
    # UTF-8 takes at most 4 bytes a character, so this window holds more than `room` characters.
    window = 4 * room + 4
    chunk = data[-window:] if tail else data[:window]
    body = _fit(_escaped(chunk.decode("utf-8", "surrogateescape")), room, tail=tail)
    return f"{head}: {body}" if head else body


def _escaped(text: str) -> list[str]:
    """One printable piece per character: undecodable bytes as \\xNN, control characters escaped."""
    pieces = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            # surrogateescape's stand-in for the undecodable byte code - 0xDC00.
            pieces.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            pieces.append(ch)
        elif ch in _ESCAPES:
            pieces.append(_ESCAPES[ch])
        elif code <= 0xFF:
            pieces.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            pieces.append(f"\\u{code:04x}")
        else:
            pieces.append(f"\\U{code:08x}")
    return pieces


def _fit(pieces: list[str], limit: int, *, tail: bool) -> str:
    """At most `limit` characters of `pieces`, never splitting an escape; '…' marks the cut."""
    if sum(len(piece) for piece in pieces) <= limit:
        return "".join(pieces)
    budget = limit - 1
    kept: list[str] = []
    for piece in reversed(pieces) if tail else pieces:
        if len(piece) > budget:
            break
        kept.append(piece)
        budget -= len(piece)
    return "…" + "".join(reversed(kept)) if tail else "".join(kept) + "…"
