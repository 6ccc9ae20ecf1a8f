"""What goes over the wire: events encoded once, frames for WebSocket and SSE, close codes.

Events are encoded straight from stream entries (the `data` field is already JSON and is
embedded as is), once per batch; every subscriber of a stream gets the same frame object.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

import orjson
from livestats_shared.errors import InvalidEvent, LivestatsError
from livestats_shared.events import DATA_MODELS

from ..compat import raw_stream_replies as raw_stream_replies  # re-exported: redis-py internals live in compat

PROTOCOL_VERSION = 1
_STREAM_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
STREAM_ID_PART_MAX = (1 << 64) - 1

Frame = str | bytes  # WebSocket frames are text; SSE chunks are bytes


class CloseCode(IntEnum):
    """WebSocket close codes. 4xxx mirror the HTTP status a REST call would get."""

    GOING_AWAY = 1001  # gateway shutting down: reconnect (to another gateway) and resume
    UNSUPPORTED_DATA = 1003  # the client sent a binary message
    MESSAGE_TOO_BIG = 1009  # the client sent more than client_message_max_bytes
    INTERNAL_ERROR = 1011  # a bug: reported in the gateway's log
    TRY_AGAIN_LATER = 1013  # Redis is unavailable: reconnect with backoff and resume
    SLOW_CLIENT = 4008  # the client fell behind its send queue: reconnect with `since`
    BAD_REQUEST = 4400  # invalid `since`
    UNAUTHORIZED = 4401  # no token, or an unknown or revoked one (also when revoked mid-stream)
    FORBIDDEN = 4403  # the token lacks the `read` scope, or the browser origin is not allowed
    NOT_FOUND = 4404  # no such run (or not one this principal may see)
    INVALID_RUN_ID = 4422  # the run id does not match the id pattern
    TOO_MANY_STREAMS = 4429  # the principal holds max_streams_per_principal streams on this gateway


class InvalidStreamId(LivestatsError, ValueError):
    pass


def parse_stream_id(raw: str) -> tuple[int, int]:
    """`1763770000123-4` (or `1763770000123`, meaning `-0`) as a comparable tuple."""
    m = _STREAM_ID.match(raw)
    if m is None:
        raise InvalidStreamId(f"not a stream id: {raw[:40]!r} (expected <ms>-<n>)")
    sid = int(m[1]), int(m[2] or 0)
    if max(sid) > STREAM_ID_PART_MAX:  # Redis would refuse it: say so here, not as a server error
        raise InvalidStreamId(f"stream id {raw!r} is out of range: each part must fit in 64 bits")
    return sid


def format_stream_id(sid: tuple[int, int]) -> str:
    return f"{sid[0]}-{sid[1]}"


class WireEvent(NamedTuple):
    sid: tuple[int, int]  # stream id, comparable
    id: str
    seq: int
    type: str
    json: bytes  # the whole envelope, `id` included


_KNOWN_TYPES = frozenset(t.encode() for t in DATA_MODELS)
_FIELD_ORDER = [b"v", b"type", b"run_id", b"seq", b"ts", b"data"]
_ENVELOPE = b'{"v":%b,"type":"%b","run_id":"%b","seq":%b,"ts":%b,"data":%b,"id":"%b"}'


RawEntry = tuple[bytes, list[bytes]]  # (id, [field, value, ...]) as Redis sends it


def entry_fields(flat: list[bytes]) -> dict[bytes, bytes]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def encode_entry(entry_id: bytes, flat: list[bytes], run_id: bytes) -> WireEvent:
    """One stream entry of run `run_id` as a wire event, its JSON spliced from the stored
    fields (the hot path of replay and fan-out: ~1 us). Every piece is checked first, so an
    entry livestats did not write raises InvalidEvent instead of reaching clients as bad JSON."""
    try:
        if flat[::2] == _FIELD_ORDER:  # as the publish script writes them: no dict needed
            v_raw, etype, rid, seq_raw, ts_raw, data = flat[1::2]
        else:
            fields = entry_fields(flat)
            v_raw, etype, rid, seq_raw, ts_raw, data = (fields[k] for k in _FIELD_ORDER)
        ms, _, n = entry_id.partition(b"-")
        sid = (int(ms), int(n or b"0"))
        if not (seq_raw.isdigit() and ts_raw.isdigit() and v_raw.isdigit()):  # spliced as JSON numbers
            raise ValueError("v, seq and ts must be decimal integers")
        seq = int(seq_raw)
        if rid != run_id:
            raise ValueError(f"run_id {rid[:80]!r} in the stream of {run_id.decode()}")
        if etype not in _KNOWN_TYPES:  # a type name is spliced into JSON unescaped: known ones only
            raise ValueError(f"unknown event type {etype[:40]!r}")
        if data[:1] != b"{" or type(_loads(data)) is not dict:
            raise ValueError("data is not a JSON object")
    except (KeyError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidEvent(f"stream entry {entry_id[:40]!r} is not a livestats event: {exc}") from exc
    json = _ENVELOPE % (v_raw, etype, run_id, seq_raw, ts_raw, data, entry_id)
    # tuple.__new__, not WireEvent(...): the NamedTuple constructor is a Python-level function,
    # and this runs once per event replayed (100,000 for a long run).
    return _new_tuple(WireEvent, (sid, entry_id.decode(), seq, etype.decode(), json))


_loads = orjson.loads
_new_tuple = tuple.__new__
_FIELD_NAMES = tuple(_FIELD_ORDER)


class HistoryPage:
    """Stream entries of one run encoded for a replay: per valid event its envelope JSON, seq,
    stream id and type, in stream order (no WireEvent each: a replay builds none, and skips
    parsing every stream id; `event(i)` makes one where a reset needs it)."""

    __slots__ = ("ids", "invalid", "jsons", "seqs", "types")

    def __init__(self) -> None:
        self.jsons: list[bytes] = []
        self.seqs: list[int] = []
        self.ids: list[bytes] = []
        self.types: list[bytes] = []
        self.invalid = 0  # entries skipped: livestats did not write them

    def __len__(self) -> int:
        return len(self.jsons)

    def sid(self, i: int) -> tuple[int, int]:
        ms, _, n = self.ids[i].partition(b"-")
        return int(ms), int(n or b"0")

    def event(self, i: int) -> WireEvent:
        return WireEvent(self.sid(i), self.ids[i].decode(), self.seqs[i], self.types[i].decode(), self.jsons[i])


def encode_page(entries: list[RawEntry], run_id: bytes) -> HistoryPage:
    """`entries` of run `run_id` as a HistoryPage, with encode_entry's checks: the entries the
    publish script wrote take the inlined path below; anything else goes through encode_entry,
    which takes the other field orders and says why an entry is refused."""
    page = HistoryPage()
    jsons, seqs, ids, types = page.jsons, page.seqs, page.ids, page.types
    envelope, names, known = _ENVELOPE, _FIELD_NAMES, _KNOWN_TYPES
    for entry_id, flat in entries:
        try:
            f0, v_raw, f2, etype, f4, rid, f6, seq_raw, f8, ts_raw, f10, data = flat
            ok = (
                (f0, f2, f4, f6, f8, f10) == names
                and rid == run_id
                and etype in known
                and seq_raw.isdigit()
                and ts_raw.isdigit()
                and v_raw.isdigit()
                and data[:1] == b"{"
                and type(_loads(data)) is dict
            )
        except ValueError:  # not six fields, or data that is not JSON
            ok = False
        if ok:
            jsons.append(envelope % (v_raw, etype, run_id, seq_raw, ts_raw, data, entry_id))
            seqs.append(int(seq_raw))
            ids.append(entry_id)
            types.append(etype)
            continue
        try:
            event = encode_entry(entry_id, flat, run_id)
        except InvalidEvent:
            page.invalid += 1
            continue
        jsons.append(event.json)
        seqs.append(event.seq)
        ids.append(entry_id)
        types.append(event.type.encode())
    return page


def now_ms() -> int:
    return int(time.time() * 1000)


class Format(Protocol):
    name: str  # the transport, as metrics label it
    key: str  # what frames built once for every subscriber are cached under: one per encoding

    def events(self, events: Sequence[WireEvent]) -> Frame: ...

    def page(self, page: HistoryPage, start: int, stop: int) -> Frame:
        """Events `start` to `stop` (excluded) of a replayed page, as one frame."""
        ...

    def control(self, kind: str, body: dict[str, Any]) -> Frame: ...


class _WebSocketFormat:
    """JSON text frames: `{"type": "events", "events": [...]}` and control frames."""

    name = key = "ws"

    def events(self, events: Sequence[WireEvent]) -> Frame:
        return (b'{"type":"events","events":[' + b",".join(e.json for e in events) + b"]}").decode()

    def page(self, page: HistoryPage, start: int, stop: int) -> Frame:
        return (b'{"type":"events","events":[' + b",".join(page.jsons[start:stop]) + b"]}").decode()

    def control(self, kind: str, body: dict[str, Any]) -> Frame:
        return orjson.dumps({"type": kind, **body}).decode()


class _SseFormat:
    """Server-Sent Events: one message per event (`id` = stream id, for Last-Event-ID)."""

    name = key = "sse"

    def events(self, events: Sequence[WireEvent]) -> Frame:
        return b"".join(b"id: %s\nevent: %s\ndata: %s\n\n" % (e.id.encode(), e.type.encode(), e.json) for e in events)

    def page(self, page: HistoryPage, start: int, stop: int) -> Frame:
        rows = zip(page.ids[start:stop], page.types[start:stop], page.jsons[start:stop], strict=True)
        return b"".join([b"id: %s\nevent: %s\ndata: %s\n\n" % row for row in rows])

    def control(self, kind: str, body: dict[str, Any]) -> Frame:
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, **body}))


class _WebSocketWireFormat:
    """The same JSON messages as WS, as complete WebSocket text frames (RFC 6455: a server's frames
    are not masked), for a connection written to directly (fanout/direct.py): a batch is framed
    once and the same bytes go to every subscriber, instead of encoding and framing per client."""

    name = "ws"
    key = "ws-wire"

    def events(self, events: Sequence[WireEvent]) -> Frame:
        return text_frame(b'{"type":"events","events":[' + b",".join(e.json for e in events) + b"]}")

    def page(self, page: HistoryPage, start: int, stop: int) -> Frame:
        return text_frame(b'{"type":"events","events":[' + b",".join(page.jsons[start:stop]) + b"]}")

    def control(self, kind: str, body: dict[str, Any]) -> Frame:
        return text_frame(orjson.dumps({"type": kind, **body}))


def text_frame(payload: bytes) -> bytes:
    """`payload` (UTF-8 text) as one final, unmasked WebSocket text frame."""
    n = len(payload)
    if n < 126:
        return _HEAD_7(0x81, n) + payload
    if n < 1 << 16:
        return _HEAD_16(0x81, 126, n) + payload
    return _HEAD_64(0x81, 127, n) + payload


_HEAD_7 = struct.Struct("!BB").pack
_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack

_EVENTS_HEAD = '{"type":"events","events":['
COALESCE_MAX_CHARS = 64 << 10
# Every envelope is longer than this (its fixed keys and stream id alone are), so a merged frame
# of at most frame_max_events * this many characters never holds more events than that.
MIN_EVENT_CHARS = 64


def coalesce(frames: list[Frame], max_events: int) -> list[Frame]:
    """Consecutive WebSocket `events` frames waiting for one client as one frame, up to
    COALESCE_MAX_CHARS and never more than `max_events` events. A client that fell behind then
    costs one send (and one syscall) for all it missed instead of one per batch; a client that
    keeps up has one frame queued at a time and gets it as it is. Order is kept; control frames
    are never merged."""
    limit = min(COALESCE_MAX_CHARS, max_events * MIN_EVENT_CHARS)
    if len(frames) < 2:
        return frames
    out: list[Frame] = []
    run: list[str] = []
    size = 0
    for frame in frames:
        if isinstance(frame, str) and frame.startswith(_EVENTS_HEAD):
            if run and size + len(frame) > limit:
                out.append(_merge(run))
                run, size = [], 0
            run.append(frame)
            size += len(frame)
            continue
        if run:
            out.append(_merge(run))
            run, size = [], 0
        out.append(frame)
    if run:
        out.append(_merge(run))
    return out


def _merge(run: list[str]) -> str:
    if len(run) == 1:
        return run[0]
    head = len(_EVENTS_HEAD)
    return _EVENTS_HEAD + ",".join(f[head:-2] for f in run) + "]}"


WS: Format = _WebSocketFormat()
WS_WIRE: Format = _WebSocketWireFormat()
SSE: Format = _SseFormat()


class Deliverable(Protocol):
    """What the hub and the index hand to subscribers: frames built once, shared by all."""

    size: int

    def frames(self, fmt: Format) -> list[Frame]: ...


class Batch:
    """Events of one stream read together, optionally preceded by a `reset`. Frames are built
    lazily, once per format, and shared by every subscriber."""

    __slots__ = ("_frames", "events", "reset", "size")

    def __init__(self, events: list[WireEvent], reset: dict[str, Any] | None = None) -> None:
        self.events = events
        self.reset = reset
        self.size = sum(len(e.json) for e in events) + 64
        self._frames: dict[str, list[Frame]] = {}

    @property
    def last_sid(self) -> tuple[int, int] | None:
        return self.events[-1].sid if self.events else None

    def frames(self, fmt: Format) -> list[Frame]:
        frames = self._frames.get(fmt.key)
        if frames is None:
            frames = [fmt.control("reset", self.reset)] if self.reset is not None else []
            if self.events:
                frames.append(fmt.events(self.events))
            self._frames[fmt.key] = frames
        return frames

    def after(self, sid: tuple[int, int]) -> Batch | None:
        """This batch without the events at or before `sid` (already sent from history)."""
        if self.reset is not None or not self.events or self.events[0].sid > sid:
            return self
        rest = [e for e in self.events if e.sid > sid]
        return Batch(rest) if rest else None


class RunsUpdate:
    """Run summaries for `/ws/runs` clients, sent as `{"type": "runs", "runs": [...]}`."""

    __slots__ = ("_frames", "runs", "size")

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self._frames: dict[str, list[Frame]] = {}
        self.size = sum(len(frame) for frame in self.frames(WS))

    def frames(self, fmt: Format) -> list[Frame]:
        frames = self._frames.get(fmt.key)
        if frames is None:
            frames = self._frames[fmt.key] = [fmt.control("runs", {"runs": self.runs})]
        return frames

    def newer_than(self, seqs: dict[str, int], visible: Callable[[dict[str, Any]], bool]) -> RunsUpdate | None:
        """Without the summaries a client already has in a newer or equal version, or may not see."""
        rest = [r for r in self.runs if r["seq"] > seqs.get(r["run_id"], -1) and visible(r)]
        if len(rest) == len(self.runs):
            return self
        return RunsUpdate(rest) if rest else None
