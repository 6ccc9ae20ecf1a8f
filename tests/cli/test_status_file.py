"""Parsing an orchestrator's status file and deciding when it calls for a new phase event."""

from __future__ import annotations

import pytest
from livestats_cli.status_file import PhaseTracker, StatusFileError, parse_status
from livestats_shared.events import PhaseFinished, PhaseStarted


def test_the_same_status_written_differently_is_not_a_change():
    tracker = PhaseTracker()
    first = parse_status('{"phase": "plan", "status": "running", "calls": 3}')
    event = tracker.event_for(first, now=10.0)
    assert event == PhaseStarted(phase="plan", index=0, calls=3, concurrency=1)
    tracker.published(first, event, now=10.0)
    # Other key order, whitespace, and a field the events do not use: still the same status.
    again = parse_status('{ "calls": 3,\n "status": "running", "phase": "plan", "updated_at": "12:00:01" }')
    assert tracker.event_for(again, now=11.0) is None


def test_phases_are_numbered_in_order_of_appearance_and_timed_from_their_start():
    tracker = PhaseTracker()
    for now, text in [
        (0.0, '{"phase": "plan", "status": "started"}'),
        (4.0, '{"phase": "plan", "status": "done", "succeeded": 2}'),
        (5.0, '{"phase": "build", "status": "in_progress"}'),
    ]:
        status = parse_status(text)
        event = tracker.event_for(status, now)
        assert event is not None
        tracker.published(status, event, now)
    finished = tracker.event_for(parse_status('{"phase": "build", "status": "failed"}'), now=7.5)
    assert finished == PhaseFinished(phase="build", index=1, succeeded=0, failed=1, duration_s=2.5)
    explicit = tracker.event_for(parse_status('{"phase": "x", "status": "done", "index": 7, "duration_s": 1}'), 9.0)
    assert explicit == PhaseFinished(phase="x", index=7, succeeded=0, failed=0, duration_s=1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ('{"phase": "plan", "status": "runn', "Invalid JSON"),
        ('["plan", "running"]', "file"),
        ('{"status": "running"}', "phase"),
        ('{"phase": "plan", "status": "sleeping"}', "unknown status 'sleeping'"),
        ('{"phase": "plan", "status": "running", "calls": -1}', "calls"),
    ],
)
def test_a_malformed_file_is_a_clear_error(text, message):
    with pytest.raises(StatusFileError, match=message):
        parse_status(text)
