"""The price table: versions by effective date, exact integer costs, unknown models unknown."""

from __future__ import annotations

import datetime as dt

import pytest
from livestats_shared.pricing import InvalidPriceTable, load_price_table, parse_price_table, usd

TABLE = {
    "models": {
        "big": [
            {
                "effective_from": "2026-01-01",
                "input_per_mtok": 2.5,
                "output_per_mtok": 10,
                "cached_input_per_mtok": 1.25,
            },
            {"effective_from": "2026-06-01", "input_per_mtok": 2.0, "output_per_mtok": 8},
        ],
        "small": [{"effective_from": "2026-01-01", "input_per_mtok": 0.15, "output_per_mtok": 0.6}],
    }
}


def _ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_a_call_is_priced_at_the_version_in_effect_when_it_finished():
    table = parse_price_table(TABLE)
    # 1,000 input at $2.50/M = 2,500,000 nano-USD; 500 output at $10/M = 5,000,000 nano-USD.
    assert table.cost_nusd("big", _ms("2026-03-01"), 1_000, 500) == 7_500_000
    # From June 1st (00:00 UTC) the new price applies; the day before, the old one.
    assert table.cost_nusd("big", _ms("2026-06-01"), 1_000, 500) == 6_000_000
    assert table.cost_nusd("big", _ms("2026-06-01") - 1, 1_000, 500) == 7_500_000


def test_cached_input_tokens_use_the_cached_price_only_where_the_version_has_one():
    table = parse_price_table(TABLE)
    # 400 of the 1,000 input tokens cached: 600 x 2,500 + 400 x 1,250 + 0 = 2,000,000.
    assert table.cost_nusd("big", _ms("2026-03-01"), 1_000, 0, cached_input_tokens=400) == 2_000_000
    # The June version has no cached price: every input token at the input price.
    assert table.cost_nusd("big", _ms("2026-07-01"), 1_000, 0, cached_input_tokens=400) == 2_000_000


def test_fractional_nano_usd_rounds_half_to_even_and_sums_stay_exact():
    table = parse_price_table(TABLE)
    # $0.15/M = 150 nano-USD per input token: 7 tokens = 1,050 exactly.
    assert table.cost_nusd("small", _ms("2026-02-01"), 7, 0) == 1_050
    assert usd(1_050) == pytest.approx(1.05e-6)


def test_an_unknown_model_or_a_time_before_its_first_price_has_no_cost():
    table = parse_price_table(TABLE)
    assert table.cost_nusd("other", _ms("2026-03-01"), 10, 10) is None
    assert table.cost_nusd(None, _ms("2026-03-01"), 10, 10) is None
    assert table.cost_nusd("big", _ms("2025-12-31"), 10, 10) is None
    assert table.models == ["big", "small"]


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        ('{"models": {"m": []}}', "no price version"),
        (
            '{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": -1, "output_per_mtok": 1}]}}',
            "input_per_mtok",
        ),
        (
            '{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": NaN, "output_per_mtok": 1}]}}',
            "not JSON",
        ),
        (
            '{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": 1e308, "output_per_mtok": 1}]}}',
            "input_per_mtok",
        ),
        (
            '{"models": {"bad name": [{"effective_from": "2026-01-01", "input_per_mtok": 1, "output_per_mtok": 1}]}}',
            "model name",
        ),
        (
            '{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": 1, "output_per_mtok": 1}, '
            '{"effective_from": "2026-01-01", "input_per_mtok": 2, "output_per_mtok": 2}]}}',
            "same day",
        ),
        (
            '{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": 1, "output_per_mtok": 1, "x": 1}]}}',
            "x",
        ),
        ("[1]", "valid dictionary"),
    ],
)
def test_a_bad_price_table_is_refused_with_what_is_wrong(doc, complaint):
    with pytest.raises(InvalidPriceTable, match=complaint):
        parse_price_table(doc)


def test_the_table_comes_from_a_file_or_inline_not_both(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": 1, "output_per_mtok": 2}]}}')
    assert load_price_table(str(path), None).models == ["m"]
    assert load_price_table(None, path.read_text()).models == ["m"]
    assert load_price_table(None, None).models == []
    with pytest.raises(InvalidPriceTable, match="not both"):
        load_price_table(str(path), path.read_text())
    with pytest.raises(InvalidPriceTable, match="cannot read"):
        load_price_table(str(tmp_path / "missing.json"), None)
