from __future__ import annotations

import pytest
from livestats_shared import keys
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import new_run_id, validate_run_id

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


def test_per_run_keys_share_one_cluster_hash_tag():
    rid = "run-1"
    tags = {k.split("{")[1].split("}")[0] for k in (keys.run_events(rid), keys.run_stats(rid), keys.run_cancel(rid))}
    assert tags == {rid}
