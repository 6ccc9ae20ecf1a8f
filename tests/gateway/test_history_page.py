"""A replayed page is encoded in one pass (wire.encode_page) with the checks of encode_entry: the
same envelope for every entry the publish script wrote, the other field orders taken, and each
entry livestats did not write skipped and counted, never sent."""

from __future__ import annotations

import orjson
from livestats_gateway.fanout.wire import SSE, WS, WS_WIRE, encode_entry, encode_page
from livestats_shared.errors import InvalidEvent

RUN = b"run-page-1"


def _entry(seq: int, *, run: bytes = RUN, etype: bytes = b"call.started", data: bytes | None = None) -> tuple:
    body = data if data is not None else orjson.dumps({"phase": "p", "call": seq, "attempt": 1})
    flat = [b"v", b"2", b"type", etype, b"run_id", run, b"seq", b"%d" % seq, b"ts", b"1700000000000", b"data", body]
    return (b"1700000000000-%d" % seq, flat)


def test_a_page_encodes_each_entry_as_encode_entry_does():
    entries = [_entry(s) for s in range(1, 6)]
    reordered = _entry(6)
    it = iter(reordered[1])
    entries.append((reordered[0], [x for pair in reversed(list(zip(it, it, strict=True))) for x in pair]))
    page = encode_page(entries, RUN)
    events = [encode_entry(entry_id, flat, RUN) for entry_id, flat in entries]
    assert page.invalid == 0
    assert page.jsons == [e.json for e in events]
    assert page.seqs == [1, 2, 3, 4, 5, 6]
    assert [page.event(i) for i in range(len(page))] == events
    for fmt in (WS, WS_WIRE, SSE):
        assert fmt.page(page, 1, 4) == fmt.events(events[1:4]), fmt.key


def test_entries_livestats_did_not_write_are_skipped_and_counted():
    foreign = [
        (b"1700000000000-90", [b"note", b"written by hand"]),
        _entry(91, run=b"another-run"),
        _entry(92, etype=b"made.up"),
        _entry(93, data=b'{"unclosed": '),
        _entry(94, data=b"[1, 2]"),
        (b"1700000000000-95", _entry(95)[1][:10]),  # no data field
        (b"1700000000000-96", [*_entry(96)[1][:7], b"x6", *_entry(96)[1][8:]]),  # seq not a number
    ]
    for entry_id, flat in foreign:
        try:
            encode_entry(entry_id, flat, RUN)
        except InvalidEvent:
            continue
        raise AssertionError(f"encode_entry took {flat}")
    page = encode_page([_entry(1), *foreign, _entry(2)], RUN)
    assert page.invalid == len(foreign)
    assert page.seqs == [1, 2]
    assert page.ids == [b"1700000000000-1", b"1700000000000-2"]
    assert page.sid(1) == (1700000000000, 2)
