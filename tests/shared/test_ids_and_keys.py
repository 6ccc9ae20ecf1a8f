from __future__ import annotations

from collections import Counter

import pytest
from livestats_shared import keys
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import new_run_id, validate_run_id
from redis.crc import key_slot

INJECTIONS = ["*", "a*", "{x}", "a}b", "a:b", "..", "../etc", "a b", " a", "a\n", "x" * 65, "rün", "", "A", "-a"]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_injection_attempts_are_rejected_with_a_clear_error(bad):
    with pytest.raises(InvalidRunId, match="invalid run id"):
        validate_run_id(bad)
    with pytest.raises(InvalidRunId):
        keys.run_events(bad)


def test_non_strings_are_rejected():
    for bad in (None, 12, b"abc"):
        with pytest.raises(InvalidRunId):
            validate_run_id(bad)


def test_generated_ids_are_valid_unique_and_sort_by_creation():
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(validate_run_id(i) == i for i in ids)
    assert ids[0][:10] <= ids[-1][:10]


def test_per_run_keys_share_their_partitions_hash_tag_and_slot():
    for rid in ("run-1", new_run_id(), "p3", "x" * 64):
        names = keys.run_keys(rid)
        assert names == {
            "events": keys.run_events(rid),
            "stats": keys.run_stats(rid),
            "lifecycle": keys.run_lifecycle(rid),
            "cancel": keys.run_cancel(rid),
        }
        partition = keys.partition_of(rid)
        assert 0 <= partition < keys.PARTITIONS_DEFAULT
        for kind, name in names.items():
            assert name == f"livestats:run:{{p{partition}}}:{rid}:{kind}"
        assert len({key_slot(n.encode()) for n in names.values()}) == 1


def test_the_partition_function_is_pinned():
    # Every stored run's key names depend on it: changing it would orphan every database's runs.
    # IEEE CRC-32 (zlib's) of the run id, modulo P (16); the values were computed once, by hand.
    assert [keys.partition_of(r) for r in ("run-1", "a", "01jq0000000000000000", "z" * 64)] == [3, 3, 11, 0]
    assert keys.run_events("run-1") == "livestats:run:{p3}:run-1:events"


def test_runs_spread_over_every_partition():
    counts = Counter(keys.partition_of(new_run_id()) for _ in range(3_200))
    assert set(counts) == set(range(keys.PARTITIONS_DEFAULT))
    assert max(counts.values()) < 2 * min(counts.values())  # 200 each on average


def test_auth_keys_share_one_slot():
    names = [
        keys.AUTH_TOKENS,
        keys.AUTH_TOKENS_LAST_USED,
        keys.auth_session("ab" * 32),
        keys.auth_token_sessions("0123456789ab"),
    ]
    assert all(n.startswith("livestats:{auth}:") for n in names)
    assert len({key_slot(n.encode()) for n in names}) == 1


def test_partitions_come_from_the_environment_once(monkeypatch):
    try:
        monkeypatch.setenv("LIVESTATS_PARTITIONS", "4")
        keys.partitions.cache_clear()
        assert keys.partitions() == 4
        monkeypatch.setenv("LIVESTATS_PARTITIONS", "5")
        assert keys.partitions() == 4  # read once per process
        for bad in ("0", "-1", "16385", "four", "1.5"):
            monkeypatch.setenv("LIVESTATS_PARTITIONS", bad)
            keys.partitions.cache_clear()
            with pytest.raises(ValueError, match="LIVESTATS_PARTITIONS must be a whole number from 1 to 16384"):
                keys.partitions()
        monkeypatch.setenv("LIVESTATS_PARTITIONS", "")
        keys.partitions.cache_clear()
        assert keys.partitions() == 16
    finally:
        monkeypatch.delenv("LIVESTATS_PARTITIONS")
        keys.partitions.cache_clear()


def test_key_names_of_both_layouts_parse_back_and_nothing_else_does():
    rid = "01jq0000000000000000"
    for kind in keys.RUN_KEY_KINDS:
        assert keys.parse_run_key(keys.run_keys(rid)[kind]) == (rid, kind)
        assert keys.parse_run_key(keys.run_key_under(rid, kind, 7)) == (rid, kind)
        legacy = keys.legacy_run_key(rid, kind)
        assert legacy == f"livestats:run:{{{rid}}}:{kind}"  # layout 1, as it was written
        assert keys.parse_run_key(legacy) == (rid, kind)
    assert keys.parse_run_key("livestats:run:{p3}:cancel") == ("p3", "cancel")  # a layout 1 run named p3
    for other in (
        "livestats:runs",
        "livestats:run:{x}:other",
        "livestats:run:{p1}:a:b:events",
        "livestats:run:x:events",
    ):
        assert keys.parse_run_key(other) is None


def test_layout_1_auth_keys_map_to_the_tagged_names():
    assert keys.auth_key_from_legacy("livestats:auth:tokens") == keys.AUTH_TOKENS
    assert keys.auth_key_from_legacy("livestats:auth:tokens:last-used") == keys.AUTH_TOKENS_LAST_USED
    assert keys.auth_key_from_legacy("livestats:auth:session:" + "ab" * 32) == keys.auth_session("ab" * 32)
    tid = "0123456789ab"
    assert keys.auth_key_from_legacy(f"livestats:auth:token:{tid}:sessions") == keys.auth_token_sessions(tid)
    assert keys.auth_key_from_legacy("livestats:authx") is None
