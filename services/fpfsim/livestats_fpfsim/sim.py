"""Acting out one FPF call: pick a behaviour, wait the simulated latency, then answer (or misbehave)."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import time

from .config import SimConfig

# See config.py: annotation-only imports stay out of the hot start-up path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

ANSWER_BYTES = 380  # bytes of the normal JSON answer before its newline; real FPF answers are this small
_CHUNK = 64 * 1024  # bytes per write of the `huge` answer
_WORDS = (
    "the",
    "model",
    "weighs",
    "evidence",
    "from",
    "each",
    "source",
    "and",
    "finds",
    "that",
    "answer",
    "is",
    "supported",
    "by",
    "three",
    "independent",
    "lines",
    "of",
    "reasoning",
)


def run(config: SimConfig, prompt: bytes) -> int:
    """Act out one call and return the exit status; the hanging and crashing behaviours never return."""
    rng = _rng(config)
    behaviour = _choose(config, rng)
    delay_ms = max(0.0, config.latency_ms + rng.uniform(-config.jitter_ms, config.jitter_ms))
    time.sleep(delay_ms / 1000)

    if behaviour == "fail":
        _say(f"fpf-sim: simulated failure on attempt {config.attempt}")
        return 1
    if behaviour == "hang":
        _hang()
    if behaviour == "ignore_term":
        # The worker must escalate to SIGKILL after its grace period.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _hang()
    if behaviour == "hang_with_child":
        _spawn_sleeper()
        _hang()
    if behaviour == "crash":
        _say("fpf-sim: simulated crash (abort)")
        # A crash test must not leave core files wherever the worker happens to run.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.abort()
    if behaviour == "empty":
        return 0
    if behaviour == "garbage":
        _emit(_garbage(rng))
        return 0
    if behaviour == "binary":
        # 0xff never occurs in UTF-8, so this is undecodable whatever the random tail holds.
        _emit(b"\xff\xfe" + rng.randbytes(510))
        return 0
    if behaviour == "huge":
        _emit_huge(config.huge_bytes)
        return 0

    answer = _answer(config, rng, prompt, "max_tokens" if behaviour == "max_tokens" else "end_turn")
    if behaviour == "truncated":
        _emit(answer[: len(answer) // 2])
        return 0
    if behaviour == "orphan_child":
        _spawn_sleeper()
    _emit(answer)
    return 3 if behaviour == "exit_json" else 0


def _rng(config: SimConfig) -> random.Random:
    if config.seed is None:
        return random.Random()
    # A str seed is hashed with SHA-512, so runs reproduce whatever PYTHONHASHSEED is; mixing in
    # the call identity makes every call and attempt differ.
    return random.Random(f"{config.seed}:{config.phase}:{config.call}:{config.attempt}")


def _choose(config: SimConfig, rng: random.Random) -> str:
    if config.attempt <= config.fail_first:
        return "fail"
    if config.behaviour != "ok":
        return config.behaviour
    draw = rng.random()
    for behaviour, rate in (
        ("fail", config.fail_rate),
        ("hang", config.hang_rate),
        ("garbage", config.garbage_rate),
    ):
        if draw < rate:
            return behaviour
        draw -= rate
    return "ok"


def _answer(config: SimConfig, rng: random.Random, prompt: bytes, stop_reason: str = "end_turn") -> bytes:
    """The normal answer: plain text if FPF_SIM_TEXT_BYTES is set, else one small JSON object."""
    if config.text_bytes is not None:
        if config.text_bytes == 0:
            return b""
        return (_fill("Simulated answer.", config.text_bytes - 1, rng) + "\n").encode()
    jitter = rng.uniform(-config.token_jitter, config.token_jitter)
    doc: dict[str, object] = {
        "id": f"sim-{rng.getrandbits(64):016x}",
        "model": config.model,
        "stop_reason": stop_reason,
        "phase": config.phase,
        "call": config.call,
        "answer": "",
        "usage": {
            "input_tokens": (len(prompt) + 3) // 4,
            "output_tokens": max(0, round(config.output_tokens * (1 + jitter))),
        },
    }
    room = ANSWER_BYTES - len(json.dumps(doc))
    doc["answer"] = _fill(f"Simulated answer to: {_snippet(prompt)}", room, rng)
    return json.dumps(doc).encode() + b"\n"


def _snippet(prompt: bytes) -> str:
    # Plain ASCII only, so the answer's JSON-escaped length equals its character count.
    text = prompt[:80].decode("ascii", "replace")
    return " ".join("".join(ch if ch.isalnum() or ch in ".,;:!?'-" else " " for ch in text).split())


def _fill(start: str, size: int, rng: random.Random) -> str:
    """Exactly `size` characters: `start`, then random words."""
    parts = [start]
    length = len(start)
    while length < size:
        word = rng.choice(_WORDS)
        parts.append(word)
        length += 1 + len(word)
    return " ".join(parts)[: max(size, 0)]


def _garbage(rng: random.Random) -> bytes:
    words = " ".join(rng.choice(_WORDS) for _ in range(12))
    return f"I'm sorry, I can't format that as JSON. Here is a draft: {words}\n{{\"answer\": ".encode()


def _emit_huge(total: int) -> None:
    """`total` bytes of one JSON object with an enormous answer, as a runaway model would produce."""
    head = b'{"id": "sim-huge", "model": "fpf-sim-1", "answer": "'
    tail = b'"}\n'
    if total < len(head) + len(tail):
        _emit((head + tail)[:total])
        return
    _emit(head)
    chunk = (b"and so on " * (_CHUNK // 10 + 1))[:_CHUNK]
    body = total - len(head) - len(tail)
    while body > 0:
        _emit(chunk[: min(body, _CHUNK)])
        body -= _CHUNK
    _emit(tail)


def _spawn_sleeper() -> None:
    # No setsid/setpgroup: the child stays in our process group and inherits stdout and stderr,
    # like a helper process a real FPF might leave behind.
    os.posix_spawnp("sleep", ["sleep", "1000"], os.environ)


def _hang() -> NoReturn:
    while True:
        time.sleep(3600)


def _emit(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader is gone (the worker gave up on this call), so nobody is left to answer.
        # Leave at once: a normal exit would fail again flushing stdout and print a traceback.
        os._exit(1)


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
