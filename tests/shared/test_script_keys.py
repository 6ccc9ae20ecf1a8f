"""Every Lua script on the telemetry server touches only the keys it is given (KEYS[]), and those
share one hash slot: a Cluster routes a script by its declared keys and refuses any other key a
script reaches (docs/keys.md, "One slot per command"). The scheduler's scripts are the documented
exception: they run on the queue server only (queue_server.py)."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from livestats_gateway.ops import lease
from livestats_shared import keys, layout

CALL = re.compile(r"redis\.call\(")
KEYED_CALL = re.compile(r"redis\.call\('[A-Z]+', (\w+(?:\[\d\])?)")


def _keys_used(source: str) -> list[str]:
    calls, keyed = CALL.findall(source), KEYED_CALL.findall(source)
    assert len(calls) == len(keyed), "a redis.call whose first argument is not a plain name"
    return keyed


def test_the_publish_script_touches_only_the_runs_three_keys():
    source = (files("livestats_shared.publish") / "publish.lua").read_text()
    assert "local stream, stats, life = KEYS[1], KEYS[2], KEYS[3]" in source
    used = _keys_used(source)
    assert set(used) == {"stream", "stats", "life"}
    # ...which the publisher passes from keys.py, and which share the run's partition slot.
    rid = "01jq0000000000000000"
    tag = keys.partition_tag(keys.partition_of(rid))
    assert all(f":{tag}:" in n for n in (keys.run_events(rid), keys.run_stats(rid), keys.run_lifecycle(rid)))


def test_the_lease_and_layout_scripts_touch_only_their_one_key():
    for source in (lease._ACQUIRE, lease._RELEASE, layout._CREATE):
        assert set(_keys_used(source)) == {"KEYS[1]"}


def test_a_call_on_a_key_the_script_was_not_given_is_caught():
    # Positive controls for the checks above: a literal key name, and another variable.
    with pytest.raises(AssertionError, match="not a plain name"):
        _keys_used("redis.call('GET', KEYS[1]); redis.call('DEL', 'livestats:other')")
    assert set(_keys_used("redis.call('GET', KEYS[1]); redis.call('SET', other, 1)")) == {"KEYS[1]", "other"}
