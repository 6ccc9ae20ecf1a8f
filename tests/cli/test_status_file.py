"""Parsing an orchestrator's status file and deciding when it calls for a new phase event."""

from __future__ import annotations

import pytest
from livestats_cli.status_file import PhaseTracker, StatusFileError, parse_status
from livestats_shared.events import PhaseFinished, PhaseStarted


def test_the_same_status_written_differently_is_not_a_change():
    tracker = PhaseTracker()
    first = parse_status('{"phase": "plan", "status": "running", "calls": 3}')
    events = tracker.events_for(first, now=10.0)
    assert events == [PhaseStarted(phase="plan", index=0, calls=3, concurrency=1)]
    tracker.published(first, events, now=10.0)
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
        events = tracker.events_for(status, now)
        assert len(events) == 1
        tracker.published(status, events, now)
    finished = tracker.event_for(parse_status('{"phase": "build", "status": "failed"}'), now=7.5)
    assert finished == PhaseFinished(phase="build", index=1, succeeded=0, failed=1, duration_s=2.5, state="failed")
    # A phase first seen ended is started first, so that the run declares it.
    explicit = tracker.events_for(parse_status('{"phase": "x", "status": "done", "index": 7, "duration_s": 1}'), 9.0)
    assert explicit == [
        PhaseStarted(phase="x", index=7, calls=0, concurrency=1),
        PhaseFinished(phase="x", index=7, succeeded=0, failed=0, duration_s=1.0, state="finished"),
    ]


def test_a_failed_phase_ends_failed_with_what_it_gave_up():
    tracker = PhaseTracker()
    tracker.seed({"plan": "running"}, now=0.0)
    (ended,) = tracker.events_for(parse_status('{"phase": "plan", "status": "failed", "failed": 2}'), now=3.0)
    assert (ended.state, ended.given_up, ended.duration_s) == ("failed", 2, 3.0)


def test_a_restarted_tracker_seeded_from_the_run_publishes_nothing_the_run_already_shows():
    tracker = PhaseTracker()
    tracker.seed({"plan": "finished", "build": "running", "test": None}, now=0.0)
    assert tracker.events_for(parse_status('{"phase": "plan", "status": "done"}'), now=1.0) == []
    assert tracker.events_for(parse_status('{"phase": "build", "status": "running"}'), now=1.0) == []
    # What the run does not show yet is still published: build's end, test's start.
    (build,) = tracker.events_for(parse_status('{"phase": "build", "status": "done"}'), now=2.0)
    assert (build.TYPE, build.index, build.duration_s) == ("phase.finished", 1, 2.0)
    (test,) = tracker.events_for(parse_status('{"phase": "test", "status": "running"}'), now=2.0)
    assert isinstance(test, PhaseStarted) and test.index == 2


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
